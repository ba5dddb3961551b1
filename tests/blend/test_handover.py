"""Hand-over modes of :class:`BlendedNet`: which path each unit runs, and exact fusion."""

from __future__ import annotations

import copy

import pytest
import torch

from alphaprune.blend import BlendedNet, fuse
from alphaprune.blend.init import init_branches

from .test_fuse import _base, _branch_widths, _randomise_bn

MODES = ("blend", "stochastic", "progressive")
N_UNITS = 8  # vgg11


def _blended(handover: str, base_spec=0.0625, prune=0.5, seed: int = 0) -> BlendedNet:
    """A tiny vgg11 with random weights and BN statistics, select-initialised branches."""
    torch.manual_seed(seed)
    base = _base("vgg11", base_spec)
    model = BlendedNet(base, _branch_widths("vgg11", base, prune, 3), handover=handover)
    init_branches(model, "select", "bn")
    for u in model.features:  # branches that differ from the original path
        _randomise_bn(u.bn2)
    return model


class PathCounter:
    """Counts, per unit and forward pass, calls of the branch (``bn2``, after ``A``) and the
    original (``bn``)."""

    def __init__(self, model: BlendedNet):
        n = len(model.features)
        self.branch, self.original = [0] * n, [0] * n
        self.handles = []
        for i, u in enumerate(model.features):
            self.handles.append(u.bn2.register_forward_hook(self._hook(self.branch, i)))
            self.handles.append(u.bn.register_forward_hook(self._hook(self.original, i)))

    @staticmethod
    def _hook(counts, i):
        def hook(module, inputs, output):
            counts[i] += 1
        return hook

    def reset(self) -> None:
        self.branch[:] = [0] * len(self.branch)
        self.original[:] = [0] * len(self.original)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _passes(model: BlendedNet, n: int, train: bool) -> list[tuple[list[int], list[int]]]:
    """Run ``n`` forward passes; per pass, the (branch, original) call counts per unit."""
    model.train(train)
    counter = PathCounter(model)
    x = torch.randn(2, 3, 32, 32)
    out = []
    try:
        with torch.no_grad():
            for _ in range(n):
                counter.reset()
                model(x)
                out.append((list(counter.branch), list(counter.original)))
    finally:
        counter.remove()
    return out


# --------------------------------------------------------------------------- gates


@pytest.mark.parametrize("alpha", [0.0, 0.2, 0.5, 0.77, 1.0])
@pytest.mark.parametrize("train", [True, False])
def test_blend_gates_are_alpha(alpha, train):
    model = _blended("blend").set_alpha(alpha).train(train)
    assert model.gates() == pytest.approx([alpha] * N_UNITS)


@pytest.mark.parametrize("alpha", [0.9, 0.75, 0.6, 0.4, 0.3, 0.25, 0.1, 0.01])
@pytest.mark.parametrize("train", [True, False])
def test_progressive_gates_hand_over_from_the_input_side(alpha, train):
    model = _blended("progressive").set_alpha(alpha).train(train)
    n_branch = round((1 - alpha) * N_UNITS)
    want = [0.0] * n_branch + [1.0] * (N_UNITS - n_branch)
    assert model.gates() == want
    assert model.gates() == want  # deterministic


@pytest.mark.parametrize("alpha, n_branch", [(0.9, 1), (0.75, 2), (0.5, 4), (0.3, 6), (0.1, 7)])
def test_progressive_gates_hand_coded(alpha, n_branch):
    model = _blended("progressive").set_alpha(alpha)
    assert model.gates() == [0.0] * n_branch + [1.0] * (N_UNITS - n_branch)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("alpha, gate", [(0.0, 0.0), (1.0, 1.0)])
@pytest.mark.parametrize("train", [True, False])
def test_every_mode_agrees_at_the_ends(mode, alpha, gate, train):
    model = _blended(mode).set_alpha(alpha).train(train)
    for _ in range(5):
        assert model.gates() == [gate] * N_UNITS


def test_unknown_handover_is_rejected():
    base = _base("vgg11", 0.0625)
    with pytest.raises(ValueError, match="swap"):
        BlendedNet(base, _branch_widths("vgg11", base, 0.5, 3), handover="swap")


# --------------------------------------------------------------------------- paths that run


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("train", [True, False])
def test_alpha_one_never_runs_a_branch(mode, train):
    model = _blended(mode).set_alpha(1.0)
    for branch, original in _passes(model, 5, train):
        assert branch == [0] * N_UNITS
        assert original == [1] * N_UNITS


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("train", [True, False])
def test_alpha_zero_never_runs_an_original_path(mode, train):
    model = _blended(mode).set_alpha(0.0)
    for branch, original in _passes(model, 5, train):
        assert original == [0] * N_UNITS
        assert branch == [1] * N_UNITS


def test_stochastic_training_runs_exactly_one_path_per_unit_and_pass():
    model = _blended("stochastic").set_alpha(0.5)
    torch.manual_seed(1)
    seen_branch, seen_original = [0] * N_UNITS, [0] * N_UNITS
    for branch, original in _passes(model, 20, train=True):
        assert [b + o for b, o in zip(branch, original)] == [1] * N_UNITS  # never both
        seen_branch = [s + b for s, b in zip(seen_branch, branch)]
        seen_original = [s + o for s, o in zip(seen_original, original)]
    assert sum(seen_branch) > 0 and sum(seen_original) > 0
    # 20 draws per unit at p = 0.5: each unit ran both kinds (fails with prob. ~ 8 * 2^-19)
    assert all(0 < b < 20 for b in seen_branch), seen_branch
    assert all(b + o == 20 for b, o in zip(seen_branch, seen_original))


@pytest.mark.parametrize("alpha", [0.1, 0.9])
def test_stochastic_training_follows_alpha(alpha):
    """A unit keeps its original path with probability alpha."""
    model = _blended("stochastic").set_alpha(alpha)
    torch.manual_seed(2)
    n_passes = 40
    originals = sum(sum(o) for _, o in _passes(model, n_passes, train=True))
    frac = originals / (n_passes * N_UNITS)
    assert abs(frac - alpha) < 0.12, frac


def test_stochastic_training_draws_differ_between_passes():
    model = _blended("stochastic").set_alpha(0.5).train()
    torch.manual_seed(3)
    draws = {tuple(model.gates()) for _ in range(10)}
    assert len(draws) > 1
    assert all(set(d) <= {0.0, 1.0} for d in draws)


@pytest.mark.parametrize("alpha", [0.01, 0.5, 0.99])
def test_stochastic_evaluation_runs_all_branches_only(alpha):
    model = _blended("stochastic").set_alpha(alpha)
    assert model.train(False).gates() == [0.0] * N_UNITS
    for branch, original in _passes(model, 5, train=False):
        assert branch == [1] * N_UNITS and original == [0] * N_UNITS
    # ... so its output is the all-branch network's
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got = model.eval()(x)
        want = model.set_alpha(0.0)(x)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("alpha", [0.75, 0.5, 0.25])
@pytest.mark.parametrize("train", [True, False])
def test_progressive_runs_the_gated_path_only(alpha, train):
    model = _blended("progressive").set_alpha(alpha)
    n_branch = round((1 - alpha) * N_UNITS)
    for branch, original in _passes(model, 3, train):
        assert branch == [1] * n_branch + [0] * (N_UNITS - n_branch)
        assert original == [0] * n_branch + [1] * (N_UNITS - n_branch)


@pytest.mark.parametrize("train", [True, False])
def test_blend_runs_both_paths_between_the_ends(train):
    model = _blended("blend").set_alpha(0.5)
    for branch, original in _passes(model, 3, train):
        assert branch == [1] * N_UNITS and original == [1] * N_UNITS


# --------------------------------------------------------------------------- fusion


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("base_spec, prune", [(0.0625, 0.5), (0.125, 0.65)])
def test_fusion_is_exact_in_every_mode(mode, base_spec, prune):
    model = _blended(mode, base_spec, prune)
    model.set_alpha(0.0).eval()
    fused = fuse(model, "vgg11").eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        want, got = model(x), fused(x)
    scale = want.abs().max()
    assert scale > 0
    assert (got - want).abs().max() <= 1e-4 * scale
    # sharp: the original network is far away
    model.set_alpha(1.0)
    with torch.no_grad():
        assert (model(x) - got).abs().max() > 1e-2 * scale


@pytest.mark.parametrize("alpha", [0.0, 0.4, 1.0])
def test_fusion_does_not_depend_on_the_mode(alpha):
    ref = _blended("blend", seed=5)
    fused = {}
    for mode in MODES:
        m = copy.deepcopy(ref)
        m.handover = mode
        m.set_alpha(alpha).train()
        fused[mode] = fuse(m, "vgg11").state_dict()
    # built from scratch with a mode gives the same weights as a switched mode
    again = _blended("stochastic", seed=5)
    fused["stochastic-built"] = fuse(again, "vgg11").state_dict()
    want = fused.pop("blend")
    for mode, state in fused.items():
        assert set(state) == set(want)
        for k in want:
            assert torch.equal(state[k], want[k]), (mode, k)
