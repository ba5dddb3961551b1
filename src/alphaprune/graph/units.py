"""Prunable units and the reason every other layer is not one, read off the traced graph.

A **unit** is a ``Conv2d`` (groups = 1) or ``Linear`` (on (N, C), or **token-wise** on
the last dim of (N, ..., C): ConvNeXt's MLPs on channels-last maps), optionally followed
by its BatchNorm (not after a token-wise linear: BatchNorm1d would normalise dim 1), then
an elementwise activation, then any of max/avg pooling, dropout or identity and, for a
conv, **depthwise or grouped convs** from the unit's channels to as many (groups =
channels: one filter per channel; fewer groups: each group's filters read its own
channels, as in a ResNeXt or RegNet block) each with its optional BatchNorm and
activation, every step the only user of the one before. Such a conv's channels are the
unit's own (its ``tied`` layers): the branch runs a narrow copy of it, so a MobileNet's
pointwise conv and the depthwise conv after it are cut together. A grouped conv is cut
whole groups at a time (the unit's ``group``: channels per group), so its narrow copy
keeps the group width and has fewer groups. A **squeeze-and-excitation** block on the
unit's channels (``x * gate(expand(act(reduce(pool(x)))))``: an average to 1x1, two 1x1
convs, a sigmoid or hard sigmoid) is cut with it too (:class:`Excite`): ``reduce`` reads
the unit's channels and ``expand`` writes them, and the branch runs both narrowed. Its
output must feed only **consumers that absorb the branch's B** on their input side: a
``Conv2d`` with groups = 1, a ``Linear`` on a 2-d input or on the features a token-wise
linear unit writes, a ``Linear`` after a flatten (of
a map of any size: the consumer absorbs ``B`` (x) ``I_HW``) or after a global mean over H
and W. A unit may have several consumers, and may reach them through layers that commute with ``B`` (average
pooling, dropout, identity) and through **channel concatenations** (``torch.cat`` on dim
1, an Inception block's): the consumer then absorbs ``B`` on the unit's slice of its
input (its ``offset``), and the other slices keep theirs. A layer whose output is chunked
or split on its channels (a YOLOv8 C2f's or a CSPNet's) is first rewritten into one layer
per part (:func:`~alphaprune.graph.chunks.split_chunked_layers`): each part is then a
unit of its own. A max pool of a concatenation is
first split into one pool per part (:func:`~alphaprune.graph.trace.split_max_pools`), so
that each part's pool ends its unit's chain (a max pool does not commute with a trained
``B``). A unit's output that feeds max pooling *and* other layers (a GoogLeNet block's
input, read by three convs and by its pooling branch) has a **tap** for each max-pooled
path: the pool (and any pooling or dropout after it) runs on each path of the unit before
``B`` (:class:`~alphaprune.blend.branch.UnitTap`), and the consumers it reaches absorb
``B`` as the others do. Everything else is listed with its reason: channels tied by an add
or multiply (a residual stream), grouped or depthwise convs that read no unit (or have
more outputs than inputs), the output layer, a consumer that cannot absorb ``B``, an op
alphaprune does not know.

With ``streams=True`` a **residual stream** (channels tied by additions) becomes one unit
of kind ``"stream"`` as well: every conv that writes into the sums (``conv [-> bn]``, the
**writers**; a writer may end in a squeeze-and-excitation block, an SE-ResNet's, whose
``reduce`` and ``expand`` are then the stream's, as a unit's are), the sums and what
passes their channels on unchanged (an activation that maps 0 to 0, pooling, dropout),
and the layers that read the stream and absorb ``B`` (its consumers). Cutting such a unit
keeps one set of channels in every writer at once, so the dropped channels are zero
everywhere in the stream and the fused network drops them. A **concatenated stream** is
a conv ``[-> bn]`` whose output enters channel concatenations with no activation after it
(a DenseNet's stem, growth convs and transitions: :func:`_cat_streams`): one writer, cut by
the same fixed selection, and consumers that read the cats through their own BatchNorm
(pre-activation, the consumer's ``bn``), an optional activation and a conv without padding
or a global mean and a linear; the fused reader's BatchNorm drops the channels and its
layer takes each dropped channel's constant in its bias.
"""

from __future__ import annotations

import copy
import fnmatch
import math
import operator
from dataclasses import dataclass, field

import torch
import torch.fx as fx
import torch.nn as nn
import torch.nn.functional as F

from alphaprune.errors import UserError
from alphaprune.graph.chunks import split_chunked_layers
from alphaprune.graph.trace import CAT_FUNCTIONS, cat_args, is_max_pool, shape_of, split_max_pools, trace

__all__ = ["Consumer", "Unit", "Excite", "Writer", "Skipped", "Structure", "find_units",
           "has_sums", "is_activation", "group_width", "unit_groups", "keep_whole", "kept_units",
           "kept_layers"]

ACT_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish,
               nn.Mish, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.CELU, nn.SELU, nn.Softplus)
ACT_FUNCTIONS = (F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu, F.hardswish,
                 F.mish, torch.sigmoid, torch.tanh, F.hardtanh, F.selu, F.celu, F.softplus)
ACT_METHODS = ("relu", "relu_", "sigmoid", "tanh")
POOL_MODULES = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
POOL_FUNCTIONS = (F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d)
PASS_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)
PASS_FUNCTIONS = (F.dropout, F.dropout2d)
# channel by channel and linear, so they commute with B: a unit's output may reach its
# consumers through them (max pooling does not commute with a trained B)
AVG_POOL_MODULES = (nn.AvgPool2d, nn.AdaptiveAvgPool2d)
AVG_POOL_FUNCTIONS = (F.avg_pool2d, F.adaptive_avg_pool2d)
TIES = {operator.add: "add", torch.add: "add", operator.iadd: "add", operator.mul: "multiply",
        torch.mul: "multiply", operator.imul: "multiply", torch.cat: "cat", operator.sub: "subtract",
        torch.sub: "subtract", torch.stack: "stack"}
TIE_METHODS = {"add": "add", "add_": "add", "mul": "multiply", "mul_": "multiply", "sub": "subtract"}
# activations with f(0) = 0: a stream's dropped channels stay zero through them
# (not Hardtanh: its bounds may leave 0 out; ReLU6 is checked as its own class)
ZERO_ACT_MODULES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish,
                    nn.Mish, nn.Tanh, nn.CELU, nn.SELU)
ZERO_ACT_FUNCTIONS = (F.relu, torch.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu,
                      F.hardswish, F.mish, torch.tanh, F.selu, F.celu)
ZERO_ACT_METHODS = ("relu", "relu_", "tanh")
# the gate of a squeeze-and-excitation block
GATE_MODULES = (nn.Sigmoid, nn.Hardsigmoid)
GATE_FUNCTIONS = (torch.sigmoid, F.sigmoid, F.hardsigmoid)


@dataclass
class Consumer:
    """A layer that absorbs a unit's ``B`` on its input side."""

    name: str            # qualified module name
    kind: str            # "conv" or "linear"
    spatial: int = 1     # input positions per channel (H*W of a flattened map, else 1)
    offset: int = 0      # the unit's first channel in the consumer's input (after a cat)
    # a concatenated stream's pre-activation reader: the consumer takes the stream in
    # through this BatchNorm (and ``act`` after it), which drops the same channels; each
    # dropped channel's constant act(BN(0)) folds into the consumer's bias
    bn: str | None = None
    act: fx.Node | None = None


@dataclass
class Writer:
    """A conv that writes into a residual stream: ``conv [-> bn] [-> excitation] -> (sum)``
    (an SE-ResNet's block scales its output by a squeeze-and-excitation before the add)."""

    conv: str
    bn: str | None
    excite: Excite | None = None


@dataclass
class Excite:
    """A squeeze-and-excitation block on a unit's channels, ``x * gate(expand(act(reduce(
    pool(x)))))``: ``reduce`` reads the unit's channels, ``expand`` writes them, so the
    branch runs narrow copies of both (the squeezed width stays)."""

    mul: fx.Node                 # the multiply: the block's output, an entry of ``post``
    gate: list[fx.Node]          # pool, reduce, act, expand, gate activation, in order
    reduce: str                  # the 1x1 conv from the unit's channels to the squeezed ones
    expand: str                  # the 1x1 conv back to the unit's channels


@dataclass
class Unit:
    """One prunable unit: ``layer [-> bn] -> act [-> pool/dropout ...]``, or a residual
    stream (kind ``"stream"``: no layer of its own, its ``writers`` instead)."""

    name: str                    # the conv or linear, as in named_modules(); "stream@<conv>"
    kind: str                    # "conv", "linear" or "stream"
    width: int                   # its output channels
    bn: str | None               # its BatchNorm, if any
    act: fx.Node | None          # the activation node (None for a stream)
    post: list[fx.Node]          # pool/dropout/identity nodes after the activation
    out: fx.Node | None          # the last node of the unit (None for a stream)
    consumers: list[Consumer] = field(default_factory=list)
    writers: list[Writer] = field(default_factory=list)   # a stream's convs, in graph order
    tied: list[str] = field(default_factory=list)   # depthwise/grouped convs, their BNs, in post
    # max-pooled paths from ``out`` to more consumers, each a chain of nodes (module docstring)
    taps: list[list[fx.Node]] = field(default_factory=list)
    # squeeze-and-excitation blocks in ``post`` (each at its multiply), cut with the unit
    excites: list[Excite] = field(default_factory=list)
    # channels per group of its grouped convs (their least common multiple): the unit is
    # cut whole groups at a time, so its width is a multiple of this
    group: int = 1


@dataclass
class Skipped:
    """A layer that is not a unit, and why."""

    name: str
    reason: str


@dataclass
class Structure:
    """The traced model, its units (in graph order) and every layer that is not one."""

    gm: fx.GraphModule
    units: list[Unit]
    skipped: list[Skipped]
    kept: list[Unit] = field(default_factory=list)   # units --keep holds whole (keep_whole)

    def unit(self, name: str) -> Unit:
        return next(u for u in self.units if u.name == name)

    def __deepcopy__(self, memo: dict) -> Structure:
        """A copy whose units point into the copied graph. Copied one by one, a unit's
        graph nodes would drag their neighbours along, one recursion level per node (a
        GoogLeNet exceeds Python's limit); the graph module copies its graph in a loop."""
        gm = copy.deepcopy(self.gm, memo)
        now = {n.name: n for n in gm.graph.nodes}
        for n in self.gm.graph.nodes:
            memo[id(n)] = now[n.name]
        new = Structure(gm, copy.deepcopy(self.units, memo), copy.deepcopy(self.skipped, memo),
                        copy.deepcopy(self.kept, memo))
        memo[id(self)] = new
        return new


def _mod(gm: fx.GraphModule, n: fx.Node):
    return gm.get_submodule(n.target) if n.op == "call_module" else None


def _is(gm, n: fx.Node, modules=(), functions=(), methods=()) -> bool:
    if n.op == "call_module":
        return isinstance(_mod(gm, n), modules)
    if n.op == "call_function":
        return n.target in functions
    return n.op == "call_method" and n.target in methods


def is_activation(gm, n: fx.Node) -> bool:
    """``n`` applies one of the elementwise activations a unit may end with."""
    return _is(gm, n, ACT_MODULES, ACT_FUNCTIONS, ACT_METHODS)


def _only_input(n: fx.Node, src: fx.Node) -> bool:
    """``src`` is ``n``'s first argument and no other argument is a graph value."""
    rest = list(n.args[1:]) + list(n.kwargs.values())
    return bool(n.args) and n.args[0] is src and not any(isinstance(a, fx.Node) for a in rest)


def _describe(gm, n: fx.Node) -> str:
    if n.op == "call_module":
        return f"{n.target} ({type(_mod(gm, n)).__name__})"
    if n.op == "output":
        return "the model's output"
    return f"{n.op} {getattr(n.target, '__name__', n.target)}"


def _tie(gm, n: fx.Node) -> str | None:
    if n.op == "call_function" and n.target in TIES:
        return TIES[n.target]
    if n.op == "call_method" and n.target in TIE_METHODS:
        return TIE_METHODS[n.target]
    return None


def _grouped(gm, n: fx.Node, width: int, calls: dict[str, int]) -> bool:
    """``n`` is a depthwise or grouped conv from ``width`` channels to as many (each group's
    filters read only its own channels), called once: cut with the unit, whole groups at a
    time."""
    m = _mod(gm, n)
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.in_channels == m.out_channels == width \
        and calls.get(n.target, 0) == 1


def group_width(m: nn.Module) -> int:
    """Channels per group of a conv (1 for a depthwise conv or any other layer)."""
    return m.in_channels // m.groups if isinstance(m, nn.Conv2d) else 1


def _post_step(gm, n: fx.Node, cur: fx.Node, kind: str, width: int, calls, last_dw):
    """What ``n`` (the only user of ``cur``) is within a unit's post chain: ``"pass"``,
    ``"dw"`` (a depthwise or grouped conv), ``"dw-bn"`` (the BatchNorm right after one), ``"dw-act"``
    (an activation after one) or ``None``. ``last_dw``: the chain's last depthwise conv."""
    if not _only_input(n, cur):
        return None
    if _is(gm, n, PASS_MODULES, PASS_FUNCTIONS) or (
            kind == "conv" and _is(gm, n, POOL_MODULES, POOL_FUNCTIONS)):
        return "pass"
    if kind != "conv":
        return None
    if _grouped(gm, n, width, calls):
        return "dw"
    if cur is last_dw and _is(gm, n, (nn.BatchNorm2d,)) and calls.get(n.target, 0) == 1:
        return "dw-bn"
    if last_dw is not None and is_activation(gm, n):
        return "dw-act"
    return None


def _squeezes(gm, n: fx.Node, src: fx.Node) -> bool:
    """``n`` averages each channel of ``src`` over H and W into a (N, C, 1, 1) map."""
    mean = (n.op == "call_method" and n.target == "mean") or (
        n.op == "call_function" and n.target is torch.mean)
    avg = mean or _is(gm, n, AVG_POOL_MODULES, AVG_POOL_FUNCTIONS)
    s_in, s_out = shape_of(src), shape_of(n)
    return avg and _only_input(n, src) and s_in is not None and s_out is not None and \
        len(s_in) == 4 and tuple(s_out) == (*s_in[:2], 1, 1)


def _pointwise(gm, n: fx.Node, src: fx.Node, calls: dict[str, int], cin: int | None = None,
               cout: int | None = None) -> bool:
    """``n`` is a 1x1 conv (groups 1, called once) on the (N, C, 1, 1) map ``src``."""
    m, shape = _mod(gm, n), shape_of(n)
    return isinstance(m, nn.Conv2d) and m.groups == 1 and m.kernel_size == (1, 1) and \
        _only_input(n, src) and calls.get(n.target, 0) == 1 and shape is not None and \
        tuple(shape[2:]) == (1, 1) and cin in (None, m.in_channels) and cout in (None, m.out_channels)


def _excite(gm, cur: fx.Node, width: int, calls: dict[str, int]) -> Excite | None:
    """The squeeze-and-excitation block on ``cur`` (``width`` channels), whose two users are
    the block's pool and its multiply, or ``None``."""
    users = list(cur.users)
    if len(users) != 2:
        return None
    for pool, mul in (users, users[::-1]):
        if not _squeezes(gm, pool, cur):
            continue
        steps = [lambda n, s: _pointwise(gm, n, s, calls, cin=width),
                 lambda n, s: is_activation(gm, n) and _only_input(n, s),
                 lambda n, s: _pointwise(gm, n, s, calls, cout=width),
                 lambda n, s: _is(gm, n, GATE_MODULES, GATE_FUNCTIONS, ("sigmoid",)) and _only_input(n, s)]
        gate = [pool]
        for step in steps:
            nxt = list(gate[-1].users)
            if len(nxt) != 1 or not step(nxt[0], gate[-1]):
                break
            gate.append(nxt[0])
        else:
            if list(gate[-1].users) == [mul] and _tie(gm, mul) == "multiply" and \
                    len(mul.args) == 2 and set(mul.args) == {cur, gate[-1]} and not mul.kwargs:
                return Excite(mul, gate, gate[1].target, gate[3].target)
    return None


# a BatchNorm with track_running_stats=False normalises by each batch's statistics, also in
# eval mode: no fixed weights reproduce it, so its unit cannot be fused
_NO_STATS = ("BatchNorm {} keeps no running statistics (track_running_stats=False): build it "
             "with track_running_stats=True to prune this layer")


def _walk_chain(gm, layer: fx.Node, kind: str, calls: dict[str, int]):
    """Follow ``layer -> [bn] -> act -> [post...]``; return (bn, act, post, out, tied,
    excites) or a reason (``post`` may hold depthwise convs with their BN and activation,
    and squeeze-and-excitation blocks: module docstring)."""
    bn_type = nn.BatchNorm2d if kind == "conv" else nn.BatchNorm1d
    cur, bn = layer, None
    nxt = _single_user(cur)
    if isinstance(nxt, str):
        return nxt
    if _is(gm, nxt, (bn_type,)):
        if kind == "linear" and len(shape_of(layer) or ()) != 2:
            return (f"BatchNorm1d {nxt.target} normalises dim 1 of a (batch, ..., features) "
                    "tensor, not the features the linear writes")
        if _mod(gm, nxt).running_mean is None:
            return _NO_STATS.format(nxt.target)
        bn, cur = nxt, nxt
        nxt = _single_user(cur)
        if isinstance(nxt, str):
            return nxt
    if not (is_activation(gm, nxt) and _only_input(nxt, cur)):
        tie = _tie(gm, nxt)
        if tie == "cat":  # not a tie: a cat keeps each part's channels apart
            return (f"its output enters cat ({nxt.name}) before any activation: a unit is "
                    "conv -> [BN] -> activation (in a pre-activation layout, a DenseNet's, "
                    "later layers read the cat through a BatchNorm, which cannot absorb B)")
        if tie:
            return f"channels tied by {tie} ({nxt.name}): a residual or concatenated stream"
        return f"no elementwise activation after it (next: {_describe(gm, nxt)})"
    act, cur, post, tied, excites = nxt, nxt, [], [], []
    width = _mod(gm, layer).out_channels if kind == "conv" else 0
    last_dw = None  # the post chain's last depthwise conv (its BN may follow it directly)
    while True:
        users = list(cur.users)
        ex = _excite(gm, cur, width, calls) if kind == "conv" else None
        if ex is not None:  # the block's multiply continues the chain
            excites.append(ex)
            post.append(ex.mul)
            cur = ex.mul
            continue
        if len(users) != 1:
            break
        n = users[0]
        step = _post_step(gm, n, cur, kind, width, calls, last_dw)
        if step is None:
            break
        if step == "dw-bn" and _mod(gm, n).running_mean is None:
            return _NO_STATS.format(n.target)
        if step == "dw":
            last_dw = n
        if step in ("dw", "dw-bn"):
            tied.append(n.target)
        post.append(n)
        cur = n
    return bn, act, post, cur, tied, excites


def _single_user(n: fx.Node):
    users = list(n.users)
    if len(users) == 1:
        return users[0]
    if not users:
        return "its output is unused"
    return f"its output feeds {len(users)} nodes before its activation"


def _is_flatten(gm, n: fx.Node, src: fx.Node) -> bool:
    """A channel-major flatten of ``src`` (N, C, H, W) -> (N, C*H*W)."""
    flat = (n.op == "call_function" and n.target is torch.flatten) or (
        n.op == "call_method" and n.target in ("flatten", "view", "reshape")) or _is(gm, n, (nn.Flatten,))
    s_in, s_out = shape_of(src), shape_of(n)
    if not flat or not n.args or n.args[0] is not src or s_in is None or s_out is None:
        return False
    return len(s_in) == 4 and len(s_out) == 2 and s_out[0] == s_in[0] and \
        s_out[1] == s_in[1] * s_in[2] * s_in[3]


def _is_global_mean(n: fx.Node, src: fx.Node) -> bool:
    """``src.mean((2, 3))`` or ``torch.mean(src, (2, 3))``: (N, C, H, W) -> (N, C)."""
    mean = (n.op == "call_method" and n.target == "mean") or (
        n.op == "call_function" and n.target is torch.mean)
    if not mean or not n.args or n.args[0] is not src:
        return False
    dims = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim")
    s_in, s_out = shape_of(src), shape_of(n)
    if not isinstance(dims, (tuple, list)) or s_in is None or s_out is None or len(s_in) != 4:
        return False
    return {d % 4 for d in dims} == {2, 3} and tuple(s_out) == tuple(s_in[:2])


def _consumer(gm, u: fx.Node, out: fx.Node, kind: str, calls: dict[str, int],
              cat: bool = True) -> list[Consumer] | str | None:
    """What user ``u`` of ``out`` takes in: consumers that absorb ``B``, the reason it
    cannot, or ``None`` for a use that needs no channels (the batch size). ``cat``: a
    consumer may take ``out`` in as part of a channel concatenation (not for a stream)."""
    return _called_once(_absorbers(gm, u, out, kind, cat), calls)


def _called_once(got, calls: dict[str, int]):
    """``got`` (consumers, a reason or ``None``), or the reason a consumer called more than
    once cannot take ``B``: each call would need its own ``B`` folded into the one layer."""
    shared = [c.name for c in got if calls.get(c.name, 0) > 1] if isinstance(got, list) else []
    if shared:
        return f"consumer {shared[0]} is called {calls[shared[0]]} times: it cannot absorb one B"
    return got


def _cat_offset(u: fx.Node, src: fx.Node) -> int | str:
    """The first channel of ``src`` in the channel concatenation ``u``, or why ``u`` is not
    one that ``src`` enters once with known channel counts before it."""
    parts, dim = cat_args(u) or (None, 0)
    shape = shape_of(u)
    if parts is None or shape is None or len(shape) not in (2, 4) or dim % len(shape) != 1:
        return f"channels tied by cat ({u.name}): not a concatenation of channels"
    if sum(p is src for p in parts) != 1:
        return f"its output enters cat ({u.name}) more than once"
    before = parts[:next(i for i, p in enumerate(parts) if p is src)]
    widths = [shape_of(p)[1] if isinstance(p, fx.Node) and shape_of(p) else None for p in before]
    if None in widths:
        return f"cat ({u.name}) joins a tensor of unknown channels"
    return int(sum(widths))


def _through(gm, u: fx.Node, kind: str, offset: int = 0, cat: bool = True) -> list[Consumer] | str:
    """The consumers reached from every user of ``u`` (a cat or a layer that commutes with
    ``B``), each at ``offset`` channels further on."""
    found = []
    for v in u.users:
        got = _absorbers(gm, v, u, kind, cat)
        if isinstance(got, str):
            return got
        found += [Consumer(c.name, c.kind, c.spatial, c.offset + offset) for c in got or []]
    return found


def _absorbers(gm, u: fx.Node, out: fx.Node, kind: str,
               cat: bool = True) -> list[Consumer] | str | None:
    """:func:`_consumer` before the check that each consumer is called once (``cat``:
    through channel concatenations too)."""
    if cat and u.op == "call_function" and u.target in CAT_FUNCTIONS:  # a cat of any form
        offset = _cat_offset(u, out)
        return offset if isinstance(offset, str) else _through(gm, u, kind, offset)
    if _only_input(u, out) and (_is(gm, u, PASS_MODULES, PASS_FUNCTIONS) or (
            kind == "conv" and _is(gm, u, AVG_POOL_MODULES, AVG_POOL_FUNCTIONS))):
        return _through(gm, u, kind, cat=cat)
    tie = _tie(gm, u)
    if tie:
        return f"channels tied by {tie} ({u.name}): a residual or concatenated stream"
    m = _mod(gm, u)
    shape = shape_of(out)
    if u.op == "output":
        return "output layer: its width is the model's output"
    if u.op == "call_method" and u.target == "size" and len(u.args) == 2 and u.args[1] == 0:
        return None  # the batch size, as in x.view(x.size(0), -1)
    if isinstance(m, nn.Conv2d) and kind == "conv" and u.args[0] is out:
        if m.groups != 1:
            return f"consumer {u.target} is a grouped conv (groups={m.groups}): it cannot absorb B"
        return [Consumer(u.target, "conv")]
    if isinstance(m, nn.Linear) and u.args[0] is out and shape is not None and (
            len(shape) == 2 or kind == "linear"):  # it reads the features a linear unit writes
        return [Consumer(u.target, "linear")]
    if is_max_pool(gm, u):  # not right after the unit
        return (f"its output reaches max pooling ({_describe(gm, u)}) through other layers: a "
                "max pool does not commute with B, so it must follow the unit's chain directly")
    if kind == "conv" and (_is_flatten(gm, u, out) or _is_global_mean(u, out)):
        lins = _through(gm, u, "linear", cat=False)  # linears, through dropout/identity
        if isinstance(lins, str):
            return lins
        spatial = 1 if _is_global_mean(u, out) else shape[2] * shape[3]
        return [Consumer(c.name, "linear", spatial) for c in lins]
    return f"its output feeds {_describe(gm, u)}, which cannot absorb B"


def _tap(gm, u: fx.Node, out: fx.Node) -> list[fx.Node] | None:
    """The chain from ``out`` that starts with max pooling at ``u`` and runs on through
    pooling, dropout or identity (each the only user of the one before), or ``None``."""
    if not (is_max_pool(gm, u) and _only_input(u, out)):
        return None
    chain = [u]
    while len(chain[-1].users) == 1:
        v = next(iter(chain[-1].users))
        per_channel = is_max_pool(gm, v) or _is(gm, v, AVG_POOL_MODULES + PASS_MODULES,
                                                 AVG_POOL_FUNCTIONS + PASS_FUNCTIONS)
        if not (per_channel and _only_input(v, chain[-1])):
            break
        chain.append(v)
    return chain


def _consumers(gm, out: fx.Node, kind: str,
               calls: dict[str, int]) -> tuple[list[Consumer], list[list[fx.Node]]] | str:
    """Every consumer of a unit's output and the max-pooled paths (taps) that lead to some
    of them, or the reason one cannot absorb ``B``."""
    found, taps = [], []
    for u in out.users:
        tap = _tap(gm, u, out) if kind == "conv" and len(out.users) > 1 else None
        got = _called_once(_through(gm, tap[-1], kind), calls) if tap else \
            _consumer(gm, u, out, kind, calls)
        if isinstance(got, str):
            return got
        found += got or []
        taps += [tap] if tap else []
    if not found:
        return "its output reaches no layer that can absorb B"
    names = [c.name for c in found]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice:  # by two paths: one B on two slices of its input
        return f"its output reaches {twice} twice"
    return found, taps


def _is_sum(gm, n: fx.Node) -> bool:
    """``a + b`` of two graph values (a constant would make a dropped channel non-zero)."""
    rest = list(n.args[2:]) + list(n.kwargs.values())
    return _tie(gm, n) == "add" and len(n.args) >= 2 and \
        all(isinstance(a, fx.Node) for a in n.args[:2]) and not any(isinstance(a, fx.Node) for a in rest)


def _keeps_zero(gm, n: fx.Node, src: fx.Node) -> bool:
    """``n`` passes ``src``'s channels on one by one and maps a zero channel to zero."""
    ok = _is(gm, n, ZERO_ACT_MODULES + PASS_MODULES + POOL_MODULES,
             ZERO_ACT_FUNCTIONS + PASS_FUNCTIONS + POOL_FUNCTIONS, ZERO_ACT_METHODS)
    return ok and _only_input(n, src)


def _writer(gm, n: fx.Node, calls: dict[str, int]) -> Writer | None:
    """``n`` as the end of ``conv [-> bn]``, the conv used once and by nothing else."""
    bn = None
    if _is(gm, n, (nn.BatchNorm2d,)) and n.args and isinstance(n.args[0], fx.Node):
        bn, n = n, n.args[0]
    m = _mod(gm, n)
    if not isinstance(m, nn.Conv2d) or m.groups != 1 or calls.get(n.target, 0) != 1:
        return None
    if bn is not None and (len(n.users) != 1 or calls.get(bn.target, 0) != 1):
        return None
    return Writer(n.target, bn.target if bn is not None else None)


def _excited_writer(gm, n: fx.Node, calls: dict[str, int]) -> Writer | None:
    """``n`` as the multiply of a squeeze-and-excitation block on a writer's output (a
    dropped channel is zero before the block and after it), the writer carrying it."""
    if _tie(gm, n) != "multiply":
        return None
    for x in n.args[:2]:
        w = _writer(gm, x, calls) if isinstance(x, fx.Node) else None
        shape = shape_of(x) if w is not None else None
        ex = _excite(gm, x, shape[1], calls) if shape is not None and len(shape) == 4 else None
        if ex is not None and ex.mul is n:
            w.excite = ex
            return w
    return None


def _stream_step(gm, n: fx.Node, ends: set, calls) -> tuple[list, list, list, list]:
    """One node of a stream: (stream nodes it reaches, writers feeding it, consumers, the
    reasons it cannot be cut)."""
    more, writers, found, why = [], [], [], []
    srcs = [] if n in ends else (n.args[:2] if _tie(gm, n) else n.args[:1])
    for a in srcs:
        if _is_sum(gm, a) or (a.args and _keeps_zero(gm, a, a.args[0])):
            more.append(a)
            continue
        w = _writer(gm, a, calls) or _excited_writer(gm, a, calls)
        if w is None:
            why.append(f"the stream is fed by {_describe(gm, a)}, which is not a conv [-> BatchNorm]")
        else:
            writers.append((a, w))
    for u in n.users:
        if _is_sum(gm, u) or _keeps_zero(gm, u, n):
            more.append(u)
            continue
        got = _consumer(gm, u, n, "conv", calls, cat=False)
        if isinstance(got, str):
            why.append(got)
        else:
            found += got or []
    return more, writers, found, why


def _stream(gm, start: fx.Node, calls: dict[str, int], order: dict[str, int]):
    """The residual stream through the sum ``start``: ``(nodes, writers, consumers)`` in
    graph ``order``, or the reason it cannot be cut with the nodes reached so far."""
    nodes, ends, writers, consumers, todo, why = set(), set(), {}, {}, [start], []
    while todo:  # the whole stream, even past a reason: it is reported once
        n = todo.pop()
        if n in nodes:
            continue
        nodes.add(n)
        more, ws, found, reasons = _stream_step(gm, n, ends, calls)
        why += reasons
        for end, w in ws:
            writers.setdefault(w.conv, w)
            ends.add(end)
            todo.append(end)
        todo += more
        consumers.update({c.name: c for c in found})
    if why:
        return why[0], nodes
    shapes = {tuple(shape_of(n) or ())[1:2] for n in nodes}
    if len(shapes) != 1 or not next(iter(shapes)) or any(len(shape_of(n) or ()) != 4 for n in nodes):
        return "its tensors are not all (N, C, H, W) maps of one channel count", nodes
    if not consumers:
        return "it reaches no layer that can absorb B", nodes
    return (nodes, sorted(writers.values(), key=lambda w: order[w.conv]),
            sorted(consumers.values(), key=lambda c: order[c.name]))


def _streams(gm, calls: dict[str, int],
             order: dict[str, int]) -> tuple[list[Unit], list[Skipped]]:
    """Every residual stream as a unit of kind ``"stream"``, and those that cannot be cut."""
    units, skipped, seen = [], [], set()
    for n in gm.graph.nodes:
        if n in seen or not _is_sum(gm, n):
            continue
        got = _stream(gm, n, calls, order)
        if isinstance(got[0], str):  # one entry per stream, named after the sum that found it
            seen |= got[1]
            skipped.append(Skipped(f"stream@{n.name}", f"residual stream: {got[0]}"))
            continue
        nodes, writers, consumers = got
        seen |= nodes
        width = shape_of(next(iter(nodes)))[1]
        units.append(Unit(f"stream@{writers[0].conv}", "stream", int(width), None, None, [], None,
                          consumers, writers, excites=[w.excite for w in writers if w.excite]))
    return units, skipped


def _layer_reason(gm, n: fx.Node, m: nn.Module, calls: int) -> str | None:
    if calls > 1:
        return f"shared: called {calls} times"
    if isinstance(m, nn.Conv2d) and m.groups != 1:
        kind = "depthwise" if m.groups == m.in_channels == m.out_channels else "grouped"
        return f"{kind} conv (groups={m.groups}): its channels are tied to its input's"
    shape = shape_of(n)
    if isinstance(m, nn.Linear) and (shape is None or len(shape) < 2):
        return "Linear on a tensor that is not (batch, ..., features)"
    return None


def find_units(model: nn.Module, example: torch.Tensor, streams: bool = False) -> Structure:
    """Trace ``model`` on ``example`` (a batch of at least 2) and sort its layers into units
    and the rest; with ``streams``, every residual stream that can be cut is a unit too
    (module docstring), placed in graph order at its first writer.

    Raises:
        UserError: the model cannot be traced or fails on ``example``.
    """
    gm = trace(model, example)
    split_max_pools(gm)
    split_chunked_layers(gm)
    calls: dict[str, int] = {}
    for n in gm.graph.nodes:
        if n.op == "call_module":
            calls[n.target] = calls.get(n.target, 0) + 1
    units, skipped, seen = [], [], set()
    for n in gm.graph.nodes:
        if n.op == "call_function" and n.target in (F.conv2d, F.linear, torch.conv2d):
            skipped.append(Skipped(n.name, "functional conv/linear (not a module): cannot be replaced"))
        if n.op != "call_module" or n.target in seen:
            continue
        m = _mod(gm, n)
        if not isinstance(m, (nn.Conv2d, nn.Linear, nn.Conv1d, nn.Conv3d, nn.ConvTranspose2d)):
            continue
        seen.add(n.target)
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            skipped.append(Skipped(n.target, f"{type(m).__name__} is not supported (Conv2d and Linear are)"))
            continue
        kind = "conv" if isinstance(m, nn.Conv2d) else "linear"
        reason = _layer_reason(gm, n, m, calls[n.target])
        chain = reason or _walk_chain(gm, n, kind, calls)
        if isinstance(chain, str):
            if chain.startswith("its output is unused") or any(u.op == "output" for u in n.users):
                chain = "output layer: its width is the model's output"
            skipped.append(Skipped(n.target, chain))
            continue
        bn, act, post, out, tied, excites = chain
        cons = _consumers(gm, out, kind, calls)
        if isinstance(cons, str):
            skipped.append(Skipped(n.target, cons))
            continue
        width = m.out_channels if kind == "conv" else m.out_features
        group = math.lcm(1, *(group_width(gm.get_submodule(t)) for t in tied))
        units.append(Unit(n.target, kind, width, bn.target if bn is not None else None, act, post,
                          out, cons[0], tied=tied, taps=cons[1], excites=excites, group=group))
        seen |= {c for ex in excites for c in (ex.reduce, ex.expand)}  # no units of their own
    # depthwise convs and excitation convs cut with their unit
    in_units = {t for u in units for t in u.tied + [c for ex in u.excites for c in (ex.reduce, ex.expand)]}
    skipped = [s for s in skipped if s.name not in in_units]
    if streams:
        units, skipped = _with_streams(gm, calls, units, skipped)
    return Structure(gm, units, skipped)


def keep_whole(structure: Structure, patterns: list[str] | None) -> Structure:
    """``structure`` without the units whose names match one of ``patterns`` (shell-style,
    :mod:`fnmatch`: ``features.0.conv``, ``layer4.*``, ``stream@*``), or that lie inside a
    module a pattern names (``features.0`` keeps ``features.0.conv``); a stream is matched by
    any of its writers (``layer3`` keeps the stream its convs write into, and with it every
    other writer of that stream). They keep every channel, as layers that are no unit do,
    and are listed as skipped with the pattern.

    Raises:
        UserError: a pattern that matches no unit (the units are named), or patterns that
            leave no unit to prune.
    """
    if not patterns:
        return structure
    names = [u.name for u in structure.units]
    layers = {u.name: [u.name] + [w.conv for w in u.writers] for u in structure.units}

    def hit(name: str, pat: str) -> bool:
        return any(fnmatch.fnmatchcase(n, pat) or fnmatch.fnmatchcase(n, pat + ".*")
                   for n in layers[name])

    for pat in patterns:
        if not any(hit(n, pat) for n in names):
            shown = ", ".join(names[:12]) + (f", ... ({len(names)} units)" if len(names) > 12 else "")
            raise UserError(f"--keep {pat!r} matches no prunable unit: the units are {shown} "
                            "(alphaprune inspect lists them)")
    first = {n: next((p for p in patterns if hit(n, p)), None) for n in names}
    kept = {n: p for n, p in first.items() if p is not None}  # each by the first pattern it matches
    if len(kept) == len(names):
        raise UserError(f"--keep {','.join(patterns)} keeps every prunable unit whole: nothing "
                        "is left to prune; keep fewer")
    return Structure(structure.gm, [u for u in structure.units if u.name not in kept],
                     structure.skipped + [Skipped(n, f"kept whole (--keep {p})") for n, p in kept.items()],
                     structure.kept + [u for u in structure.units if u.name in kept])


def kept_units(structure: Structure) -> list[str]:
    """The units :func:`keep_whole` took out of ``structure``, by name."""
    return [u.name for u in structure.kept]


def kept_layers(structure: Structure) -> list[str]:
    """The layers whose outputs :func:`keep_whole` keeps: each kept unit's conv or linear,
    a kept stream's writers (what a peer such as Torch-Pruning is told to leave alone)."""
    return [n for u in structure.kept
            for n in ([w.conv for w in u.writers] if u.kind == "stream" else [u.name])]


def unit_groups(structure: Structure) -> list[int]:
    """Each unit's :attr:`Unit.group`: the channels its width moves by at the finest."""
    return [u.group for u in structure.units]


def has_sums(structure: Structure) -> bool:
    """Whether the traced model adds tensors together (a residual network: its shortcuts
    write into sums), as opposed to a plain chain of layers like a VGG."""
    return any(_tie(structure.gm, n) == "add" for n in structure.gm.graph.nodes)


def _no_padding(m: nn.Conv2d) -> bool:
    """A constant input gives a constant output (no zero border)."""
    return m.padding == "valid" or (not isinstance(m.padding, str) and not any(m.padding))


def _reader(gm, bn: fx.Node, offset: int, calls: dict[str, int]) -> list[Consumer] | str:
    """The layers a pre-activation reader ``bn [-> act] -> conv`` (no padding) or ``bn [->
    act] -> global mean -> linear`` hands a concatenated stream on to, as consumers that
    take it in through ``bn`` at ``offset``, or why it cannot take a cut."""
    m = _mod(gm, bn)
    if calls.get(bn.target, 0) != 1:
        return f"BatchNorm {bn.target}, which reads it, is called {calls.get(bn.target, 0)} times"
    if m.running_mean is None:
        return _NO_STATS.format(bn.target)
    act, nxt = None, _single_user(bn)
    if not isinstance(nxt, str) and is_activation(gm, nxt) and _only_input(nxt, bn):
        act, nxt = nxt, _single_user(nxt)
    if isinstance(nxt, str):
        return f"BatchNorm {bn.target}, which reads it: {nxt}"
    src, lay = act or bn, _mod(gm, nxt)
    if isinstance(lay, nn.Conv2d) and lay.groups == 1 and _only_input(nxt, src) and _no_padding(lay) \
            and calls.get(nxt.target, 0) == 1:
        return [Consumer(nxt.target, "conv", offset=offset, bn=bn.target, act=act)]
    if _is_global_mean(nxt, src):
        lins = _through(gm, nxt, "linear", cat=False)
        return lins if isinstance(lins, str) else _called_once(
            [Consumer(c.name, "linear", 1, offset, bn.target, act) for c in lins], calls)
    return (f"BatchNorm {bn.target}, which reads it, leads to {_describe(gm, nxt)}: a dropped "
            "channel's constant folds only into a conv without padding or a linear after a "
            "global mean")


def _cat_readers(gm, n: fx.Node, offset: int, calls: dict[str, int]) -> tuple[list, bool] | str:
    """The consumers a concatenated stream reaches from ``n`` (its writer's output at
    ``offset`` of ``n``), and whether it entered a cat; or why it cannot be cut."""
    found, joined = [], False
    for u in n.users:
        if u.op == "call_function" and u.target in CAT_FUNCTIONS:
            off = _cat_offset(u, n)
            got = off if isinstance(off, str) else _cat_readers(gm, u, offset + off, calls)
            joined = True
        elif _keeps_zero(gm, u, n):  # average pooling, dropout: a zero channel stays zero
            got = _cat_readers(gm, u, offset, calls)
        elif _is(gm, u, (nn.BatchNorm2d,)) and _only_input(u, n):
            got = _reader(gm, u, offset, calls)
        else:
            got = _consumer(gm, u, n, "conv", calls, cat=False)
            got = got if isinstance(got, str) else [
                Consumer(c.name, c.kind, c.spatial, c.offset + offset) for c in got or []]
        if isinstance(got, str):
            return got
        if isinstance(got, tuple):
            got, joined = got[0], joined or got[1]
        found += got
    return found, joined


def _cat_streams(gm, calls: dict[str, int], taken: set[str]) -> tuple[list[Unit], list[Skipped]]:
    """Every conv ``[-> bn]`` (not in ``taken``) whose output enters channel concatenations
    with no activation after it (a DenseNet's stem, growth convs and transitions) as a unit
    of kind ``"stream"`` with that one writer: its channels are cut by a fixed selection,
    so a dropped one is zero in every cat, and each reader takes the cat in through its own
    BatchNorm (pre-activation), which drops it too (module docstring)."""
    units, failed = [], []
    for n in gm.graph.nodes:
        m = _mod(gm, n)
        if n.target in taken or not isinstance(m, nn.Conv2d) or m.groups != 1 or calls.get(n.target) != 1:
            continue
        end, bn = n, _single_user(n)
        if isinstance(bn, str) or not _is(gm, bn, (nn.BatchNorm2d,)) or _mod(gm, bn).running_mean is None \
                or calls.get(bn.target) != 1:
            bn = None
        else:
            end = bn
        got = _cat_readers(gm, end, 0, calls)
        if isinstance(got, tuple) and not got[1]:
            continue  # never enters a cat: not a concatenated stream
        if isinstance(got, str):
            if any(u.op == "call_function" and u.target in CAT_FUNCTIONS for u in end.users):
                failed.append(Skipped(n.target, f"concatenated stream: {got}"))
            continue
        if not got[0]:
            continue
        writer = Writer(n.target, bn.target if bn is not None else None)
        units.append(Unit(f"stream@{n.target}", "stream", m.out_channels, None, None, [], None,
                          got[0], [writer]))
    return units, failed


def _with_streams(gm, calls, units: list[Unit], skipped: list[Skipped]):
    """``units`` and the streams in graph order; the streams' writers leave ``skipped``."""
    order = {n.target: i for i, n in enumerate(gm.graph.nodes) if n.op == "call_module"}
    found, failed = _streams(gm, calls, order)
    taken = {u.name for u in units} | {w.conv for u in found for w in u.writers}
    cats, cat_failed = _cat_streams(gm, calls, taken)
    found, failed = found + cats, failed + cat_failed
    writing = {w.conv for u in found for w in u.writers} | {s.name for s in cat_failed}
    first = {id(u): order[u.writers[0].conv if u.kind == "stream" else u.name] for u in units + found}
    units = sorted(units + found, key=lambda u: first[id(u)])
    return units, [s for s in skipped if s.name not in writing] + failed
