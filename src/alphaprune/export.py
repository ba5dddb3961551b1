"""``alphaprune export``: a model file as ONNX, TorchScript or a ``torch.export`` program,
checked numerically against PyTorch and timed beside it.

The exported model takes any batch size (the batch dimension is dynamic). The check runs
the exported file, as a user would load it, on seeded random inputs at two batch sizes and
reports the largest error relative to the largest PyTorch output. Latency is measured the
same way for both (:func:`alphaprune.report.size.measure_latency`'s protocol: warm-up,
interleaved rounds, medians).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from alphaprune.allocator import allocator_state, keep_freed_memory
from alphaprune.atomic import publish, temp_path
from alphaprune.errors import UserError, first_line
from alphaprune.modelfile import load_checkpoint
from alphaprune.openmp import wait_policy
from alphaprune.scope import isolated

__all__ = ["FORMATS", "export_model", "input_shape_of"]

FORMATS = ("onnx", "torchscript", "pt2")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".ts", "pt2": ".pt2"}
# the most the exported outputs may differ from PyTorch's, relative to the largest output:
# float rounding differs between runtimes by far less; more means other arithmetic
MAX_REL_ERROR = 1e-3


def input_shape_of(mf, input_size: int | None) -> tuple[int, int, int]:
    """(C, H, W) of one input: recorded in the model file, else ``input_size`` (square)."""
    recorded = mf.meta.get("input_shape")
    if input_size is None and recorded:
        return tuple(int(v) for v in recorded)
    side = 32 if input_size is None else input_size
    if side < 1:
        raise UserError(f"--input-size must be >= 1, got {side}")
    return int(mf.kwargs.get("in_channels", 3)), side, side


def _check_out(out: Path, force: bool) -> None:
    if out.is_dir():
        raise UserError(f"--out {out} is a folder: pass a file path such as model.onnx")
    if out.exists() and not out.is_file():  # a device, a FIFO: --force must not replace it
        raise UserError(f"--out {out} is not a regular file: pass a file path such as model.onnx")
    if (out.exists() or out.is_symlink()) and not force:  # a dangling link too
        raise UserError(f"{out} exists: pass --force to replace it, or another --out")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: the folder {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK):
        raise UserError(f"--out {out}: the folder {out.parent} is not writable")


def _check_input(model, shape, model_path, input_size) -> None:
    """Run the model once on inputs of ``shape``: an input it cannot take is one line
    here, not a traceback from inside an exporter."""
    try:
        with torch.inference_mode():
            model(torch.zeros(1, *shape))
    except (RuntimeError, ValueError, IndexError, TypeError) as e:
        if isinstance(e, torch.OutOfMemoryError):
            raise
        hint = ("drop --input-size to use the size it records" if input_size is not None else
                "pass --input-size with the size it was trained at")
        raise UserError(f"{model_path} fails on inputs of shape {tuple(shape)} "
                        f"({type(e).__name__}: {first_line(e, 160)}): if it was trained at "
                        f"another size, {hint}") from None


def _write(model, fmt: str, example: torch.Tensor, path: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=65536)
    if fmt == "torchscript":
        torch.jit.trace(model, example).save(str(path))
        return
    if fmt == "pt2":
        ep = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        torch.export.save(ep, str(path))
        return
    # the exporter narrates every pass and notes that torchvision's ops are absent
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # one self-contained file: external weight data would name the temporary file
        torch.onnx.export(model, (example,), str(path), dynamo=True, external_data=False,
                          input_names=["input"], output_names=["logits"],
                          dynamic_shapes=({0: batch},))


def _runner(fmt: str, path: Path):
    """A callable ``x (numpy) -> logits (numpy)`` over the exported file."""
    if fmt == "onnx":
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise UserError("checking an ONNX export needs onnxruntime: pip install "
                            "'alphaprune[export]'") from e
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return lambda x: sess.run(None, {name: x})[0]
    module = torch.jit.load(str(path)) if fmt == "torchscript" else torch.export.load(str(path)).module()

    @torch.inference_mode()
    def run(x):
        return module(torch.from_numpy(x)).numpy()
    return run


def _median_ms(fn, x, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _latency(torch_fn, exported_fn, shape, batch: int, rounds: int = 3) -> dict:
    """Median ms per batch of PyTorch and the export, interleaved rounds after a warm-up."""
    keep_freed_memory()
    x = np.random.default_rng(0).standard_normal((batch, *shape)).astype(np.float32)
    repeats = 20 if batch == 1 else 5
    for fn in (torch_fn, exported_fn):
        fn(x)
        fn(x)
    samples = {"pytorch": [], "exported": []}
    for _ in range(rounds):
        samples["pytorch"].append(_median_ms(torch_fn, x, repeats))
        samples["exported"].append(_median_ms(exported_fn, x, repeats))
    return {k: statistics.median(v) for k, v in samples.items()}


@isolated
def export_model(model_path: str | os.PathLike, fmt: str, out: str | os.PathLike,
                 force: bool = False, input_size: int | None = None,
                 model_name: str | None = None, model_kwargs: dict | None = None,
                 latency_batches: tuple[int, ...] = (1, 128)) -> dict:
    """Export a model file (or a raw state_dict with ``model_name``) to ``out`` as ``fmt``.

    The file is written atomically (a temporary file in the same folder, then renamed) and
    only after it has been checked. Returns ``{"format", "path", "input_shape",
    "max_rel_error", "latency_ms": {batch: {"pytorch", "exported"}}, "threads"}``.
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown --format '{fmt}': use one of {', '.join(FORMATS)}")
    out = Path(out)
    _check_out(out, force)
    if out.exists() and out.resolve() == Path(model_path).resolve():
        raise UserError(f"--out {out} is the model file being exported: --force would replace "
                        "it; pass another --out")
    mf = load_checkpoint(model_path, model_name, model_kwargs=model_kwargs)
    shape = input_shape_of(mf, input_size)
    model = mf.model.eval()
    gen = torch.Generator().manual_seed(0)
    _check_input(model, shape, model_path, input_size)
    tmp = temp_path(out, SUFFIXES[fmt])
    try:
        try:
            _write(model, fmt, torch.randn(2, *shape, generator=gen), tmp)
        except UserError:
            raise
        except Exception as e:
            raise UserError(f"{fmt} export of {model_path} failed ({type(e).__name__}: "
                            f"{first_line(e, 200)})") from e
        run = _runner(fmt, tmp)
        err = 0.0
        with torch.inference_mode():
            for b in (1, 5):
                x = torch.randn(b, *shape, generator=gen)
                want = model(x).numpy()
                e = float(np.abs(run(x.numpy()) - want).max() / max(np.abs(want).max(), 1e-12))
                err = e if not e <= err else err  # a NaN stays NaN (max would drop it)

            def torch_fn(x):
                return model(torch.from_numpy(x))

            if not err <= MAX_REL_ERROR:  # NaN included
                raise UserError(f"the {fmt} export of {model_path} disagrees with PyTorch (max "
                                f"relative error {err:.1e} on random inputs, more than "
                                f"{MAX_REL_ERROR:.0e}): {out} was not written")
            latency = {b: _latency(torch_fn, run, shape, b) for b in latency_batches}
        try:
            publish(tmp, out, replace=force)
        except FileExistsError:
            raise UserError(f"{out} appeared while exporting (another writer): pass --force to "
                            "replace it, or another --out") from None
    finally:
        tmp.unlink(missing_ok=True)
    return {"format": fmt, "path": str(out), "input_shape": list(shape), "max_rel_error": err,
            "latency_ms": latency, "threads": torch.get_num_threads(),
            "allocator": allocator_state(), "omp_wait": wait_policy()}
