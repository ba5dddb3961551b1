"""What a network writes per input (the memory-traffic count the auto solver breaks ties
by), and what a token-wise linear costs."""

from __future__ import annotations

import torch
import torch.nn as nn

from alphaprune.graph import CostModel, find_units
from alphaprune.graph.cost import written_elements
from alphaprune.report.size import count_flops, layer_flops
from tests.graph.zoo import ZOO


def test_written_elements_counts_every_layer_output_for_one_input():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 5))
    # conv, BN, ReLU: 4 x 8 x 8 each; pool: 4 x 4 x 4; linear: 5; the flatten is a view
    assert written_elements(net, (3, 8, 8)) == 3 * 256 + 64 + 5


def test_views_and_pass_throughs_are_not_counted():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.drop = nn.Conv2d(3, 4, 1), nn.Dropout(0.5)

        def forward(self, x):
            y = self.drop(self.conv(x)).view(x.size(0), -1).reshape(x.size(0), 4, 8, 8)
            return y.permute(0, 2, 3, 1).squeeze(1) + 1

    # the conv's 4 x 8 x 8 and the sum's
    assert written_elements(Net().eval(), (3, 8, 8)) == 2 * 256


def test_a_model_that_squeezes_its_batch_is_counted_per_input():
    """Traced at batch 2: a batch of 1 would break a model that squeezes it away."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1)

        def forward(self, x):
            return self.conv(x).mean((2, 3)).squeeze().log_softmax(dim=1)

    assert written_elements(Net().eval(), (3, 8, 8)) == 256 + 4 + 4


def test_a_narrower_early_layer_writes_less_than_a_narrower_late_one_at_equal_flops():
    """Equal FLOPs cut early (high resolution) or late: the early cut writes less."""
    def net(c1, c2):
        return nn.Sequential(nn.Conv2d(3, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU())
    early, late = net(4, 48), net(16, 3)
    # multiply-accumulates per 3x3 tap: 4*3*64 + 48*4*16 = 16*3*64 + 3*16*16 = 3,840
    assert written_elements(early, (3, 8, 8)) == 4 * 64 * 2 + 4 * 16 + 48 * 16 * 2
    assert written_elements(late, (3, 8, 8)) == 16 * 64 * 2 + 16 * 16 + 3 * 16 * 2
    assert written_elements(early, (3, 8, 8)) < written_elements(late, (3, 8, 8))


def test_a_token_wise_linear_costs_its_features_at_every_position():
    """A Linear on (N, H, W, C) runs once per position: H*W*in*out multiply-accumulates, in
    the whole-model count and in the cost model alike."""
    model = ZOO["convnext"]().eval()
    flops = layer_flops(model, (3, 32, 32))
    assert flops["stage1.pwconv1"] == 16 * 16 * 8 * 32 and flops["stage2.pwconv2"] == 8 * 8 * 64 * 16
    assert flops["head"] == 16 * 10
    cost = CostModel(find_units(model, torch.zeros(2, 3, 32, 32)))
    assert cost.flops(cost.base_widths) == count_flops(model, (3, 32, 32))
    half = [w // 2 for w in cost.base_widths]
    saved = 16 * 16 * 16 * (8 + 8) + 8 * 8 * 32 * (16 + 16)  # each MLP's two linears, halved
    assert cost.flops(cost.base_widths) - cost.flops(half) == saved
