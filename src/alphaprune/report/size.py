"""Model size, FLOPs and measured latency."""

from __future__ import annotations

import copy
import statistics
import time

import torch
import torch.nn as nn

from alphaprune.allocator import keep_freed_memory

__all__ = ["count_params", "count_flops", "layer_flops", "measure_latency"]


def count_params(model: nn.Module, nonzero: bool = False) -> int:
    """Number of parameters (BN affine terms included); ``nonzero`` counts only non-zeros."""
    if nonzero:
        return int(sum(int((p != 0).sum()) for p in model.parameters()))
    return int(sum(p.numel() for p in model.parameters()))


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of all convs and linears for one input of ``input_shape`` (C, H, W).

    Reported as "FLOPs" in the convention of most pruning papers (1 MAC = 1 FLOP).
    """
    return sum(layer_flops(model, input_shape).values())


@torch.no_grad()
def layer_flops(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Multiply-accumulates of each conv and linear (by module name, summed over its calls)
    for one input of ``input_shape``."""
    names = {m: n for n, m in model.named_modules()}
    flops: dict[str, int] = {}

    def hook(m, inp, out):
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
            f = out.numel() // out.shape[0] * k
        else:  # per output position: one for (N, C), H*W for a token-wise (N, H, W, C)
            f = out.numel() // out.shape[0] * m.in_features
        flops[names[m]] = flops.get(names[m], 0) + f

    hooks = [m.register_forward_hook(hook) for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return {k: int(v) for k, v in flops.items()}


@torch.inference_mode()
def measure_latency(model: nn.Module, input_shape: tuple[int, ...], batch_size: int,
                    repeats: int = 10, warmup: int = 2, channels_last: bool = True) -> float:
    """Median seconds per forward pass of one batch (eval mode, warm-up excluded).

    Measures a copy: the caller's model keeps its mode and memory format. Sets the
    allocator for steady timings first (:func:`alphaprune.allocator.keep_freed_memory`).
    """
    keep_freed_memory()
    model = copy.deepcopy(model).eval()
    x = torch.randn(batch_size, *input_shape)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
        model = model.to(memory_format=torch.channels_last)
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
