"""Training engine on Lightning: classifier module, callbacks, fitting helper."""

from alphaprune.train.module import ClassifierModule, OptimConfig

__all__ = ["ClassifierModule", "OptimConfig"]
