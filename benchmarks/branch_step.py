"""One training step of the branched network, as it ran before and after the changes of
BENCHMARKS.md section 57, timed side by side in one process (medians over rounds):

* ``as_before``: ``A`` applied after the layer's full output, a stream writer's scatter by
  ``index_copy`` (a channels-first stream, and a channels-first gradient into BN'), and a
  unit's layer reading the ``n`` channels of the unit before it;
* ``fold``: ``A`` folded into the layer (``alphaprune.blend.branch.folded``);
* ``layout``: the fold and the layout-keeping scatter (``branch._Scatter``);
* ``now``: those and the feeders: a layer that takes in a unit's ``B n`` reads ``n``
  through ``W B``;
* the original network and the compact network ``fuse`` makes of the branched one: what a
  step of each costs, for reference.

At α = 0 every unit runs its branch; at stochastic α = 0.5 about half do. The first lines
check that the forms give the same outputs and gradients.

    OMP_NUM_THREADS=1 python benchmarks/branch_step.py --checkpoint /tmp/bench/resnet20_e30/model.pt \\
        --widths benchmarks/results/r20_flops50/e30b_s0_widths.json --rounds 7
    OMP_NUM_THREADS=1 python benchmarks/branch_step.py --model vgg16 --width 0.25 --prune 0.65 --rounds 7
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import torch
import torch.nn.functional as F

import alphaprune.blend.branch as branch
from alphaprune.blend import BlendedNet, solve_widths
from alphaprune.blend.fuse import fuse
from alphaprune.blend.init import init_branches
from alphaprune.blend.widths import vgg_counter
from alphaprune.graph.units import find_units
from alphaprune.modelfile import load_model, widths_of
from alphaprune.models import create_model

FOLDED, SCATTER = branch.folded, branch._Scatter


def unfolded(layer, x, A=None, B_in=None):
    """The two calls the fold replaces (the feeders are off in the forms that use it)."""
    assert B_in is None
    return A(layer(x))


class OldScatter:
    """The scatter as it was: ``index_copy`` into fresh zeros."""

    @staticmethod
    def apply(v, idx, n, layout=None):
        return v.new_zeros((v.shape[0], n, *v.shape[2:])).index_copy(1, idx, v)


# (the fold, the scatter, the feeders)
FORMS = {"as_before": (unfolded, OldScatter, False), "fold": (FOLDED, OldScatter, False),
         "layout": (FOLDED, SCATTER, False), "now": (FOLDED, SCATTER, True)}


def _parts(net):
    return [p for u in net.features for p in (u.writers if isinstance(u, branch.StreamUnit) else [u])]


@contextlib.contextmanager
def form(name: str, net):
    fold, scatter, feeders = FORMS[name]
    wired = [p.feeders for p in _parts(net)]
    branch.folded, branch._Scatter = fold, scatter
    for p in _parts(net):
        p.feeders = p.feeders if feeders else []
    try:
        yield
    finally:
        branch.folded, branch._Scatter = FOLDED, SCATTER
        for p, f in zip(_parts(net), wired):
            p.feeders = f


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
    """Largest difference of the outputs and of each gradient, each form against
    ``as_before``, relative to the tensor's largest entry."""
    got = {}
    for name in FORMS:
        with form(name, model):
            torch.manual_seed(0)  # the same stochastic gates
            model.zero_grad(set_to_none=True)
            out = model(x)
            F.cross_entropy(out, y).backward()
            got[name] = {"output": out.detach()} | {
                n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    ref, res = got["as_before"], {}
    for name in ("fold", "layout", "now"):
        rel = {n: float((got[name][n] - ref[n]).abs().max() / ref[n].abs().max().clamp_min(1e-30))
               for n in ref}
        worst = max((n for n in rel if n != "output"), key=rel.get)
        res[name] = {"output_rel": rel["output"], "grad_rel_max": rel[worst], "worst": worst,
                     "same_tensors": got[name].keys() == ref.keys()}
    return res


def _network(a):
    base = load_model(a.checkpoint) if a.checkpoint else create_model(a.model, width=a.width)
    if a.widths:
        spec = json.load(open(a.widths))
        widths, streams = spec["widths"], spec.get("streams", False)
    else:
        widths, streams = solve_widths(widths_of(base), vgg_counter(3, 10), a.prune, 8), False
    net = BlendedNet(find_units(base, torch.randn(2, 3, 32, 32), streams=streams), widths,
                     handover="stochastic")
    init_branches(net, "select")
    compact = fuse(net.set_alpha(0.0).eval())
    original = load_model(a.checkpoint) if a.checkpoint else create_model(a.model, width=a.width)
    cl = torch.channels_last
    return (net.to(memory_format=cl).train(), compact.to(memory_format=cl).train(),
            original.to(memory_format=cl).train(), widths, streams)


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
    net, compact, original, widths, streams = _network(a)
    x = torch.randn(a.batch_size, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (a.batch_size,))
    opts = {m: torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9) for m in (net, compact, original)}
    res = {"source": a.checkpoint or f"{a.model} w{a.width}", "widths": widths, "streams": streams,
           "batch": a.batch_size, "threads": torch.get_num_threads(), "rounds": a.rounds, "steps": a.steps}
    for alpha in (0.0, 0.5):
        net.set_alpha(alpha)
        res[f"alpha{alpha}_agreement"] = agreement(net, x[:16], y[:16])
        runs = {name: (net, name) for name in FORMS}
        runs |= {"original": (original, "now"), "compact": (compact, "now")}
        times = {k: [] for k in runs}
        for rnd in range(a.rounds + 1):  # the first round warms up
            for k, (model, name) in runs.items():
                with form(name, net):
                    t = step_time(model, opts[model], x, y, a.steps)
                if rnd:
                    times[k].append(t)
        med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        res[f"alpha{alpha}"] = {"median_ms": med, "as_before_over_now": med["as_before"] / med["now"],
                                "fold_over_now": med["fold"] / med["now"],
                                "layout_over_now": med["layout"] / med["now"],
                                "rounds_ms": {k: [round(1e3 * t, 1) for t in v] for k, v in times.items()}}
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
