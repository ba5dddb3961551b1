"""Forks: one uncut pass per batch, the rest of the graph run again for each fork."""

from __future__ import annotations

import pytest
import torch

from alphaprune.graph import find_units
from alphaprune.graph.forks import Forks
from alphaprune.models import create_model
from tests.graph.zoo import ZOO


def _gm(name: str):
    torch.manual_seed(0)
    model = (create_model("resnet20", width=0.25, num_classes=10) if name == "resnet20"
             else ZOO[name]()).eval()
    return find_units(model, torch.zeros(2, 3, 16, 16)).gm


def _double(module, args):
    return (2 * args[0], *args[1:])


@pytest.mark.parametrize("name", ["resnet20", "googlenet", "squeezenet", "inception"])
def test_every_fork_resumes_to_exactly_the_hooked_full_pass(name):
    gm = _gm(name)
    x = torch.randn(3, 3, 16, 16)
    forks = Forks(gm)
    convs = [n.target for n in gm.graph.nodes
             if n.op == "call_module" and isinstance(gm.get_submodule(n.target), torch.nn.Conv2d)]
    picked = convs[1::max(1, len(convs) // 5)]  # a few, from the start to the end
    got, seen = {}, []

    def visit(at, resume):
        seen.append(at)
        for name_ in [m for m in picked if forks.position([m]) == at]:
            h = gm.get_submodule(name_).register_forward_pre_hook(_double)
            try:
                got[name_] = resume()
            finally:
                h.remove()

    with torch.no_grad():
        out = forks.run(x, [forks.position([m]) for m in picked], visit)
        assert torch.equal(out, gm(x))  # the uncut pass is untouched by the forks
        for name_ in picked:
            h = gm.get_submodule(name_).register_forward_pre_hook(_double)
            try:
                assert torch.equal(got[name_], gm(x)), name_
            finally:
                h.remove()
    assert seen == sorted(set(seen)) and len(got) == len(picked)


def test_a_fork_holds_only_the_values_still_to_be_used():
    gm = _gm("resnet20")
    forks = Forks(gm)
    last_conv = [n.target for n in gm.graph.nodes if n.op == "call_module"][-3]
    held = []
    orig = forks._advance

    def spy(env, x, start, stop):
        if start > 0:
            held.append(len(env))
        return orig(env, x, start, stop)

    forks._advance = spy
    with torch.no_grad():
        forks.run(torch.randn(2, 3, 16, 16), [forks.position([last_conv])], lambda at, r: r())
    # deep in a resnet only the block's input (the stream) and its last output are live,
    # not the dozens of activations before them
    assert held and max(held) <= 3
    assert len(gm.graph.nodes) > 60


def test_a_module_the_graph_never_calls_forks_at_the_start():
    forks = Forks(_gm("resnet20"))
    assert forks.position(["no.such.module"]) == 0
    assert forks.position([]) == 0
