"""Shared fixtures: tiny synthetic datasets in every supported on-disk layout.

Every test gets its own decoded-data cache (``$ALPHAPRUNE_CACHE`` under ``tmp_path``) so
the suite never writes to ``~/.cache``.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from alphaprune.train.engine import threads_kept

IMAGEFOLDER_CLASSES = ("circle", "square", "stripes")


@dataclass
class PickleDir:
    """A CIFAR-style pickle directory and the arrays written into it (in load order)."""

    path: Path
    x: np.ndarray  # uint8 (N, 3, 32, 32)
    y: np.ndarray  # int64 (N,)
    classes: list[str]


@pytest.fixture(scope="session", autouse=True)
def _cpu_only():
    """--accelerator auto would train on a GPU where one is visible, and several tests
    compare runs bit for bit, which GPU kernels do not promise: the suite runs on the CPU."""
    mp = pytest.MonkeyPatch()
    mp.setattr(torch.cuda, "is_available", lambda: False)
    yield
    mp.undo()


@pytest.fixture
def float64():
    """Models and branches built in float64, for exactness checks on deep networks: in a
    MobileNet with scrambled branches ReLU6 caps the signal but not float32's rounding, which
    compounds over its 17 blocks past any float32 tolerance."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine the
    thread pool's spin-waits make every op ~100x slower: run the suite single-threaded.
    ``OMP_NUM_THREADS`` is set too: a DDP run in this process (``--strategy ddp``) would
    otherwise have Lightning raise the thread count to the core count for every later
    test (``_set_num_threads_if_needed``), and CLI runs in subprocesses inherit it."""
    with threads_kept():  # both as they were after the session
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)
        yield


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Point the default decoded-data cache at a per-test folder."""
    cache = tmp_path / "_cache"
    monkeypatch.setenv("ALPHAPRUNE_CACHE", str(cache))
    torch.manual_seed(0)
    return cache


@pytest.fixture
def cache_dir(_isolated_cache) -> Path:
    """The per-test default cache folder (``$ALPHAPRUNE_CACHE``)."""
    return _isolated_cache


def class_image(label: int, idx: int, size: int = 32) -> np.ndarray:
    """A (size, size, 3) uint8 image whose colour and pattern depend on the class.

    Class 0: red background; class 1: green horizontal stripes; class 2: blue vertical
    stripes; further classes cycle the colours. A little seeded noise makes every image
    distinct.
    """
    rng = np.random.default_rng(1000 * label + idx)
    img = rng.integers(0, 40, size=(size, size, 3)).astype(np.int32)
    yy, xx = np.mgrid[:size, :size]
    chan = label % 3
    if label % 3 == 0:
        mask = np.ones((size, size), bool)
    elif label % 3 == 1:
        mask = (yy // 4) % 2 == 0
    else:
        mask = (xx // 4) % 2 == 0
    img[..., chan] += np.where(mask, 200, 60)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_imagefolder(root: Path, classes=IMAGEFOLDER_CLASSES, per_class: int = 12,
                      size: int = 32) -> Path:
    """Write ``root/<class>/img_XX.png`` (RGB PNGs) and return ``root``."""
    root = Path(root)
    for label, name in enumerate(classes):
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(class_image(label, i, size)).save(d / f"img_{i:02d}.png")
    return root


@pytest.fixture(scope="session")
def make_imagefolder():
    """The ImageFolder writer, for fixtures of wider scope than a test."""
    return write_imagefolder


@pytest.fixture
def imagefolder(tmp_path) -> Path:
    """3 classes x 12 RGB 32x32 PNGs in the ImageFolder layout."""
    return write_imagefolder(tmp_path / "imagefolder")


def _cifar_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8), rng


def _dump(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


@pytest.fixture
def cifar10_dir(tmp_path) -> PickleDir:
    """Official CIFAR-10 python layout: data_batch_1..5, test_batch, batches.meta (6 images each)."""
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"]
    xs, ys = [], []
    for k, fname in enumerate([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]):
        x, _ = _cifar_images(6, seed=k)
        labels = [(6 * k + j) % 10 for j in range(6)]
        _dump(root / fname, {b"batch_label": fname.encode(), b"labels": labels,
                             b"data": x.reshape(6, 3072),
                             b"filenames": [f"{fname}_{j}.png".encode() for j in range(6)]})
        xs.append(x)
        ys.append(labels)
    _dump(root / "batches.meta", {b"label_names": [n.encode() for n in names],
                                  b"num_cases_per_batch": 6, b"num_vis": 3072})
    return PickleDir(root, np.concatenate(xs), np.concatenate(ys).astype(np.int64), names)


@pytest.fixture
def cifar100_dir(tmp_path) -> PickleDir:
    """Official CIFAR-100 python layout: train, test, meta (fine labels)."""
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    fine = [f"fine_{i:02d}" for i in range(100)]
    coarse = [f"coarse_{i:02d}" for i in range(20)]
    xs, ys = [], []
    for k, (fname, n) in enumerate([("train", 20), ("test", 10)]):
        x, rng = _cifar_images(n, seed=100 + k)
        labels = [int(v) for v in rng.integers(0, 100, size=n)]
        labels[0] = 99  # the largest label occurs, as in the real data
        _dump(root / fname, {b"filenames": [f"{j}.png".encode() for j in range(n)],
                             b"batch_label": fname.encode(), b"fine_labels": labels,
                             b"coarse_labels": [v // 5 for v in labels],
                             b"data": x.reshape(n, 3072)})
        xs.append(x)
        ys.append(labels)
    _dump(root / "meta", {b"fine_label_names": [n.encode() for n in fine],
                          b"coarse_label_names": [n.encode() for n in coarse]})
    return PickleDir(root, np.concatenate(xs), np.concatenate(ys).astype(np.int64), fine)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A model file shared by the prune tests: vgg11 (width 0.0625) trained for 2 epochs on
    a 300-image digits subset (batch 32, seed 0). Read-only: copy it before changing it."""
    from alphaprune.cli import main

    base = tmp_path_factory.mktemp("tiny-checkpoint")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALPHAPRUNE_CACHE", str(base / "cache"))
        torch.manual_seed(0)
        rc = main(["train", "--model", "vgg11", "--width", "0.0625", "--data", "digits",
                   "--subset", "300", "--batch-size", "32", "--epochs", "2", "--no-progress",
                   "--out", str(base / "train")])
    assert rc == 0
    return base / "train" / "model.pt"
