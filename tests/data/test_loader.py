"""The in-memory, epoch-seeded BatchLoader."""

from __future__ import annotations

import pytest
import torch

from alphaprune.data import BatchLoader, normalize

MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


def _data(n: int = 50):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.uint8)
    y = torch.arange(n)  # label = index, so batches reveal the order
    return x, y


def _loader(n=50, batch_size=16, **kw) -> BatchLoader:
    x, y = _data(n)
    return BatchLoader(x, y, MEAN, STD, batch_size, **kw)


def _epoch(loader: BatchLoader, epoch: int | None = None):
    if epoch is not None:
        loader.sampler.set_epoch(epoch)
    return list(loader)


def _order(batches) -> list[int]:
    return torch.cat([yb for _, yb in batches]).tolist()


@pytest.mark.parametrize("n, bs, train, expected", [
    (50, 16, True, [16, 16, 16]),        # last partial batch dropped
    (50, 16, False, [16, 16, 16, 2]),    # evaluation keeps every sample
    (48, 16, True, [16, 16, 16]),
    (48, 16, False, [16, 16, 16]),
    (10, 16, True, [10]),                # fewer samples than a batch: one batch, not none
    (10, 16, False, [10]),
    (1, 4, False, [1]),
])
def test_lengths_and_batch_sizes(n, bs, train, expected):
    loader = _loader(n, bs, train=train)
    batches = list(loader)
    assert len(loader) == len(expected)
    assert [len(yb) for _, yb in batches] == expected
    assert all(len(xb) == len(yb) for xb, yb in batches)


def test_eval_batches_are_in_order_normalised_and_typed():
    x, y = _data(50)
    loader = BatchLoader(x, y, MEAN, STD, 16)
    batches = list(loader)
    assert _order(batches) == list(range(50))
    xs = torch.cat([xb for xb, _ in batches])
    assert xs.dtype == torch.float32 and batches[0][1].dtype == torch.long
    assert torch.equal(xs, normalize(x, MEAN, STD))


def test_train_batches_are_a_shuffled_subset_without_repeats():
    order = _order(_epoch(_loader(50, 16, train=True), 0))
    assert len(order) == 48 == len(set(order))
    assert set(order) <= set(range(50))
    assert order != sorted(order)


@pytest.mark.parametrize("augment", [True, False])
def test_same_seed_and_epoch_give_identical_batches(augment):
    a = _epoch(_loader(train=True, seed=3, augment=augment), 4)
    b = _epoch(_loader(train=True, seed=3, augment=augment), 4)
    again = _epoch(_loader(train=True, seed=3, augment=augment), 4)
    for (xa, ya), (xb, yb), (xc, yc) in zip(a, b, again):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert torch.equal(xa, xc) and torch.equal(ya, yc)


def test_iterating_twice_in_one_epoch_repeats_the_batches():
    loader = _loader(train=True, seed=1)
    first, second = list(loader), list(loader)
    for (xa, ya), (xb, yb) in zip(first, second):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_different_epoch_gives_a_different_order():
    loader = _loader(train=True, seed=0)
    orders = [_order(_epoch(loader, e)) for e in range(4)]
    assert len({tuple(o) for o in orders}) == 4


def test_different_seed_gives_a_different_order():
    assert _order(_epoch(_loader(train=True, seed=0), 0)) != _order(_epoch(_loader(train=True, seed=1), 0))


def test_sampler_set_epoch_selects_the_epochs_batches():
    loader = _loader(train=True, seed=2)
    assert loader.sampler.epoch == 0
    e0 = _order(list(loader))
    loader.sampler.set_epoch(5)
    assert loader.sampler.epoch == 5
    e5 = _order(list(loader))
    assert e5 != e0
    fresh = _loader(train=True, seed=2)
    fresh.sampler.set_epoch(5)
    assert _order(list(fresh)) == e5
    loader.sampler.set_epoch(0)
    assert _order(list(loader)) == e0


def test_train_without_augment_gives_the_plain_normalised_images():
    x, y = _data(50)
    loader = BatchLoader(x, y, MEAN, STD, 16, train=True, augment=False, seed=0)
    for xb, yb in loader:
        assert torch.equal(xb, normalize(x[yb], MEAN, STD))


def test_train_with_augment_changes_images():
    x, y = _data(50)
    loader = BatchLoader(x, y, MEAN, STD, 16, train=True, augment=True, seed=0, pad=2)
    assert any(not torch.equal(xb, normalize(x[yb], MEAN, STD)) for xb, yb in loader)


def test_channels_last_batches():
    loader = _loader(batch_size=8, channels_last=True)
    xb, _ = next(iter(loader))
    assert xb.is_contiguous(memory_format=torch.channels_last)


def test_numpy_inputs_are_accepted():
    x, y = _data(20)
    loader = BatchLoader(x.numpy(), y.numpy(), MEAN, STD, 8)
    assert _order(list(loader)) == list(range(20))
