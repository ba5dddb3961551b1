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
