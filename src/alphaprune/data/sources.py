"""Dataset sources, decoded once into uint8 NCHW arrays and cached.

``load_dataset(spec)`` accepts:

* ``"digits"``: scikit-learn's bundled 8x8 digits (no download), upsampled to 16x16 so the
  CIFAR-style VGG applies (its pools round up below 32x32; 1 channel).
* a directory in the ImageFolder layout (``root/<class>/<image>``).
* an official CIFAR-10/100 python-pickle directory (``data_batch_*``/``test_batch`` or
  ``train``/``test``); all batches are pooled and the splits are carved by seed.
"""

from __future__ import annotations

import os
import pickle
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alphaprune.data.cache import cache_key, cache_slot, load_cached, save_cached
from alphaprune.errors import UserError

__all__ = ["Dataset", "load_dataset", "IMAGE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclass
class Dataset:
    """A whole dataset in memory.

    Attributes:
        x: uint8 array, shape (N, C, H, W).
        y: int64 labels, shape (N,).
        classes: class names, index = label.
        name: where it came from (path or ``"digits"``).
    """

    x: np.ndarray
    y: np.ndarray
    classes: list[str]
    name: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.x.shape[1])

    def mean_std(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std in [0, 1] units (the normalisation constants)."""
        mean, std = [], []
        for c in range(self.x.shape[1]):  # one channel at a time keeps memory small
            xc = self.x[:, c].astype(np.float32) / 255.0
            mean.append(float(xc.mean(dtype=np.float64)))
            std.append(max(float(xc.std(dtype=np.float64)), 1e-3))
        return mean, std


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    img = np.clip(np.round(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    img = np.kron(img, np.ones((1, 2, 2), dtype=np.uint8))  # 8x8 -> 16x16, nearest
    return Dataset(img[:, None], d.target.astype(np.int64),
                   [str(c) for c in d.target_names], "digits")


def _is_cifar_pickle(root: Path) -> bool:
    return (root / "data_batch_1").is_file() or (
        (root / "train").is_file() and (root / "meta").is_file())


# What the official CIFAR python batches hold: dicts of numpy arrays, lists, ints and
# strings. ``_codecs.encode`` is how Python 3 writes bytes at protocol 2; numpy's scalar
# rebuilder and its array rebuilder (below, :data:`_RECONSTRUCT`) construct plain data.
# Anything else (``os.system``, ``eval``, ...) is a crafted file: a plain ``pickle.load``
# would run it.
_CIFAR_GLOBALS = frozenset({
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
    # a batch pickled again at protocol 5 (its arrays rebuilt from the bytes in the file)
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
})
# an empty array at protocol 2 stores its bytes as ``bytes()``; only that call is allowed
# (``bytes(10**10)`` would allocate ten gigabytes)
_EMPTY_BYTES = frozenset({("__builtin__", "bytes"), ("builtins", "bytes")})


def _empty_bytes(*args):
    if args:
        raise pickle.UnpicklingError("refused bytes(...) with arguments: the CIFAR format "
                                     "holds only arrays, lists and strings")
    return b""


# numpy pickles an array as an empty one (shape (0,)) that its state then fills with the
# bytes in the file; a crafted shape would allocate as much as it names before any state
_RECONSTRUCT = frozenset({("numpy.core.multiarray", "_reconstruct"),
                          ("numpy._core.multiarray", "_reconstruct")})


def _empty_array(reconstruct):
    def rebuild(subtype, shape, dtype):
        if tuple(shape) != (0,):
            raise pickle.UnpicklingError(f"refused an array pickled with shape {shape}: numpy "
                                         "writes (0,) and fills it from the file's bytes")
        return reconstruct(subtype, shape, dtype)
    return rebuild


class _CifarUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of the official CIFAR format."""

    def find_class(self, module: str, name: str):
        if (module, name) in _EMPTY_BYTES:
            return _empty_bytes
        if (module, name) in _RECONSTRUCT:
            return _empty_array(super().find_class(module, name))
        if (module, name) not in _CIFAR_GLOBALS:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: the CIFAR format "
                                         "holds only arrays, lists and strings")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            d = _CifarUnpickler(f, encoding="bytes").load()
    except Exception as e:  # corrupt, foreign or crafted file
        raise UserError(f"cannot read CIFAR batch {path}: {e}; re-extract the archive") from e
    if not isinstance(d, dict):
        raise UserError(f"{path} is not a CIFAR python batch (not a dict); re-extract it")
    return d


def _key(d: dict, name: str):
    return d.get(name.encode(), d.get(name))


def _load_cifar_pickle(root: Path) -> Dataset:
    if (root / "data_batch_1").is_file():  # CIFAR-10
        files = sorted(root.glob("data_batch_*")) + [p for p in [root / "test_batch"] if p.is_file()]
        meta, label_key, names_key = root / "batches.meta", "labels", "label_names"
    else:  # CIFAR-100
        files = [p for p in [root / "train", root / "test"] if p.is_file()]
        meta, label_key, names_key = root / "meta", "fine_labels", "fine_label_names"
    xs, ys = [], []
    for f in files:
        d = _unpickle(f)
        data, labels = _key(d, "data"), _key(d, label_key)
        if data is None or labels is None:
            raise UserError(f"{f} is not a CIFAR python batch (no data/labels); re-extract it")
        try:
            x, yb = np.asarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32), np.asarray(labels, np.int64)
        except (ValueError, TypeError) as e:
            raise UserError(f"{f} is not a CIFAR python batch ({e}); re-extract it") from e
        if yb.ndim != 1 or len(yb) != len(x) or (len(yb) and yb.min() < 0):
            raise UserError(f"{f} has {len(x)} images but labels of shape {yb.shape}; re-extract it")
        xs.append(x)
        ys.append(yb)
    y = np.concatenate(ys)
    n_cls = int(y.max()) + 1 if len(y) else 0
    names = _key(_unpickle(meta), names_key) if meta.is_file() else None
    if names:
        classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
        if n_cls > len(classes):
            raise UserError(f"{root} has labels up to {n_cls - 1} but {meta.name} names "
                            f"{len(classes)} classes; re-extract the archive")
        return Dataset(np.concatenate(xs), y, classes, str(root))
    # without names, one is made per label: a crafted label of 10**9 would ask for a billion
    if n_cls > max(len(y), 1000):
        raise UserError(f"{root} has a label of {n_cls - 1} for {len(y)} images and no "
                        f"{meta.name} naming its classes; re-extract the archive")
    return Dataset(np.concatenate(xs), y, [str(i) for i in range(n_cls)], str(root))


def _list_imagefolder(root: Path) -> tuple[list[str], list[list[str]]]:
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise UserError(
            f"{root} is neither an ImageFolder directory (one sub-folder per class) nor a "
            "CIFAR python-pickle directory: point --data at one of those, or use 'digits'")
    if len(classes) == 1:
        raise UserError(f"{root} holds one class folder ({classes[0]}): a classifier needs two "
                        "or more, one sub-folder per class")
    files = []
    for c in classes:  # hidden files (macOS's ._name.png) are not images
        fs = sorted(e.name for e in os.scandir(root / c) if e.is_file()
                    and not e.name.startswith(".") and e.name.lower().endswith(IMAGE_EXTENSIONS))
        if not fs:
            raise UserError(f"class folder {root / c} holds no images: add images or remove it")
        files.append(fs)
    return classes, files


def _decode(paths: list[str]) -> list[np.ndarray]:
    from PIL import Image

    out = []
    for p in paths:
        with Image.open(p) as im:
            if im.mode.startswith("I"):  # 16-bit grey (I;16*, or I as PIL reads some PNGs)
                grey = np.asarray(im, dtype=np.int64)
                if grey.min() < 0 or grey.max() > 65535:
                    raise UserError(f"{p} holds 32-bit integer pixels: save it as an 8- or "
                                    "16-bit image")
                out.append(np.repeat(((grey + 128) // 257).astype(np.uint8)[..., None], 3, 2))
            elif im.mode == "F":
                raise UserError(f"{p} holds floating-point pixels: save it as an 8- or 16-bit image")
            else:
                out.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
    return out


def _load_imagefolder(root: Path, classes: list[str], files: list[list[str]]) -> Dataset:
    paths = [str(root / c / f) for c, fs in zip(classes, files) for f in fs]
    labels = np.concatenate([np.full(len(fs), i, dtype=np.int64) for i, fs in enumerate(files)])
    try:
        imgs = _decode(paths)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"cannot decode an image under {root}: {e}; remove or fix it") from e
    sizes = Counter(im.shape[:2] for im in imgs)
    if len(sizes) > 1:  # to the most common size, not the first image's, and said
        from PIL import Image

        (h, w), n = sizes.most_common(1)[0]
        print(f"alphaprune: warning: the images under {root} differ in size; "
              f"{len(imgs) - n} of {len(imgs)} resized to {w}x{h} (the most common size)",
              file=sys.stderr, flush=True)
        imgs = [im if im.shape[:2] == (h, w) else
                np.asarray(Image.fromarray(im).resize((w, h), Image.BILINEAR)) for im in imgs]
    x = np.stack(imgs).transpose(0, 3, 1, 2).copy()
    return Dataset(x, labels, classes, str(root))


def load_dataset(spec: str, cache_dir: str | os.PathLike | None = None) -> Dataset:
    """Load a dataset by name or path, decoding once and caching the uint8 arrays.

    Args:
        spec: ``"digits"``, an ImageFolder directory or a CIFAR python-pickle directory.
        cache_dir: where decoded arrays are cached (default ``$ALPHAPRUNE_CACHE`` or
            ``~/.cache/alphaprune``).

    Raises:
        UserError: the path is missing or in no supported layout.
    """
    if spec == "digits":
        return _load_digits()
    root = Path(spec).expanduser()
    if not root.exists():
        raise UserError(f"data path {root} does not exist: pass an existing directory or 'digits'")
    if not root.is_dir():
        raise UserError(f"data path {root} is a file: pass a directory (ImageFolder or CIFAR "
                        "python-pickle) or 'digits'")
    root = root.resolve()
    if _is_cifar_pickle(root):
        return _load_cifar_pickle(root)
    classes, files = _list_imagefolder(root)
    key = cache_key(root, [root / c / f for c, fs in zip(classes, files) for f in fs])
    slot = cache_slot(root)
    cached = load_cached(slot, key, cache_dir)
    if cached is not None:
        x, y, cached_classes = cached
        return Dataset(x, y, cached_classes, str(root))
    ds = _load_imagefolder(root, classes, files)
    save_cached(slot, key, ds.x, ds.y, ds.classes, cache_dir)
    return ds
