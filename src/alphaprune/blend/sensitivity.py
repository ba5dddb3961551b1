"""The sensitivity width solver (``--solver sensitivity``): per-unit widths chosen by what
each cut costs in validation loss per unit of the budgeted cost.

Each unit is cut alone, to each width on a grid, keeping the channels ``select`` keeps
(the same importance criterion: exactly for ``l1`` and ``bn``; for ``act`` the mean
activation the unit hands its first consumer on the validation images, where ``select``
reads the unit's output on training images), in the pretrained network, and the loss on a
fixed set of validation images is measured. A cut is exact without rebuilding anything:
the dropped channels are zeroed at the inputs of the unit's consumers, which is what the
fused network's ``B`` gives them (a residual stream's are zeroed where its writers put
them in, so they are zero all along the stream, as fused). The solver then starts from
the full widths and takes, one grid step at a time, the cut with the smallest loss
increase per unit of cost removed (parameters, FLOPs or predicted latency: any
``count``), until the budget is met; single ``round_to`` steps on the cut layers then
fit the target as the ratio solver's do.
Losses of separate cuts are taken to add up, as NVIDIA ModelOpt's FastNAS takes them.

They do not quite: :func:`cut_score` scores a whole allocation, every unit cut at once and
BatchNorm re-measured on training images, and :func:`tuned_cut_score` the same after a few
steps of training a copy of the cut network, which is how the ``auto`` solver
(:mod:`alphaprune.plan`) picks among allocations.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from alphaprune.blend.branch import channels_first
from alphaprune.blend.init import channel_order, stream_importance
from alphaprune.blend.recalibrate import restored_bn
from alphaprune.blend.widths import check_target, refine, solve_widths, unit_step
from alphaprune.data.augment import augment_batch, normalize
from alphaprune.graph.forks import Forks
from alphaprune.train.losses import distillation_loss

__all__ = ["width_grid", "unit_sensitivity", "solve_by_sensitivity", "channel_orders",
           "cut_score", "tuned_cut_score"]


def width_grid(base: int, round_to: int, levels: int = 8, group: int = 1) -> list[int]:
    """At most ``levels`` candidate widths of a unit of width ``base``, ascending, ending
    at ``base``: multiples of ``round_to`` (1 to ``base`` when it is no wider); of its
    :func:`~alphaprune.blend.widths.unit_step` where it has grouped convs of ``group``
    channels each."""
    step = unit_step(base, round_to, group)
    cands = list(range(step, base + 1, step))
    if cands[-1] != base:
        cands.append(base)
    if len(cands) > levels:
        cands = [cands[i] for i in np.unique(np.linspace(0, len(cands) - 1, levels).round().astype(int))]
    return cands


@torch.no_grad()
def _importance(gm, unit, criterion: str, x: torch.Tensor) -> torch.Tensor:
    """The score ``select`` ranks the unit's channels by, read off the plain network."""
    if unit.kind == "stream" and criterion != "act":
        return stream_importance([(gm.get_submodule(w.conv), gm.get_submodule(w.bn) if w.bn else None)
                                  for w in unit.writers], criterion)
    if criterion == "bn" and unit.bn is not None:
        return gm.get_submodule(unit.bn).weight.detach().abs()
    if criterion == "act":  # mean of what the unit hands its first consumer
        seen = []
        c = unit.consumers[0]
        h = gm.get_submodule(c.name).register_forward_pre_hook(lambda m, a: seen.append(a[0]))
        try:
            gm(x)
        finally:
            h.remove()
        t = seen[0]
        if c.kind == "linear":  # channels on dim 1: a flattened map's, or a token-wise linear's
            t = channels_first(t, c.kind) if t.dim() > 2 else t.reshape(len(x), -1, c.spatial)
        t = t[:, c.offset:c.offset + unit.width]  # the unit's slice (after a cat)
        return t.transpose(0, 1).reshape(unit.width, -1).mean(dim=1)
    return gm.get_submodule(unit.name).weight.detach().abs().flatten(1).sum(dim=1)


def _output_zeroing_hook(drop: torch.Tensor):
    """A forward hook that zeroes the dropped channels of a stream writer's output."""
    def hook(module, args, out):
        out = out.clone()
        out[:, drop] = 0
        return out
    return hook


def _zeroing_hook(drop: torch.Tensor, spatial: int, kind: str):
    """A forward pre-hook that zeroes the dropped channels of a consumer's input (indices
    into its input channels: offset by the unit's slice after a cat)."""
    if kind == "linear" and spatial > 1:  # a flattened map: each channel is `spatial` features
        drop = (drop[:, None] * spatial + torch.arange(spatial)).flatten()

    def hook(module, args):
        x = args[0].clone()
        if kind == "linear":  # features last: (N, C) or a token-wise (N, ..., C)
            x[..., drop] = 0
        else:
            x[:, drop] = 0
        return (x, *args[1:])
    return hook


@contextlib.contextmanager
def _bn_recalibrated(gm, calib: torch.Tensor, batch: int):
    """Within the block every BatchNorm holds statistics re-measured on ``calib`` through
    the network as it is now (cuts included): fine-tuning fixes stale statistics at once,
    so a cut is scored without them. Restored on exit."""
    bns = [m for m in gm.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with restored_bn(bns):
        try:
            for b in bns:
                b.reset_running_stats()
                b.momentum = None  # the plain average over the calibration batches
                b.train()
            for part in torch.tensor_split(calib, max(1, len(calib) // batch)):
                gm(part)
        finally:
            for b in bns:
                b.eval()
        yield


@torch.no_grad()
def channel_orders(structure, criterion: str, x: torch.Tensor) -> list[torch.Tensor]:
    """Every unit's channels, most important first, ranked on the whole uncut network
    (``act`` reads activations on ``x``)."""
    gm = structure.gm
    was = gm.training
    gm.eval()
    try:
        return [channel_order(_importance(gm, u, criterion, x), u.group) for u in structure.units]
    finally:
        gm.train(was)


def _reads(unit) -> list[tuple[str, int, int, str]]:
    """``(module, offset, spatial, kind)`` of each layer that reads a (non-stream) unit's
    channels: its consumers, and the first conv of each of its excitations (the squeeze of
    a dropped channel is dropped too)."""
    return [(c.name, c.offset, c.spatial, c.kind) for c in unit.consumers] + \
        [(ex.reduce, 0, 1, "conv") for ex in unit.excites]


def _hooked(unit) -> list[str]:
    """The modules :func:`_cut` hooks to cut ``unit``: a stream's writers (their BatchNorm,
    or conv), the layers that read any other unit's channels (:func:`_reads`)."""
    if unit.kind == "stream":
        return [wr.bn or wr.conv for wr in unit.writers]
    return [name for name, *_ in _reads(unit)]


@contextlib.contextmanager
def _cut(gm, structure, widths: Sequence[int], orders: list[torch.Tensor]):
    """Within the block every unit keeps only its ``widths`` first channels of ``orders``
    (a unit kept whole gets no hook)."""
    hooks = []
    try:
        for u, w, order in zip(structure.units, widths, orders):
            if w < u.width and u.kind == "stream":
                hooks += [gm.get_submodule(name).register_forward_hook(
                    _output_zeroing_hook(order[w:])) for name in _hooked(u)]
            elif w < u.width:
                hooks += [gm.get_submodule(name).register_forward_pre_hook(
                    _zeroing_hook(order[w:] + offset, spatial, kind))
                    for name, offset, spatial, kind in _reads(u)]
        yield
    finally:
        for h in hooks:
            h.remove()


@torch.no_grad()
def cut_score(structure, widths: Sequence[int], x: torch.Tensor, y: torch.Tensor,
              calib: torch.Tensor, orders: list[torch.Tensor],
              batch: int = 250, per_image: bool = False) -> tuple:
    """``(accuracy, loss)`` on ``x``, ``y`` of the pretrained network with every unit cut to
    ``widths`` at once (the network objective selection's α = 0 path starts from; channels
    in :func:`channel_orders`), its BatchNorm statistics re-measured on ``calib``: how well a
    whole allocation survives, which single-unit sensitivities do not see. ``per_image``:
    a third element, which images it classified right (bool), to compare two cuts on the
    same images."""
    gm = structure.gm
    was = gm.training
    gm.eval()
    try:
        with _cut(gm, structure, widths, orders), _bn_recalibrated(gm, calib, batch):
            logits = torch.cat([gm(x[i:i + batch]) for i in range(0, len(x), batch)])
    finally:
        gm.train(was)
    return _scored(logits, y, per_image)


def _scored(logits: torch.Tensor, y: torch.Tensor, per_image: bool) -> tuple:
    right = logits.argmax(1) == y
    score = (float(right.float().mean()), float(F.cross_entropy(logits, y)))
    return (*score, right) if per_image else score


@torch.no_grad()
def unit_sensitivity(structure, x: torch.Tensor, y: torch.Tensor, round_to: int,
                     criterion: str = "l1", levels: int = 8, batch: int = 250,
                     note: Callable[[str], None] | None = None) -> list[dict[int, float]]:
    """Per unit, ``{width: validation loss increase}`` with that unit alone cut to each
    width of :func:`width_grid` (its base width: 0), on normalised images ``x`` and labels
    ``y``, in eval mode. (Re-measuring BatchNorm for every cut, as FastNAS does, tripled the
    time and chose no better widths on VGG-16/4.)

    Each batch runs the network once up to where a unit's cut starts to change values, and
    each cut only the rest (:class:`alphaprune.graph.forks.Forks`): the numbers of a whole
    pass per cut, in less time. ``note`` gets a progress line after each batch."""
    gm = structure.gm
    orders = channel_orders(structure, criterion, x[:batch])
    base = [u.width for u in structure.units]
    grids = [width_grid(u.width, round_to, levels, u.group) for u in structure.units]
    forks = Forks(gm)
    cuts_at: dict[int, list[tuple[int, int]]] = {}  # fork position -> (unit, width) cut there
    for i, u in enumerate(structure.units):
        at = forks.position(_hooked(u))
        cuts_at.setdefault(at, []).extend((i, w) for w in grids[i] if w < u.width)
    parts: dict[tuple[int, int], list[float]] = {cut: [] for cuts in cuts_at.values() for cut in cuts}
    full_parts = []

    def ce(logits, yb) -> float:
        return float(F.cross_entropy(logits, yb, reduction="sum"))

    was = gm.training
    gm.eval()
    t0 = time.perf_counter()
    try:
        for k in range(0, len(x), batch):
            xb, yb = x[k:k + batch], y[k:k + batch]

            def visit(at, resume, yb=yb):
                for i, w in cuts_at[at]:
                    with _cut(gm, structure, base[:i] + [w] + base[i + 1:], orders):
                        parts[i, w].append(ce(resume(), yb))

            full_parts.append(ce(forks.run(xb, cuts_at, visit), yb))
            if note is not None:
                note(_progress(len(parts), len(structure.units), min(k + batch, len(x)), len(x),
                               time.perf_counter() - t0))
    finally:
        gm.train(was)
    full = sum(full_parts) / len(x)
    return [{w: sum(parts[i, w]) / len(x) - full if w < u.width else 0.0 for w in grids[i]}
            for i, u in enumerate(structure.units)]


def _progress(cuts: int, units: int, done: int, total: int, seconds: float) -> str:
    left = seconds * (total - done) / done
    return (f"sensitivity table ({cuts} cuts of {units} units): {done}/{total} images, "
            f"{seconds:.0f} s" + (f", about {left:.0f} s left" if done < total else ""))


def solve_by_sensitivity(base: Sequence[int], count: Callable[[Sequence[int]], float],
                         prune: float, round_to: int, sens: list[dict[int, float]],
                         option: str = "--prune", groups: Sequence[int] | None = None) -> list[int]:
    """Widths keeping ``1 - prune`` of what ``count`` measures, cut where the measured
    ``sens`` (:func:`unit_sensitivity`) says a unit of cost loses the least. ``groups``:
    each unit's channels per group (whole groups are kept).

    Raises:
        UserError: as :func:`alphaprune.blend.widths.solve_widths` does for a target out of
        range or out of reach.
    """
    base = [int(b) for b in base]
    target = check_target(base, count, prune, round_to, option, groups)
    grids = [sorted(s) for s in sens]
    ws = list(base)
    now = count(ws)
    while now > target:
        best = None
        for i, g in enumerate(grids):
            k = g.index(ws[i])
            if k == 0:
                continue
            cand = ws[:i] + [g[k - 1]] + ws[i + 1:]
            c = count(cand)
            gain = now - c
            if gain <= 0:
                continue
            # a cut that costs no loss (or seems to help: noise) still ranks by its gain
            score = (max(sens[i][g[k - 1]] - sens[i][ws[i]], 0.0) + 1e-9) / gain
            if best is None or score < best[0]:
                best = (score, cand, c)
        if best is None:
            break
        _, ws, now = best
    # fit the target: first on the layers the solver cut, then (when still more than 0.4
    # points away: coarse widths on a tiny model) on every layer
    everywhere = list(range(len(ws)))
    ws = refine(ws, [i for i in everywhere if ws[i] < base[i]] or everywhere, base, round_to,
                target, count, groups)
    if abs(count(ws) - target) > 0.004 * count(base):
        ws = refine(ws, everywhere, base, round_to, target, count, groups)
    if abs(count(ws) - target) > 0.005 * count(base):
        # coarse widths can leave the greedy cut where no single step comes closer (as in
        # solve_widths' balance): the uniform ratio's widths, if closer, keep the size promise
        uniform = solve_widths(base, count, prune, round_to, option=option, groups=groups)
        ws = min((ws, uniform), key=lambda w: abs(count(w) - target))
    return ws


def tuned_cut_score(structure, widths: Sequence[int], x: torch.Tensor, y: torch.Tensor,
                    calib: torch.Tensor, orders: list[torch.Tensor], train_x: torch.Tensor,
                    train_y: torch.Tensor, mean, std, steps: int, batch: int = 64,
                    seed: int = 0, per_image: bool = False) -> tuple:
    """:func:`cut_score` after ``steps`` steps of SGD on a copy of the cut network: where
    the α = 0 path gets after a short training, not only where it starts. The copy trains
    as the α = 0 phase does with prune's default settings (batches of the uint8 images
    ``train_x`` augmented as the training loader augments them, then normalised with
    ``mean``, ``std``; cross-entropy on ``train_y`` blended 0.3 / 0.7 with distillation
    from the pretrained network at temperature 4; lr 0.01), its BatchNorm is re-measured
    on ``calib``, and it is scored on ``x``, ``y``. The structure is left untouched, and
    the caller's random state too: the same call gives the same score. ``per_image`` as
    in :func:`cut_score`."""
    teacher = structure.gm
    student = copy.deepcopy(teacher)
    opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    pad = max(1, train_x.shape[-1] // 8)  # the training loader's crop padding
    was = teacher.training
    teacher.eval()
    try:
        with torch.random.fork_rng(devices=[]), _cut(student, structure, widths, orders):
            torch.manual_seed(seed)  # dropout layers draw from the global generator
            gen = torch.Generator().manual_seed(seed)
            student.train()
            for _ in range(steps):
                pick = torch.randint(len(train_x), (batch,), generator=gen)
                xb = normalize(augment_batch(train_x[pick], pad=pad, gen=gen), mean, std)
                with torch.no_grad():
                    t_logits = teacher(xb)
                logits = student(xb)
                loss = (0.3 * F.cross_entropy(logits, train_y[pick])
                        + 0.7 * distillation_loss(logits, t_logits, 4.0))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            student.eval()
            with torch.no_grad(), _bn_recalibrated(student, calib, 250):
                logits = torch.cat([student(x[i:i + 250]) for i in range(0, len(x), 250)])
    finally:
        teacher.train(was)
    return _scored(logits, y, per_image)
