"""The one model-file format every command writes and reads.

A model file is a plain dict saved with ``torch.save`` and read with
``torch.load(weights_only=True)``::

    {"format": "alphaprune-model", "version": 1, "arch": "vgg16",
     "kwargs": {"num_classes": 10, "in_channels": 3, "widths": [...]},
     "state_dict": {...}, "mean": [...], "std": [...], "classes": [...], "meta": {...}}

``kwargs`` always carries explicit per-unit ``widths`` (read back from the weights' shapes
by the registry family's ``infer``) so pruned models rebuild exactly.

A model that is not in the registry (a user model, ``arch: "graph"``) also carries
``"graph"``: its traced graph as plain data (:mod:`alphaprune.graph.serialize`), rebuilt
from allow-listed ``torch.nn`` layers and functions, so it loads without the user's code.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.fx as fx
import torch.nn as nn

from alphaprune.atomic import atomic_torch_save
from alphaprune.checksum import damaged_member
from alphaprune.errors import UserError, first_line
from alphaprune.graph.serialize import graph_from_data, graph_to_data, shape_mismatch
from alphaprune.graph.trace import check_one_output, trace
from alphaprune.models import create_model
from alphaprune.models.registry import infer_kwargs, raw_checkpoint_problem
from alphaprune.models.user import GRAPH_ARCH, build_user_model, is_user_spec
from alphaprune.models.vgg import infer_vgg_kwargs
from alphaprune.rundir import read_config
from alphaprune.scope import isolated

__all__ = ["ModelFile", "load_model", "load_model_file", "save_model", "load_checkpoint",
           "infer_vgg_kwargs", "FORMAT"]

FORMAT = "alphaprune-model"


@dataclass
class ModelFile:
    """A rebuilt model with everything needed to use it."""

    model: nn.Module
    arch: str
    kwargs: dict
    mean: list[float]
    std: list[float]
    classes: list[str]
    meta: dict = field(default_factory=dict)


def widths_of(model: nn.Module) -> list[int]:
    """Output widths of a model's prunable units (as the graph finds them)."""
    from alphaprune.blend.blended import default_example
    from alphaprune.graph import find_units  # the graph layer imports the models

    return [u.width for u in find_units(model, default_example(model)).units]


def save_model(path: str | os.PathLike, model: nn.Module, arch: str, mean, std,
               classes, meta: dict | None = None) -> None:
    """Write a model file atomically (temp file + rename).

    The constructor kwargs are read off the model (widths, classes, input channels) so the
    file always rebuilds the exact module.
    """
    bad = _non_finite(model.state_dict())
    if bad:
        raise UserError(f"the model's weights are not finite ({bad}): training diverged, so "
                        f"{path} was not written; lower --lr and start again")
    graph, state = None, model.state_dict()
    if arch == GRAPH_ARCH:
        gm = model if isinstance(model, fx.GraphModule) else trace(model)
        graph, kwargs = graph_to_data(gm), graph_io(gm)
        # the traced graph's: a non-persistent buffer the graph reads is a buffer there too
        state = gm.state_dict()
    else:
        kwargs = infer_kwargs(arch, state)
    blob = {"format": FORMAT, "version": 1, "arch": arch, "kwargs": kwargs,
            **({"graph": graph} if graph is not None else {}),
            "state_dict": {k: v.detach().cpu().contiguous() for k, v in state.items()},
            "mean": [float(v) for v in mean], "std": [float(v) for v in std],
            "classes": [str(c) for c in classes], "meta": dict(meta or {})}
    atomic_torch_save(blob, Path(path))


def _torch_load(path: Path):
    if not path.exists():
        raise UserError(f"model file {path} does not exist: check the path")
    if path.is_dir():
        inside = [n for n in ("pruned.pt", "model.pt") if (path / n).is_file()]
        name = path / inside[0] if inside else "its model.pt (train) or pruned.pt (prune)"
        raise UserError(f"{path} is a directory: pass the model file inside it ({name})")
    if (bad := damaged_member(path)) is not None:
        raise UserError(f"model file {path} is damaged: the bytes of its '{bad}' do not match "
                        "the checksum written with them; copy the file again from where it came")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise UserError(f"{path} is not a model file ({type(e).__name__}): pass a .pt written "
                        "by alphaprune or a state_dict saved with torch.save") from e


def _non_finite(state_dict: dict) -> str | None:
    """The first floating tensor holding NaN or inf, by name (None if all are finite)."""
    for k, v in state_dict.items():
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not torch.isfinite(v).all():
            return k
    return None


def _check_finite(state_dict: dict, path) -> None:
    bad = _non_finite(state_dict)
    if bad:
        raise UserError(f"{path} holds NaN or infinite weights ({bad}): the model diverged; "
                        "pass a checkpoint of a model that trained well")


def model_io(model: nn.Module) -> dict:
    """:func:`graph_io` of any traceable module (a user model before it is saved); one whose
    forward returns more than one tensor is refused."""
    gm = model if isinstance(model, fx.GraphModule) else trace(model)
    check_one_output(gm, type(model).__name__)
    return graph_io(gm)


def check_storable(model: nn.Module) -> None:
    """Refuse, before any training, a model whose file could not be written: a layer,
    function or method the stored graph cannot hold (:mod:`alphaprune.graph.serialize`)."""
    graph_to_data(model if isinstance(model, fx.GraphModule) else trace(model))


def graph_io(gm: fx.GraphModule) -> dict:
    """``in_channels`` (the first conv's) and ``num_classes`` (the last layer's outputs)."""
    layers = [gm.get_submodule(n.target) for n in gm.graph.nodes if n.op == "call_module"
              and isinstance(gm.get_submodule(n.target), (nn.Conv2d, nn.Linear))]
    if not layers:
        return {}
    first, last = layers[0], layers[-1]
    return {"in_channels": first.in_channels if isinstance(first, nn.Conv2d) else first.in_features,
            "num_classes": last.out_features if isinstance(last, nn.Linear) else last.out_channels}


def _build(arch: str, kwargs: dict, state_dict: dict, path, graph=None) -> nn.Module:
    if not isinstance(state_dict, dict):
        raise UserError(f"{path} is corrupt (it holds no weights): re-save it")
    _check_finite(state_dict, path)
    if arch == GRAPH_ARCH:
        if graph is None:
            raise UserError(f"{path} is a graph model file without its graph: re-save it")
        try:
            return graph_from_data(graph, state_dict)
        except UserError:
            raise
        except Exception as e:  # a graph description edited or written by something else
            raise UserError(f"{path} is corrupt (its graph cannot be rebuilt: {type(e).__name__}"
                            f" {first_line(e)}): re-save it") from e
    _check_shapes(arch, kwargs, state_dict, path)
    try:
        model = create_model(arch, **kwargs)
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"{path} is corrupt (its arguments build no '{arch}': "
                        f"{first_line(e)}): re-save it") from e
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        hint = first[1].strip() if len(first) > 1 else first[0]
        raise UserError(f"checkpoint {path} does not match model '{arch}' ({hint}): pass the "
                        "model name and width it was trained with") from e
    return model


def _check_shapes(arch: str, kwargs, state_dict: dict, path) -> None:
    """Build ``arch`` on the meta device (no memory) and compare the shapes of the weights
    it shares with the file, so that a file whose arguments would allocate terabytes is
    refused before anything is allocated. A constructor the meta device cannot run (one
    that reads a tensor's value) is left to the real build; missing or extra keys are left
    to the strict load after it (BatchNorm fills in an old file's missing counters)."""
    if not isinstance(kwargs, dict):
        raise UserError(f"{path} is corrupt (its model arguments are not a mapping): re-save it")
    try:
        with torch.device("meta"):
            probe = create_model(arch, **kwargs)
    except UserError:
        raise
    except Exception:
        return
    if (bad := shape_mismatch(probe, state_dict)) is not None:
        key, want, got = bad
        raise UserError(f"checkpoint {path} does not match model '{arch}' ({key}: the model "
                        f"has {want}, the file {got}): pass the model name and width it was "
                        "trained with")


def _check_fields(blob: dict, path) -> None:
    """A model file's normalisation, classes and meta must be what :func:`save_model`
    writes: a crafted file fails here in one line, not in whatever reads them later."""
    mean, std, classes = blob.get("mean"), blob.get("std"), blob.get("classes")
    numbers = all(isinstance(v, list) and v and all(type(x) in (int, float) and math.isfinite(x)
                                                   for x in v) for v in (mean, std))
    if not (numbers and len(mean) == len(std) and all(x > 0 for x in std)):
        raise UserError(f"{path} is corrupt (its mean and std are not finite numbers, one per "
                        "input channel, with std > 0): re-save it")
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise UserError(f"{path} is corrupt (its classes are not a list of names): re-save it")
    if not isinstance(blob.get("meta", {}), dict) or not isinstance(blob.get("arch"), str):
        raise UserError(f"{path} is corrupt (its arch or meta is malformed): re-save it")


def load_model_file(path: str | os.PathLike) -> ModelFile:
    """Read a model file and rebuild its module (no user code needed).

    Raises:
        UserError: missing file, or a file that is not an alphaprune model file.
    """
    path = Path(path)
    blob = _torch_load(path)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        _refuse_run_checkpoint(path, blob)
        raise UserError(f"{path} is not an alphaprune model file: pass one written by "
                        "'alphaprune train' or 'prune', or add --model NAME for a raw state_dict")
    _check_fields(blob, path)
    model = _build(blob["arch"], blob.get("kwargs"), blob.get("state_dict"), path,
                   blob.get("graph"))
    return ModelFile(model, blob["arch"], blob["kwargs"], blob["mean"], blob["std"],
                     blob["classes"], blob.get("meta", {}))


def _refuse_run_checkpoint(path: Path, blob, model_name: str | None = None) -> None:
    """A run's own training checkpoint (``checkpoints/last.ckpt``: Lightning's, for
    ``--resume``) is no model file: name the run's model file instead. A train run's
    weights as of its last epoch still load as a raw state_dict with ``model_name``; a
    prune run's checkpoint holds the branched network, which no model name rebuilds."""
    run = path.parent.parent
    if not (isinstance(blob, dict) and "pytorch-lightning_version" in blob
            and path.parent.name == "checkpoints" and (run / "config.yaml").is_file()):
        return
    try:
        command = read_config(run).get("command")
    except UserError:  # a corrupt config: name the model file all the same
        command = None
    if model_name and command == "train":
        return
    files = [run / n for n in ("pruned.pt", "model.pt") if (run / n).is_file()]
    name = files[0] if files else f"{run}/model.pt or pruned.pt once the run has finished"
    also = (", or add --model NAME to read its weights as of its last epoch"
            if command == "train" else "")
    raise UserError(f"{path} is the run's training checkpoint (for --resume), not a model "
                    f"file: pass {name}{also}")


@isolated
def load_model(path: str | os.PathLike) -> nn.Module:
    """Rebuild the module stored in a model file (see :func:`load_model_file`)."""
    return load_model_file(path).model


def load_checkpoint(path: str | os.PathLike, model_name: str | None = None,
                    mean=None, std=None, classes=None, model_kwargs: dict | None = None) -> ModelFile:
    """Load a model file, or a raw state_dict given the registry name of its model or a user
    model spec (``FILE.py:FACTORY``, built with ``model_kwargs``).

    A raw state_dict has no normalisation or class names: ``mean``/``std``/``classes`` fill
    them (callers pass the dataset's).
    """
    path = Path(path)
    blob = _torch_load(path)
    user = is_user_spec(model_name)
    if isinstance(blob, dict) and blob.get("format") == FORMAT:
        mf = load_model_file(path)
        if model_name and not user and model_name != mf.arch:
            raise UserError(f"{path} holds a '{mf.arch}' model, not '{model_name}': drop --model "
                            f"or pass --model {mf.arch}")
        return mf
    _refuse_run_checkpoint(path, blob, model_name)
    if not model_name:
        raise UserError(f"{path} is not an alphaprune model file: pass --model NAME to load it "
                        "as a raw state_dict")
    if isinstance(blob, dict) and isinstance(blob.get("state_dict"), dict):
        blob = blob["state_dict"]  # Lightning-style wrapper
    if not isinstance(blob, dict) or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise UserError(f"{path} is not a state_dict: save one with torch.save(model.state_dict())")
    blob = {k.removeprefix("model."): v for k, v in blob.items()}
    if user:
        return _user_checkpoint(path, model_name, model_kwargs, blob, mean, std, classes)
    kwargs = infer_kwargs(model_name, blob)
    problem = raw_checkpoint_problem(model_name, kwargs)
    if problem is not None:
        raise UserError(f"checkpoint {path}: {problem}")
    model = _build(model_name, kwargs, blob, path)
    return ModelFile(model, model_name, kwargs, list(mean or []), list(std or []),
                     list(classes or []), {"source": str(path)})


def _user_checkpoint(path, spec, model_kwargs, state_dict, mean, std, classes) -> ModelFile:
    _check_finite(state_dict, path)
    model = build_user_model(spec, model_kwargs)
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as e:
        hint = str(e).strip().splitlines()
        raise UserError(f"checkpoint {path} does not fit --model {spec} "
                        f"({(hint[1] if len(hint) > 1 else hint[0]).strip()}): pass the factory and "
                        "--model-kwargs it was trained with") from e
    return ModelFile(model, GRAPH_ARCH, model_io(model), list(mean or []), list(std or []),
                     list(classes or []), {"source": str(path), "model": spec})
