"""Any traced CNN with a branch beside every prunable unit and one global alpha.

The model's fx graph (:mod:`alphaprune.graph`) is rewritten so that each unit's nodes
(``layer -> [bn] -> act -> [post]``) become one :class:`BranchedUnit`; everything else runs
as the model's own code did. The original layers are reused, not copied.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.fx as fx
import torch.nn as nn

from alphaprune.blend.branch import (
    HANDOVER_MODES,
    BranchedUnit,
    Excitation,
    StreamUnit,
    StreamWriter,
    original_modules,
)
from alphaprune.graph.units import Structure, Unit, find_units

__all__ = ["BlendedNet", "node_op", "default_example"]


class _Function(nn.Module):
    """A traced ``call_function``/``call_method`` on one tensor, with its constant arguments."""

    def __init__(self, op: str, target, args: tuple, kwargs: dict):
        super().__init__()
        self.op, self.target, self.args, self.kwargs = op, target, tuple(args), dict(kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.op == "call_method":
            return getattr(x, self.target)(*self.args, **self.kwargs)
        return self.target(x, *self.args, **self.kwargs)


def node_op(gm: fx.GraphModule, n: fx.Node) -> nn.Module:
    """The module that computes node ``n`` from its first argument."""
    if n.op == "call_module":
        return gm.get_submodule(n.target)
    return _Function(n.op, n.target, n.args[1:], n.kwargs)


def default_example(model: nn.Module, size: int = 32) -> torch.Tensor:
    """Two ``size`` x ``size`` zero images with the input channels of the first conv."""
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if conv is None:
        raise ValueError("the model has no Conv2d: pass an example input")
    return torch.zeros(2, conv.in_channels, size, size)


def _branched(gm: fx.GraphModule, u: Unit, k: int) -> BranchedUnit | StreamUnit:
    if u.kind == "stream":
        return StreamUnit([StreamWriter(gm.get_submodule(w.conv),
                                        gm.get_submodule(w.bn) if w.bn else None, k)
                           for w in u.writers])
    excite_at = {ex.mul.name: ex for ex in u.excites}
    post = [Excitation(*[node_op(gm, g) for g in excite_at[n.name].gate]) if n.name in excite_at
            else node_op(gm, n) for n in u.post]
    tied = tuple(i for i, n in enumerate(u.post) if n.op == "call_module" and n.target in u.tied)
    excites = tuple(i for i, n in enumerate(u.post) if n.name in excite_at)
    taps = tuple(nn.Sequential(*[node_op(gm, n) for n in tap]) for tap in u.taps)
    return BranchedUnit(gm.get_submodule(u.name), gm.get_submodule(u.bn) if u.bn else None,
                        node_op(gm, u.act), nn.Sequential(*post) if post else nn.Identity(), k,
                        tied, taps, excites)


def _wire_feeders(structure: Structure, branched: list[nn.Module]) -> None:
    """Give each branched unit or stream writer whose layer is a traced consumer of a unit
    that unit as a feeder: when the layer takes in exactly the ``B n`` it (or one of its
    taps) made, it reads ``n`` through ``W B`` instead (:mod:`alphaprune.blend.branch`)."""
    owner = {}
    for m in branched:
        for part in (m.writers if isinstance(m, StreamUnit) else [m]):
            owner[id(part.conv)] = part
    for u, m in zip(structure.units, branched):
        if u.kind == "stream":
            continue
        for c in u.consumers:
            part = owner.get(id(structure.gm.get_submodule(c.name)))
            if part is not None and c.offset == 0 and c.spatial == 1 and c.bn is None:
                part.feeders.append(m)  # its output, or its taps' (they mark with its B)


def _replace_chain(g: fx.Graph, layer: fx.Node, out: fx.Node, target: str,
                   inner: tuple[fx.Node, ...] = ()) -> None:
    """Replace the single-user chain ``layer -> ... -> out`` by one call of ``target``;
    ``inner``: more nodes that only the chain uses (an excitation's gate, whose multiply
    is in the chain), erased with it."""
    with g.inserting_after(out):
        new = g.call_module(target, (layer.args[0],))
    out.replace_all_uses_with(new)
    chain, n = [], layer
    while n is not out:
        chain.append(n)
        n = next(u for u in n.users if u not in inner)
    order = {m: i for i, m in enumerate(g.nodes)}
    for n in sorted([out, *chain, *inner], key=order.__getitem__, reverse=True):
        g.erase_node(n)


def _rewrite(structure: Structure, units: list[nn.Module]) -> fx.GraphModule:
    """A copy of the traced graph in which unit ``i``'s nodes are one call of ``units[i]``
    (a stream's: each writer's ``conv [-> bn]`` one call of that writer)."""
    gm = fx.GraphModule(structure.gm, copy.deepcopy(structure.gm.graph))
    gm.add_submodule("alpha_units", nn.ModuleList(units))
    g, by_name = gm.graph, {n.name: n for n in gm.graph.nodes}
    module_node = {n.target: n for n in g.nodes if n.op == "call_module"}
    for i, u in enumerate(structure.units):
        if u.kind == "stream":
            for j, w in enumerate(u.writers):
                layer = module_node[w.conv]
                out = module_node[w.bn] if w.bn else layer
                _replace_chain(g, layer, out, f"alpha_units.{i}.writers.{j}")
            continue
        gates = tuple(by_name[n.name] for ex in u.excites for n in ex.gate)
        _replace_chain(g, module_node[u.name], by_name[u.out.name], f"alpha_units.{i}", gates)
        for j, tap in enumerate(u.taps):  # each now reads the unit's call
            _replace_chain(g, by_name[tap[0].name], by_name[tap[-1].name], f"alpha_units.{i}.taps.{j}")
    g.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    return gm


class BlendedNet(nn.Module):
    """The model with every unit branched; ``alpha`` (a saved buffer) hands it over.

    The hand-over mode turns alpha into each unit's gate (1 = original path only, 0 =
    branch only):

    * ``blend``: every unit outputs ``alpha * original + (1 - alpha) * branch``;
    * ``stochastic``: in training each unit runs its original alone with probability alpha
      and its branch alone otherwise, drawn per batch and unit (BERT-of-Theseus); in
      evaluation all branches run (the network that ships);
    * ``progressive``: the first ``round((1 - alpha) * L)`` units (from the input side, in
      graph order) run their branch, the rest their original.

    Args:
        model: the pretrained model (its modules are reused), or its :class:`Structure`.
        widths: kept width of each unit's branch, in the order of ``structure.units``.
        example: an input batch to trace ``model`` with (not needed for a Structure;
            default: two 32x32 images with the first conv's input channels).
        train_original: when False the original layers and BNs are frozen.
        handover: ``blend``, ``stochastic`` or ``progressive``.
    """

    def __init__(self, model: nn.Module | Structure, widths: Sequence[int],
                 example: torch.Tensor | None = None, train_original: bool = True,
                 handover: str = "blend"):
        super().__init__()
        if handover not in HANDOVER_MODES:
            raise ValueError(f"unknown hand-over mode {handover!r}")
        if not isinstance(model, Structure) and example is None:
            example = default_example(model)
        structure = model if isinstance(model, Structure) else find_units(model, example)
        if len(widths) != len(structure.units):
            raise ValueError(f"{len(structure.units)} units but {len(widths)} widths")
        self.structure = structure
        self.handover = handover
        branched = [_branched(structure.gm, u, int(k)) for u, k in zip(structure.units, widths)]
        _wire_feeders(structure, branched)
        self.net = _rewrite(structure, branched)
        self.register_buffer("alpha", torch.tensor(1.0))
        self.train_original = train_original
        if not train_original:
            for u in self.features:
                for layer, bn in original_modules(u):
                    for p in list(layer.parameters()) + list(bn.parameters()):
                        p.requires_grad_(False)

    @property
    def features(self) -> nn.ModuleList:
        """The branched units, in graph order."""
        return self.net.alpha_units

    def set_alpha(self, alpha: float) -> BlendedNet:
        """Set the one blend factor of the whole network; returns ``self``."""
        self.alpha.fill_(float(alpha))
        return self

    @property
    def widths(self) -> list[int]:
        return [u.width for u in self.features]

    def gates(self) -> list[float]:
        """Each unit's gate for the next forward pass (random in stochastic training)."""
        alpha, n = float(self.alpha), len(self.features)
        if self.handover == "blend" or alpha <= 0.0 or alpha >= 1.0:
            return [alpha] * n
        if self.handover == "stochastic":
            if not self.training:
                return [0.0] * n
            return [float(v) for v in (torch.rand(n) < alpha).float()]
        n_branch = round((1.0 - alpha) * n)  # progressive, from the input side
        return [0.0 if i < n_branch else 1.0 for i in range(n)]

    def run(self, x: torch.Tensor, gates: Sequence[float]) -> torch.Tensor:
        """One forward pass with explicit per-unit gates."""
        for u, a in zip(self.features, gates):
            u.gate = float(a)
        return self.net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x, self.gates())

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.train_original:  # frozen BNs keep their running statistics
            for u in self.features:
                for _, bn in original_modules(u):
                    bn.eval()
        return self
