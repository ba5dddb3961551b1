"""The MobileNetV2 family: torchvision's layout and names, explicit widths, and the
prune -> model file -> load round trip."""

from __future__ import annotations

import json

import pytest
import torch

import alphaprune
from alphaprune.cli import main
from alphaprune.errors import UserError
from alphaprune.graph import find_units
from alphaprune.modelfile import load_checkpoint
from alphaprune.models import create_model
from alphaprune.models.mobilenet import N_UNITS, MobileNetV2, infer_mobilenet_kwargs
from alphaprune.report.size import count_flops


def _adding(model: MobileNetV2) -> list[int]:
    return [i for i, m in enumerate(model.features) if getattr(m, "use_res_connect", False)]


def test_mobilenet_v2_has_torchvisions_parameter_count_and_names():
    model = create_model("mobilenet_v2")
    # torchvision.models.mobilenet_v2(): 3,504,872 parameters, 1000 classes
    assert sum(p.numel() for p in model.parameters()) == 3_504_872
    keys = model.state_dict().keys()
    for k in ("features.0.0.weight", "features.1.conv.0.0.weight", "features.1.conv.1.weight",
              "features.2.conv.0.0.weight", "features.2.conv.1.0.weight",
              "features.2.conv.2.weight", "features.2.conv.3.running_var",
              "features.18.0.weight", "classifier.1.weight"):
        assert k in keys, k
    # torchvision's use_res_connect: stride 1 and as many channels in as out
    assert _adding(model) == [3, 5, 6, 8, 9, 10, 12, 13, 15, 16]


@pytest.mark.parametrize("name, size", [("mobilenet_v2", 1), ("mobilenet_v2_cifar", 4)])
def test_the_cifar_layout_keeps_more_resolution_with_the_same_weights(name, size):
    model = create_model(name, width=0.25, num_classes=10).eval()
    with torch.no_grad():
        assert model.features(torch.zeros(1, 3, 32, 32)).shape[-1] == size
    ref = create_model("mobilenet_v2", width=0.25, num_classes=10).state_dict()
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in ref.items()}


def test_every_unit_is_found_and_the_stem_is_cut_with_the_first_depthwise_conv():
    model = create_model("mobilenet_v2_cifar", width=0.5).eval()
    units = find_units(model, torch.zeros(2, 3, 32, 32)).units
    assert len(units) == N_UNITS
    assert units[0].name == "features.0.0" and "features.1.conv.0.0" in units[0].tied
    assert units[-1].name == "features.18.0" and units[-1].width == 1280
    streams = find_units(model, torch.zeros(2, 3, 32, 32), streams=True).units
    assert sum(u.kind == "stream" for u in streams) == 5  # the stages of more than one block


def test_pruned_widths_rebuild_exactly_and_the_additions_do_not_follow_the_widths():
    """A pruned stream may come out as wide as the stage before it: the block that opens a
    stage still does not add its input (which blocks add is the layout's)."""
    widths = [8 + i for i in range(N_UNITS)]
    streams = [16, 16, 16, 24, 24, 40, 48]  # stage 2 and 3 as wide as stage 1
    model = create_model("mobilenet_v2_cifar", widths=widths, streams=streams)
    assert _adding(model) == [3, 5, 6, 8, 9, 10, 12, 13, 15, 16]
    kwargs = infer_mobilenet_kwargs(model.state_dict())
    assert kwargs == {"widths": widths, "streams": streams, "num_classes": 10, "in_channels": 3}
    again = create_model("mobilenet_v2_cifar", **kwargs)
    again.load_state_dict(model.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again.eval()(x), model.eval()(x))


@pytest.mark.parametrize("kwargs, match", [
    ({"widths": [8] * (N_UNITS - 1)}, f"takes {N_UNITS} positive widths"),
    ({"widths": [8] * (N_UNITS - 1) + [0]}, f"takes {N_UNITS} positive widths"),
    ({"streams": [8] * 6}, "takes 7 positive streams"),
    ({"width": 0.0}, "width must be > 0"),
    ({"num_classes": 0}, "num_classes and in_channels must be positive"),
])
def test_bad_sizes_raise_one_line_user_errors(kwargs, match):
    with pytest.raises(UserError, match=match) as e:
        create_model("mobilenet_v2_cifar", **kwargs)
    assert "\n" not in str(e.value)


def test_a_partial_state_dict_and_a_short_width_list_are_one_line_user_errors():
    state = create_model("mobilenet_v2_cifar", width=0.25).state_dict()
    del state["features.5.conv.0.0.weight"]
    with pytest.raises(UserError, match="lacks features.5.conv.0.0.weight") as e:
        infer_mobilenet_kwargs(state)
    with pytest.raises(UserError, match=f"takes {N_UNITS} widths, 7 streams and 8 strides, got 3"):
        MobileNetV2([8, 8, 8], [8] * 7, [1] * 8)
    assert "\n" not in str(e.value)


def test_a_state_dict_of_another_family_is_refused_by_name():
    with pytest.raises(UserError, match="no MobileNetV2 weights"):
        infer_mobilenet_kwargs(create_model("resnet20", width=0.25).state_dict())


def _torchvision_adding(width: float) -> list[int]:
    """Where torchvision's MobileNetV2 adds: stride 1 and as many channels in as out."""
    model = create_model("mobilenet_v2", width=width)
    convs = [next(m for m in b.conv.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1)
             for b in model.features[1:-1]]
    return [i + 1 for i, (b, dw) in enumerate(zip(model.features[1:-1], convs))
            if dw.stride == (1, 1) and b.conv[0][0].in_channels == b.conv[-2].out_channels]


@pytest.mark.parametrize("width, refused", [(0.25, "features.1"), (0.125, "features.1"),
                                            (0.3, None), (1.0, None)])
def test_a_raw_checkpoint_that_torchvision_would_compute_otherwise_is_refused(tmp_path, width,
                                                                              refused):
    model = create_model("mobilenet_v2", width=width, num_classes=10).eval()
    ours, theirs = _adding(model), _torchvision_adding(width)
    assert (ours != theirs) == (refused is not None), (ours, theirs)
    path = tmp_path / "raw.pt"
    torch.save(model.state_dict(), path)
    if refused is None:
        loaded = load_checkpoint(path, "mobilenet_v2").model.eval()
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))
        return
    with pytest.raises(UserError, match=f"its {refused} has as many channels in as out") as e:
        load_checkpoint(path, "mobilenet_v2")
    assert "\n" not in str(e.value)
    # the same weights as an alphaprune model file load: its additions are this class's
    alphaprune.modelfile.save_model(tmp_path / "m.pt", model, "mobilenet_v2", [0.5] * 3,
                                    [0.25] * 3, [str(i) for i in range(10)])
    assert _adding(load_checkpoint(tmp_path / "m.pt").model) == ours


DATA = ["--data", "digits", "--subset", "300", "--batch-size", "32", "--no-progress"]
SHAPE = (1, 16, 16)  # the digits: one channel, upsampled to 16x16


def test_prune_a_registry_mobilenet_end_to_end_at_equal_flops(tmp_path, monkeypatch):
    """train -> prune --flops 0.5 (its streams cut too) -> a model file that loads as the
    registry class with the fused widths, and evaluates."""
    monkeypatch.setenv("ALPHAPRUNE_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    assert main(["train", "--model", "mobilenet_v2_cifar", "--width", "0.25", "--epochs", "1",
                 *DATA, "--out", str(tmp_path / "train")]) == 0
    out = tmp_path / "f50"
    assert main(["prune", "--checkpoint", str(tmp_path / "train" / "model.pt"), *DATA,
                 "--flops", "0.5", "--step-size", "1.0", "--final-max-epochs", "1",
                 "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["fusion_rel_error"] <= 1e-5
    fused = alphaprune.load_model(out / "pruned.pt")
    base = alphaprune.load_model(tmp_path / "train" / "model.pt")
    assert isinstance(fused, MobileNetV2)
    assert abs(1 - count_flops(fused, SHAPE) / count_flops(base, SHAPE) - 0.5) <= 0.01
    assert main(["evaluate", str(out / "pruned.pt"), "--data", "digits"]) == 0
