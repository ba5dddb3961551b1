"""Branch initialisation.

* ``random``: PyTorch's default init for A and B, fresh BN'.
* ``select``: A picks the ``k`` most important channels of the unit, BN' copies their BN
  parameters and statistics (the narrow depthwise convs after the unit copy those
  channels' filters and BNs) and B scatters them back to their places, so the network at
  alpha = 0 is exactly the channel-pruned network. Importance criteria: ``bn`` (|BN gamma|),
  ``l1`` (L1 norm of the filter) and ``act`` (mean post-ReLU activation of the channel on a
  calibration batch: data-driven).
* ``lstsq``: ``select``, then unit by unit from the input side, on a calibration batch fed
  through the *already initialised* branches (the inputs the pruned network will see):
  BN' statistics are re-estimated and B is fitted by (ridge) least squares so that
  ``B(narrow(z))`` reconstructs the original unit's output.

A residual stream (:class:`alphaprune.blend.branch.StreamUnit`) keeps one channel set in
all its writers: ``bn`` and ``l1`` sum each writer's scores over their mean (every writer
counts alike), ``act`` reads the stream where its first consumer takes it in. Its ``B`` is
fixed, so ``lstsq`` selects its channels and fits nothing.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from alphaprune.blend.blended import BlendedNet
from alphaprune.blend.branch import StreamUnit, branch_bns, channels_first, matrix
from alphaprune.errors import UserError

__all__ = ["init_branches", "BRANCH_INITS", "IMPORTANCE_CRITERIA", "channel_importance",
           "reconstruction_error", "stream_importance", "channel_order"]

BRANCH_INITS = ("select", "lstsq", "random")
IMPORTANCE_CRITERIA = ("bn", "l1", "act")


def _stream_hook(seen: dict, i: int, consumer, width: int):
    """A pre-hook keeping a stream's tensor (N, C, ...) as its consumer takes it in (a
    concatenated stream's ``width`` channels at its offset, after the reader's BatchNorm
    and activation)."""
    def hook(m, a):
        x = a[0]
        x = x.reshape(len(x), -1, consumer.spatial) if consumer.kind == "linear" else x
        seen[i] = (None, x[:, consumer.offset:consumer.offset + width])
    return hook


@torch.no_grad()
def _unit_io(model: BlendedNet, x: torch.Tensor, gates: list[float]):
    """Every unit's (input, output) in one pass of ``x`` with these gates (a stream's: no
    input, and the stream as its first consumer takes it in)."""
    seen: dict[int, tuple] = {}
    hooks = []
    for i, (u, s) in enumerate(zip(model.features, model.structure.units)):
        if isinstance(u, StreamUnit):
            c = s.consumers[0]
            hooks.append(model.structure.gm.get_submodule(c.name).register_forward_pre_hook(
                _stream_hook(seen, i, c, s.width)))
        else:
            hooks.append(u.register_forward_hook(
                lambda m, a, out, i=i: seen.__setitem__(i, (a[0], out))))
    try:
        model.run(x, gates)
    finally:
        for h in hooks:
            h.remove()
    return [seen[i] for i in range(len(model.features))]


def _original_outputs(model: BlendedNet, x: torch.Tensor) -> list[torch.Tensor]:
    return [out for _, out in _unit_io(model, x, [1.0] * len(model.features))]


def _channel_dims(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(d for d in range(t.dim()) if d != 1)


@torch.no_grad()
def channel_importance(unit, criterion: str = "bn", activation: torch.Tensor | None = None):
    """Importance of each output channel of a branched unit's original conv (or of a stream):
    ``bn`` is |BN gamma|, or the filter's L1 norm where the unit has no BatchNorm.

    ``activation`` (the unit's original output on a calibration batch) is needed for ``act``.
    """
    if isinstance(unit, StreamUnit) and criterion != "act":
        return stream_importance([(w.conv, w.bn if w.has_bn else None) for w in unit.writers],
                                 criterion)
    if criterion == "bn" and unit.has_bn:  # a unit without BatchNorm falls back to L1
        return unit.bn.weight.detach().abs()
    if criterion in ("bn", "l1"):
        return unit.conv.weight.detach().abs().flatten(1).sum(dim=1)
    if criterion == "act":
        if activation is None:
            raise ValueError("the 'act' criterion needs a calibration batch")
        activation = channels_first(activation, getattr(unit, "kind", "conv"))
        return activation.mean(dim=_channel_dims(activation))
    raise UserError(f"unknown importance criterion '{criterion}': use {', '.join(IMPORTANCE_CRITERIA)}")


@torch.no_grad()
def stream_importance(writers: list, criterion: str) -> torch.Tensor:
    """A stream's channel scores from its writers' ``(conv, bn or None)``: each writer's
    |BN gamma| (``bn``; filter L1 where it has no BN) or filter L1 (``l1``) over its mean,
    summed over the writers."""
    total = 0.0
    for conv, bn in writers:
        s = bn.weight.detach().abs() if criterion == "bn" and bn is not None else \
            conv.weight.detach().abs().flatten(1).sum(dim=1)
        total = total + s / s.mean().clamp_min(1e-12)
    return total


@torch.no_grad()
def _select_stream(unit: StreamUnit, idx: torch.Tensor) -> None:
    k = unit.width
    for w in unit.writers:
        w.idx.copy_(idx)
        A = matrix(w.A)
        A.zero_()
        A[torch.arange(k), idx] = 1.0
        if w.has_bn:
            _copy_channels(w.bn, w.bn2, idx)


def channel_order(scores: torch.Tensor, group: int = 1) -> torch.Tensor:
    """A unit's channels, most important first; with ``group`` > 1 whole groups of
    ``group`` consecutive channels (a grouped conv's), ranked by their summed score, each
    group's channels together in order, so that any multiple of ``group`` first channels
    is whole groups."""
    if group == 1:
        return torch.argsort(scores, descending=True)
    per_group = scores.reshape(-1, group).sum(dim=1)
    groups = torch.argsort(per_group, descending=True)
    return (groups[:, None] * group + torch.arange(group)).flatten()


@torch.no_grad()
def _select(unit, scores: torch.Tensor, group: int = 1) -> None:
    """Keep the ``unit.width`` best channels (whole groups of ``group``: the graph unit's
    :attr:`~alphaprune.graph.units.Unit.group`)."""
    k = unit.width
    idx = torch.sort(channel_order(scores, group)[:k]).values
    if isinstance(unit, StreamUnit):
        return _select_stream(unit, idx)
    A, B = matrix(unit.A), matrix(unit.B)
    A.zero_()
    A[torch.arange(k), idx] = 1.0
    B.zero_()
    B[idx, torch.arange(k)] = 1.0
    for orig, narrow in unit.tied_pairs():  # the depthwise convs keep the same channels
        _copy_channels(orig, narrow, idx)
    for orig, narrow in unit.excite_pairs():  # so do the excitation blocks
        orig.select_into(narrow, idx)
    if unit.has_bn:
        _copy_channels(unit.bn, unit.bn2, idx)


@torch.no_grad()
def _copy_channels(orig: nn.Module, narrow: nn.Module, idx: torch.Tensor) -> None:
    """``narrow`` (a BatchNorm or depthwise conv) takes ``orig``'s channels ``idx``."""
    for name, t in list(orig.named_parameters(recurse=False)) + list(orig.named_buffers(recurse=False)):
        if t.dim() > 0:
            getattr(narrow, name).copy_(t[idx])
        else:  # num_batches_tracked
            getattr(narrow, name).copy_(t)


@torch.no_grad()
def _fit_unit(unit, h: torch.Tensor, target: torch.Tensor, ridge: float) -> None:
    """Re-estimate the branch's BNs on the pruned path, then fit B by ridge least squares."""
    was = unit.training
    unit.eval()
    _reestimate_branch_bns(unit, h)
    narrow = channels_first(unit.narrow(unit.conv(h)), unit.kind)
    target = channels_first(target, unit.kind)
    unit.train(was)
    k, n = narrow.shape[1], target.shape[1]
    H = narrow.transpose(0, 1).reshape(k, -1).double()
    Y = target.transpose(0, 1).reshape(n, -1).double()
    G = H @ H.T
    G += ridge * (G.trace() / k + 1e-12) * torch.eye(k, dtype=G.dtype)
    B = torch.linalg.solve(G, H @ Y.T).T          # (n, k) = Y H^T (H H^T + lambda I)^-1
    matrix(unit.B).copy_(B.to(unit.B.weight.dtype))


@torch.no_grad()
def _reestimate_branch_bns(unit, h: torch.Tensor) -> None:
    """The statistics of the branch's BNs (``BN'``, then those after its narrow depthwise
    convs) on the pruned path's input ``h``: their copied ones describe the original path's
    input. One pass per BN, each with those before it in eval mode, so every BN sees what it
    will see in eval. Expects ``unit`` in eval mode; leaves it so."""
    for b in branch_bns(unit):
        momentum = b.momentum
        b.reset_running_stats()
        b.momentum = None  # a cumulative average: one batch gives its exact statistics
        b.train()
        try:
            unit.narrow(unit.conv(h))
        finally:
            b.momentum = momentum
            b.eval()


@torch.no_grad()
def reconstruction_error(model: BlendedNet, x: torch.Tensor) -> list[float]:
    """Per unit: ||branch path output - original output||^2 / ||original output||^2, with
    the branch path fed by the previous branches (the pruned network), eval mode."""
    was = model.training
    model.eval()
    targets = _original_outputs(model, x)
    pruned = [out for _, out in _unit_io(model, x, [0.0] * len(model.features))]
    model.train(was)
    return [float(((h - t) ** 2).sum() / (t ** 2).sum().clamp_min(1e-12))
            for h, t in zip(pruned, targets)]


def init_branches(model: BlendedNet, method: str = "select", criterion: str = "bn",
                  calib: torch.Tensor | None = None, ridge: float = 1e-3) -> None:
    """Initialise every branch of ``model`` in place.

    Args:
        method: ``random``, ``select`` or ``lstsq``.
        criterion: channel importance for ``select``/``lstsq``: ``bn``, ``l1`` or ``act``.
        calib: a normalised input batch, needed by ``lstsq`` and the ``act`` criterion.
        ridge: relative ridge term of the least-squares fit.

    Raises:
        UserError: unknown method or criterion, or no calibration batch where one is needed.
    """
    if method not in BRANCH_INITS:
        raise UserError(f"unknown --branch-init '{method}': use one of {', '.join(BRANCH_INITS)}")
    if criterion not in IMPORTANCE_CRITERIA:
        raise UserError(f"unknown --importance '{criterion}': use {', '.join(IMPORTANCE_CRITERIA)}")
    if method == "random":
        return
    if calib is None and (method == "lstsq" or criterion == "act"):
        raise UserError(f"--branch-init {method} with --importance {criterion} needs calibration data")
    was = model.training
    model.eval()
    n = len(model.features)
    targets = _original_outputs(model, calib) if calib is not None else [None] * n
    for i, (u, t) in enumerate(zip(model.features, targets)):
        _select(u, channel_importance(u, criterion, t), model.structure.units[i].group)
        # the input the pruned network gives unit i: branches upstream (a stream's B is fixed)
        if method == "lstsq" and not isinstance(u, StreamUnit):
            h = _unit_io(model, calib, [0.0] * i + [1.0] * (n - i))[i][0]
            _fit_unit(u, h, t, ridge)
    model.train(was)
