"""A traced graph stored as data: memory formats (the fused network's channels-last cats)
round-trip, and nothing else of their kind is taken from a file."""

from __future__ import annotations

import json

import pytest
import torch
import torch.fx as fx
import torch.nn as nn

from alphaprune.errors import UserError
from alphaprune.graph.serialize import graph_from_data, graph_to_data


class ToChannelsLast(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return self.conv(x).contiguous(memory_format=torch.channels_last)


def test_a_memory_format_argument_round_trips():
    gm = fx.symbolic_trace(ToChannelsLast())
    data = json.loads(json.dumps(graph_to_data(gm)))  # plain data, as the file holds it
    back = graph_from_data(data, gm.state_dict())
    x = torch.randn(2, 3, 5, 5)
    y = back(x)
    assert torch.equal(y, gm(x)) and y.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("name", ["float32", "system", "__class__"])
def test_a_memory_format_the_file_names_must_be_one(name):
    gm = fx.symbolic_trace(ToChannelsLast())
    data = json.loads(json.dumps(graph_to_data(gm)).replace('"channels_last"', json.dumps(name)))
    with pytest.raises(UserError, match="unknown memory format"):
        graph_from_data(data, gm.state_dict())


def test_a_graph_with_dropout_on_in_eval_mode_warns_on_load(capsys):
    """A stored ``F.dropout`` with training=True drops activations at inference too (as
    written, or an earlier version's frozen ``training=self.training``): loading says so."""
    import torch.nn.functional as F

    class Net(nn.Module):
        def __init__(self, on: bool):
            super().__init__()
            self.fc, self.on = nn.Linear(4, 2), on

        def forward(self, x):
            x = F.dropout(x, 0.5) if self.on else F.dropout(x, 0.5, training=False)
            return self.fc(F.dropout(x, 0.0))  # p = 0 drops nothing

    for on in (True, False):
        gm = fx.symbolic_trace(Net(on))
        data = json.loads(json.dumps(graph_to_data(gm)))
        back = graph_from_data(data, gm.state_dict())
        err = capsys.readouterr().err
        assert ("applies dropout in eval mode too (dropout: training=True)" in err) is on, err
        assert "dropout_1" not in err
        x = torch.ones(8, 4)
        assert torch.equal(back.eval()(x), back.eval()(x)) is not on
        graph_from_data(data, gm.state_dict())  # loaded again: said once per process
        assert "dropout" not in capsys.readouterr().err
