"""Objective selection: branched units, the blended model, width solver, init, fusion."""

from alphaprune.blend.blended import BlendedNet
from alphaprune.blend.branch import BranchedUnit
from alphaprune.blend.fuse import fuse
from alphaprune.blend.widths import solve_widths

__all__ = ["BlendedNet", "BranchedUnit", "fuse", "solve_widths"]
