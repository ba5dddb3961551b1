"""NVIDIA Model Optimizer's FastNAS pruning (``nvidia-modelopt``, the ``peers`` extra), sized
to a parameter or FLOP budget, as a peer in ``alphaprune compare``.

FastNAS measures, layer by layer, how much a validation score drops when that layer alone
is narrowed to each width of its search space (BatchNorm statistics recalibrated on
training batches), then finds by bisection the largest drop every layer may take such that
the network meets the budget. Its default search space (multiples of 32 channels) cannot
narrow the 16-channel layers of a small CIFAR network at all; here every conv, linear and
norm layer may keep 5%, 10%, ... 100% of its channels, rounded to multiples of
``divisor`` (8).
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Callable

import torch
import torch.nn as nn

from alphaprune.errors import UserError
from alphaprune.report.size import count_flops, count_params

__all__ = ["modelopt_fastnas", "fastnas_available", "INSTALL_HINT"]

INSTALL_HINT = ("install the peers extra: make peers (or pip install --no-deps "
                "nvidia-modelopt==0.39.0 torchprofile==0.0.4, then pip install -e '.[peers]')")


def fastnas_available() -> bool:
    """Whether ``nvidia-modelopt`` imports (with the FLOP counter it needs)."""
    try:
        import modelopt.torch.prune  # noqa: F401
        from torchprofile import handlers  # noqa: F401  (0.1.0 lacks it: FastNAS fails late)
    except Exception:
        return False
    return True


def _rules(divisor: int) -> dict:
    ratios = tuple(round(0.05 * i, 2) for i in range(1, 21))
    conv = {"*": {"channels_ratio": ratios, "channel_divisor": divisor}}
    feat = {"*": {"features_ratio": ratios, "feature_divisor": divisor}}
    return {"nn.Conv2d": conv, "nn.Linear": feat, "nn.BatchNorm2d": feat, "nn.BatchNorm1d": feat}


def modelopt_fastnas(model: nn.Module, target: int, input_shape, measure: str,
                     score: Callable[[nn.Module], float], calib: list[torch.Tensor],
                     divisor: int = 8, verbose: bool = False) -> nn.Module:
    """A copy of ``model`` pruned by FastNAS to at most ``target`` parameters or FLOPs
    (``measure``; multiply-accumulates at ``input_shape``, as alphaprune counts them).

    ``score(model)`` is the validation score FastNAS maximises (higher is better);
    ``calib`` are normalised training batches it recalibrates BatchNorm on before scoring
    each candidate (it needs 50: with fewer it scores stale statistics).

    Raises:
        UserError: the extra is not installed, or no network FastNAS can build meets
        ``target``.
    """
    if measure not in ("params", "flops"):
        raise UserError(f"modelopt-fastnas is sized by parameters or FLOPs, not {measure}: "
                        "pass --match params or --match flops, or leave it out of --methods")
    if not fastnas_available():
        raise UserError(f"modelopt-fastnas needs nvidia-modelopt: {INSTALL_HINT}")
    import modelopt.torch.prune as mtp

    m = copy.deepcopy(model).eval()
    full = count_params(m) if measure == "params" else count_flops(m, input_shape)
    # FastNAS counts with its own profiler; a share of the original is counter-independent
    share = f"{100.0 * target / full:.4f}%"
    config = {"data_loader": calib, "collect_func": lambda b: (b,), "score_func": score,
              "max_iter_data_loader": len(calib), "verbose": verbose}
    try:
        with _quiet(verbose):
            pruned, _ = mtp.prune(m, mode=[("fastnas", _rules(divisor))],
                                  constraints={measure: share},
                                  dummy_input=torch.zeros(1, *input_shape), config=config)
    except ValueError as e:  # its profiler's verdict, a page of tables: one line instead
        if "constraints can be satisfied" not in str(e):
            raise
        raise UserError(f"modelopt-fastnas cannot cut {type(model).__name__} to {share} of its "
                        f"{measure}: even its narrowest network is larger (FastNAS searches only "
                        "the layers its tracer can follow; none around a chunk, for one); leave "
                        "modelopt-fastnas out of --methods for this model, or ask for a smaller "
                        "cut") from e
    return pruned.eval()


@contextlib.contextmanager
def _quiet(verbose: bool):
    """FastNAS prints its notes and a progress bar per search step; compare has its own."""
    if verbose:
        yield
        return
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield
