"""The Python API behind every CLI command: ``train``, ``evaluate``, ``prune``, ``demo``."""

from __future__ import annotations

import copy
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn as nn

from alphaprune.errors import UserError, as_config, first_line, require_finite
from alphaprune.graph.trace import trace
from alphaprune.modelfile import ModelFile, check_storable, load_checkpoint, model_io, save_model
from alphaprune.models import create_model
from alphaprune.models.user import GRAPH_ARCH, build_user_model, is_user_spec
from alphaprune.parallel import PLACEMENT, Processes, hardware, is_leader
from alphaprune.pipeline import (  # noqa: F401  (re-exported)
    DataConfig,
    absolute_data,
    check_compatible,
    check_splits,
    evaluate_model,
    fit_classifier,
    load_data,
    loaders,
    same_data,
    split_meta,
    split_scores,
)
from alphaprune.report.headline import SCHEMA, model_block
from alphaprune.report.page import write_report
from alphaprune.report.size import count_flops, count_params
from alphaprune.rundir import (
    finish,
    pending,
    prepare_run_dir,
    recorded,
    releasing_run_dirs,
    write_config,
    write_json,
)
from alphaprune.scope import isolated
from alphaprune.train.engine import resolve_accelerator
from alphaprune.train.module import OptimConfig

# DataConfig and the shared steps live in alphaprune.pipeline; re-exported for callers of
# the API that imported them from here
__all__ = ["DataConfig", "TrainConfig", "load_data", "loaders", "split_meta", "train", "evaluate",
           "evaluate_model", "fit_classifier", "split_scores"]


@dataclass
class TrainConfig:
    """Settings of ``alphaprune train``."""

    model: str = "vgg16"              # registry name, or FILE.py:FACTORY / package.module:FACTORY
    model_kwargs: dict = field(default_factory=dict)   # arguments of a user model's factory
    width: float = 1.0
    widths: list[int] | None = None
    epochs: int = 30
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    channels_last: bool = True
    accelerator: str = "auto"         # auto (a CUDA GPU when visible), cpu or gpu
    devices: int = 1                  # processes per node (alphaprune.parallel)
    num_nodes: int = 1
    strategy: str = "auto"            # auto or ddp
    precision: str = "32-true"        # 32-true, bf16-mixed or 16-mixed (GPU)


def _config_from_dict(d: dict) -> TrainConfig:
    d = dict(d)
    d["optim"] = OptimConfig(**d["optim"])
    d["data"] = DataConfig(**d["data"])
    return TrainConfig(**d)


@releasing_run_dirs
@isolated
def train(cfg: TrainConfig, out: str | Path, force: bool = False, resume: bool = False,
          progress: bool = True, callbacks: list | None = None) -> dict:
    """Train a registry model from scratch; keep the epoch with the best validation loss.

    Writes ``out/config.yaml``, ``out/metrics.csv`` (one row per epoch), checkpoints for
    ``resume`` and, when done, ``out/model.pt`` and ``out/summary.json``. ``callbacks`` are
    extra Lightning callbacks.

    Several processes (``cfg.devices`` x ``cfg.num_nodes``) each run this whole function;
    only rank 0 writes, and the other ranks return None after training.

    Returns:
        The summary dict (also written to ``summary.json``; None on a rank other than 0).
    """
    out, ckpt, lead = Path(out), None, is_leader()
    # the API takes a DataConfig or a dict of its fields, an OptimConfig or a dict
    cfg = replace(cfg, data=as_config(cfg.data, DataConfig, "data"),
                  optim=as_config(cfg.optim, OptimConfig, "optim"))
    if resume:
        out, ckpt = prepare_run_dir(out, "model.pt", resume=True)
        # where to run is the resuming machine's choice, not the recorded one
        cfg = replace(_config_from_dict(recorded(out, "train")), **hardware(cfg, PLACEMENT))
    require_finite(cfg)
    if cfg.epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {cfg.epochs}")
    cfg.optim.validate()
    Processes.of(cfg).validate(resolve_accelerator(cfg.accelerator), cfg.data.batch_size)
    ds, splits = load_data(cfg.data)  # validates cfg.data
    check_splits(splits)
    mean, std = ds.mean_std()
    torch.manual_seed(cfg.data.run_seed)  # the initial weights follow --seed / --train-seed too
    if is_user_spec(cfg.model):  # saved as its traced graph: loads without the user's code
        if not resume and (cfg.width != 1.0 or cfg.widths is not None):  # a resume keeps its record
            raise UserError(f"--width and --widths size the registry's models; --model "
                            f"{cfg.model} is built by your factory: drop them and size it with "
                            "--model-kwargs")
        arch, model = GRAPH_ARCH, build_user_model(cfg.model, cfg.model_kwargs)
        graph = trace(model)  # traced once for its inputs and outputs and to check it stores
        check_compatible(ModelFile(model, arch, model_io(graph), [], [], []), ds, cfg.model)
        check_storable(graph)
        _check_forward(model, tuple(ds.x.shape[1:]), cfg.model, cfg.channels_last)
    else:
        arch = cfg.model

        def make():
            return create_model(cfg.model, num_classes=ds.num_classes,
                                in_channels=ds.in_channels, width=cfg.width, widths=cfg.widths)
        _check_fits(make, "--width" if cfg.widths is None else "--widths")
        model = make()
    if lead and not resume:  # only now that every input checked out may an old run be replaced
        out, ckpt = prepare_run_dir(out, "model.pt", force=force)
        # the data as an absolute path: a resume from another folder reads the same files
        data = replace(cfg.data, data=absolute_data(cfg.data.data))
        write_config(out, {"command": "train", "train": asdict(replace(cfg, data=data))})
    t0 = time.perf_counter()
    model, best_epoch, diverged = fit_classifier(model, out, ckpt, ds, splits, mean, std, cfg.epochs,
                                       cfg.optim, cfg.data, cfg.channels_last, progress, callbacks,
                                       accelerator=cfg.accelerator, processes=Processes.of(cfg))
    if not lead:
        return None  # rank 0 saves and reports
    meta = {"source_run": str(out.resolve()), "command": "train", "split": split_meta(cfg.data),
            "best_epoch": best_epoch, "input_shape": list(ds.x.shape[1:])}
    save_model(pending(out, "model.pt"), model, arch, mean, std, ds.classes, meta)
    scores = split_scores(model, ds, splits, mean, std)
    params, flops = count_params(model), count_flops(model, tuple(ds.x.shape[1:]))
    summary = {"schema": SCHEMA, "command": "train", "model": model_block(params, flops, scores),
               "arch": cfg.model, "params": params, "flops": flops, "best_epoch": best_epoch,
               "diverged": diverged, "seconds": round(time.perf_counter() - t0, 2), **scores}
    write_json(out / "summary.json", summary)
    write_report(out)
    finish(out, "model.pt")  # the last file: the run is finished only now
    return summary


def _check_forward(model: nn.Module, shape: tuple[int, ...], spec: str,
                   channels_last: bool) -> None:
    """A user model trains through its own forward: refuse, before any epoch, one that fails
    on the data's images, or (``channels_last``) on the channels-last maps training hands
    it (``x.view(x.size(0), -1)``: the classic flatten needs row-major strides)."""
    probe = copy.deepcopy(model).eval()
    x = torch.randn(2, *shape)
    for layout in ("row-major", "channels-last") if channels_last else ("row-major",):
        if layout == "channels-last":
            probe = probe.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        try:
            with torch.no_grad():
                probe(x)
        except RuntimeError as e:
            what = first_line(e).split(" (")[0]
            if layout == "row-major":
                raise UserError(f"--model {spec} fails on the data's images of shape {shape} "
                                f"({what}): pass data of the size it was built for") from e
            raise UserError(f"--model {spec} fails on channels-last maps ({what}): flatten "
                            "with torch.flatten(x, 1) or x.reshape(...) instead of x.view(...), "
                            "or pass --no-channels-last") from e


def _check_fits(make, option: str) -> None:
    """Refuse a model whose training state cannot fit this machine's memory (built first on
    the meta device: no memory), before the kernel kills the process (a ``--width 25`` typed
    for 0.25, say). The state counts four copies of the weights: themselves, their gradients,
    the momentum and the best epoch's copy."""
    with torch.device("meta"):
        probe = make()
    need = 4 * sum(p.numel() * p.element_size() for p in probe.parameters())
    total, where = memory_limit()
    if need > total:
        n = sum(p.numel() for p in probe.parameters())
        raise UserError(f"the model has {n:,} parameters, about {need / 2**30:,.1f} GiB to "
                        f"train, more than the {total / 2**30:,.1f} GiB {where} allows: pass a "
                        f"smaller {option}")


# where a container's memory limit is read: cgroup v2, then v1 (no limit reads "max" or a
# number near 2**63)
CGROUP_LIMITS = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def cgroup_files(proc: str = "/proc/self/cgroup") -> list[str]:
    """:data:`CGROUP_LIMITS` and the same files of this process's own cgroup and those
    above it (``proc``): a limit may sit on a nested group."""
    files = list(CGROUP_LIMITS)
    try:
        lines = Path(proc).read_text().splitlines()
    except OSError:
        return files
    for line in lines:  # "0::/path" (v2) or "4:memory:/path" (v1)
        _, controllers, group = (line.split(":", 2) + ["", ""])[:3]
        v1 = "memory" in controllers.split(",")  # v1 may list it with others ("cpu,memory")
        if (controllers and not v1) or not group.startswith("/"):
            continue
        root = "/sys/fs/cgroup/memory" if v1 else "/sys/fs/cgroup"
        name = "memory.limit_in_bytes" if v1 else "memory.max"
        parts = Path(group).parts[1:]
        files += [str(Path(root, *parts[:i], name)) for i in range(len(parts), 0, -1)]
    return files


def memory_limit() -> tuple[int, str]:
    """``(bytes, what)``: the memory this process may use, the machine's physical memory or,
    where smaller, a cgroup limit on it (a container's kernel kills a process over its limit
    however much the machine has)."""
    limit, where = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "this machine"
    for path in cgroup_files():
        try:
            text = Path(path).read_text().strip()
        except (OSError, UnicodeDecodeError):
            continue
        if text.isdigit() and int(text) < limit:
            limit, where = int(text), f"this container ({path})"
    return limit, where


@isolated
def evaluate(model_path: str | Path, data: str | None = None, split: str = "test",
             model_name: str | None = None, data_cfg: DataConfig | None = None,
             model_kwargs: dict | None = None) -> dict:
    """Loss and accuracy of a model file on one split, plus its size and FLOPs.

    The split is carved exactly as when the model was trained (seed and fractions recorded
    in the model file) whenever ``data`` is the same dataset; otherwise ``data_cfg``'s.
    """
    cfg = as_config(data_cfg or DataConfig(), DataConfig, "data_cfg")  # a copy: the caller's stays
    mf = load_checkpoint(model_path, model_name, model_kwargs=model_kwargs)
    recorded = mf.meta.get("split", {})
    if data is None and data_cfg is not None and cfg.data != DataConfig.data:
        data = cfg.data  # the data the caller's config names
    if data is None:
        data = recorded.get("data")
        if data is None:
            raise UserError("no --data given and the model file records none: pass --data")
    if data_cfg is None and same_data(recorded.get("data"), data):
        cfg = DataConfig(**{**asdict(cfg), **recorded})
    cfg = replace(cfg, data=data)
    ds, splits = load_data(cfg)
    check_compatible(mf, ds, model_path)
    # a raw state_dict records no normalisation: the data's own constants stand in
    mean, std = (mf.mean, mf.std) if mf.mean else ds.mean_std()
    r = evaluate_model(mf.model, ds, splits.get(split), mean, std)
    r.update({"split": split, "model": mf.arch, "params": count_params(mf.model),
              "flops": count_flops(mf.model, tuple(ds.x.shape[1:])), "data": data})
    return r
