"""Latency of the fused model as a function of the unit widths, from a per-layer table.

Every conv or linear whose size a unit width sets is timed on this machine at a small grid
of input and output widths (multiples of ``round_to`` between an eighth and all of its
channels), and a cost model ``a + b*cin*cout + c*cout + d*cin`` with non-negative terms is
fitted to the grid (least squares): the multiply-accumulates, the output's and the input's
memory traffic. Non-negative terms keep the prediction monotone in every width, which the
width solver's bisection relies on, however noisy single timings are. A unit's own layer is
timed with what follows it and scales with its width (BatchNorm, the activation, pooling
modules and pooling functions with constant arguments), so the memory traffic of those ops
is counted too; a depthwise or grouped conv cut with a unit is timed the same way (whole
groups: as many input as output channels), with its own BatchNorm and activation. A layer
that only consumes a unit is timed alone. The rest of the network (layers no width
touches) is the whole model's measured latency minus the table's value at full width, a
constant. The table is keyed by the machine (CPU model, architecture), the torch version,
the thread count and the batch size, cached on disk (``<cache>/latency/<key>.json``) and
reused across runs: another machine, torch or thread count measures anew.

The prediction only ranks widths for the solver; the fused model is timed against the
original at the end of the run, and that measurement is what is reported.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import platform
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.fx as fx
import torch.nn as nn

from alphaprune.allocator import keep_freed_memory
from alphaprune.atomic import atomic_write_text
from alphaprune.blend.widths import unit_step
from alphaprune.data.cache import cache_dir_default
from alphaprune.graph.cost import CostModel, _in, _out
from alphaprune.graph.trace import shape_of
from alphaprune.graph.units import POOL_FUNCTIONS, POOL_MODULES, Structure, group_width, is_activation
from alphaprune.openmp import wait_policy
from alphaprune.report.size import measure_latency

__all__ = ["LatencyModel", "machine_key", "time_ms"]

_GRID = (0.125, 0.25, 0.5, 0.75, 1.0)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_key(batch: int, threads: int | None = None) -> dict:
    """What a latency table is valid for: CPU, architecture, torch, threads, batch size, the
    allocator's setting (:mod:`alphaprune.allocator`), which every timing sets first, and
    how long waiting threads spin (:mod:`alphaprune.openmp`)."""
    return {"cpu": _cpu_name(), "machine": platform.machine(), "torch": torch.__version__,
            "threads": threads or torch.get_num_threads(), "batch": batch,
            "allocator": keep_freed_memory(), "omp_wait": wait_policy()}


def time_ms(model: nn.Module, input_shape, batch: int, channels_last: bool = True) -> float:
    """Median ms per forward pass (:func:`alphaprune.report.size.measure_latency`)."""
    return measure_latency(model, input_shape, batch, repeats=15 if batch == 1 else 9,
                           warmup=3, channels_last=channels_last) * 1e3


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on ``path``'s sidecar ``.lock`` file for the block (none where the
    platform has no ``fcntl``: the merge still keeps all but a simultaneous writer's)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
        except OSError:  # a file system without locks (some NFS, FUSE): merge unlocked
            yield
            return
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class LatencyModel:
    """Predicted ms per batch of the fused model for any unit widths (module docstring)."""

    def __init__(self, structure: Structure, model: nn.Module, input_shape, batch: int = 1,
                 round_to: int = 8, cache_dir=None):
        self.key = machine_key(batch)
        self.batch, self.round_to = batch, round_to
        self.path = Path(cache_dir or cache_dir_default()) / "latency" / f"{_digest(self.key)}.json"
        self.table = self._read()
        self.measured = 0  # entries timed by this instance (0: all came from the cache)
        cost = CostModel(structure)
        self.base_widths, self.groups = cost.base_widths, cost.groups
        gm = structure.gm
        inputs = {n.target: shape_of(n.args[0]) for n in gm.graph.nodes
                  if n.op == "call_module" and n.target in cost.layers}
        tails = {name: tail for u in structure.units if u.kind != "stream"
                 for name, tail in _tails(gm, u).items()}
        self.layers = []
        for name, lay in cost.layers.items():
            m = lay.module
            if not isinstance(m, (nn.Conv2d, nn.Linear)) or inputs.get(name) is None:
                continue
            sig = {**_signature(m, inputs[name]), "tail": [repr(t) for t in tails.get(name, [])]}
            self.layers.append((sig, lay, tails.get(name, [])))
        self.coefs = [self._fit(sig, lay, t) for sig, lay, t in self.layers]
        full = self.layers_ms(self.base_widths)
        # the input size is part of it: the same layers run on other images take another time
        whole = self._lookup({"whole": _digest(repr(model)), "shape": list(input_shape)},
                             lambda: time_ms(model, input_shape, batch))
        self.rest = max(0.0, whole - full)
        self._write()

    # -- the table -----------------------------------------------------------------------
    def _read(self) -> dict:
        """This machine's cached timings; a file that is not such a table is ignored, and an
        entry that is not a finite positive time is measured again."""
        try:
            blob = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not (isinstance(blob, dict) and blob.get("key") == self.key
                and isinstance(blob.get("entries"), dict)):
            return {}
        return {k: float(v) for k, v in blob["entries"].items()
                if type(v) in (int, float) and math.isfinite(v) and v > 0}

    def _write(self) -> None:
        """Add this run's timings to the table on disk: read again and merged under a lock,
        so runs measuring side by side keep each other's entries."""
        if not self.measured:
            return
        try:
            with _locked(self.path):
                merged = {**self._read(), **self.table}
                atomic_write_text(self.path, json.dumps({"key": self.key, "entries": merged}))
        except OSError as e:  # the table is a cache: the run goes on, measuring again next time
            print(f"[latency] cannot write the timing cache {self.path} ({e.strerror or e}); "
                  "the next run measures again", file=sys.stderr, flush=True)

    def _lookup(self, entry: dict, measure) -> float:
        k = json.dumps(entry, sort_keys=True)
        if k not in self.table:
            self.table[k] = measure()
            self.measured += 1
        return self.table[k]

    # -- prediction ----------------------------------------------------------------------
    def _grid(self, base: int, group: int = 1) -> list[int]:
        step = unit_step(base, self.round_to, group)
        pts = {max(step, min(base, step * round(base * r / step))) for r in _GRID}
        return sorted(pts | {step, base})

    def _in_grid(self, lay) -> list[int]:
        """The input sizes a layer is timed at: its unit's width grid (times the inputs per
        channel), or for a layer several units feed (after a cat) a grid of its whole input."""
        if len(lay.ins) == 1 and lay.in_fixed == 0:
            unit, spatial = lay.ins[0]
            return [g * spatial for g in self._grid(self.base_widths[unit], self.groups[unit])]
        return self._grid(lay.cin(self.base_widths))

    def _at(self, sig: dict, tail: list, cin: int, cout: int) -> float:
        return self._lookup({**sig, "cin": cin, "cout": cout},
                            lambda: time_ms(_block(sig, tail, cin, cout), _in_shape(sig, cin),
                                            self.batch, channels_last=sig["kind"] == "conv"))

    def _fit(self, sig: dict, lay, tail: list) -> list[float]:
        """Non-negative least-squares coefficients of the layer's cost model on its grid."""
        from scipy.optimize import nnls

        m = lay.module
        gi = [_in(m)] if not lay.ins else self._in_grid(lay)
        go = [_out(m)] if lay.out_unit is None else self._grid(self.base_widths[lay.out_unit],
                                                               self.groups[lay.out_unit])
        pts = [(i, o) for i in gi for o in go if i == o or _group_width(sig) is None]
        a = np.array([_features(i, o) for i, o in pts], dtype=float)
        y = np.array([self._at(sig, tail, i, o) for i, o in pts])
        scale = a.max(axis=0)  # columns of one size, for a well-conditioned fit
        coef, _ = nnls(a / scale, y)
        return list(coef / scale)

    def _layer_ms(self, k: int, lay, widths: Sequence[int]) -> float:
        cout = _out(lay.module) if lay.out_unit is None else widths[lay.out_unit]
        return float(np.dot(self.coefs[k], _features(lay.cin(widths), cout)))

    def layers_ms(self, widths: Sequence[int]) -> float:
        """Predicted ms of the layers the widths size (the table alone, no constant)."""
        return sum(self._layer_ms(k, lay, widths) for k, (_, lay, _) in enumerate(self.layers))

    def __call__(self, widths: Sequence[int]) -> float:
        """Predicted ms per batch of ``batch`` images with these unit widths."""
        return self.rest + self.layers_ms(widths)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:20]


def _signature(m: nn.Module, in_shape) -> dict:
    if isinstance(m, nn.Conv2d):
        sig = {"kind": "conv", "k": list(m.kernel_size), "stride": list(m.stride),
               "padding": list(m.padding) if not isinstance(m.padding, str) else m.padding,
               "dilation": list(m.dilation), "bias": m.bias is not None,
               "hw": list(in_shape[2:4])}
        if m.groups > 1:  # only a unit's own change width: whole groups, in = out
            sig["depthwise"] = True
            if group_width(m) > 1:
                sig["group_width"] = group_width(m)
        return sig
    sig = {"kind": "linear", "bias": m.bias is not None}
    if len(in_shape) > 2:  # a token-wise linear: (N, H, W, C), timed on as many positions
        sig["tokens"] = list(in_shape[1:-1])
    return sig


def _act(gm, n) -> nn.Module:
    """An activation node's module, or a ReLU standing in for a function."""
    return gm.get_submodule(n.target) if n.op == "call_module" else nn.ReLU()


class _PoolCall(nn.Module):
    """A pooling function the graph calls (``F.max_pool2d(x, 2)``), with its constant
    arguments, as a module the table can time and key by its repr."""

    def __init__(self, fn, args, kwargs):
        super().__init__()
        self.fn, self.args, self.kwargs = fn, tuple(args), dict(kwargs)

    def forward(self, x):
        return self.fn(x, *self.args, **self.kwargs)

    def extra_repr(self) -> str:
        return f"{self.fn.__name__}, args={self.args}, kwargs={self.kwargs}"


def _pool(gm, n) -> nn.Module | None:
    """A pooling node as a module: its own, or its function call with constant arguments
    (None for anything else, or for a call whose arguments come from the graph)."""
    if n.op == "call_module":
        m = gm.get_submodule(n.target)
        return m if isinstance(m, POOL_MODULES) else None
    if n.op != "call_function" or n.target not in POOL_FUNCTIONS:
        return None
    from_graph: list[fx.Node] = []  # nodes anywhere in its arguments, nested ones too
    fx.node.map_arg((n.args[1:], dict(n.kwargs)), from_graph.append)
    if from_graph:
        return None
    return _PoolCall(n.target, n.args[1:], n.kwargs)


class _Beside(nn.Module):
    """A unit's taps (its max-pooled paths beside its output): each runs on the output,
    which passes on unchanged, so that the table times them with the unit."""

    def __init__(self, paths: list[nn.Module]):
        super().__init__()
        self.paths = nn.ModuleList(paths)

    def forward(self, x):
        for p in self.paths:
            p(x)
        return x


def _tails(gm, unit) -> dict[str, list[nn.Module]]:
    """What follows each layer a unit's width sizes and scales with it, by layer name: after
    the unit's own layer its BatchNorm (as a template), its activation and the pooling
    (modules or functions) up to the first depthwise conv cut with it (``unit.tied``);
    after each such depthwise conv its own BatchNorm, activation and pooling, up to the
    next one; the unit's taps after the last of them."""
    own: list[nn.Module] = [gm.get_submodule(unit.bn)] if unit.bn is not None else []
    tails = {unit.name: own + [_act(gm, unit.act)]}
    cur = tails[unit.name]
    for n in unit.post:
        m = gm.get_submodule(n.target) if n.op == "call_module" else None
        if n.target in unit.tied and isinstance(m, nn.Conv2d):
            cur = tails[n.target] = []
        elif (p := _pool(gm, n)) is not None:
            cur.append(p)
        elif n.target in unit.tied and isinstance(m, nn.BatchNorm2d):
            cur.append(m)
        elif cur is not tails[unit.name] and is_activation(gm, n):
            cur.append(_act(gm, n))
    taps = [[p for n in tap if (p := _pool(gm, n)) is not None] for tap in unit.taps]
    if any(taps):
        cur.append(_Beside([nn.Sequential(*t) for t in taps if t]))
    return tails


def _block(sig: dict, tail: list[nn.Module], cin: int, cout: int) -> nn.Module:
    """The layer at ``cin -> cout`` and its tail, freshly built, to be timed."""
    if sig["kind"] == "conv":
        gw = _group_width(sig)
        layer = nn.Conv2d(cin, cout, tuple(sig["k"]), tuple(sig["stride"]),
                          sig["padding"] if isinstance(sig["padding"], str) else tuple(sig["padding"]),
                          tuple(sig["dilation"]), groups=1 if gw is None else cout // gw,
                          bias=sig["bias"])
    else:
        layer = nn.Linear(cin, cout, bias=sig["bias"])
    mods = [layer]
    for t in tail:
        if isinstance(t, nn.modules.batchnorm._BatchNorm):
            mods.append(type(t)(cout))
        else:
            mods.append(copy.deepcopy(t))
    return nn.Sequential(*mods)


def _group_width(sig: dict) -> int | None:
    """A depthwise or grouped conv's channels per group (1: depthwise); None for any other
    layer."""
    return sig.get("group_width", 1) if sig.get("depthwise") else None


def _in_shape(sig: dict, cin: int) -> tuple[int, ...]:
    return (cin, *sig["hw"]) if sig["kind"] == "conv" else (*sig.get("tokens", ()), cin)


def _features(cin: int, cout: int) -> list[float]:
    return [1.0, float(cin * cout), float(cout), float(cin)]
