"""A unit's layer that takes in another unit's ``B n`` reads ``n`` through ``W B`` instead:
the same outputs and gradients, fewer channels read (``BlendedNet``'s feeders)."""

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from alphaprune.blend import BlendedNet
from alphaprune.blend.branch import StreamUnit
from alphaprune.blend.init import init_branches
from alphaprune.graph import find_units
from alphaprune.models import create_model
from tests.graph.zoo import ZOO

X = torch.randn(4, 3, 32, 32)


def _net(model, streams=False, handover="stochastic") -> BlendedNet:
    torch.manual_seed(0)
    st = find_units(model, torch.randn(2, 3, 32, 32), streams=streams)
    widths = [max(u.group, u.width // 2 // u.group * u.group) for u in st.units]
    net = BlendedNet(st, widths, handover=handover)
    init_branches(net, "random")  # B is no selection: its fold must be exact anyway
    return net


def _parts(net):
    return [p for u in net.features for p in (u.writers if isinstance(u, StreamUnit) else [u])]


def _without_feeders(net):
    twin = copy.deepcopy(net)
    for p in _parts(twin):
        p.feeders = []
    return twin


def _loss_and_grads(net, gates):
    net.zero_grad(set_to_none=True)
    out = net.run(X.to(next(net.parameters()).dtype), gates)
    (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
    return out.detach(), {n: p.grad for n, p in net.named_parameters() if p.grad is not None}


CASES = {"vgg": (lambda: create_model("vgg11", width=0.125), False),
         "resnet20 streams": (lambda: create_model("resnet20", width=0.5), True),
         "mobilenet_v2": (ZOO["mobilenet_v2"], False), "convnext": (ZOO["convnext"], False),
         "inception": (ZOO["inception"], False), "googlenet": (ZOO["googlenet"], False)}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("gates", ["all 0", "mixed"])
def test_feeders_change_no_output_or_gradient(case, gates):
    make, streams = CASES[case]
    net = _net(make(), streams).train().double()  # in float64 the two agree to rounding
    n = len(net.features)
    g = [0.0] * n if gates == "all 0" else [float(i % 2) for i in range(n)]
    twin = _without_feeders(net)
    torch.manual_seed(1)
    out, grads = _loss_and_grads(net, g)
    torch.manual_seed(1)
    want, want_grads = _loss_and_grads(twin, g)
    torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-12)
    assert grads.keys() == want_grads.keys()
    for k in grads:
        scale = want_grads[k].abs().max().clamp_min(1e-12)
        assert float((grads[k] - want_grads[k]).abs().max() / scale) < 1e-9, k


def _widths_read(layer, seen=None) -> list[int]:
    """The channels ``layer`` takes in, call by call (its ``forward`` wrapped: a hook would
    make it run unfolded)."""
    seen, forward = ([] if seen is None else seen), layer.forward

    def recording(x):
        seen.append(x.shape[1])
        return forward(x)
    layer.forward = recording
    return seen


def test_a_consumer_unit_reads_the_kept_channels_at_gate_0():
    net = _net(create_model("vgg11", width=0.125)).train()
    first, second, third = net.features[0], net.features[1], net.features[2]
    assert second.feeders == [first]  # vgg11: conv1 -> max pool (in its chain) -> conv2
    assert third.feeders == [second]
    seen = _widths_read(third.conv)
    for gate in (0.0, 1.0):  # the reader's own gate: either path reads k
        g = [0.0] * len(net.features)
        g[2] = gate
        net.run(X, g)
    assert seen == [second.width] * 2
    net.run(X, [0.0, 1.0] + [0.0] * (len(net.features) - 2))  # an original output: read whole
    assert seen[-1] == second.conv.out_channels


def test_a_unit_reads_the_kept_channels_through_a_tap():
    """GoogLeNet's block input feeds three convs directly and a fourth through max pooling
    (a tap): all four read the ``k`` channels."""
    net = _net(ZOO["googlenet"]()).train()
    stem = net.features[0]
    assert len(stem.taps) == 1
    names = [u.name for u in net.structure.units]
    readers = [net.features[names.index(c.name)] for c in net.structure.units[0].consumers]
    seen = []
    for r in readers:
        assert r.feeders[:1] == [stem]
        seen = _widths_read(r.conv, seen)
    net.set_alpha(0.0)(X)
    assert len(seen) == 4 and set(seen) == {stem.width}


@pytest.mark.parametrize("case", ["resnet20 streams", "googlenet"])
def test_no_module_keeps_a_pass_tensors(case):
    make, streams = CASES[case]
    net = _net(make(), streams).train()
    net.set_alpha(0.0)(X).sum().backward()
    copy.deepcopy(net)  # a copy cannot hold tensors autograd tracks


class InplaceDropout(nn.Module):
    """A unit's output read by one conv through an in-place dropout and by another
    directly: the second must see the dropped values."""

    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.5, inplace=True)
        self.c2, self.b2 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c3, self.b3 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        h = F.relu(self.b1(self.c1(x)))
        a = F.relu(self.b2(self.c2(self.drop(h))))
        b = F.relu(self.b3(self.c3(h)))
        return self.head(torch.cat([a, b], 1).mean((2, 3)))


def test_an_output_changed_in_place_is_read_as_it_is_now():
    net = _net(InplaceDropout()).train().double()
    assert any(p.feeders for p in _parts(net))
    twin = _without_feeders(net)
    g = [0.0] * len(net.features)
    torch.manual_seed(1)
    out, _ = _loss_and_grads(net, g)
    torch.manual_seed(1)
    want, _ = _loss_and_grads(twin, g)
    torch.testing.assert_close(out, want, rtol=1e-10, atol=1e-12)


def test_inference_mode_runs_unfolded_inputs():
    """Inference tensors keep no version counter: their outputs are not marked."""
    net = _net(create_model("resnet20", width=0.5), streams=True).eval().set_alpha(0.0)
    with torch.no_grad():
        want = net(X)
    with torch.inference_mode():
        got = net(X)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
