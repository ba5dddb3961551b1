"""``alphaprune inspect``: what the graph layer finds in a model, before any pruning.

Every prunable unit by its qualified module name (as in ``named_modules()``), with width,
parameters and FLOPs; every layer that is not a unit, with the reason; and the shares of
the parameters and FLOPs that unit widths set.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from alphaprune.graph import CostModel, find_units, keep_whole
from alphaprune.graph.chunks import split_parts
from alphaprune.report.size import count_flops, count_params, layer_flops

__all__ = ["inspect_model", "format_inspection"]


def _cut_with(unit) -> list[str]:
    """The layers cut with a unit: its depthwise and grouped convs (and their BatchNorms)
    and the two convs of each squeeze-and-excitation block on its channels."""
    return list(unit.tied) + [c for ex in unit.excites for c in (ex.reduce, ex.expand)]


def _unit_size(gm, unit, shape_flops: dict[str, int]) -> tuple[int, int]:
    """Parameters and FLOPs of a unit's own layers (a stream's: all its writers'; a unit's
    depthwise convs and their BatchNorms among them)."""
    pairs = [(w.conv, w.bn) for w in unit.writers] if unit.kind == "stream" else \
        [(unit.name, unit.bn)] + [(t, None) for t in _cut_with(unit)]
    mods = [gm.get_submodule(n) for layer, bn in pairs for n in (layer, bn) if n]
    params = sum(p.numel() for m in mods for p in m.parameters())
    return params, sum(shape_flops.get(layer, 0) for layer, _ in pairs)


def _part_of(parts: dict, name: str) -> dict:
    """``{"part_of": layer, "part": i}`` for a layer that is part ``i`` of a layer whose
    output is chunked or split on its channels (:mod:`alphaprune.graph.chunks`), else ``{}``."""
    piece = parts.get(name)
    return {"part_of": piece.names[0], "part": piece.part} if piece else {}


def inspect_model(model: nn.Module, input_shape: tuple[int, ...], streams: bool = False,
                  keep: list[str] | None = None) -> dict:
    """Units, unprunable layers and prunable shares of ``model`` for inputs of ``input_shape``
    (C, H, W), as one JSON-ready dict; with ``streams``, residual streams are units too; the
    units ``keep`` names (:func:`~alphaprune.graph.keep_whole`) are listed as kept whole."""
    structure = keep_whole(find_units(model, torch.zeros(2, *input_shape), streams=streams), keep)
    cost = CostModel(structure)
    flops = layer_flops(structure.gm, input_shape)  # by the graph's names: a split layer's parts
    parts = split_parts(structure.gm)
    units = []
    for u in structure.units:
        params, f = _unit_size(structure.gm, u, flops)
        units.append({"name": u.name, "kind": u.kind, "width": u.width, "bn": u.bn,
                      "params": params, "flops": f,
                      "consumers": [c.name for c in u.consumers], "cut_with": _cut_with(u),
                      "group": u.group, **_part_of(parts, u.name),
                      **({"writers": [w.conv for w in u.writers]} if u.kind == "stream" else {})})
    p_share, f_share = cost.prunable_share()
    return {"model": type(model).__name__, "input_shape": list(input_shape),
            "params": count_params(model), "flops": count_flops(model, input_shape),
            "units": units,
            "unprunable": [{"name": s.name, "reason": s.reason, **_part_of(parts, s.name)}
                           for s in structure.skipped],
            "prunable_param_share": p_share, "prunable_flop_share": f_share,
            "max_prune": cost.max_prune()}


def _part_text(entry: dict) -> str:
    return f"  (part {entry['part']} of {entry['part_of']}, split on its channels)" \
        if "part_of" in entry else ""


def format_inspection(r: dict) -> str:
    """The inspection as a plain-text table."""
    lines = [f"{r['model']}: {r['params']:,} params, {r['flops']:,} FLOPs at input "
             f"{'x'.join(map(str, r['input_shape']))}",
             f"{len(r['units'])} prunable units (widths set {r['prunable_param_share']:.1%} of the "
             f"params and {r['prunable_flop_share']:.1%} of the FLOPs; at most "
             f"{r['max_prune']:.1%} of the params can be removed):"]
    w = max([len(u["name"]) for u in r["units"]] + [4])
    for u in r["units"]:
        lines.append(f"  {u['name']:<{w}}  {u['kind']:<6} width {u['width']:>5}  "
                     f"params {u['params']:>10,}  FLOPs {u['flops']:>13,}  -> {', '.join(u['consumers'])}"
                     + (f"  (cut with {', '.join(u['cut_with'])}" if u.get("cut_with") else "")
                     + (f"; whole groups of {u['group']}" if u.get("group", 1) > 1 else "")
                     + (")" if u.get("cut_with") else "")
                     + _part_text(u))
    lines.append(f"{len(r['unprunable'])} layers not prunable:")
    w = max([len(s["name"]) for s in r["unprunable"]] + [4])
    lines += [f"  {s['name']:<{w}}  {s['reason']}" + _part_text(s) for s in r["unprunable"]]
    return "\n".join(lines)
