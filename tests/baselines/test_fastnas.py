"""NVIDIA ModelOpt's FastNAS as a peer: sized to a FLOP or parameter budget on a tiny model."""

from __future__ import annotations

import pytest
import torch

from alphaprune.baselines.fastnas import fastnas_available, modelopt_fastnas
from alphaprune.errors import UserError
from alphaprune.models import create_model
from alphaprune.report.size import count_flops, count_params

needs_modelopt = pytest.mark.skipif(
    not fastnas_available(),
    reason="nvidia-modelopt (the peers extra) is not installed: run 'make peers'")

SHAPE = (3, 16, 16)


def _setup():
    torch.manual_seed(0)
    model = create_model("vgg11", width=0.25, num_classes=5).eval()
    x = torch.randn(64, *SHAPE)
    with torch.no_grad():
        ref = model(x)

    @torch.no_grad()
    def score(m) -> float:  # fidelity to the unpruned outputs: graded, unlike a random accuracy
        return -float(((m.eval()(x) - ref) ** 2).mean())

    return model, score, list(torch.randn(100, *SHAPE).split(2))  # the 50 batches it recalibrates on


@needs_modelopt
def test_fastnas_meets_a_flops_budget_and_keeps_the_output():
    """(compare's quick matrix runs it under a parameter budget.)"""
    model, score, calib = _setup()
    target = int(0.5 * count_flops(model, SHAPE))
    # widths in steps of 16 (compare uses 8): a coarser grid, half the search time
    pruned = modelopt_fastnas(model, target, SHAPE, "flops", score, calib, divisor=16)
    got = count_flops(pruned, SHAPE)
    assert 0.8 * target <= got <= target  # an upper bound, reached up to its width grid
    assert pruned(torch.randn(2, *SHAPE)).shape == (2, 5)
    widths = [m.out_channels for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
    assert any(w < b for w, b in zip(widths, [16, 32, 64, 64, 128, 128, 128, 128]))
    assert count_flops(model, SHAPE) > got and count_params(model) > count_params(pruned)


def test_a_latency_match_is_refused_with_the_fix():
    model, score, calib = _setup()
    with pytest.raises(UserError, match="--match params or --match flops"):
        modelopt_fastnas(model, 1, SHAPE, "latency", score, calib)


@needs_modelopt
def test_a_budget_fastnas_cannot_reach_is_a_one_line_error():
    """A YOLOv8 C2f network: FastNAS's tracer leaves most of its layers out of the search,
    so half of its FLOPs is out of reach; its profiler's page of tables becomes one line."""
    from tests.graph.zoo import YoloCls

    torch.manual_seed(0)
    model, shape = YoloCls().eval(), (3, 32, 32)
    calib = list(torch.randn(20, *shape).split(2))
    with pytest.raises(UserError, match=r"cannot cut YoloCls to 50\.0000% of its flops.*out of --methods"):
        modelopt_fastnas(model, count_flops(model, shape) // 2, shape, "flops", lambda m: 0.0, calib)
