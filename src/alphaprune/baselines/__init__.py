"""Peers for benchmarks: Torch-Pruning L1 channel pruning, unstructured magnitude pruning."""

from alphaprune.baselines.tp_l1 import torch_pruning_l1
from alphaprune.baselines.unstructured import magnitude_unstructured, make_permanent

__all__ = ["magnitude_unstructured", "make_permanent", "torch_pruning_l1"]
