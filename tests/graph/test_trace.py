"""Tracing: every value's shape is recorded; a model that fails on the data's shape is one line."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from alphaprune.errors import UserError
from alphaprune.graph.trace import is_max_pool, merge_max_pools, shape_of, split_max_pools, trace
from alphaprune.models.vgg import VGG


def test_shapes_are_recorded_for_an_input_the_model_takes():
    gm = trace(VGG(widths=[8, 16], pools=[True, True], num_classes=3), torch.zeros(2, 3, 8, 8))
    shapes = {n.name: shape_of(n) for n in gm.graph.nodes}
    assert shapes["x"] == (2, 3, 8, 8) and (2, 3) in shapes.values()


def _chatty(x):
    print("chatty forward", file=sys.stderr)
    return x * 2


torch.fx.wrap("_chatty")  # a leaf of the graph: it runs on the shape pass, not while tracing


def test_what_a_model_prints_to_stderr_on_a_good_pass_still_reaches_the_user(capfd):
    class Chatty(torch.nn.Module):
        def forward(self, x):
            return _chatty(x)

    trace(Chatty(), torch.zeros(1, 3))
    assert capfd.readouterr().err.count("chatty forward") == 1


def test_an_input_of_the_wrong_shape_is_one_line_naming_the_layers_complaint(capfd):
    model = VGG(widths=[8, 16], pools=[True, True], num_classes=3)
    with pytest.raises(UserError) as err:
        trace(model, torch.zeros(2, 1, 8, 8))  # one channel for a 3-channel model
    message = str(err.value)
    assert "\n" not in message and "shape (2, 1, 8, 8)" in message
    assert "expected input[2, 1, 8, 8] to have 3 channels" in message
    assert "size it was built for" in message
    assert "Traceback" not in capfd.readouterr().err  # torch's own dump is kept off stderr


class _PooledCats(torch.nn.Module):
    """Max pools of channel concatenations, one of them nested, and one the split leaves
    alone (it returns indices too)."""

    def __init__(self):
        super().__init__()
        self.pool = torch.nn.MaxPool2d(2, ceil_mode=True)

    def forward(self, x):
        a, b = x * 2, x - 1
        h = torch.cat([self.pool(torch.cat([a, b], 1)), self.pool(x)], 1)
        h = torch.nn.functional.max_pool2d(h, 2)
        _, idx = torch.nn.functional.max_pool2d(torch.cat([a, b], 1), 2, return_indices=True)
        return h, idx


def test_a_max_pool_of_a_cat_becomes_a_cat_of_pooled_parts_with_the_same_values():
    model, x = _PooledCats(), torch.randn(2, 3, 9, 9)
    gm = trace(model, x)
    assert split_max_pools(gm) == 2
    cats = [n for n in gm.graph.nodes if n.target is torch.cat]
    # the inner pool is split into two; the outer one pools the two parts of its cat
    pooled = [[a.target if a.op == "call_module" else a.target.__name__ for a in n.args[0]]
              for n in cats]
    assert ["pool", "pool"] in pooled and ["max_pool2d"] * 2 in pooled
    # the two new cats and the one left whole, with the shapes of what they join
    assert [shape_of(n)[1:] for n in cats] == [(6, 5, 5), (9, 2, 2), (6, 9, 9)]
    assert [shape_of(a) for a in cats[1].args[0]] == [(2, 6, 2, 2), (2, 3, 2, 2)]
    with torch.no_grad():
        (h, idx), (h0, idx0) = gm(x), model(x)
    assert torch.equal(h, h0) and torch.equal(idx, idx0)


def test_merging_undoes_the_split_and_leaves_a_pool_read_twice_alone():
    model, x = _PooledCats(), torch.randn(2, 3, 9, 9)
    gm = trace(model, x)
    before = sum(is_max_pool(gm, n) for n in gm.graph.nodes)
    split_max_pools(gm)
    assert sum(is_max_pool(gm, n) for n in gm.graph.nodes) == before + 2
    assert merge_max_pools(gm) == 2
    assert sum(is_max_pool(gm, n) for n in gm.graph.nodes) == before
    with torch.no_grad():
        (h, idx), (h0, idx0) = gm(x), model(x)
    assert torch.equal(h, h0) and torch.equal(idx, idx0)

    class Twice(torch.nn.Module):
        def forward(self, x):
            p = torch.nn.functional.max_pool2d(x, 2)
            return torch.cat([p, p], 1)

    assert merge_max_pools(trace(Twice(), x)) == 0


class _Reinterpret(nn.Module):
    """``view`` with a dtype read off a tensor reinterprets bytes: no reshape can."""

    def forward(self, x):
        return x.view(x.dtype) + x.view(x.size(0), -1).sum(1).view(-1, 1, 1, 1)


class _InplaceDropout(nn.Module):
    """An in-place functional dropout whose result is not used: it acts on ``x`` itself."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        F.dropout(x, 0.5, self.training, True)
        return self.fc(x)


class _OneModeDropout(nn.Module):
    def forward(self, x):
        if self.training:
            x = F.dropout(x, 0.5)
        return x


def test_only_a_shape_view_becomes_a_reshape():
    gm = trace(_Reinterpret())
    assert [n.target for n in gm.graph.nodes if n.op == "call_method"] == [
        "view", "size", "reshape", "sum", "reshape"]
    x = torch.randn(2, 1, 2, 2)
    assert torch.equal(gm(x), _Reinterpret()(x))


def test_an_inplace_dropout_stays_in_place_and_follows_the_mode():
    torch.manual_seed(0)
    model = _InplaceDropout()
    gm = trace(model)
    assert gm.functional_dropout_0.inplace
    x = torch.ones(64, 8)
    assert not torch.equal(gm.train()(x.clone()), gm.train()(x.clone()))  # drops in training
    assert torch.equal(gm.eval()(x.clone()), model.eval()(x.clone()))


def test_a_dropout_called_in_one_mode_only_is_warned_of_once(capfd):
    tr = sys.modules["alphaprune.graph.trace"]  # the package's `trace` names the function
    tr._WARNED.discard("_OneModeDropout")
    trace(_OneModeDropout().train())
    trace(_OneModeDropout().train())
    err = capfd.readouterr().err
    assert err.count("dropout only in one mode") == 1 and "training=self.training" in err
