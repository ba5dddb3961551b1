"""A branch-only unit runs ``A`` folded into its layer: the same values and gradients, with
the layer computing ``k`` channels instead of ``n``."""

import pytest
import torch
import torch.nn as nn

from alphaprune.blend.branch import BranchedUnit, StreamWriter, compact_source, folded, mark_compact

CONVS = {
    "plain": dict(kernel_size=3, padding=1),
    "strided, bias": dict(kernel_size=3, stride=2, padding=1, bias=True),
    "dilated": dict(kernel_size=3, padding=2, dilation=2, bias=False),
    "reflect": dict(kernel_size=3, padding=1, padding_mode="reflect"),
    "circular, 1x1": dict(kernel_size=1, padding=0, padding_mode="circular"),
}


def _grads(*modules):
    return [p.grad.clone() for m in modules for p in m.parameters()]


def _both_ways(layer, A, x):
    """(output, gradients) of ``A(layer(x))`` computed folded and as two calls."""
    out = []
    for fn in (folded, lambda layer, x, A: A(layer(x))):
        layer.zero_grad(), A.zero_grad()
        y = fn(layer, x, A)
        (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
        out.append((y.detach(), _grads(layer, A)))
    return out


@pytest.mark.parametrize("kw", CONVS.values(), ids=CONVS.keys())
@pytest.mark.parametrize("channels_last", [False, True])
def test_folded_conv_matches_the_two_calls(kw, channels_last):
    torch.manual_seed(0)
    conv, A = nn.Conv2d(5, 12, **kw), nn.Conv2d(12, 4, 1, bias=False)
    x = torch.randn(3, 5, 9, 9)
    if channels_last:
        conv, A = conv.to(memory_format=torch.channels_last), A.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    (y1, g1), (y2, g2) = _both_ways(conv, A, x)
    assert y1.shape == y2.shape == (3, 4, *y2.shape[2:])
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-5)
    assert len(g1) == len(g2) == (3 if conv.bias is not None else 2)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", [(6, 10), (2, 3, 3, 10)], ids=["2-d", "token-wise"])
def test_folded_linear_matches_the_two_calls(shape):
    torch.manual_seed(0)
    lin, A = nn.Linear(10, 8), nn.Linear(8, 3, bias=False)
    (y1, g1), (y2, g2) = _both_ways(lin, A, torch.randn(*shape))
    assert y1.shape == (*shape[:-1], 3)
    torch.testing.assert_close(y1, y2, rtol=1e-5, atol=1e-5)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _layer_outputs(layer):
    """Record ``layer``'s inputs and outputs by wrapping its ``forward`` (a hook would make
    the layer run unfolded): (inputs, outputs)."""
    seen, forward = ([], []), layer.forward

    def recording(x):
        seen[0].append(x)
        seen[1].append(forward(x))
        return seen[1][-1]
    layer.forward = recording
    return seen


def test_a_branch_only_unit_runs_its_conv_at_the_kept_width():
    torch.manual_seed(0)
    unit = BranchedUnit(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Identity(), k=4)
    inputs, outputs = _layer_outputs(unit.conv)
    x = torch.randn(2, 3, 8, 8)
    unit.eval()
    y0 = unit(x, 0.0)
    assert outputs[-1].shape[1] == 4  # the fold: k channels, the n-channel output never made
    assert inputs[-1] is x
    torch.testing.assert_close(y0, unit.branch(unit.conv(x)), rtol=1e-5, atol=1e-5)
    unit(x, 0.5)  # a blend needs the full output for its original path
    assert outputs[-1].shape[1] == 16


def test_a_branch_only_stream_writer_runs_its_conv_at_the_kept_width():
    torch.manual_seed(0)
    writer = StreamWriter(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), k=4).eval()
    writer.idx = torch.tensor([1, 5, 9, 14])
    _, outputs = _layer_outputs(writer.conv)
    x = torch.randn(2, 3, 8, 8)
    writer.gate = 0.0
    y0 = writer(x)
    assert outputs[-1].shape[1] == 4
    torch.testing.assert_close(y0, writer.branch(writer.conv(x)), rtol=1e-5, atol=1e-5)
    assert y0[:, [0, 2, 15]].abs().max() == 0  # dropped channels stay zero


@pytest.mark.parametrize("gate", [0.0, 0.5])
def test_a_stream_writer_keeps_channels_last_forward_and_backward(gate):
    """A channels-first stream (or gradient) would make every layer reading it convert."""
    torch.manual_seed(0)
    cl = torch.channels_last
    writer = StreamWriter(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), k=4).to(memory_format=cl)
    writer.idx, writer.gate = torch.tensor([1, 5, 9, 14]), gate
    v = torch.randn(2, 3, 8, 8).contiguous(memory_format=cl).requires_grad_()
    seen = []
    writer.bn2.register_full_backward_hook(lambda m, gin, gout: seen.append(gout[0]))
    y = writer(v)
    assert y.is_contiguous(memory_format=cl)
    y.backward(torch.randn(2, 16, 8, 8).contiguous(memory_format=cl))
    assert seen and seen[0].is_contiguous(memory_format=cl)  # what BN' backward gets


def test_a_stream_writer_scatter_passes_the_kept_channels_gradient():
    torch.manual_seed(0)
    writer = StreamWriter(nn.Conv2d(3, 6, 1), None, k=2).eval()
    writer.idx, writer.gate = torch.tensor([4, 1]), 0.0
    x = torch.randn(1, 3, 2, 2)
    g = torch.randn(1, 6, 2, 2)
    writer(x).backward(g)
    got = writer.A.weight.grad.clone()
    writer.zero_grad()
    torch.zeros(1, 6, 2, 2).index_copy(1, writer.idx, writer.A(writer.conv(x))).backward(g)
    torch.testing.assert_close(got, writer.A.weight.grad)  # index_copy's own backward


@pytest.mark.parametrize("kind", ["pruned (a pre-hook)", "spectral norm (a parametrization)"])
def test_a_layer_with_hooks_or_parametrizations_runs_unfolded(kind):
    """Such a layer recomputes or reads its weight on each call: folding a weight into the
    call would be overridden or misread."""
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 16, 3, padding=1)
    if kind.startswith("pruned"):
        torch.nn.utils.prune.l1_unstructured(conv, "weight", 0.5)
    else:
        torch.nn.utils.parametrizations.spectral_norm(conv)
    unit = BranchedUnit(conv, nn.BatchNorm2d(16), nn.ReLU(), nn.Identity(), k=4).eval()
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(unit(x, 0.0), unit.branch(unit.conv(x)))


def test_the_fold_keeps_a_channels_first_network_channels_first():
    torch.manual_seed(0)
    cl = torch.channels_last
    for layout in (torch.contiguous_format, cl):
        a, b = (BranchedUnit(nn.Conv2d(c, 8, k, padding=k // 2), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.Identity(), k=4) for c, k in ((3, 3), (8, 1)))
        b.feeders = [a]
        a, b = a.to(memory_format=layout), b.to(memory_format=layout)
        x = torch.randn(2, 3, 8, 8).contiguous(memory_format=layout)
        y = b(a(x, 0.0), 0.0)  # b's 1x1 conv reads a's n through W B
        assert y.stride() == y.contiguous(memory_format=layout).stride()


def test_compact_source_takes_a_mark_only_from_a_feeder_and_unchanged():
    unit = BranchedUnit(nn.Conv2d(3, 8, 1), None, nn.ReLU(), nn.Identity(), k=2)
    n = torch.randn(2, 2, 4, 4)
    out = mark_compact(unit.B(n), n, unit.B)
    src, B = compact_source([unit], out)
    assert src is n and B.shape == (8, 2)
    assert compact_source([], out)[1] is None  # not from a feeder of the reader
    other = BranchedUnit(nn.Conv2d(3, 8, 1), None, nn.ReLU(), nn.Identity(), k=2)
    assert compact_source([other], out)[1] is None
    with torch.no_grad():
        out.mul_(0.5)  # changed in place since: read as it is
    assert compact_source([unit], out) == (out, None)
