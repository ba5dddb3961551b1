"""The model-file format: save/load round trip, weights-only loading, raw state_dicts."""

from __future__ import annotations

import pytest
import torch

import alphaprune
import alphaprune.modelfile as modelfile
from alphaprune.errors import UserError
from alphaprune.modelfile import FORMAT, load_checkpoint, load_model, load_model_file, save_model
from alphaprune.models import create_model

MEAN, STD = [0.4, 0.5, 0.6], [0.2, 0.25, 0.3]
CLASSES = ["cat", "dog", "emu", "fox", "gnu"]
PRUNED = [3, 5, 7, 9, 11, 13, 2, 4]  # explicit vgg11 widths, as after pruning


def _trained_like(name="vgg11", **kw) -> torch.nn.Module:
    """A model whose BN running statistics are no longer the defaults."""
    torch.manual_seed(0)
    model = create_model(name, **kw)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, model.features[0].conv.in_channels, 32, 32) * 3 + 1)
    return model.eval()


def _outputs(model, in_channels=3) -> torch.Tensor:
    torch.manual_seed(1)
    with torch.no_grad():
        return model.eval()(torch.randn(3, in_channels, 32, 32))


@pytest.mark.parametrize("kw", [
    {"width": 0.0625, "num_classes": 5},
    {"widths": PRUNED, "num_classes": 5},
    {"width": 0.0625, "num_classes": 5, "in_channels": 1},
], ids=["width", "pruned-widths", "one-channel"])
def test_round_trip_rebuilds_the_same_model(tmp_path, kw):
    model = _trained_like(**kw)
    in_ch = kw.get("in_channels", 3)
    path = tmp_path / "sub" / "model.pt"
    meta = {"command": "test", "best_epoch": 3, "split": {"seed": 1}}
    save_model(path, model, "vgg11", MEAN, STD, CLASSES, meta)
    assert path.is_file()
    assert not list(path.parent.glob("*.tmp"))

    loaded = load_model(path)
    assert torch.equal(_outputs(loaded, in_ch), _outputs(model, in_ch))
    assert set(loaded.state_dict()) == set(model.state_dict())

    mf = load_model_file(path)
    assert mf.arch == "vgg11"
    expected_widths = kw.get("widths") or [u.conv.out_channels for u in model.features]
    assert mf.kwargs == {"num_classes": 5, "in_channels": in_ch, "widths": expected_widths}
    assert mf.mean == pytest.approx(MEAN) and mf.std == pytest.approx(STD)
    assert mf.classes == CLASSES
    assert mf.meta == meta
    assert [u.conv.out_channels for u in mf.model.features] == expected_widths


def test_top_level_load_model_is_the_same_function(tmp_path):
    model = _trained_like(width=0.0625)
    alphaprune.save_model(tmp_path / "m.pt", model, "vgg11", MEAN, STD, range(10))
    assert torch.equal(_outputs(alphaprune.load_model(tmp_path / "m.pt")), _outputs(model))
    assert load_model_file(tmp_path / "m.pt").classes == [str(i) for i in range(10)]
    assert load_model_file(tmp_path / "m.pt").meta == {}


def test_file_is_a_plain_dict_readable_with_weights_only(tmp_path):
    model = _trained_like(width=0.0625)
    save_model(tmp_path / "m.pt", model, "vgg11", MEAN, STD, list("abcdefghij"))
    blob = torch.load(tmp_path / "m.pt", weights_only=True)
    assert blob["format"] == FORMAT and blob["version"] == 1 and blob["arch"] == "vgg11"
    assert set(blob) >= {"kwargs", "state_dict", "mean", "std", "classes", "meta"}
    assert all(isinstance(v, torch.Tensor) for v in blob["state_dict"].values())


def test_channels_last_model_is_saved_and_loaded(tmp_path):
    model = _trained_like(width=0.0625).to(memory_format=torch.channels_last)
    save_model(tmp_path / "m.pt", model, "vgg11", MEAN, STD, list("abcdefghij"))
    assert torch.allclose(_outputs(load_model(tmp_path / "m.pt")), _outputs(model), atol=1e-5)


def test_load_uses_weights_only(tmp_path, monkeypatch):
    save_model(tmp_path / "m.pt", _trained_like(width=0.0625), "vgg11", MEAN, STD, list("abcdefghij"))
    seen = []
    real = torch.load

    def spy(*args, **kwargs):
        seen.append(kwargs.get("weights_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(modelfile.torch, "load", spy)
    load_model(tmp_path / "m.pt")
    assert seen and all(v is True for v in seen)


_EXECUTED: list[str] = []


def _side_effect(tag):
    _EXECUTED.append(tag)
    return {"format": FORMAT}


class _Evil:
    """Pickles to a call of ``_side_effect``: runs code when unpickled without weights_only."""

    def __reduce__(self):
        return (_side_effect, ("pwned",))


def test_pickle_with_code_is_refused_and_never_run(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save(_Evil(), path)
    _EXECUTED.clear()
    with pytest.raises(UserError, match="is not a model file"):
        load_model(path)
    with pytest.raises(UserError, match="is not a model file"):
        load_checkpoint(path, "vgg11")
    assert _EXECUTED == []


@pytest.mark.parametrize("obj", [torch.zeros(3), [1, 2, 3], {"format": "something-else"},
                                 {"weights": torch.ones(2)}], ids=["tensor", "list", "dict-format",
                                                                    "dict"])
def test_plain_torch_save_non_model_raises_user_error(tmp_path, obj):
    path = tmp_path / "x.pt"
    torch.save(obj, path)
    with pytest.raises(UserError, match=r"not an? (alphaprune )?model file") as e:
        load_model(path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("content", [b"hello, I am a text file\n", b"", b"\x80\x02garbage"],
                         ids=["text", "empty", "bad-pickle"])
def test_random_file_raises_not_a_model_file(tmp_path, content):
    path = tmp_path / "notes.pt"
    path.write_bytes(content)
    for load in (load_model, lambda p: load_checkpoint(p, "vgg11")):
        with pytest.raises(UserError, match="is not a model file") as e:
            load(path)
        assert "\n" not in str(e.value)


def test_missing_file_and_directory_raise_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_model(tmp_path / "nope.pt")
    with pytest.raises(UserError, match=r"is a directory: .* model.pt \(train\) or pruned.pt"):
        load_model(tmp_path)
    (tmp_path / "pruned.pt").write_bytes(b"")  # a prune run's folder: its file is named
    with pytest.raises(UserError, match=r"is a directory: pass the model file inside it \(.*pruned.pt\)"):
        load_model(tmp_path)


# --------------------------------------------------------------------------- load_checkpoint


def test_load_checkpoint_of_a_model_file(tmp_path):
    model = _trained_like(width=0.0625)
    save_model(tmp_path / "m.pt", model, "vgg11", MEAN, STD, list("abcdefghij"), {"k": 1})
    for name in (None, "vgg11"):
        mf = load_checkpoint(tmp_path / "m.pt", name)
        assert mf.arch == "vgg11" and mf.meta == {"k": 1}
        assert mf.mean == pytest.approx(MEAN)
        assert torch.equal(_outputs(mf.model), _outputs(model))
    with pytest.raises(UserError, match="holds a 'vgg11' model, not 'vgg16'"):
        load_checkpoint(tmp_path / "m.pt", "vgg16")


def test_a_raw_state_dict_of_another_vgg_depth_is_refused(tmp_path):
    """A raw VGG-11 state_dict loaded as VGG-16 would otherwise build an 8-conv 'vgg16'."""
    torch.save(_trained_like(width=0.0625).state_dict(), tmp_path / "sd.pt")
    assert load_checkpoint(tmp_path / "sd.pt", "vgg11").arch == "vgg11"
    with pytest.raises(UserError, match=r"sd.pt: it holds a 8-conv VGG, not 'vgg16' \(13 convs\)"):
        load_checkpoint(tmp_path / "sd.pt", "vgg16")


@pytest.mark.parametrize("wrap", ["plain", "lightning"])
def test_load_checkpoint_of_a_raw_state_dict_infers_widths(tmp_path, wrap):
    model = _trained_like(widths=PRUNED, num_classes=7, in_channels=1)
    sd = model.state_dict()
    if wrap == "lightning":
        sd = {"state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 3}
    torch.save(sd, tmp_path / "sd.pt")
    mf = load_checkpoint(tmp_path / "sd.pt", "vgg11", mean=[0.3], std=[0.2], classes=list("abcdefg"))
    assert mf.arch == "vgg11"
    assert mf.kwargs == {"widths": PRUNED, "in_channels": 1, "num_classes": 7}
    assert mf.mean == [0.3] and mf.std == [0.2] and mf.classes == list("abcdefg")
    assert torch.equal(_outputs(mf.model, 1), _outputs(model, 1))


def test_raw_state_dict_without_model_name_raises_user_error(tmp_path):
    torch.save(_trained_like(width=0.0625).state_dict(), tmp_path / "sd.pt")
    with pytest.raises(UserError, match="--model"):
        load_checkpoint(tmp_path / "sd.pt")
    with pytest.raises(UserError, match="not an alphaprune model file"):
        load_model(tmp_path / "sd.pt")


@pytest.mark.parametrize("saved, loaded_as", [("vgg11", "vgg16"), ("vgg16", "vgg11"),
                                              ("vgg13", "vgg19")])
def test_state_dict_of_another_architecture_raises_user_error(tmp_path, saved, loaded_as):
    torch.save(create_model(saved, width=0.0625).state_dict(), tmp_path / "sd.pt")
    with pytest.raises(UserError, match=loaded_as) as e:
        load_checkpoint(tmp_path / "sd.pt", loaded_as)
    assert "\n" not in str(e.value)


def test_state_dict_with_a_missing_key_raises_does_not_match(tmp_path):
    sd = create_model("vgg11", width=0.0625).state_dict()
    del sd["features.2.bn.running_var"]
    torch.save(sd, tmp_path / "sd.pt")
    with pytest.raises(UserError, match="does not match model 'vgg11'") as e:
        load_checkpoint(tmp_path / "sd.pt", "vgg11")
    assert "\n" not in str(e.value)


def test_state_dict_with_an_unknown_model_name_raises_user_error(tmp_path):
    torch.save(create_model("vgg11", width=0.0625).state_dict(), tmp_path / "sd.pt")
    with pytest.raises(UserError, match="unknown model 'resnet7'"):
        load_checkpoint(tmp_path / "sd.pt", "resnet7")


@pytest.mark.parametrize("obj, message", [
    ({"weight": torch.ones(2, 2), "bias": torch.ones(2)}, "no VGG weights"),
    ({"features.0.conv.weight": torch.ones(4, 3, 3, 3), "note": "text"}, "is not a state_dict"),
], ids=["not-vgg", "not-tensors"])
def test_non_vgg_state_dict_raises_user_error(tmp_path, obj, message):
    torch.save(obj, tmp_path / "sd.pt")
    with pytest.raises(UserError, match=message):
        load_checkpoint(tmp_path / "sd.pt", "vgg11")


def _crafted(tmp_path, edit) -> str:
    """A valid model file with one field edited as a crafted file would have it."""
    save_model(tmp_path / "m.pt", create_model("vgg11", width=0.0625, num_classes=5), "vgg11",
               MEAN, STD, CLASSES)
    blob = torch.load(tmp_path / "m.pt", weights_only=True)
    edit(blob)
    torch.save(blob, tmp_path / "crafted.pt")
    return tmp_path / "crafted.pt"


@pytest.mark.parametrize("edit, words", [
    (lambda b: b["kwargs"].update(widths=[2**16] * 8), "does not match model 'vgg11'"),
    (lambda b: b["kwargs"].update(widths=[2**40] * 8), "build no 'vgg11'"),
    (lambda b: b["kwargs"].update(num_classes="ten"), "build no 'vgg11'"),
    (lambda b: b.update(kwargs=None), "not a mapping"),
    (lambda b: b.update(state_dict=None), "holds no weights"),
    (lambda b: b.update(classes=None), "classes"),
    (lambda b: b.update(meta=None), "meta"),
    (lambda b: b.update(std=[0.2, 0.0, 0.3]), "std > 0"),
    (lambda b: b.update(mean=[0.4, float("nan"), 0.6]), "mean and std"),
], ids=["huge-widths", "overflowing-widths", "string-classes", "kwargs", "weights", "classes",
        "meta", "std-0", "nan-mean"])
def test_a_crafted_model_file_is_refused_in_one_line_before_it_allocates(tmp_path, edit, words):
    """Huge recorded widths used to try to allocate terabytes; malformed fields crashed in
    whatever read them later (a NaN loss, an AttributeError)."""
    path = _crafted(tmp_path, edit)
    with pytest.raises(UserError, match=words.replace("(", r"\(")) as e:
        load_model_file(path)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("channels, words", [(2**16, "do not fit its graph"),
                                             (2**40, "cannot be built")])
def test_a_crafted_graph_file_is_refused_before_it_allocates(tmp_path, channels, words):
    """A graph model file records each layer's sizes: a crafted one asking for a huge conv
    is refused from the shapes alone (the layers are built on the meta device first)."""
    from alphaprune.models.user import GRAPH_ARCH

    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                            torch.nn.Linear(4, 2))
    save_model(tmp_path / "g.pt", m, GRAPH_ARCH, MEAN, STD, ["a", "b"])
    blob = torch.load(tmp_path / "g.pt", weights_only=True)
    blob["graph"]["modules"]["0"]["args"].update(in_channels=channels, out_channels=channels)
    torch.save(blob, tmp_path / "crafted.pt")
    with pytest.raises(UserError, match=words) as e:
        load_model_file(tmp_path / "crafted.pt")
    assert "\n" not in str(e.value)


def test_a_raw_state_dict_without_batchnorm_counters_still_loads(tmp_path):
    """Older or converted checkpoints lack BatchNorm's num_batches_tracked: the shape check
    leaves missing keys to the strict load, which BatchNorm fills in."""
    model = create_model("vgg11", width=0.0625)
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(sd, tmp_path / "sd.pt")
    mf = load_checkpoint(tmp_path / "sd.pt", "vgg11", MEAN, STD, CLASSES[:3])
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(mf.model.eval()(x), model.eval()(x))


@pytest.mark.parametrize("edit", [lambda g: g.update(modules=[]), lambda g: g.pop("nodes"),
                                  lambda g: g.pop("modules")], ids=["list", "no-nodes",
                                                                    "no-modules"])
def test_a_malformed_graph_is_a_one_line_error(tmp_path, edit):
    from alphaprune.models.user import GRAPH_ARCH

    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    m(torch.randn(1, 3, 8, 8))
    save_model(tmp_path / "g.pt", m, GRAPH_ARCH, MEAN, STD, ["a", "b"])
    blob = torch.load(tmp_path / "g.pt", weights_only=True)
    edit(blob["graph"])
    torch.save(blob, tmp_path / "crafted.pt")
    with pytest.raises(UserError, match="corrupt|graph") as e:
        load_model_file(tmp_path / "crafted.pt")
    assert "\n" not in str(e.value)



def test_a_user_model_with_a_non_persistent_buffer_round_trips(tmp_path):
    """The graph reads the buffer; the model's own state_dict leaves it out: the file keeps
    the traced graph's weights, so the model loads and computes the same."""
    from alphaprune.models.user import GRAPH_ARCH

    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = torch.nn.Conv2d(3, 4, 3), torch.nn.Linear(4, 2)
            self.register_buffer("scale", torch.tensor([0.5, 2.0, 1.0, 3.0]).view(1, 4, 1, 1),
                                 persistent=False)

        def forward(self, x):
            return self.fc((self.conv(x) * self.scale).mean((2, 3)))

    m = Scaled().eval()
    save_model(tmp_path / "s.pt", m, GRAPH_ARCH, MEAN, STD, ["a", "b"])
    x = torch.randn(2, 3, 8, 8)
    assert torch.equal(load_model(tmp_path / "s.pt").eval()(x), m(x))
