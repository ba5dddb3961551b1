"""Registry ResNets: the CIFAR family's shape, and torchvision's layout and checkpoints."""

from __future__ import annotations

import pytest
import torch

from alphaprune.cli import main
from alphaprune.modelfile import load_checkpoint
from alphaprune.models import create_model
from alphaprune.models.registry import infer_kwargs
from tests.models import tv_resnet


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50"])
def test_torchvision_checkpoint_loads_unchanged_and_computes_the_same(name, tmp_path):
    torch.manual_seed(0)
    tv = getattr(tv_resnet, name)().eval()
    ours = create_model(name).eval()
    theirs = {k: tuple(v.shape) for k, v in tv.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == theirs
    path = tmp_path / "tv.pt"
    torch.save(tv.state_dict(), path)  # what torchvision's model zoo hands out
    mf = load_checkpoint(path, name)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(mf.model.eval()(x), tv(x), atol=1e-5)
    assert mf.kwargs["num_classes"] == 1000


def test_cli_reads_a_torchvision_resnet18_state_dict(tmp_path, capsys):
    torch.manual_seed(0)
    path = tmp_path / "tv18.pt"
    torch.save(tv_resnet.resnet18(num_classes=10).state_dict(), path)
    assert main(["inspect", "--model", "resnet18", "--checkpoint", str(path), "--json"]) == 0
    assert '"name": "layer1.0.conv1"' in capsys.readouterr().out


@pytest.mark.parametrize("depth, blocks", [(20, 3), (32, 5), (44, 7), (56, 9), (110, 18)])
def test_cifar_resnets_have_their_paper_depth(depth, blocks):
    m = create_model(f"resnet{depth}")
    convs = [n for n, mod in m.named_modules() if isinstance(mod, torch.nn.Conv2d)
             and "downsample" not in n]
    assert len(convs) + 1 == depth  # 3 stages x 2n convs + stem, and the fc
    assert len(m.layer1) == len(m.layer3) == blocks
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_pruned_widths_rebuild_the_same_class():
    m = create_model("resnet50", width=0.25, num_classes=10)
    kw = infer_kwargs("resnet50", m.state_dict())
    kw["widths"] = [max(1, w // 2) for w in kw["widths"]]
    kw["stem_width"] = 8
    small = create_model("resnet50", **kw)
    assert infer_kwargs("resnet50", small.state_dict()) == kw


def test_bottleneck_streams_take_any_width_and_rebuild_from_the_state_dict():
    """A pruned bottleneck stream (here 4 * planes - 1, and 3) is held by ``streams``; the
    inferred kwargs rebuild the same shapes, and whole streams record no ``streams``."""
    from alphaprune.errors import UserError

    m = create_model("resnet50", width=0.125, num_classes=10)
    assert "streams" not in infer_kwargs("resnet50", m.state_dict())
    kw = infer_kwargs("resnet50", m.state_dict())
    small = create_model("resnet50", **{**kw, "streams": [31, 63, 127, 3]})
    assert small.layer4[2].conv3.out_channels == small.fc.in_features == 3
    assert small.layer2[0].downsample[0].out_channels == small.layer3[0].conv1.in_channels == 63
    again = infer_kwargs("resnet50", small.state_dict())
    assert again["streams"] == [31, 63, 127, 3]
    create_model("resnet50", **again).load_state_dict(small.state_dict())
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(UserError, match="bottleneck ResNets only"):
        create_model("resnet18", streams=[8, 8, 8, 8])
    with pytest.raises(UserError, match="streams needs 4 positive"):
        create_model("resnet50", streams=[8, 8, 0, 8])


def test_basic_resnets_refuse_a_stem_width():
    from alphaprune.errors import UserError

    with pytest.raises(UserError, match="resnet20' takes no stem_width"):
        create_model("resnet20", stem_width=8)
    with pytest.raises(UserError, match="bottleneck"):
        create_model("resnet18", stem_width=8)


@pytest.mark.parametrize("block, cin", [("basic", 8), ("bottleneck", 32)])
def test_blocks_add_the_shortcut_in_place_without_touching_their_input(block, cin):
    """The sum is taken in place, as torchvision takes it: the block's input, which an
    identity shortcut hands on unchanged, must survive it, and gradients must still flow."""
    from alphaprune.models.resnet import BasicBlock, Bottleneck

    torch.manual_seed(0)
    blk = BasicBlock(cin, 8) if block == "basic" else Bottleneck(cin, 8)
    assert blk.downsample is None
    x = torch.randn(2, cin, 6, 6, requires_grad=True)
    kept = x.detach().clone()
    out = blk.train()(x)
    assert torch.equal(x.detach(), kept)
    last = blk.bn2(blk.conv2(blk.relu(blk.bn1(blk.conv1(kept))))) if block == "basic" else \
        blk.bn3(blk.conv3(blk.relu(blk.bn2(blk.conv2(blk.relu(blk.bn1(blk.conv1(kept))))))))
    assert torch.allclose(out, torch.relu(last + kept), atol=1e-6)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
