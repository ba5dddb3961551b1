"""Channel splits of a layer's output: split into one layer per part, merged back after fusion."""

import operator

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from alphaprune.blend import BlendedNet, fuse
from alphaprune.blend.init import init_branches
from alphaprune.graph import find_units
from alphaprune.graph.chunks import merge_split_layers, split_chunked_layers
from alphaprune.graph.serialize import graph_from_data, graph_to_data
from alphaprune.graph.trace import trace
from tests.graph.zoo import ZOO, C2f

X = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))


class Split(nn.Module):
    """A conv -> BN -> act split by ``how``, each part to its own conv, both summed into
    the head (the parts must not meet before their consumers)."""

    def __init__(self, how, act=nn.ReLU):
        super().__init__()
        self.how = how
        self.conv, self.bn, self.act = nn.Conv2d(3, 12, 3, padding=1), nn.BatchNorm2d(12), act()
        self.c1, self.c2 = nn.Conv2d(4, 8, 1), nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        h = self.act(self.bn(self.conv(x)))
        if self.how == "method":
            a, b = h.split([4, 8], 1)
        elif self.how == "function":
            a, b = torch.split(h, [4, 8], dim=1)
        else:  # a chunk of three parts, the last two concatenated back
            a, b1, b2 = torch.chunk(h, 3, dim=1)
            b = torch.cat([b1, b2], 1)
        return self.fc((self.c1(a).relu() + self.c2(b).relu()).mean((2, 3)))


def _randomise_bn(model: nn.Module) -> None:
    g = torch.Generator().manual_seed(2)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))


def _splits(gm) -> list:
    return [n for n in gm.graph.nodes if n.target in ("chunk", "split", torch.chunk, torch.split)]


@pytest.mark.parametrize("how", ["method", "function", "chunk3"])
def test_a_split_layer_becomes_one_layer_per_part_with_the_same_values(how):
    torch.manual_seed(0)
    model = Split(how).eval()
    _randomise_bn(model)
    gm = trace(model, X[:2])
    assert split_chunked_layers(gm) == 1
    assert not _splits(gm)
    parts = 3 if how == "chunk3" else 2
    convs = [n for n, m in gm.named_modules() if isinstance(m, nn.Conv2d) and n.startswith("conv")]
    assert convs == [f"conv_{i}" for i in range(parts)]
    assert not hasattr(gm, "conv") and not hasattr(gm, "bn")
    torch.testing.assert_close(gm(X), model(X), rtol=0, atol=1e-6)
    # the user's model is untouched: the parts are copies
    assert model.conv.weight.shape[0] == 12 and isinstance(model.conv, nn.Conv2d)


def test_each_part_is_a_unit_of_its_own_with_its_own_consumers():
    structure = find_units(Split("method").eval(), X[:2])
    by = {u.name: u for u in structure.units}
    assert by["conv_0"].width == 4 and [c.name for c in by["conv_0"].consumers] == ["c1"]
    assert by["conv_1"].width == 8 and [c.name for c in by["conv_1"].consumers] == ["c2"]


class LinearSplit(nn.Module):
    """A linear -> GELU split on its features (the last dim), a functional activation."""

    def __init__(self):
        super().__init__()
        self.fc1, self.a, self.b = nn.Linear(12, 16), nn.Linear(8, 4), nn.Linear(8, 4)

    def forward(self, x):
        p, q = F.gelu(self.fc1(x.flatten(1)[:, :12])).chunk(2, dim=-1)
        return self.a(p) + self.b(q)


def test_a_linear_split_on_its_features_with_a_functional_activation():
    model = LinearSplit().eval()
    gm = trace(model, X[:2])
    assert split_chunked_layers(gm) == 1
    torch.testing.assert_close(gm(X), model(X), rtol=0, atol=1e-6)
    units = {u.name: u.width for u in find_units(model, X[:2]).units}
    assert units == {"fc1_0": 8, "fc1_1": 8}


class NotSplit(nn.Module):
    """Splits that stay: on H, of a sum, one whose tuple is used whole, and one of a conv
    called twice."""

    def __init__(self):
        super().__init__()
        self.c, self.d, self.e = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 8, 1), nn.Conv2d(3, 8, 1)

    def forward(self, x):
        h1, h2 = F.relu(self.c(x)).chunk(2, 2)            # on the height
        s1, s2 = (F.relu(self.d(x)) + 1).chunk(2, 1)      # of a sum
        whole = torch.cat(F.relu(self.e(x)).chunk(2, 1), 1)  # the tuple used whole
        return h1.sum() + h2.sum() + s1.sum() + s2.sum() + whole.sum()


def test_splits_that_do_not_fit_are_left_alone():
    gm = trace(NotSplit().eval(), X[:2])
    assert split_chunked_layers(gm) == 0
    assert len(_splits(gm)) == 3


def test_a_shared_layer_is_not_split():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            a, b = F.relu(self.c(self.c(x))).chunk(2, 1)
            return a.sum() + b.sum()

    gm = trace(Shared().eval(), X[:2])
    assert split_chunked_layers(gm) == 0


def test_the_fused_network_has_the_original_layer_again_split_at_the_new_widths():
    torch.manual_seed(0)
    model = ZOO["yolo_cls"]().eval()
    _randomise_bn(model)
    structure = find_units(model, X[:2])
    names = [u.name for u in structure.units]
    widths = [u.width for u in structure.units]
    widths[names.index("c2f1.cv1.0_0")], widths[names.index("c2f1.cv1.0_1")] = 3, 5
    blended = BlendedNet(structure, widths)
    init_branches(blended, "select", "l1")
    fused = fuse(blended).eval()
    with torch.no_grad():
        torch.testing.assert_close(fused(X), blended.eval().set_alpha(0.0)(X), rtol=1e-4, atol=1e-5)
    assert fused.get_submodule("c2f1.cv1.0").out_channels == 8
    assert fused.get_submodule("c2f1.cv1.1").num_features == 8
    assert not any(n.endswith(("_0", "_1")) for n, _ in fused.named_modules())
    split = [n for n in fused.graph.nodes if n.target is torch.split]
    assert [s.args[1] for s in split] == [[3, 5], [widths[names.index("c2f2.cv1.0_0")], 8]]
    assert all(u.target is operator.getitem for s in split for u in s.users)
    # the model file's graph data rebuilds it
    rebuilt = graph_from_data(graph_to_data(fused), fused.state_dict()).eval()
    torch.testing.assert_close(rebuilt(X), fused(X), rtol=0, atol=0)


def test_merge_leaves_parts_that_no_longer_line_up():
    gm = trace(C2f(8, 16).eval(), torch.randn(2, 8, 8, 8))
    assert split_chunked_layers(gm) == 1
    first = next(n for n in gm.graph.nodes if n.target == "cv1.0_0")
    with gm.graph.inserting_before(first):  # part 0 now reads another input
        other = gm.graph.call_function(torch.mul, (first.args[0], 2.0))
    first.args = (other,)
    gm.recompile()
    assert merge_split_layers(gm) == 0
    assert hasattr(gm.get_submodule("cv1"), "0_0")


def test_inspect_names_each_part_and_counts_its_flops(capsys, tmp_path):
    import json

    from alphaprune.cli import main

    path = tmp_path / "split.py"
    path.write_text("from tests.graph.test_chunks import Split\n\ndef make():\n    return Split('method')\n")
    assert main(["inspect", "--model", f"{path}:make", "--input-size", "16", "--json"]) == 0
    units = {u["name"]: u for u in json.loads(capsys.readouterr().out)["units"]}
    assert (units["conv_0"]["part_of"], units["conv_0"]["part"], units["conv_1"]["part"]) == ("conv", 0, 1)
    # each part's share of the conv's FLOPs: 3x3 kernels on 3 channels at 16x16
    assert (units["conv_0"]["flops"], units["conv_1"]["flops"]) == (4 * 27 * 256, 8 * 27 * 256)
    assert main(["inspect", "--model", f"{path}:make", "--input-size", "16"]) == 0
    assert "(part 1 of conv, split on its channels)" in capsys.readouterr().out


def test_inspect_names_the_part_a_residual_sum_leaves_whole(capsys, tmp_path):
    import json

    from alphaprune.cli import main

    path = tmp_path / "c2f.py"
    path.write_text("from tests.graph.zoo import C2f\n\n"
                    "def make():\n    return C2f(3, 16, n=1, shortcut=True)\n")
    assert main(["inspect", "--model", f"{path}:make", "--input-size", "16", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    units = {u["name"]: u for u in r["units"]}
    skipped = {s["name"]: s for s in r["unprunable"]}
    assert units["cv1.0_0"]["part"] == 0 and skipped["cv1.0_1"]["part"] == 1
    assert skipped["cv1.0_1"]["part_of"] == "cv1.0" and "tied by add" in skipped["cv1.0_1"]["reason"]


@pytest.mark.parametrize("call, sizes", [
    (lambda h: h.chunk(3, 1), [4, 4, 4]),
    (lambda h: torch.chunk(h, chunks=5, dim=1), [3, 3, 3, 3]),  # torch's rule: ceil(12 / 5)
    (lambda h: h.split(5, dim=1), [5, 5, 2]),
    (lambda h: torch.split(h, split_size_or_sections=[2, 10], dim=-3), [2, 10]),
])
def test_split_sizes_reads_every_form_of_chunk_and_split(call, sizes):
    from alphaprune.graph.chunks import split_sizes

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Conv2d(3, 12, 1)

        def forward(self, x):  # fx cannot iterate the parts: take each by its index
            parts = call(F.relu(self.c(x)))
            return [parts[i].sum() for i in range(len(sizes))]

    gm = trace(M(), X[:2])
    (node,) = _splits(gm)
    src, got, dim = split_sizes(node)
    assert (src.target, got, dim) == (F.relu, sizes, 1)


def test_tracing_again_gives_the_same_parts_so_a_resumed_run_loads_its_checkpoint():
    """A resumed run traces the model again: the parts' names and the blended network's
    state keys must come out the same."""
    model = ZOO["yolo_cls"]().eval()
    a, b = (find_units(model, X[:2]) for _ in range(2))
    assert [u.name for u in a.units] == [u.name for u in b.units]
    widths = [max(1, u.width // 2) for u in a.units]
    sa, sb = BlendedNet(a, widths).state_dict(), BlendedNet(b, widths).state_dict()
    assert sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape for k in sa)
