"""A unit's taps (max-pooled paths beside its other consumers): each path pools before B."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from alphaprune.blend import BlendedNet, fuse
from alphaprune.blend.branch import BranchedUnit
from alphaprune.graph import find_units
from alphaprune.graph.trace import is_max_pool, trace
from tests.graph.zoo import ZOO

X = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(4))


def _unit() -> BranchedUnit:
    torch.manual_seed(0)
    pool = nn.MaxPool2d(3, 1, 1)
    return BranchedUnit(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Identity(),
                        3, taps=(nn.Sequential(pool),)).eval()


@pytest.mark.parametrize("a", [0.0, 0.3, 1.0])
def test_a_tap_pools_each_path_before_b_and_mixes_them_by_the_gate(a):
    u, pool = _unit(), nn.MaxPool2d(3, 1, 1)
    with torch.no_grad():
        out = u(X, a)
        got = u.taps[0](out)
        z = u.conv(X)
        want = a * pool(u.original(z)) + (1 - a) * u.B(pool(u.narrow(z)))
    torch.testing.assert_close(got, want)
    if a == 0.0:  # the branch alone: not the pool of its output after B
        assert not torch.allclose(got, pool(out))


def test_the_branch_learns_through_the_tap_alone():
    u = _unit().train()
    u.taps[0](u(X, 0.0)).square().mean().backward()  # the unit's own output is not used
    assert u.A.weight.grad.abs().sum() > 0 and u.B.weight.grad.abs().sum() > 0


def test_a_tap_keeps_nothing_after_it_ran_and_refuses_to_run_before_its_unit():
    u = _unit()
    with torch.no_grad():
        u.taps[0](u(X, 0.5))
    assert u.taps[0].held is None
    copy.deepcopy(u)  # nothing held: a teacher copy of the network can be made
    with pytest.raises(RuntimeError, match="before its unit"):
        u.taps[0](X)


def test_a_branched_googlenet_is_the_original_at_alpha_1():
    model = ZOO["googlenet"]().eval()
    structure = find_units(model, X[:2])
    assert sum(len(u.taps) for u in structure.units) == 5  # the stem, the four branches
    blended = BlendedNet(structure, [max(1, u.width // 2) for u in structure.units])
    with torch.no_grad():
        assert torch.equal(blended.eval().set_alpha(1.0)(X), model(X))


@pytest.mark.parametrize("name", ["googlenet", "squeezenet"])
def test_the_fused_network_pools_whole_cats_again(name):
    """The pools split for the units are merged back after fusion (the split ran GoogLeNet
    15% slower): as many max pools as the model's own graph, and the same output."""
    model = ZOO[name]().eval()
    structure = find_units(model, X[:2])
    blended = BlendedNet(structure, [max(1, u.width // 2) for u in structure.units]).eval()
    fused = fuse(blended)

    def pools(gm):
        return sum(is_max_pool(gm, n) for n in gm.graph.nodes)

    assert pools(fused) == pools(trace(model)) < pools(structure.gm)
    with torch.no_grad():
        torch.testing.assert_close(fused(X), blended.set_alpha(0.0)(X), rtol=1e-5, atol=1e-5)
