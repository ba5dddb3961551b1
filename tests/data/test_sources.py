"""Dataset sources: digits, ImageFolder, CIFAR-10/100 pickles; the decode cache; bad inputs."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from PIL import Image

import alphaprune.data.sources as sources
from alphaprune.data import Dataset, load_dataset
from alphaprune.errors import UserError

from ..conftest import IMAGEFOLDER_CLASSES, class_image, write_imagefolder


def _check_layout(ds: Dataset, n: int, c: int, hw: tuple[int, int], n_classes: int) -> None:
    assert isinstance(ds.x, np.ndarray) and ds.x.dtype == np.uint8
    assert ds.x.shape == (n, c, *hw)
    assert ds.y.shape == (n,) and ds.y.dtype == np.int64
    assert ds.y.min() >= 0 and ds.y.max() < n_classes
    assert ds.num_classes == len(ds.classes) == n_classes
    assert ds.in_channels == c


# --------------------------------------------------------------------------- digits


def test_digits_is_upsampled_to_16x16_single_channel():
    ds = load_dataset("digits")
    _check_layout(ds, 1797, 1, (16, 16), 10)
    assert ds.classes == [str(i) for i in range(10)]
    assert ds.name == "digits"
    assert sorted(np.unique(ds.y).tolist()) == list(range(10))
    # nearest-neighbour 2x upsampling: every 2x2 block is constant
    small = ds.x[:, :, ::2, ::2]
    assert np.array_equal(ds.x, np.repeat(np.repeat(small, 2, axis=2), 2, axis=3))
    assert ds.x.max() == 255 and ds.x.min() == 0


# --------------------------------------------------------------------------- ImageFolder


def test_imagefolder_loads_pixels_labels_and_classes(imagefolder):
    ds = load_dataset(str(imagefolder))
    _check_layout(ds, 36, 3, (32, 32), 3)
    assert ds.classes == sorted(IMAGEFOLDER_CLASSES)
    assert np.bincount(ds.y).tolist() == [12, 12, 12]
    assert ds.y.tolist() == sorted(ds.y.tolist())  # class by class, files sorted
    # pixels round-trip exactly (PNG is lossless) and are NCHW
    for label in range(3):
        for i in (0, 11):
            expected = class_image(label, i).transpose(2, 0, 1)
            assert np.array_equal(ds.x[12 * label + i], expected)
    assert ds.name == str(imagefolder.resolve())


def test_imagefolder_skips_hidden_folders_and_non_images(imagefolder):
    (imagefolder / ".ipynb_checkpoints").mkdir()
    (imagefolder / "circle" / "notes.txt").write_text("not an image")
    (imagefolder / "README.md").write_text("loose file at the top")
    (imagefolder / "circle" / "._img_00.png").write_bytes(b"macOS resource fork, not a PNG")
    ds = load_dataset(str(imagefolder))
    assert ds.classes == sorted(IMAGEFOLDER_CLASSES)
    assert len(ds.y) == 36


def test_imagefolder_converts_grey_and_resizes_odd_sizes(tmp_path):
    root = write_imagefolder(tmp_path / "imgs", classes=("a", "b"), per_class=2)
    Image.fromarray(np.full((40, 24), 128, np.uint8)).save(root / "b" / "zz_grey.png")
    ds = load_dataset(str(root))
    _check_layout(ds, 5, 3, (32, 32), 2)
    assert np.all(np.abs(ds.x[-1].astype(int) - 128) <= 1)


def test_imagefolder_resizes_to_the_most_common_size_and_says_so(tmp_path, capsys):
    root = write_imagefolder(tmp_path / "imgs", classes=("a", "b"), per_class=2)
    Image.fromarray(np.zeros((96, 128, 3), np.uint8)).save(root / "a" / "0_first_and_big.png")
    ds = load_dataset(str(root))
    _check_layout(ds, 5, 3, (32, 32), 2)  # not the first image's 96x128
    assert "1 of 5 resized to 32x32" in capsys.readouterr().err


def test_imagefolder_scales_16_bit_grey_to_8_bits(tmp_path):
    root = write_imagefolder(tmp_path / "imgs", classes=("a", "b"), per_class=2)
    grey = np.array([[0, 257 * 128], [65535, 257 * 200]], np.uint16).repeat(16, 0).repeat(16, 1)
    Image.fromarray(grey).save(root / "b" / "zz_16bit.png")
    ds = load_dataset(str(root))
    assert ds.x[-1, :, 0, 0].tolist() == [0] * 3 and ds.x[-1, :, 0, 16].tolist() == [128] * 3
    assert ds.x[-1, 0, 16, 0] == 255 and ds.x[-1, 0, 16, 16] == 200


def test_imagefolder_refuses_floating_point_pixels(tmp_path):
    root = write_imagefolder(tmp_path / "imgs", classes=("a", "b"), per_class=2)
    Image.fromarray(np.full((32, 32), 0.5, np.float32)).save(root / "b" / "float.tif")
    with pytest.raises(UserError, match="float.tif holds floating-point pixels"):
        load_dataset(str(root))


def test_imagefolder_is_not_a_cifar_dir_because_it_has_a_train_folder(tmp_path):
    root = write_imagefolder(tmp_path / "imgs", classes=("meta", "train"), per_class=2)
    ds = load_dataset(str(root))
    assert ds.classes == ["meta", "train"]


# --------------------------------------------------------------------------- CIFAR pickles


def test_cifar10_pickle_pools_all_batches_in_order(cifar10_dir):
    ds = load_dataset(str(cifar10_dir.path))
    _check_layout(ds, 36, 3, (32, 32), 10)
    assert np.array_equal(ds.x, cifar10_dir.x)
    assert np.array_equal(ds.y, cifar10_dir.y)
    assert ds.classes == cifar10_dir.classes


def test_cifar100_pickle_uses_fine_labels(cifar100_dir):
    ds = load_dataset(str(cifar100_dir.path))
    _check_layout(ds, 30, 3, (32, 32), 100)
    assert np.array_equal(ds.x, cifar100_dir.x)
    assert np.array_equal(ds.y, cifar100_dir.y)
    assert ds.classes == cifar100_dir.classes


def test_cifar10_without_meta_names_classes_by_index(cifar10_dir):
    (cifar10_dir.path / "batches.meta").unlink()
    ds = load_dataset(str(cifar10_dir.path))
    assert ds.classes == [str(i) for i in range(10)]


def test_cifar_pickle_with_str_keys_also_loads(tmp_path):
    root = tmp_path / "c10"
    root.mkdir()
    x = np.arange(2 * 3072, dtype=np.int64).reshape(2, 3072) % 256
    with open(root / "data_batch_1", "wb") as f:
        pickle.dump({"data": x.astype(np.uint8), "labels": [1, 0]}, f, protocol=2)
    ds = load_dataset(str(root))
    assert ds.x.shape == (2, 3, 32, 32) and ds.y.tolist() == [1, 0]
    assert np.array_equal(ds.x.reshape(2, -1), x.astype(np.uint8))


def test_cifar_pickle_at_protocol_5_and_empty_arrays_load(tmp_path):
    root = tmp_path / "c10"
    root.mkdir()
    x = (np.arange(2 * 3072) % 256).astype(np.uint8).reshape(2, 3072)
    with open(root / "data_batch_1", "wb") as f:
        pickle.dump({b"data": x, b"labels": [1, 0], b"extra": np.zeros(0)}, f, protocol=5)
    with open(root / "data_batch_2", "wb") as f:
        pickle.dump({b"data": x, b"labels": [0, 1], b"extra": np.zeros(0)}, f, protocol=2)
    ds = load_dataset(str(root))
    assert ds.y.tolist() == [1, 0, 0, 1] and np.array_equal(ds.x[:2].reshape(2, -1), x)


class _HugeBytes:
    """Pickles to ``bytes(10**8)`` (a crafted file would ask for far more)."""

    def __reduce__(self):
        return (bytes, (10**8,))


def test_a_crafted_bytes_call_allocates_nothing(cifar10_dir):
    with open(cifar10_dir.path / "data_batch_2", "wb") as f:
        pickle.dump({b"data": _HugeBytes(), b"labels": [0]}, f, protocol=2)
    with pytest.raises(UserError, match="data_batch_2.*refused bytes"):
        load_dataset(str(cifar10_dir.path))


class _HugeArray:
    """Pickles as numpy's array rebuilder asked for 10**8 bytes up front (numpy itself asks
    for none and fills the array from the file's bytes)."""

    def __reduce__(self):
        return (np.ndarray.__reduce__(np.zeros(1, np.uint8))[0], (np.ndarray, (10**8,), b"b"))


def test_a_crafted_array_shape_allocates_nothing(cifar10_dir):
    with open(cifar10_dir.path / "data_batch_2", "wb") as f:
        pickle.dump({b"data": _HugeArray(), b"labels": [0]}, f, protocol=2)
    with pytest.raises(UserError, match=r"data_batch_2.*refused an array pickled with shape"):
        load_dataset(str(cifar10_dir.path))


@pytest.mark.parametrize("meta, message", [(True, "labels up to 10 but batches.meta names 10"),
                                           (False, "label of 1000000000 for 36 images")])
def test_cifar_labels_beyond_the_classes_are_refused(cifar10_dir, meta, message):
    label = 10 if meta else 10**9
    if not meta:
        (cifar10_dir.path / "batches.meta").unlink()
    with open(cifar10_dir.path / "data_batch_1", "rb") as f:
        batch = pickle.load(f)
    batch[b"labels"][0] = label
    with open(cifar10_dir.path / "data_batch_1", "wb") as f:
        pickle.dump(batch, f, protocol=2)
    with pytest.raises(UserError, match=message):
        load_dataset(str(cifar10_dir.path))


@pytest.mark.parametrize("content", [b"garbage, not a pickle", pickle.dumps({b"foo": 1}, protocol=2)])
def test_corrupt_cifar_batch_raises_user_error(cifar10_dir, content):
    (cifar10_dir.path / "data_batch_3").write_bytes(content)
    with pytest.raises(UserError, match="data_batch_3"):
        load_dataset(str(cifar10_dir.path))


# --------------------------------------------------------------------------- cache


def _forbid_decode(monkeypatch):
    def boom(paths):
        raise AssertionError("decoded again although the cache is valid")

    monkeypatch.setattr(sources, "_decode", boom)


def _count_decode(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = sources._decode

    def counting(paths):
        calls.append(len(paths))
        return real(paths)

    monkeypatch.setattr(sources, "_decode", counting)
    return calls


def test_second_imagefolder_load_hits_the_cache(imagefolder, cache_dir, monkeypatch):
    calls = _count_decode(monkeypatch)
    first = load_dataset(str(imagefolder))
    assert calls == [36]
    assert len(list(cache_dir.glob("*.npz"))) == 1
    _forbid_decode(monkeypatch)
    second = load_dataset(str(imagefolder))
    assert np.array_equal(first.x, second.x) and second.x.dtype == np.uint8
    assert np.array_equal(first.y, second.y) and second.y.dtype == np.int64
    assert second.classes == first.classes and isinstance(second.classes, list)
    assert second.name == first.name


def test_explicit_cache_dir_is_used_instead_of_the_default(imagefolder, cache_dir, tmp_path,
                                                           monkeypatch):
    other = tmp_path / "other-cache"
    load_dataset(str(imagefolder), cache_dir=other)
    assert len(list(other.glob("*.npz"))) == 1
    assert not cache_dir.exists() or not list(cache_dir.glob("*.npz"))
    _forbid_decode(monkeypatch)
    load_dataset(str(imagefolder), cache_dir=str(other))


def test_a_new_decoder_version_decodes_again(imagefolder, monkeypatch):
    """Arrays an older decoder cached (16-bit images clipped white) are not served."""
    import alphaprune.data.cache as cache

    load_dataset(str(imagefolder))
    monkeypatch.setattr(cache, "DECODER_VERSION", cache.DECODER_VERSION + 1)
    calls = _count_decode(monkeypatch)
    load_dataset(str(imagefolder))
    assert calls == [36]


def test_changed_file_invalidates_the_cache(imagefolder, monkeypatch):
    load_dataset(str(imagefolder))
    target = imagefolder / "square" / "img_03.png"
    new = np.zeros((32, 32, 3), np.uint8)
    Image.fromarray(new).save(target)
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    calls = _count_decode(monkeypatch)
    ds = load_dataset(str(imagefolder))
    assert calls == [36]
    assert np.array_equal(ds.x[12 + 3], new.transpose(2, 0, 1))


def test_touched_file_alone_invalidates_the_cache(imagefolder, monkeypatch):
    load_dataset(str(imagefolder))
    target = imagefolder / "circle" / "img_00.png"
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 7_000_000_000))
    calls = _count_decode(monkeypatch)
    load_dataset(str(imagefolder))
    assert calls == [36]


@pytest.mark.parametrize("change", ["add_file", "remove_file", "add_class"])
def test_added_or_removed_files_invalidate_the_cache(imagefolder, monkeypatch, change):
    load_dataset(str(imagefolder))
    n, n_cls = 36, 3
    if change == "add_file":
        Image.fromarray(class_image(0, 99)).save(imagefolder / "circle" / "img_99.png")
        n += 1
    elif change == "remove_file":
        (imagefolder / "stripes" / "img_05.png").unlink()
        n -= 1
    else:
        write_imagefolder(imagefolder, classes=("zebra",), per_class=2)
        n, n_cls = n + 2, n_cls + 1
    calls = _count_decode(monkeypatch)
    ds = load_dataset(str(imagefolder))
    assert calls == [n]
    assert len(ds.y) == n and ds.num_classes == n_cls


def test_a_changed_folder_replaces_its_cache_file_and_another_folder_gets_its_own(
        imagefolder, cache_dir, tmp_path, monkeypatch):
    load_dataset(str(imagefolder))
    (first,) = cache_dir.glob("*.npz")
    (imagefolder / "stripes" / "img_05.png").unlink()
    calls = _count_decode(monkeypatch)
    load_dataset(str(imagefolder))
    assert calls == [35]
    assert list(cache_dir.glob("*.npz")) == [first]  # replaced, not one more file per change
    other = write_imagefolder(tmp_path / "other", per_class=2)
    load_dataset(str(other))
    assert len(list(cache_dir.glob("*.npz"))) == 2
    _forbid_decode(monkeypatch)
    assert len(load_dataset(str(imagefolder)).y) == 35 and len(load_dataset(str(other)).y) == 6


def test_a_cache_file_of_the_old_layout_is_used_and_moved_into_its_slot(imagefolder, cache_dir,
                                                                        monkeypatch):
    first = load_dataset(str(imagefolder))
    (npz,) = cache_dir.glob("*.npz")
    with np.load(npz) as z:  # before slots: named by the fingerprint, which it did not hold
        key = str(z["key"])
        np.savez(cache_dir / f"{key}.npz", x=z["x"], y=z["y"], classes=z["classes"])
    npz.unlink()
    _forbid_decode(monkeypatch)
    again = load_dataset(str(imagefolder))
    assert np.array_equal(first.x, again.x) and again.classes == first.classes
    assert [p.name for p in cache_dir.glob("*.npz")] == [npz.name]


def test_corrupt_cache_file_is_decoded_again(imagefolder, cache_dir, monkeypatch):
    first = load_dataset(str(imagefolder))
    (npz,) = cache_dir.glob("*.npz")
    npz.write_bytes(b"torn write")
    calls = _count_decode(monkeypatch)
    again = load_dataset(str(imagefolder))
    assert calls == [36]
    assert np.array_equal(first.x, again.x)


@pytest.mark.parametrize("edit", ["short y", "label out of range", "negative label",
                                  "float labels", "no classes"])
def test_a_cache_that_cannot_be_the_dataset_is_decoded_again(imagefolder, cache_dir, monkeypatch,
                                                             edit):
    """The right fingerprint on arrays that cannot be the folder's images (edited, or written
    by something else) is not trusted: training on them would score 0 or crash."""
    import json

    first = load_dataset(str(imagefolder))
    (npz,) = cache_dir.glob("*.npz")
    with np.load(npz, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    y, classes = arrays["y"].copy(), json.loads(str(arrays["classes"]))
    if edit == "short y":
        y = y[:-3]
    elif edit == "label out of range":
        y[0] = len(classes)
    elif edit == "negative label":
        y[0] = -1
    elif edit == "float labels":
        y = y.astype(np.float32)
    else:
        arrays["classes"] = np.array(json.dumps([]))
    np.savez(npz, **{**arrays, "y": y})
    calls = _count_decode(monkeypatch)
    again = load_dataset(str(imagefolder))
    assert calls == [36]
    assert np.array_equal(first.y, again.y) and again.classes == first.classes


def test_unwritable_cache_is_not_fatal(imagefolder, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    ds = load_dataset(str(imagefolder), cache_dir=blocker / "sub")
    assert len(ds.y) == 36


# --------------------------------------------------------------------------- bad inputs


def _loose_files(tmp_path):
    d = tmp_path / "loose"
    d.mkdir()
    for i in range(3):
        Image.fromarray(class_image(0, i)).save(d / f"{i}.png")
    return d


def _empty_dir(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    return d


def _empty_class(tmp_path):
    root = write_imagefolder(tmp_path / "imgs", classes=("a", "b"), per_class=2)
    (root / "c").mkdir()
    return root


def _class_without_images(tmp_path):
    root = write_imagefolder(tmp_path / "imgs", classes=("a", "b"), per_class=2)
    (root / "c").mkdir()
    (root / "c" / "labels.csv").write_text("a,b\n")
    return root


def _a_file(tmp_path):
    f = tmp_path / "data.png"
    Image.fromarray(class_image(0, 0)).save(f)
    return f


def _corrupt_image(tmp_path):
    root = write_imagefolder(tmp_path / "imgs", classes=("a", "b"), per_class=2)
    (root / "b" / "broken.png").write_bytes(b"\x89PNG but not really")
    return root


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "does-not-exist", "does not exist"),
    (_a_file, "is a file"),
    (_loose_files, "neither an ImageFolder"),
    (_empty_dir, "neither an ImageFolder"),
    (_empty_class, "holds no images"),
    (_class_without_images, "holds no images"),
    (_corrupt_image, "cannot decode"),
    (lambda p: write_imagefolder(p / "one", classes=("a",), per_class=3), "one class folder"),
], ids=["missing", "file", "loose-files", "empty-dir", "empty-class", "class-no-images",
        "corrupt-image", "one-class"])
def test_bad_inputs_raise_one_line_user_error(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(UserError, match=message) as e:
        load_dataset(str(path))
    assert "\n" not in str(e.value)


class _Exploit:
    """Pickles to a call of ``os.system`` that would create ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_crafted_cifar_batch_runs_no_code(cifar10_dir, tmp_path):
    marker = tmp_path / "pwned"
    with open(cifar10_dir.path / "data_batch_2", "wb") as f:
        pickle.dump({b"data": _Exploit(marker), b"labels": [0]}, f, protocol=2)
    with pytest.raises(UserError, match="data_batch_2.*refused global"):
        load_dataset(str(cifar10_dir.path))
    assert not marker.exists()


def test_crafted_cifar_meta_runs_no_code(cifar10_dir, tmp_path):
    marker = tmp_path / "pwned"
    with open(cifar10_dir.path / "batches.meta", "wb") as f:
        pickle.dump(_Exploit(marker), f, protocol=4)
    with pytest.raises(UserError, match="batches.meta"):
        load_dataset(str(cifar10_dir.path))
    assert not marker.exists()


@pytest.mark.parametrize("batch", [
    {b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]},  # not 3x32x32
    {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]},  # one label short
    {b"data": np.zeros((2, 3072), np.uint8), b"labels": "ab"},  # not a list of ints
    [1, 2, 3],  # not a dict
])
def test_malformed_cifar_batch_is_a_one_line_error(cifar10_dir, batch):
    with open(cifar10_dir.path / "data_batch_1", "wb") as f:
        pickle.dump(batch, f, protocol=2)
    with pytest.raises(UserError, match="data_batch_1"):
        load_dataset(str(cifar10_dir.path))
