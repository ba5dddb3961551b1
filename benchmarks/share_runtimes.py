"""Speed-up against the FLOP ratio in several runtimes (BENCHMARKS.md section 25): the
original and each pruned model timed side by side in the same runtime, at one batch size
and one thread, freed memory kept (:mod:`alphaprune.allocator`), alternating single passes
(:func:`alphaprune.speedup.alternating_speedup`), medians over several rounds.

Runtimes (``--runtimes``, any of):

- ``eager``: PyTorch eager, channels-last, inference mode (what ``--speedup`` times);
- ``eager-foldbn``: the same with every BatchNorm folded into its conv
  (``torch.fx.experimental.optimization.fuse``);
- ``torchscript``: traced, frozen and ``torch.jit.optimize_for_inference`` (oneDNN
  layouts, conv + BatchNorm + ReLU fused);
- ``onnxruntime``: the ONNX file ``alphaprune export`` writes, run by onnxruntime (one
  intra-op thread, all graph optimisations).

Pruned models: the checkpoint's Torch-Pruning L1 cuts at ``--targets`` (one channel ratio
for every layer; with ``--tp-round-to N`` also the same cuts with Torch-Pruning's
``round_to=N``), with ``--os-uniform`` objective selection's uniform widths at the same
targets (``--flops`` with ``--balance 0``, multiples of 8, the streams whole: the fused
architecture, random weights), and any fused model files given with ``--pruned``.

    OMP_NUM_THREADS=1 python benchmarks/share_runtimes.py /tmp/bench/resnet20/model.pt \\
        --targets 0.5,0.75 --pruned /tmp/bench/sp_r20_s16_0/model.pt --rounds 3
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.fx.experimental.optimization import fuse

from alphaprune.allocator import allocator_state, keep_freed_memory
from alphaprune.baselines.tp_l1 import torch_pruning_l1
from alphaprune.blend.fuse import fused_architecture
from alphaprune.blend.widths import solve_widths
from alphaprune.errors import Unreachable
from alphaprune.export import _runner, _write
from alphaprune.graph import CostModel, find_units
from alphaprune.modelfile import load_checkpoint
from alphaprune.models.user import GRAPH_ARCH
from alphaprune.report.size import count_flops
from alphaprune.speedup import alternating_speedup

RUNTIMES = ("eager", "eager-foldbn", "torchscript", "onnxruntime")


def _timer(fn, x):
    """A zero-argument callable that runs ``fn(x)`` once and returns its seconds."""
    def once() -> float:
        t0 = time.perf_counter()
        fn(x)
        return time.perf_counter() - t0
    return once


def _eager(model, x):
    m = copy.deepcopy(model).eval().to(memory_format=torch.channels_last)
    xc = x.contiguous(memory_format=torch.channels_last)

    def run(_):
        with torch.inference_mode():
            m(xc)
    return run


def _torchscript(model, x):
    with torch.no_grad():
        m = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(
            copy.deepcopy(model).eval(), x)))

    def run(_):
        with torch.no_grad():
            m(x)
    return run


def _onnxruntime(model, x, folder: Path, name: str):
    path = folder / f"{name}.onnx"
    _write(copy.deepcopy(model).eval(), "onnx", x[:1], path)
    run, xn = _runner("onnx", path), x.numpy()
    return lambda _: run(xn)


def runner(runtime: str, model, x, folder: Path, name: str):
    """A callable that runs ``model`` on ``x`` once in ``runtime``."""
    if runtime == "eager":
        return _eager(model, x)
    if runtime == "eager-foldbn":
        return _eager(fuse(copy.deepcopy(model).eval()), x)
    if runtime == "torchscript":
        return _torchscript(model, x)
    return _onnxruntime(model, x, folder, name)


def _models(a, original, arch, shape):
    base = count_flops(original, shape)
    targets = [float(t) for t in a.targets.split(",") if t]
    out = {f"TP L1 {t:.0%} FLOPs": torch_pruning_l1(
        original, base * (1 - t), shape, "flops").eval() for t in targets}
    for t in targets if a.tp_round_to else []:
        out[f"TP L1 {t:.0%} FLOPs, round_to {a.tp_round_to}"] = torch_pruning_l1(
            original, base * (1 - t), shape, "flops", round_to=a.tp_round_to).eval()
    if a.os_uniform:
        structure = find_units(copy.deepcopy(original), torch.zeros(2, *shape))
        cost = CostModel(structure)
        for t in targets:
            try:
                widths = solve_widths(cost.base_widths, cost.flops, t, 8, 0.0, option="--flops")
            except Unreachable as e:  # the streams whole: a CIFAR ResNet keeps about 30%
                print(f"os uniform {t:.0%} FLOPs: skipped ({e})")
                continue
            out[f"os uniform {t:.0%} FLOPs"] = fused_architecture(structure, widths, arch).eval()
    for path in a.pruned:
        out[path] = load_checkpoint(path).model.eval()
    return base, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("checkpoint")
    p.add_argument("--targets", default="0.5,0.75")
    p.add_argument("--pruned", nargs="*", default=[])
    p.add_argument("--os-uniform", action="store_true")
    p.add_argument("--tp-round-to", type=int, default=None)
    p.add_argument("--runtimes", default=",".join(RUNTIMES))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--batch", type=int, default=128)
    a = p.parse_args()
    runtimes = a.runtimes.split(",")
    if not set(runtimes) <= set(RUNTIMES):
        p.error(f"--runtimes: choose from {','.join(RUNTIMES)}, got {a.runtimes}")
    torch.set_num_threads(1)
    keep_freed_memory()
    torch.manual_seed(0)
    mf = load_checkpoint(a.checkpoint)
    original, shape = mf.model.eval(), (3, 32, 32)
    base, models = _models(a, original, None if mf.arch == GRAPH_ARCH else mf.arch, shape)
    x = torch.randn(a.batch, *shape)
    got = {(r, n): [] for r in runtimes for n in models}
    with tempfile.TemporaryDirectory() as tmp:
        runs = {r: {n: runner(r, m, x, Path(tmp), f"{r}{i}")
                    for i, (n, m) in enumerate([("original", original), *models.items()])}
                for r in runtimes}
        for fns in runs.values():  # warm-up: first passes compile, allocate and tune
            for fn in fns.values():
                for _ in range(3):
                    fn(x)
        for rnd in range(a.rounds):
            for r in runtimes:
                for n in models:
                    s, ms_o, ms_m = alternating_speedup(
                        _timer(runs[r]["original"], x), _timer(runs[r][n], x), a.pairs)
                    got[r, n].append((s, ms_o, ms_m))
                    print(f"round {rnd} {r} {n}: {s:.3f}x ({ms_o:.1f} / {ms_m:.1f} ms)",
                          flush=True)
    print(f"\n{a.checkpoint}, batch {a.batch}, one thread, allocator {allocator_state()}, "
          f"medians over {a.rounds} rounds of {a.pairs} triples")
    print("| pruned model | FLOP ratio | runtime | original ms | pruned ms | speed-up "
          "| share of the FLOP ratio |")
    print("|---|---|---|---|---|---|---|")
    for n, m in models.items():
        ratio = base / count_flops(m, shape)
        for r in runtimes:
            s, o, q = (statistics.median(v) for v in np.array(got[r, n]).T)
            print(f"| {n} | {ratio:.2f} | {r} | {o:.1f} | {q:.1f} | {s:.2f}x | "
                  f"{s / ratio:.2f} |")


if __name__ == "__main__":
    main()
