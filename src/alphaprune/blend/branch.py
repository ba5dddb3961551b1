"""A prunable unit with a narrow parallel branch (DESIGN.md section 2).

    z        = layer(y)                             (shared pre-BN output; conv or linear)
    original = post(act(BN(z)))                     (n channels)
    branch   = B(post'(act(BN'(A z))))              (A: n->k, B: k->n, no bias)
    y'       = a * original + (1 - a) * branch

``post'`` is ``post`` with each depthwise conv and its BatchNorm (the unit's ``tied``
layers) replaced by a narrow copy over the ``k`` branch channels, and each
squeeze-and-excitation block (:class:`Excitation`) by one whose two 1x1 convs read and write
the ``k`` channels (the squeezed width stays).

A unit whose output also feeds max pooling beside its other consumers (a GoogLeNet
block's pooling branch) has a **tap** for each such path: a max pool does not commute with
``B``, so the tap runs the pool on each path before ``B``, as the fused network runs it on
the compact output:

    tap      = a * pool(original) + (1 - a) * B(pool(post'(act(BN'(A z)))))

``A`` and ``B`` are 1x1 convs for a conv unit and bias-free linears for a linear unit; a
unit without BatchNorm has no ``BN'`` (the layer's bias reaches the branch through ``A``).
``a`` is the unit's own gate, derived from the network's alpha by the hand-over mode
(:mod:`alphaprune.blend.blended`): ``a = alpha`` for ``blend``; 0 or 1 for ``stochastic``
and ``progressive``, which run one path only.

At a gate of 0 the branch alone runs, and ``A z = (A W) y + A b`` is computed as one layer
call with ``A`` folded into the layer's weight and bias (:func:`folded`): ``k`` output
channels instead of ``n``, the same values and the same gradients for ``W``, ``b`` and
``A`` (up to rounding). Every step of the α = 0 phase, and every handed-over unit of a
stochastic step, runs that way. The same holds on the input side: a unit whose output is
``B n`` alone (gate 0) marks that tensor with ``n`` and ``B`` (:func:`mark_compact`; a tap
marks its ``B pool(n)``), and a unit or stream writer whose layer takes exactly that tensor
in, unchanged since, from one of its ``feeders`` (the units whose traced consumers it is,
wired by :class:`~alphaprune.blend.blended.BlendedNet`) computes ``W (B n) = (W B) n``,
reading ``k`` channels instead of ``n``. The mark lives on the tensor, so it is freed with
it. A layer with hooks or parametrizations (which recompute or read its weight on each
call) runs unfolded.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.func import functional_call
from torch.nn.utils import parametrize

from alphaprune.graph.units import group_width

__all__ = ["BranchedUnit", "UnitTap", "Excitation", "StreamUnit", "StreamWriter", "HANDOVER_MODES",
           "channels_first", "matrix", "branch_bns", "original_modules", "narrow_copy", "folded",
           "compact_source", "mark_compact"]

# the attribute a unit's output ``B n`` carries: (n, B, the tensor's version when marked)
_MARK = "_alphaprune_compact"

HANDOVER_MODES = ("blend", "stochastic", "progressive")


def channels_first(t: torch.Tensor, kind: str) -> torch.Tensor:
    """``t`` with a unit's channels on dim 1: a linear unit's features are the last dim,
    which for a token-wise linear on (N, H, W, C) is not dim 1 (a view, no copy)."""
    return t.movedim(-1, 1) if kind == "linear" and t.dim() > 2 else t


def matrix(layer: nn.Module) -> torch.Tensor:
    """The weight of a 1x1 conv or a linear as a (out, in) matrix view."""
    return layer.weight.view(layer.weight.shape[0], layer.weight.shape[1])


def folded(layer: nn.Module, x: torch.Tensor, A: nn.Module | None = None,
           B_in: torch.Tensor | None = None) -> torch.Tensor:
    """``A(layer(B_in x))`` in one call of ``layer``'s op: ``A`` (a bias-free 1x1 conv or
    linear, n -> k) folded into its weight and bias on the output side, ``B_in`` (an
    (n_in, k_in) matrix: ``x`` holds the ``k_in`` channels it maps to the layer's input) on
    the input side. Autograd carries the gradients back to ``layer``, ``A`` and ``B_in``
    through the products."""
    w, a = layer.weight, None if A is None else matrix(A)
    if a is not None:
        w = (a @ w.flatten(1)).view(a.shape[0], *w.shape[1:])
    if B_in is not None:
        w = torch.einsum("oi...,ik->ok...", w, B_in)
    if w.dim() == 4:  # the layer's own layout, so the output keeps the network's
        w = w.clone(memory_format=weight_layout(layer.weight))
    params = {"weight": w}
    if layer.bias is not None:
        params["bias"] = layer.bias if a is None else a @ layer.bias
    # the layer's own forward: its padding mode, stride and dilation
    return functional_call(layer, params, (x,))


def weight_layout(w: torch.Tensor) -> torch.memory_format:
    """The memory layout of a 4-d tensor: channels-last only when its strides are the
    canonical channels-last ones and not also the channels-first ones (a 1x1 kernel's
    strides satisfy both ``is_contiguous`` checks)."""
    if w.dim() != 4:
        return torch.contiguous_format
    _, c, h, width = w.shape
    cl, cf = (c * h * width, 1, width * c, c), (c * h * width, h * width, width, 1)
    return torch.channels_last if w.stride() == cl and cl != cf else torch.contiguous_format


def mark_compact(out: torch.Tensor, n: torch.Tensor, B: nn.Module) -> torch.Tensor:
    """Mark a unit's output ``out = B(n)`` with its compact form (module docstring). An
    inference-mode tensor keeps no version to tell an in-place change by: left unmarked."""
    if not out.is_inference():
        setattr(out, _MARK, (n, B, out._version))
    return out


def compact_source(feeders: list, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``x``, or, when ``x`` is a marked output ``B n`` that one of ``feeders`` (branched
    units) made and nothing changed in place since, that ``n`` and ``B`` as a matrix."""
    mark = getattr(x, _MARK, None)
    if mark is None or mark[2] != x._version or not any(mark[1] is f.B for f in feeders):
        return x, None
    return mark[0], matrix(mark[1])


def _plain(layer: nn.Module) -> bool:
    """No hooks and no parametrization: the layer's weight is its parameter, and a call
    with another weight computes exactly what the fold needs."""
    return not (layer._forward_pre_hooks or layer._forward_hooks or
                parametrize.is_parametrized(layer))


def _layer_on(layer: nn.Module, x: torch.Tensor, feeders: list, A: nn.Module | None = None):
    """``A(layer(x))`` (no ``A``: ``layer(x)``), folded where that reads fewer channels or
    writes fewer (module docstring)."""
    src, B_in = compact_source(feeders, x)
    if (A is None and B_in is None) or not _plain(layer):
        z = layer(x)
        return z if A is None else A(z)
    return folded(layer, src, A, B_in)


def _parts(unit: nn.Module) -> list[nn.Module]:
    """The modules that hold a unit's layers and branches: a stream's writers, or itself."""
    return list(unit.writers) if isinstance(unit, StreamUnit) else [unit]


def branch_bns(unit: nn.Module) -> list[nn.Module]:
    """The branch BatchNorms of a branched unit or stream: ``BN'`` and those of its narrow
    depthwise convs."""
    tied = [] if isinstance(unit, StreamUnit) else [m for _, m in unit.tied_pairs()]
    return [p.bn2 for p in _parts(unit) if p.has_bn] + \
        [m for m in tied if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def original_modules(unit: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """The original ``(layer, BN)`` pairs of a branched unit or stream (BN may be Identity);
    a unit's depthwise convs come as ``(conv, Identity)``, their BNs as ``(Identity, BN)``,
    and its excitation convs as ``(conv, Identity)``."""
    if isinstance(unit, StreamUnit):
        return [(p.conv, p.bn) for p in _parts(unit)]
    tied = [(nn.Identity(), m) if isinstance(m, nn.modules.batchnorm._BatchNorm) else (m, nn.Identity())
            for m, _ in unit.tied_pairs()]
    excite = [(c, nn.Identity()) for m, _ in unit.excite_pairs() for c in (m.reduce, m.expand)]
    return [(unit.conv, unit.bn)] + tied + excite


def narrow_copy(m: nn.Module, k: int) -> nn.Module:
    """A fresh depthwise or grouped conv, or BatchNorm, like ``m``, over ``k`` channels: a
    grouped conv keeps its channels per group and has fewer groups (``k`` is a multiple
    of its group width)."""
    if isinstance(m, nn.Conv2d):
        gw = group_width(m)
        if k % gw:
            raise ValueError(f"{k} channels are not whole groups of {gw}")
        new = nn.Conv2d(k, k, m.kernel_size, m.stride, m.padding, m.dilation, groups=k // gw,
                        bias=m.bias is not None, padding_mode=m.padding_mode)
    else:
        new = nn.BatchNorm2d(k, eps=m.eps, momentum=m.momentum, affine=m.affine,
                             track_running_stats=m.track_running_stats)
    return new.to(m.weight.dtype if getattr(m, "weight", None) is not None else torch.float32)


class Excitation(nn.Module):
    """A squeeze-and-excitation block, ``x * gate(expand(act(reduce(pool(x)))))``: ``pool``
    averages each channel to 1x1, ``reduce`` and ``expand`` are 1x1 convs to the squeezed
    width and back. The original block's ops are reused, not copied."""

    def __init__(self, pool: nn.Module, reduce: nn.Conv2d, act: nn.Module, expand: nn.Conv2d,
                 gate: nn.Module):
        super().__init__()
        self.pool, self.reduce, self.act, self.expand, self.gate = pool, reduce, act, expand, gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.expand(self.act(self.reduce(self.pool(x)))))

    def narrowed(self, k: int) -> Excitation:
        """The same block on ``k`` channels: fresh convs from and to ``k`` channels, the
        same stateless ops."""
        def conv(cin: int, cout: int, like: nn.Conv2d) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, 1, bias=like.bias is not None).to(like.weight.dtype)

        r = self.reduce.out_channels
        return Excitation(self.pool, conv(k, r, self.reduce), self.act, conv(r, k, self.expand),
                          self.gate)

    @torch.no_grad()
    def select_into(self, narrow: Excitation, idx: torch.Tensor) -> None:
        """``narrow`` (from :meth:`narrowed`) computes this block on channels ``idx``."""
        narrow.reduce.weight.copy_(self.reduce.weight[:, idx])
        narrow.expand.weight.copy_(self.expand.weight[idx])
        if self.reduce.bias is not None:
            narrow.reduce.bias.copy_(self.reduce.bias)
        if self.expand.bias is not None:
            narrow.expand.bias.copy_(self.expand.bias[idx])


class BranchedUnit(nn.Module):
    """The original layer, BN, activation and post ops (reused, not copied) plus the branch.

    Args:
        layer: the unit's ``Conv2d`` or ``Linear`` (kept as ``conv``).
        bn: its BatchNorm, or ``None``.
        act: the elementwise activation, as a module.
        post: pool/dropout/identity (and depthwise convs) after the activation, as one module.
        k: kept width of the branch.
        tied: positions in ``post`` (a ``Sequential``) of its depthwise convs and their
            BatchNorms, which the branch runs as narrow copies.
        excites: positions in ``post`` of its :class:`Excitation` blocks, which the branch
            runs narrowed.
        taps: the ops of each max-pooled path from the output to more consumers (module
            docstring), one module per path; the graph calls ``taps[i]`` after the unit.
    """

    def __init__(self, layer: nn.Module, bn: nn.Module | None, act: nn.Module, post: nn.Module,
                 k: int, tied: tuple[int, ...] = (), taps: tuple[nn.Module, ...] = (),
                 excites: tuple[int, ...] = ()):
        super().__init__()
        self.kind = "conv" if isinstance(layer, nn.Conv2d) else "linear"
        n = layer.out_channels if self.kind == "conv" else layer.out_features
        self.conv, self.act, self.pool = layer, act, post
        self.bn = bn if bn is not None else nn.Identity()
        self.has_bn = bn is not None
        if self.kind == "conv":
            self.A, self.B = nn.Conv2d(n, k, 1, bias=False), nn.Conv2d(k, n, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(k) if bn is not None else nn.Identity()
        else:
            self.A, self.B = nn.Linear(n, k, bias=False), nn.Linear(k, n, bias=False)
            self.bn2 = nn.BatchNorm1d(k) if bn is not None else nn.Identity()
        if bn is not None:
            self.bn2.eps, self.bn2.momentum = bn.eps, bn.momentum
        self.tied, self.excites = tuple(tied), tuple(excites)
        # the branch's post: the same pass-through ops, narrow copies of the tied layers and
        # the excitations (with none it is ``post`` itself, not registered a second time)
        if self.tied or self.excites:
            self.pool2 = nn.Sequential(*[narrow_copy(m, k) if i in self.tied else
                                         m.narrowed(k) if i in self.excites else m
                                         for i, m in enumerate(post)])
        self.taps = nn.ModuleList(UnitTap(ops) for ops in taps)  # empty: no state_dict keys
        self.gate = 1.0
        # a plain list, not submodules: the units whose output this unit's layer may take
        # in directly (module docstring)
        self.feeders: list[nn.Module] = []

    def tied_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(original, narrow copy) of each depthwise conv and BatchNorm in the post chain."""
        return [(self.pool[i], self.pool2[i]) for i in self.tied]

    def excite_pairs(self) -> list[tuple[Excitation, Excitation]]:
        """(original, narrowed) of each squeeze-and-excitation block in the post chain."""
        return [(self.pool[i], self.pool2[i]) for i in self.excites]

    @property
    def width(self) -> int:
        """Kept width ``k``."""
        return matrix(self.A).shape[0]

    def original(self, z: torch.Tensor) -> torch.Tensor:
        return self.pool(self.act(self.bn(z)))

    def narrow(self, z: torch.Tensor) -> torch.Tensor:
        """The branch before ``B``: the compact unit's output (k channels)."""
        return self._after_A(self.A(z))

    def _after_A(self, v: torch.Tensor) -> torch.Tensor:
        post = self.pool2 if self.tied or self.excites else self.pool
        return post(self.act(self.bn2(v)))

    def branch(self, z: torch.Tensor) -> torch.Tensor:
        return self.B(self.narrow(z))

    def forward(self, x: torch.Tensor, a: float | None = None) -> torch.Tensor:
        a = self.gate if a is None else a
        # At a gate of 0 or 1 only one path matters: skip the other (cheaper, and exactly
        # the same output). The branch alone needs only A z: A folded into the layer.
        if a <= 0.0:
            y, n = None, self._after_A(_layer_on(self.conv, x, self.feeders, self.A))
        else:
            z = _layer_on(self.conv, x, self.feeders)
            y = self.original(z)
            n = self.narrow(z) if a < 1.0 else None
        for tap in self.taps:  # they run next, on the paths before the mix
            tap.held = (y, n, a, self.B)
        if n is None:
            return y
        if y is None:
            return mark_compact(self.B(n), n, self.B)
        # lerp = branch + a * (original - branch): one fused kernel forward and backward,
        # measurably cheaper on CPU than two scalings and an add
        return torch.lerp(self.B(n), y, a)


class UnitTap(nn.Module):
    """A max-pooled path from a :class:`BranchedUnit`'s output to more consumers: ``ops``
    (max pooling, then any pooling or dropout) on the original path and on the branch's
    compact output before ``B``, mixed by the unit's gate. The unit hands over its two
    paths as it runs (``held``); the graph calls the tap on the unit's output right after,
    so that it runs in order (the input itself is not read)."""

    def __init__(self, ops: nn.Module):
        super().__init__()
        self.ops = ops
        self.held: tuple | None = None

    def forward(self, _after: torch.Tensor) -> torch.Tensor:
        if self.held is None:
            raise RuntimeError("a unit's tap ran before its unit")
        (y, n, a, B), self.held = self.held, None  # not kept past this pass (deepcopy, memory)
        if n is None:
            return self.ops(y)
        pooled = self.ops(n)
        b = B(pooled)
        if y is None:
            return mark_compact(b, pooled, B)
        return torch.lerp(b, self.ops(y), a)


class _Scatter(torch.autograd.Function):
    """``v``'s channels at ``idx`` of ``n`` channels, zero elsewhere, in ``layout`` (the
    writer's conv's), and the gradient back to ``v`` in that layout too. ``index_copy`` alone gives a
    channels-first result and gradient: the stream would then reach every layer that reads
    it channels-first, and a channels-last BatchNorm's backward on a channels-first
    gradient is slow (BENCHMARKS.md section 57)."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, idx: torch.Tensor, n: int,
                layout: torch.memory_format) -> torch.Tensor:
        ctx.save_for_backward(idx)
        ctx.layout = layout if v.dim() == 4 else torch.contiguous_format
        out = torch.empty((v.shape[0], n, *v.shape[2:]), dtype=v.dtype, device=v.device,
                          memory_format=ctx.layout)
        return out.zero_().index_copy_(1, idx, v)  # in place: out keeps its layout

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (idx,) = ctx.saved_tensors
        return grad.index_select(1, idx).contiguous(memory_format=ctx.layout), None, None, None


class StreamWriter(nn.Module):
    """One conv writing into a residual stream, with its branch (DESIGN.md section 2 with a
    fixed ``B``):

        original = BN(z),  branch = S^T BN'(A z),  y' = a * original + (1 - a) * branch

    ``S^T`` scatters the ``k`` kept channels (``idx``) back to their places and leaves the
    rest zero. Unlike a unit's learnt ``B`` it commutes with the activations after the
    sums, so at a gate of 0 in every writer the stream's dropped channels are zero
    everywhere and the fused network drops them.
    """

    def __init__(self, conv: nn.Conv2d, bn: nn.Module | None, k: int):
        super().__init__()
        n = conv.out_channels
        self.conv = conv
        self.bn = bn if bn is not None else nn.Identity()
        self.has_bn = bn is not None
        self.A = nn.Conv2d(n, k, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(k) if bn is not None else nn.Identity()
        if bn is not None:
            self.bn2.eps, self.bn2.momentum = bn.eps, bn.momentum
        self.register_buffer("idx", torch.arange(k))
        self.gate = 1.0
        self.feeders: list[nn.Module] = []  # as a BranchedUnit's

    def branch(self, z: torch.Tensor) -> torch.Tensor:
        return self._scatter(self.A(z))

    def _scatter(self, v: torch.Tensor) -> torch.Tensor:
        return _Scatter.apply(self.bn2(v), self.idx, self.conv.out_channels,
                              weight_layout(self.conv.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gate <= 0.0:  # the branch alone: A folded into the conv (module docstring)
            return self._scatter(_layer_on(self.conv, x, self.feeders, self.A))
        z = _layer_on(self.conv, x, self.feeders)
        if self.gate >= 1.0:
            return self.bn(z)
        return torch.lerp(self.branch(z), self.bn(z), self.gate)


class StreamUnit(nn.Module):
    """A residual stream's writers, cut together to ``k`` channels: one gate for all."""

    def __init__(self, writers: list[StreamWriter]):
        super().__init__()
        self.writers = nn.ModuleList(writers)

    @property
    def width(self) -> int:
        """Kept width ``k``."""
        return len(self.writers[0].idx)

    @property
    def gate(self) -> float:
        return self.writers[0].gate

    @gate.setter
    def gate(self, a: float) -> None:
        for w in self.writers:
            w.gate = a

    @property
    def idx(self) -> torch.Tensor:
        """The kept channels of the stream (the same in every writer)."""
        return self.writers[0].idx

    def B(self) -> torch.Tensor:
        """``S^T`` as an (n, k) matrix: the map every consumer absorbs."""
        n = self.writers[0].conv.out_channels
        S = torch.zeros(n, self.width, dtype=self.writers[0].A.weight.dtype)
        S[self.idx, torch.arange(self.width)] = 1.0
        return S
