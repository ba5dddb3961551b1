"""``alphaprune export``: ONNX (run in onnxruntime), TorchScript and torch.export files that
agree with PyTorch, load on their own at any batch size, and never replace a file silently."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from alphaprune.blend import BlendedNet, fuse
from alphaprune.cli import main
from alphaprune.export import export_model
from alphaprune.graph import find_units
from alphaprune.modelfile import load_model, save_model
from alphaprune.models import create_model
from alphaprune.models.user import GRAPH_ARCH
from tests.graph.zoo import Inception, YoloCls

FORMATS = ["onnx", "torchscript", "pt2"]


class Small(nn.Module):
    """A user model: not in the registry, saved as its traced graph."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 5)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_checkpoint):
    """A VGG (the shared digits checkpoint, 1x16x16), a ResNet and a user model file."""
    base = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    resnet = create_model("resnet20", width=0.25, num_classes=10).eval()
    for m in resnet.modules():  # non-trivial BN statistics, so folding them is checked
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    save_model(base / "resnet.pt", resnet, "resnet20", [0.5] * 3, [0.25] * 3, [str(i) for i in range(10)],
               {"input_shape": [3, 32, 32]})
    save_model(base / "user.pt", Small().eval(), GRAPH_ARCH, [0.5] * 3, [0.25] * 3, list("abcde"),
               {"input_shape": [3, 20, 20]})
    # a fused Inception with one-channel units: its cats are made channels-last in the graph
    structure = find_units(Inception().eval(), torch.zeros(2, 3, 32, 32))
    fused = fuse(BlendedNet(structure, [1] * len(structure.units))).eval()
    assert any(n.target == "contiguous" for n in fused.graph.nodes)
    save_model(base / "fused.pt", fused, GRAPH_ARCH, [0.5] * 3, [0.25] * 3, [str(i) for i in range(10)],
               {"input_shape": [3, 32, 32]})
    # a fused YOLOv8-cls: its C2f convs are split at unequal new widths by torch.split
    structure = find_units(YoloCls().eval(), torch.zeros(2, 3, 32, 32))
    widths = [max(1, u.width // 2 - i % 3) for i, u in enumerate(structure.units)]
    fused = fuse(BlendedNet(structure, widths)).eval()
    assert any(n.target is torch.split for n in fused.graph.nodes)
    save_model(base / "split.pt", fused, GRAPH_ARCH, [0.5] * 3, [0.25] * 3, [str(i) for i in range(10)],
               {"input_shape": [3, 32, 32]})
    return {"vgg": (tiny_checkpoint, None), "resnet": (base / "resnet.pt", (3, 32, 32)),
            "user": (base / "user.pt", (3, 20, 20)), "fused": (base / "fused.pt", (3, 32, 32)),
            "split": (base / "split.pt", (3, 32, 32))}


def _load_and_run(fmt: str, path, x: torch.Tensor) -> np.ndarray:
    """The exported file as a user would load it, in its own runtime."""
    if fmt == "onnx":
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    module = torch.jit.load(str(path)) if fmt == "torchscript" else torch.export.load(str(path)).module()
    with torch.inference_mode():
        return module(x).numpy()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("which", ["vgg", "resnet", "user", "fused", "split"])
def test_the_export_agrees_with_pytorch_and_stands_alone(models, tmp_path, fmt, which):
    path, shape = models[which]
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / f"model.{fmt}"
    r = export_model(path, fmt, out, latency_batches=(1, 8))
    assert r["max_rel_error"] <= 1e-4
    assert sorted(p.name for p in folder.iterdir()) == [out.name]  # one file, no temporaries
    model = load_model(path).eval()
    shape = shape or tuple(r["input_shape"])
    x = torch.randn(3, *shape, generator=torch.Generator().manual_seed(5))  # another batch size
    with torch.inference_mode():
        want = model(x).numpy()
    got = _load_and_run(fmt, out, x)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()
    assert set(r["latency_ms"]) == {1, 8}
    assert all(v["pytorch"] > 0 and v["exported"] > 0 for v in r["latency_ms"].values())


def test_the_cli_prints_the_error_and_both_latencies(models, tmp_path, capsys):
    path, _ = models["resnet"]
    out = tmp_path / "m.pt2"
    assert main(["export", str(path), "--format", "pt2", "--out", str(out), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["input_shape"] == [3, 32, 32] and r["max_rel_error"] <= 1e-4
    assert sorted(r["latency_ms"]) == ["1", "128"]


@pytest.mark.parametrize("argv, message", [
    (["--format", "tflite"], "unknown --format 'tflite'"),
    (["--format", "onnx", "--input-size", "0"], "--input-size must be >= 1"),
])
def test_bad_options_are_one_line_errors(models, tmp_path, capsys, argv, message):
    out = tmp_path / "m.onnx"
    rc = main(["export", str(models["vgg"][0]), "--out", str(out), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_an_existing_file_is_replaced_only_with_force(models, tmp_path, capsys):
    out = tmp_path / "m.ts"
    out.write_bytes(b"the user's file")
    rc = main(["export", str(models["vgg"][0]), "--format", "torchscript", "--out", str(out)])
    assert rc == 2 and "--force" in capsys.readouterr().err
    assert out.read_bytes() == b"the user's file"
    assert main(["export", str(models["vgg"][0]), "--format", "torchscript", "--out", str(out),
                 "--force"]) == 0
    assert out.read_bytes() != b"the user's file"
    rc = main(["export", str(models["vgg"][0]), "--format", "onnx", "--out", str(tmp_path)])
    assert rc == 2 and "is a folder" in capsys.readouterr().err


def test_an_extension_of_another_format_is_warned_of(models, tmp_path, capsys):
    out = tmp_path / "m.pt2"
    assert main(["export", str(models["vgg"][0]), "--format", "torchscript", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "has the pt2 extension (.pt2), but the file is torchscript (usually .ts)" in err
    assert torch.jit.load(str(out)) is not None
    assert main(["export", str(models["vgg"][0]), "--format", "torchscript", "--out",
                 str(tmp_path / "m.ts")]) == 0
    assert "warning" not in capsys.readouterr().err


def test_force_never_replaces_the_model_being_exported(models, tmp_path, capsys):
    import shutil

    model = tmp_path / "model.pt"
    shutil.copy(models["vgg"][0], model)
    before = model.read_bytes()
    capsys.readouterr()
    rc = main(["export", str(model), "--format", "torchscript", "--out",
               str(tmp_path / "." / "model.pt"), "--force"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "being exported" in err and len(err.splitlines()) == 1, err
    assert model.read_bytes() == before


def test_an_export_killed_midway_leaves_a_file_the_next_export_removes(models, tmp_path):
    """kill -9 runs no cleanup: a dead exporter's temporary file beside --out is removed by
    the next export to that file; a live process's is left alone."""
    import os
    import subprocess
    import sys

    out = tmp_path / "m.onnx"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    torn = tmp_path / f".m.onnx.{dead}.tmp.onnx"
    live = tmp_path / f".m.onnx.{os.getppid()}.tmp.onnx"
    for f in (torn, live):
        f.write_bytes(b"half a model")
    export_model(models["vgg"][0], "onnx", out, latency_batches=(1,))
    assert not torn.exists() and live.exists() and out.stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, live.name])


def test_an_export_that_disagrees_with_pytorch_is_not_written(models, tmp_path, monkeypatch):
    """The check is a gate, not a printout: an exported file whose outputs differ from
    PyTorch's (here its runner is made to add noise) is refused and nothing is written."""
    import alphaprune.export as export

    real = export._runner

    def noisy(fmt, path):
        run = real(fmt, path)
        return lambda x: run(x) + 0.5 * np.abs(run(x)).max()

    monkeypatch.setattr(export, "_runner", noisy)
    path, _ = models["user"]
    out = tmp_path / "m.ts"
    with pytest.raises(export.UserError, match=r"disagrees with PyTorch \(max relative error "
                                               r"5\.0e-01.*was not written"):
        export_model(path, "torchscript", out)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    monkeypatch.setattr(export, "_runner", lambda fmt, p: lambda x: real(fmt, p)(x) * np.nan)
    with pytest.raises(export.UserError, match=r"max relative error nan"):
        export_model(path, "torchscript", out)
    assert not out.exists()


def test_force_never_replaces_what_is_not_a_regular_file(models, tmp_path, capsys):
    """A FIFO (or a device such as /dev/null) named as --out is refused even with --force:
    replacing it would swap a system file for the export."""
    import os

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    rc = main(["export", str(models["vgg"][0]), "--format", "torchscript", "--out", str(fifo),
               "--force"])
    err = capsys.readouterr().err
    assert rc == 2 and "is not a regular file" in err and len(err.strip().splitlines()) == 1
    assert fifo.is_fifo()


def test_a_file_another_writer_made_during_the_export_is_kept(models, tmp_path, monkeypatch,
                                                             capsys):
    """Without --force the export lands only where nothing is at that moment: a file another
    process wrote after the check stays, and the export says so."""
    import alphaprune.export as export_mod

    out = tmp_path / "m.ts"
    real = export_mod._write

    def racing(model, fmt, example, path):
        real(model, fmt, example, path)
        out.write_bytes(b"the other writer's")

    monkeypatch.setattr(export_mod, "_write", racing)
    rc = main(["export", str(models["vgg"][0]), "--format", "torchscript", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and "appeared while exporting" in err
    assert out.read_bytes() == b"the other writer's"
    assert [p.name for p in tmp_path.iterdir()] == ["m.ts"]  # no temporary file left


def test_an_input_the_model_cannot_take_is_one_line(models, tmp_path, capsys):
    """A model whose head reads a flattened map of its training size cannot take another
    size: one line naming the shape and the fix, in every format, nothing written (the
    exporters printed tracebacks and colour codes); a pooled head takes any size."""
    assert main(["export", str(models["user"][0]), "--format", "onnx", "--out",
                 str(tmp_path / "u.onnx"), "--input-size", "8"]) == 0
    capsys.readouterr()
    flat = tmp_path / "flat.pt"

    class Flat(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 * 20 * 20, 5)

        def forward(self, x):
            return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))

    save_model(flat, Flat().eval(), GRAPH_ARCH, [0.5] * 3, [0.25] * 3, list("abcde"),
               {"input_shape": [3, 20, 20]})
    for fmt in FORMATS:
        rc = main(["export", str(flat), "--format", fmt, "--out", str(tmp_path / f"f.{fmt}"),
                   "--input-size", "32"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1, err
        assert "fails on inputs of shape (3, 32, 32)" in err and "drop --input-size" in err
        assert "\x1b[" not in err and not (tmp_path / f"f.{fmt}").exists()


def test_without_hard_links_the_export_still_lands_and_never_replaces(models, tmp_path,
                                                                     monkeypatch, capsys):
    """A file system without hard links (FAT, SMB, some FUSE mounts): the name is claimed
    with an exclusive create, then the export renamed over the claim."""
    import errno
    import os

    def no_links(src, dst):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    out = tmp_path / "m.ts"
    assert main(["export", str(models["vgg"][0]), "--format", "torchscript", "--out", str(out)]) == 0
    assert torch.jit.load(str(out)) is not None
    assert [p.name for p in tmp_path.iterdir()] == ["m.ts"]
    from alphaprune.atomic import publish

    tmp = tmp_path / ".x.tmp"
    tmp.write_bytes(b"new")
    with pytest.raises(FileExistsError):  # the exclusive create refuses an existing name
        publish(tmp, out, replace=False)
    assert out.read_bytes() != b"new"
