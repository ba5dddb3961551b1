"""Tracing: every value's shape is recorded; a model that fails on the data's shape is one line."""

from __future__ import annotations

import sys

import pytest
import torch

from alphaprune.errors import UserError
from alphaprune.graph.trace import shape_of, trace
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
