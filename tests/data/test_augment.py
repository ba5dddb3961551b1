"""Whole-batch augmentation (crop, flip) and normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alphaprune.data import Dataset, augment_batch, normalize
from alphaprune.data.augment import random_crop, random_flip


def _batch(n: int = 64, c: int = 3, h: int = 32, w: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # 1..255: never 0, so zero padding is told apart from image content
    return torch.randint(1, 256, (n, c, h, w), generator=g, dtype=torch.uint8)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("pad", [0, 1, 4])
@pytest.mark.parametrize("flip", [True, False])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_augment_keeps_shape_and_dtype(pad, flip, dtype):
    x = _batch(8, h=32, w=24).to(dtype)
    out = augment_batch(x, pad=pad, flip=flip, gen=_gen())
    assert out.shape == x.shape
    assert out.dtype == dtype


def test_crop_with_zero_pad_is_the_identity():
    x = _batch()
    assert torch.equal(random_crop(x, 0, _gen()), x)
    assert torch.equal(augment_batch(x, pad=0, flip=False, gen=_gen()), x)


@pytest.mark.parametrize("pad", [1, 2, 4])
def test_crop_is_a_window_of_the_zero_padded_image(pad):
    x = _batch(64)
    out = random_crop(x, pad, _gen(1))
    xp = F.pad(x, (pad, pad, pad, pad))
    h, w = x.shape[2:]
    offsets = set()
    for i in range(len(x)):
        hits = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                if torch.equal(out[i], xp[i, :, dy:dy + h, dx:dx + w])]
        assert hits, f"image {i} is not a shifted copy of its input"
        offsets.add(hits[0])
    assert len(offsets) > 1  # the shift is random per image


def test_crop_is_seeded_by_the_generator():
    x = _batch(16)
    assert torch.equal(random_crop(x, 4, _gen(3)), random_crop(x, 4, _gen(3)))
    assert not torch.equal(random_crop(x, 4, _gen(3)), random_crop(x, 4, _gen(4)))


def test_flip_gives_each_image_or_its_mirror_and_both_occur():
    x = _batch(64)
    out = random_flip(x, _gen(5))
    same = [torch.equal(out[i], x[i]) for i in range(len(x))]
    mirrored = [torch.equal(out[i], x[i].flip(2)) for i in range(len(x))]
    assert all(s or m for s, m in zip(same, mirrored))
    assert any(same) and any(mirrored)
    assert 10 <= sum(mirrored) <= 54  # about half
    # the mirror is left-right: column j becomes column W-1-j
    i = mirrored.index(True)
    assert torch.equal(out[i][:, :, 0], x[i][:, :, -1])


def test_flip_is_seeded_by_the_generator():
    x = _batch(64)
    assert torch.equal(random_flip(x, _gen(9)), random_flip(x, _gen(9)))
    assert not torch.equal(random_flip(x, _gen(9)), random_flip(x, _gen(10)))


def test_augment_batch_without_flip_only_crops():
    x = _batch(32)
    assert torch.equal(augment_batch(x, pad=3, flip=False, gen=_gen(2)), random_crop(x, 3, _gen(2)))


def _dataset(c: int) -> Dataset:
    rng = np.random.default_rng(c)
    x = np.stack([rng.integers(lo, hi, size=(50, 16, 16)) for lo, hi in
                  [(0, 256), (100, 140), (0, 30), (200, 256)][:c]], axis=1).astype(np.uint8)
    return Dataset(x, np.zeros(50, dtype=np.int64), ["a"], "toy")


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_normalize_with_the_datasets_mean_std_gives_zero_mean_unit_std(channels):
    ds = _dataset(channels)
    mean, std = ds.mean_std()
    assert len(mean) == len(std) == channels
    assert all(0 <= m <= 1 for m in mean) and all(s > 0 for s in std)
    z = normalize(torch.from_numpy(ds.x), mean, std)
    assert z.dtype == torch.float32 and z.shape == ds.x.shape
    per_channel = z.transpose(0, 1).reshape(channels, -1)
    assert torch.allclose(per_channel.mean(1), torch.zeros(channels), atol=1e-4)
    assert torch.allclose(per_channel.std(1, unbiased=False), torch.ones(channels), atol=1e-4)


def test_normalize_treats_uint8_and_0_255_floats_alike():
    x = _batch(4)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    a, b = normalize(x, mean, std), normalize(x.float(), mean, std)
    assert torch.equal(a, b)
    expected = (x[:, 1].float() / 255 - 0.4) / 0.25
    assert torch.allclose(a[:, 1], expected, atol=1e-5)


def test_mean_std_of_a_constant_channel_has_a_floor():
    x = np.full((4, 1, 8, 8), 51, dtype=np.uint8)
    mean, std = Dataset(x, np.zeros(4, dtype=np.int64), ["a"], "c").mean_std()
    assert mean == pytest.approx([0.2])
    assert std[0] == pytest.approx(1e-3)
    assert torch.isfinite(normalize(torch.from_numpy(x), mean, std)).all()
