"""A branch-only unit computes ``A(conv(x))`` as one conv with ``A`` folded into the
conv's weight (``alphaprune.blend.branch.folded``): time a training step of the branched
network with the fold against the two calls it replaces, side by side in one process.

For each hand-over point (α = 0: every unit on its branch; stochastic α = 0.5: about half),
rounds alternate the two forms on the same network and batch; medians over rounds. The
first lines check that the two forms give the same outputs and gradients.

    OMP_NUM_THREADS=1 python benchmarks/fold_step.py --checkpoint /tmp/bench/resnet20_e30/model.pt \\
        --widths benchmarks/results/r20_flops50/e30b_s0_widths.json --rounds 7
    OMP_NUM_THREADS=1 python benchmarks/fold_step.py --model vgg16 --width 0.25 --prune 0.65 --rounds 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

import alphaprune.blend.branch as branch
from alphaprune.blend import BlendedNet, solve_widths
from alphaprune.blend.init import init_branches
from alphaprune.blend.widths import vgg_counter
from alphaprune.graph.units import find_units
from alphaprune.modelfile import load_model, widths_of
from alphaprune.models import create_model

FOLDED = branch.folded


def unfolded(layer, A, x):
    """The two calls the fold replaces."""
    return A(layer(x))


def step_time(model, opt, x, y, steps: int) -> float:
    """Median seconds of one SGD step (forward, backward, update)."""
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def agreement(model, x, y) -> dict:
    """Largest difference of the outputs and of each gradient, fold against none, relative
    to the tensor's largest entry."""
    got = {}
    for name, fn in (("folded", FOLDED), ("unfolded", unfolded)):
        branch.folded = fn
        torch.manual_seed(0)  # the same stochastic gates
        model.zero_grad(set_to_none=True)
        out = model(x)
        F.cross_entropy(out, y).backward()
        got[name] = {"output": out.detach()} | {
            n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    branch.folded = FOLDED
    a, b = got["folded"], got["unfolded"]
    rel = {n: float((a[n] - b[n]).abs().max() / b[n].abs().max().clamp_min(1e-30)) for n in b}
    worst = max((n for n in rel if n != "output"), key=rel.get)
    return {"output_rel": rel["output"], "grad_rel_max": rel[worst], "worst": worst,
            "worst_abs_max": float(b[worst].abs().max()), "tensors": len(rel),
            "same_tensors": a.keys() == b.keys()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", help="an alphaprune model file (else --model)")
    p.add_argument("--widths", help="a run's widths.json (else --prune of the parameters)")
    p.add_argument("--model", default="vgg16")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--prune", type=float, default=0.65)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=3, help="timed steps per form and round")
    a = p.parse_args()
    torch.manual_seed(0)
    base = load_model(a.checkpoint) if a.checkpoint else create_model(a.model, width=a.width)
    example = torch.randn(2, 3, 32, 32)
    if a.widths:
        spec = json.load(open(a.widths))
        widths, streams = spec["widths"], spec.get("streams", False)
    else:
        widths, streams = solve_widths(widths_of(base), vgg_counter(3, 10), a.prune, 8), False
    net = BlendedNet(find_units(base, example, streams=streams), widths, handover="stochastic")
    init_branches(net, "select")
    net = net.to(memory_format=torch.channels_last).train()
    x = torch.randn(a.batch_size, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (a.batch_size,))
    opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)
    res = {"source": a.checkpoint or f"{a.model} w{a.width}", "widths": widths, "streams": streams,
           "batch": a.batch_size, "threads": torch.get_num_threads(), "rounds": a.rounds,
           "steps": a.steps}
    for alpha in (0.0, 0.5):
        net.set_alpha(alpha)
        res[f"alpha{alpha}_agreement"] = agreement(net, x[:16], y[:16])
        times = {"folded": [], "unfolded": []}
        for fn in (FOLDED, unfolded):  # warm-up
            branch.folded = fn
            step_time(net, opt, x, y, 2)
        for _ in range(a.rounds):
            for name, fn in (("folded", FOLDED), ("unfolded", unfolded)):
                branch.folded = fn
                times[name].append(step_time(net, opt, x, y, a.steps))
        branch.folded = FOLDED
        med = {k: statistics.median(v) for k, v in times.items()}
        res[f"alpha{alpha}"] = {"folded_ms": 1e3 * med["folded"], "unfolded_ms": 1e3 * med["unfolded"],
                                "unfolded_over_folded": med["unfolded"] / med["folded"],
                                "folded_rounds_ms": [round(1e3 * t, 1) for t in times["folded"]],
                                "unfolded_rounds_ms": [round(1e3 * t, 1) for t in times["unfolded"]]}
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
