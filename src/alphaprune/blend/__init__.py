"""Objective selection: branched units, the blended model, width solver, init, fusion."""

from alphaprune.blend.blended import BlendedVGG
from alphaprune.blend.branch import BranchedUnit
from alphaprune.blend.fuse import fuse
from alphaprune.blend.widths import solve_widths, vgg_param_count

__all__ = ["BlendedVGG", "BranchedUnit", "fuse", "solve_widths", "vgg_param_count"]
