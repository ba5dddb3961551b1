"""What a network writes per input: the memory-traffic count the auto solver breaks ties by."""

from __future__ import annotations

import torch.nn as nn

from alphaprune.graph.cost import written_elements


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
