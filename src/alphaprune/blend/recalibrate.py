"""BatchNorm statistics of the network that ships, measured while alpha > 0.

While alpha > 0 every branch BN' (``bn2``) accumulates running statistics of whatever its
branch saw in training: in ``stochastic`` mode a mix of original and branch inputs from the
units upstream, in ``blend`` mode the mixture. The all-branch network (alpha = 0, what
fusion ships) sees neither, so scoring it with those statistics measures mostly the
mismatch: on VGG-16 w0.25 at 65% removed, 30 stochastic steps at alpha = 0.75 leave the
all-branch network at 14% validation accuracy with the accumulated statistics and at 66%
with statistics re-measured on 512 training images (``benchmarks/ship_bn.py``,
BENCHMARKS.md section 6).

:func:`ship_bn_stats` measures the all-branch statistics without touching the model;
:func:`using_bn_stats` swaps them in for a block of code (e.g. one validation pass).
Training in train mode normalises with batch statistics, so neither changes what training
does.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
import torch.nn as nn

from alphaprune.blend.blended import BlendedNet
from alphaprune.blend.branch import branch_bns

__all__ = ["ship_bn_stats", "using_bn_stats", "restored_bn"]

BNStats = list[tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def ship_bn_stats(model: BlendedNet, calib: torch.Tensor, batch_size: int = 256) -> BNStats:
    """Running mean and variance of every ``bn2`` when all branches run on ``calib``.

    ``calib`` runs in near-equal batches of at most ``batch_size`` and the statistics are
    the plain average of the batches' (cumulative, not momentum), as when BN is re-estimated
    after training. The model's own statistics, alpha and train/eval mode are left as they
    were.
    """
    bns = [b for u in model.features for b in branch_bns(u)]
    # the pass runs in train mode, so every other BN (a stream's, the stem's) would take a
    # momentum step too: all of them are restored on exit
    every = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats]
    alpha, training = float(model.alpha), model.training
    try:
        with restored_bn(every):
            model.set_alpha(0.0).train()
            for b in bns:
                b.reset_running_stats()
                b.momentum = None  # cumulative average over the calibration batches
            # near-equal batches: equal weights in the average, and never a last batch of
            # one image (BN in train mode rejects a single value per channel)
            for batch in torch.tensor_split(calib, math.ceil(len(calib) / batch_size)):
                model(batch)
            return [(b.running_mean.clone(), b.running_var.clone()) for b in bns]
    finally:
        model.set_alpha(alpha).train(training)


@contextmanager
def restored_bn(bns: list):
    """Within the block the BatchNorms ``bns`` may re-estimate their statistics (reset,
    another momentum); on exit their statistics, batch count and momentum are as before."""
    saved = [(b.running_mean.clone(), b.running_var.clone(), b.num_batches_tracked.clone(),
              b.momentum) for b in bns]
    try:
        yield
    finally:
        for b, (m, v, n, mom) in zip(bns, saved):
            b.running_mean.copy_(m)
            b.running_var.copy_(v)
            b.num_batches_tracked.copy_(n)
            b.momentum = mom


@contextmanager
def using_bn_stats(model: BlendedNet, stats: BNStats | None):
    """Within the block every ``bn2`` uses ``stats``; restores its own on exit (``None``: no-op)."""
    if stats is None:
        yield
        return
    bns = [b for u in model.features for b in branch_bns(u)]
    own = [(b.running_mean.clone(), b.running_var.clone()) for b in bns]
    try:
        for b, (m, v) in zip(bns, stats):
            b.running_mean.copy_(m)
            b.running_var.copy_(v)
        yield
    finally:
        for b, (m, v) in zip(bns, own):
            b.running_mean.copy_(m)
            b.running_var.copy_(v)
