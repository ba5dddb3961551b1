"""Command line: parse -> typed config dataclasses -> :mod:`alphaprune.api`."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

from alphaprune.allocator import keep_freed_memory
from alphaprune.errors import UserError, first_line
from alphaprune.recipe import FEATURE_DISTILL, FEATURE_MAX_IMAGE_EPOCHS, FEATURE_MAX_IMAGE_EPOCHS_RESIDUAL

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (exit code 2, no usage dump), and without abbreviated
    options: ``--resume`` compares the options given, by name, with the recorded run's, and
    a prefix such as ``--subs`` would slip past that check."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _widths(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--widths takes comma-separated integers, got {text!r}") from None


def _names(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"--keep takes comma-separated unit names or patterns, "
                                         f"got {text!r}")
    return names


def _add_data(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--data", required=required, default=None if required else None,
                   help="ImageFolder dir, CIFAR python-pickle dir, or 'digits' (bundled)")
    p.add_argument("--val-frac", type=float, default=0.1)
    p.add_argument("--test-frac", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0, help="seed of the split and of training")
    p.add_argument("--train-seed", type=int, default=None,
                   help="seed of training alone (default: --seed); repeats keep the same split")
    p.add_argument("--subset", type=int, default=None, help="use a stratified subset of N images")
    p.add_argument("--train-subset", type=int, default=None,
                   help="train on a stratified N-image part of the train split (val/test unchanged)")
    p.add_argument("--cache-dir", default=None, help="decoded-data cache (default ~/.cache/alphaprune)")
    p.add_argument("--batch-size", type=int, default=128)


def _add_optim(p: argparse.ArgumentParser, lr: float, schedule: str) -> None:
    p.add_argument("--lr", type=float, default=lr, help=f"peak learning rate (default {lr})")
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--no-nesterov", dest="nesterov", action="store_false",
                   help="plain momentum instead of Nesterov's")
    p.add_argument("--schedule", choices=["onecycle", "cosine", "constant"], default=schedule)
    p.add_argument("--label-smoothing", type=float, default=0.0)


def _add_accelerator(p: argparse.ArgumentParser) -> None:
    p.add_argument("--accelerator", default="auto",
                   help="auto (a CUDA GPU when PyTorch sees one, else the CPU), cpu or gpu")
    p.add_argument("--devices", type=int, default=1,
                   help="training processes per node (GPUs, or CPU processes over gloo)")
    p.add_argument("--num-nodes", type=int, default=1,
                   help="machines (start the command on each with torchrun or srun; README)")
    p.add_argument("--strategy", default="auto",
                   help="auto (DDP when more than one process) or ddp")
    p.add_argument("--precision", default="32-true",
                   help="32-true, bf16-mixed, or 16-mixed (GPU only)")


def _add_model_kwargs(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-kwargs", default=None, metavar="JSON",
                   help="keyword arguments of a FILE.py:FACTORY --model, as a JSON object")


def _add_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--force", action="store_true", help="replace an existing run in --out")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_accelerator(p)


def build_parser() -> argparse.ArgumentParser:
    """The ``alphaprune`` argument parser with all sub-commands."""
    from alphaprune.models import list_models

    p = _Parser(prog="alphaprune", description="Compress pretrained CNNs by objective selection.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a registry model from scratch")
    t.add_argument("--model", default="vgg16",
                   help=f"one of {', '.join(list_models())}, or FILE.py:FACTORY / package.module:FACTORY")
    _add_model_kwargs(t)
    t.add_argument("--width", type=float, default=1.0, help="width multiplier, e.g. 0.25")
    t.add_argument("--widths", type=_widths, default=None, help="explicit per-layer widths")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="keep NCHW memory format (channels-last is ~25%% faster on CPU)")
    _add_data(t, required=False)
    _add_optim(t, lr=0.05, schedule="onecycle")
    _add_run(t)

    e = sub.add_parser("evaluate", help="loss and accuracy of a model file on a split")
    e.add_argument("model_path", metavar="MODEL")
    e.add_argument("--model", default=None,
                   help="registry name or FILE.py:FACTORY, for a raw state_dict file")
    _add_model_kwargs(e)
    e.add_argument("--data", default=None, help="dataset (default: the one recorded in MODEL)")
    e.add_argument("--split", choices=["test", "val", "train", "all"], default="test")
    e.add_argument("--json", action="store_true", help="print one JSON object")

    r = sub.add_parser("prune", help="prune a pretrained model by objective selection")
    r.add_argument("--checkpoint", help="model file (or raw state_dict with --model)")
    r.add_argument("--model", default=None,
                   help="registry name or FILE.py:FACTORY, for a raw state_dict checkpoint")
    _add_model_kwargs(r)
    r.add_argument("--prune", type=float, default=None,
                   help="fraction of the parameters to remove (default 0.65 without --flops)")
    r.add_argument("--flops", type=float, default=None,
                   help="instead of --prune: fraction of the FLOPs to remove, at the data's size")
    r.add_argument("--speedup", type=float, default=None,
                   help="instead of --prune: run S times faster than the original on this "
                        "machine (per-layer latency table, checked by timing at the end)")
    r.add_argument("--latency-batch", type=int, default=1,
                   help="batch size at which --speedup is measured (default 1)")
    r.add_argument("--widths", type=_widths, default=None,
                   help="explicit per-unit widths instead of the target's solver (a --speedup "
                        "run records the ones its measured search chose)")
    r.add_argument("--round-to", type=int, default=8,
                   help="widths in multiples of this (8: faster on CPU; 1: finest fit)")
    r.add_argument("--keep", type=_names, default=None, metavar="UNITS",
                   help="keep these units whole: comma-separated names or shell patterns "
                        "('features.0,layer4.*'; `alphaprune inspect` lists the units); the "
                        "target is met by cutting the others harder")
    r.add_argument("--prune-streams", dest="streams", action=argparse.BooleanOptionalAction,
                   default=None,
                   help="cut residual streams too: every conv writing into a chain of sums "
                        "(a ResNet's stem, shortcuts and block outputs) keeps one set of channels; "
                        "and concatenated ones: a conv whose output enters cats that later layers "
                        "read through a BatchNorm (a DenseNet's stem, growth convs, transitions) "
                        "(default: on for --flops and --speedup, off for --prune)")
    r.add_argument("--balance", type=float, default=None,
                   help="1: cut the wide late layers harder and keep the narrow early ones (the "
                        "default of --prune: most accurate per parameter); 0: every layer keeps "
                        "the same share (the default of --flops and --speedup: most accurate "
                        "per FLOP)")
    r.add_argument("--solver", choices=["ratio", "sensitivity", "auto"], default=None,
                   help="ratio: one keep ratio, tilted by --balance; sensitivity: cut where the "
                        "pretrained network's validation loss rises least per unit of the "
                        "target's cost (measured cuts, FastNAS-like); auto: of the uniform, "
                        "balance-1 and sensitivity widths, whose whole cut keeps the most "
                        "validation accuracy, or, within one standard error of it, the one "
                        "that writes the fewest activations (measured widths are recorded)")
    # what a run's config.yaml records of a measuring solver's widths (read back by --config)
    r.add_argument("--solved", type=json.loads, default=None, help=argparse.SUPPRESS)
    # why a recorded run has its recipe: read back from its config.yaml by --config
    r.add_argument("--recipe-reason", default=None, help=argparse.SUPPRESS)
    r.add_argument("--folds", type=int, default=None,
                   help="cross-validation: run K times, each fold of the train and val images "
                        "validating once (the test split fixed); report mean and std, ship the "
                        "fold with the best validation accuracy (runs in OUT/fold<i>)")
    r.add_argument("--search-size", type=int, default=1000,
                   help="validation images the sensitivity and auto solvers score on")
    r.add_argument("--auto-steps", type=int, default=0,
                   help="training steps (batch 64) the auto solver gives each candidate's cut "
                        "network before scoring it (default 0: score the cut as it is)")
    r.add_argument("--scheduler", default="step", help="step, exponential, multiplicative, plateau")
    r.add_argument("--step-size", type=float, default=None, help="step: alpha -= step size (0.1)")
    r.add_argument("--decay-rate", type=float, default=None, help="exponential: rate (0.5)")
    r.add_argument("--mu", type=float, default=None, help="multiplicative: alpha *= mu (0.5)")
    r.add_argument("--factor", type=float, default=None, help="plateau: alpha *= factor (0.5)")
    r.add_argument("--cooldown", type=int, default=None, help="plateau: cooldown epochs (0)")
    r.add_argument("--threshold", type=float, default=0.015, help="alpha at or below becomes 0")
    r.add_argument("--patience", type=int, default=3, help="epochs without improvement per phase")
    r.add_argument("--min-delta", type=float, default=0.0)
    r.add_argument("--max-epochs-per-phase", type=int, default=30)
    r.add_argument("--final-patience", type=int, default=None, help="alpha=0 phase (2x patience)")
    r.add_argument("--final-max-epochs", type=int, default=None,
                   help="alpha=0 phase (2x max-epochs-per-phase)")
    r.add_argument("--final-lr", type=float, default=None, help="alpha=0 phase lr (default --lr)")
    r.add_argument("--final-schedule", default=None,
                   help="alpha=0 phase lr: cosine (to 0 over --final-max-epochs; the hand-over's "
                        "default), constant, or onecycle (up from 1/25 over 30%% of it, then cosine)")
    r.add_argument("--recipe", default=None,
                   help="handover (alpha phases, then alpha=0) or onecycle (straight to alpha=0, "
                        "one lr cycle up to 0.05 over --max-total-epochs); default: onecycle with "
                        "a budget of at least 30 epochs and 1.2M image-epochs (0.6M with "
                        "shortcuts) and at most 65%% of the parameters removed (70%% with "
                        "shortcuts), handover otherwise")
    r.add_argument("--final-takes-rest", action="store_true",
                   help="the alpha=0 phase may also take the epochs of --max-total-epochs that "
                        "the alpha>0 phases left by stopping early (its lr schedule spans them; "
                        "with --max-acc-drop it leaves room for a retry)")
    r.add_argument("--final-ema", type=float, default=None, metavar="EPOCHS",
                   help="score and ship an exponential moving average of the alpha=0 phase's "
                        "weights, time constant EPOCHS (0: off; default: 1)")
    r.add_argument("--warmup-steps", type=int, default=20,
                   help="ramp the lr up linearly over the first N steps of every phase (0: off)")
    r.add_argument("--max-total-epochs", type=int, default=None,
                   help="epochs in all (default 1000); with --resume, a new budget for the run")
    r.add_argument("--no-train-original", dest="train_original", action="store_false",
                   help="freeze the original convs and BNs")
    r.add_argument("--handover", default="stochastic",
                   help="how branches take over: blend, stochastic or progressive")
    r.add_argument("--branch-init", default="select",
                   help="select (most important channels), lstsq (select + least-squares B) or random")
    r.add_argument("--importance", default="l1",
                   help="channel criterion: l1 (filter norm), bn (|gamma|; l1 for a unit without "
                        "BatchNorm), act (data)")
    r.add_argument("--calib-size", type=int, default=512, help="calibration images for lstsq/act")
    r.add_argument("--monitor", default="auto",
                   help="early stopping on val_loss (network at alpha), ship_val_loss (all "
                        "branches) or auto (val_loss for blend, ship_val_loss otherwise)")
    r.add_argument("--distill", type=float, default=0.7,
                   help="weight of distillation from the pretrained network (0..1)")
    r.add_argument("--temperature", type=float, default=4.0, help="distillation temperature")
    r.add_argument("--feature-distill", type=float, default=None,
                   help="weight of feature distillation: each unit's output held to the "
                        f"pretrained network's (0: off; default: {FEATURE_DISTILL:g} with a "
                        f"budget of at most {FEATURE_MAX_IMAGE_EPOCHS:,} image-epochs "
                        f"({FEATURE_MAX_IMAGE_EPOCHS_RESIDUAL:,} with shortcuts), else off)")
    r.add_argument("--max-acc-drop", type=float, default=None,
                   help="undo and halve an alpha step whose accuracy drops more than this")
    r.add_argument("--max-retries", type=int, default=3, help="halvings per guarded step")
    r.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    _add_data(r, required=False)
    _add_optim(r, lr=0.01, schedule="constant")
    _add_run(r)

    rp = sub.add_parser("report", help="plots and report page of a run, or compare runs")
    rp.add_argument("runs", nargs="+", metavar="RUN_DIR")
    rp.add_argument("--out", default=None,
                    help="folder for the files: one run's report (default: the run's folder) or "
                         "a comparison of several runs (default: comparison)")

    c = sub.add_parser("compare", help="objective selection vs peers at equal epoch budgets")
    c.add_argument("--checkpoint", required=True, help="pretrained model file")
    c.add_argument("--model", default=None,
                   help="registry name or FILE.py:FACTORY, for a raw state_dict checkpoint")
    _add_model_kwargs(c)
    c.add_argument("--targets", type=_floats, default=[0.35, 0.65, 0.9],
                   help="fractions of the parameters (or, with --match, of the FLOPs or the latency) "
                        "to remove")
    c.add_argument("--match", choices=["params", "flops", "latency"], default="params",
                   help="what the targets count, and what the peers are sized to objective "
                        "selection's fused model by (latency: measured on this machine; a "
                        "target T asks objective selection for --speedup 1/(1-T))")
    c.add_argument("--latency-batch", type=int, default=1,
                   help="--match latency: the batch size latency is measured at")
    c.add_argument("--tp-round-to", type=int, default=None, metavar="N",
                   help="cut Torch-Pruning's layers to widths that are multiples of N (its own "
                        "round_to), as objective selection's are (default: any width)")
    c.add_argument("--methods", type=lambda t: t.split(","), default=None,
                   help="comma-separated subset of the methods (default: all)")
    c.add_argument("--budget", type=int, default=30, help="training epochs per method and target")
    c.add_argument("--lr", type=float, default=0.01)
    c.add_argument("--quick", action="store_true", help="tiny matrix for smoke tests")
    c.add_argument("--step-size", type=float, default=0.1, help="os-step: alpha step")
    c.add_argument("--decay-rate", type=float, default=0.5, help="os-exponential: rate")
    c.add_argument("--mu", type=float, default=0.5, help="os-multiplicative: alpha *= mu")
    c.add_argument("--factor", type=float, default=0.5, help="os-plateau: alpha *= factor")
    c.add_argument("--patience", type=int, default=2,
                   help="objective selection: early-stopping (and os-plateau) patience")
    c.add_argument("--handover", default=None, help="objective selection: hand-over mode")
    c.add_argument("--branch-init", default=None, help="objective selection: branch init")
    c.add_argument("--importance", default=None, help="objective selection: channel criterion")
    c.add_argument("--distill", type=float, default=None, help="objective selection: distillation")
    c.add_argument("--temperature", type=float, default=None,
                   help="objective selection: distillation temperature")
    c.add_argument("--feature-distill", type=float, default=None,
                   help="objective selection: feature distillation weight")
    c.add_argument("--max-acc-drop", type=float, default=None, help="objective selection: guard")
    c.add_argument("--warmup-steps", type=int, default=None,
                   help="objective selection: lr warm-up steps per phase")
    c.add_argument("--balance", type=float, default=None,
                   help="objective selection (and scratch/kd): width balance across layers")
    c.add_argument("--solver", choices=["ratio", "sensitivity", "auto"], default=None,
                   help="objective selection (and scratch/kd): width solver (see prune)")
    c.add_argument("--auto-steps", type=int, default=None,
                   help="objective selection (and scratch/kd): training steps of each auto "
                        "solver candidate (see prune)")
    c.add_argument("--final-takes-rest", action="store_true", default=None,
                   help="objective selection: its alpha=0 phase takes the epochs of --budget "
                        "the alpha>0 phases left (see prune)")
    c.add_argument("--final-ema", type=float, default=None, metavar="EPOCHS",
                   help="objective selection: ship an average of its alpha=0 phase's weights "
                        "(see prune)")
    c.add_argument("--final-lr", type=float, default=None,
                   help="objective selection: its alpha=0 phase's peak lr (default --lr)")
    c.add_argument("--keep", type=_names, default=None, metavar="UNITS",
                   help="units kept whole (see prune) by objective selection, scratch, kd and "
                        "Torch-Pruning (its ignored_layers); FastNAS and unstructured pruning "
                        "search or cut every layer")
    c.add_argument("--prune-streams", dest="streams", action=argparse.BooleanOptionalAction,
                   default=None,
                   help="objective selection (and scratch/kd): cut residual and concatenated "
                        "streams too (see prune; default: on for --match flops and latency)")
    c.add_argument("--out", required=True, help="results folder (rerun to resume)")
    c.add_argument("--no-progress", action="store_true")
    _add_accelerator(c)
    _add_data(c, required=True)

    x = sub.add_parser("export", help="a model file as ONNX, TorchScript or a torch.export "
                                      "program, checked against PyTorch")
    x.add_argument("model_path", metavar="MODEL")
    x.add_argument("--format", required=True, help="onnx, torchscript or pt2")
    x.add_argument("--out", required=True, help="file to write (model.onnx, model.ts, model.pt2)")
    x.add_argument("--force", action="store_true", help="replace an existing --out file")
    x.add_argument("--model", default=None,
                   help="registry name or FILE.py:FACTORY, for a raw state_dict file")
    _add_model_kwargs(x)
    x.add_argument("--input-size", type=int, default=None,
                   help="input height and width (default: recorded in MODEL, else 32)")
    x.add_argument("--json", action="store_true", help="print one JSON object")

    d = sub.add_parser("demo", help="end to end on the bundled digits in under 2 minutes")
    d.add_argument("--out", default="runs/demo", help="folder for the demo's runs")

    i = sub.add_parser("inspect", help="the prunable units of a model, and why the rest is not")
    i.add_argument("--model", default=None,
                   help=f"one of {', '.join(list_models())}, or FILE.py:FACTORY")
    _add_model_kwargs(i)
    i.add_argument("--checkpoint", default=None, help="model file (or raw state_dict with --model)")
    i.add_argument("--width", type=float, default=1.0, help="width multiplier (without --checkpoint)")
    i.add_argument("--num-classes", type=int, default=10, help="classes (without --checkpoint)")
    i.add_argument("--in-channels", type=int, default=3, help="input channels (without --checkpoint)")
    i.add_argument("--input-size", type=int, default=32, help="input height and width (default 32)")
    i.add_argument("--prune-streams", dest="streams", action="store_true",
                   help="list residual and concatenated streams as units, as prune "
                        "--prune-streams cuts them")
    i.add_argument("--keep", type=_names, default=None, metavar="UNITS",
                   help="list these units as kept whole, as prune --keep keeps them")
    i.add_argument("--json", action="store_true", help="print one JSON object")
    for sp in sub.choices.values():
        sp.add_argument("--config", default=None, metavar="FILE.yaml",
                        help="settings as YAML (keys: the long option names with _; a run's own "
                             "config.yaml repeats it); options on the command line win")
    return p


def _data_cfg(a):
    from alphaprune.api import DataConfig

    return DataConfig(data=a.data or "digits", val_frac=a.val_frac, test_frac=a.test_frac,
                      seed=a.seed, subset=a.subset, train_subset=a.train_subset,
                      cache_dir=a.cache_dir, batch_size=a.batch_size, train_seed=a.train_seed,
                      folds=getattr(a, "folds", None))


def _optim_cfg(a):
    from alphaprune.train.module import OptimConfig

    return OptimConfig(lr=a.lr, momentum=a.momentum, weight_decay=a.weight_decay,
                       nesterov=a.nesterov, schedule=a.schedule,
                       label_smoothing=a.label_smoothing)


def _model_kwargs(a) -> dict:
    from alphaprune.models.user import parse_model_kwargs

    return parse_model_kwargs(getattr(a, "model_kwargs", None))


def _cmd_train(a) -> int:
    from alphaprune import api
    from alphaprune.parallel import hardware

    if a.data is None and not a.resume:
        raise UserError("--data is required: pass a dataset directory or 'digits'")
    cfg = api.TrainConfig(model=a.model, model_kwargs=_model_kwargs(a), width=a.width,
                          widths=a.widths, epochs=a.epochs,
                          optim=_optim_cfg(a), data=_data_cfg(a), channels_last=a.channels_last,
                          **hardware(a))
    s = api.train(cfg, a.out, force=a.force, resume=a.resume, progress=not a.no_progress)
    if s is None:  # another rank than 0 of a multi-process run: rank 0 reports
        return 0
    print(f"trained {s['arch']}: val acc {s['val_acc']:.4f}, test acc {s['test_acc']:.4f}, "
          f"{s['params']:,} params -> {a.out}/model.pt")
    return 0


def _cmd_prune(a) -> int:
    from dataclasses import asdict

    from alphaprune.parallel import HARDWARE
    from alphaprune.prune import PruneConfig, prune
    from alphaprune.report.headline import fmt_acc, seen_note

    if not a.resume and (a.checkpoint is None or a.data is None):
        raise UserError("--checkpoint and --data are required (or --resume with --out of a run)")
    keys = ["checkpoint", "model", "prune", "flops", "speedup", "latency_batch", "widths", "round_to",
            "keep",
            "streams", "balance", "solver", "solved", "search_size", "auto_steps", "scheduler",
            "step_size",
            "decay_rate", "mu",
            "factor", "cooldown", "threshold", "patience", "min_delta", "max_epochs_per_phase",
            "final_patience", "final_max_epochs", "final_lr", "final_schedule", "final_takes_rest",
            "final_ema", "recipe", "recipe_reason", "warmup_steps",
            "train_original", "handover", "branch_init", "importance", "calib_size", "monitor",
            "distill", "temperature", "feature_distill", "max_acc_drop", "max_retries", "channels_last",
            *HARDWARE]
    budget = {} if a.max_total_epochs is None else {"max_total_epochs": a.max_total_epochs}
    cfg = PruneConfig(**{k: getattr(a, k) for k in keys}, **budget, optim=_optim_cfg(a),
                      model_kwargs=_model_kwargs(a),
                      data=asdict(_data_cfg(a)) if a.data else {})
    s = prune(cfg, a.out, force=a.force, resume=a.resume, progress=not a.no_progress,
              max_total_epochs=a.max_total_epochs if a.resume else None)
    if s is None:  # another rank than 0 of a multi-process run: rank 0 reports
        return 0
    if "speedup" in s:
        sp = s["speedup"]
        short = "met" if sp["shortfall"] == 0 else f"{sp['shortfall']:.0%} short"
        target = (f"speed-up {sp['achieved']:.2f}x at batch {sp['batch']}, {sp['threads']} "
                  f"thread(s): target {sp['target']:g}x {short}")
    else:
        what = "params" if s["target_measure"] == "params" else "FLOPs"
        target = f"target {s['target_reduction']:.0%} of the {what}"
    print(f"pruned {s['arch']}: {s['params_before']:,} -> {s['params_after']:,} params "
          f"({s['achieved_reduction']:.1%} removed); FLOPs {s['flops_before']:,} -> "
          f"{s['flops_after']:,} ({s['achieved_flops_reduction']:.1%} removed; {target}); "
          f"test acc {fmt_acc(s['test_acc_before'])} -> {fmt_acc(s['test_acc_after'])} -> "
          f"{a.out}/pruned.pt")
    if "test_seen_in_pretraining" in s:
        print(f"warning: {seen_note(s['test_seen_in_pretraining'])}")
    if "folds" in s:
        f = s["folds"]
        print(f"{f['k']} folds: test acc {fmt_acc(f['mean'].get('test_acc_after'))} ± "
              f"{fmt_acc(f['std'].get('test_acc_after'))} (mean ± std); pruned.pt is fold "
              f"{f['shipped_fold']}'s, the best val acc")
        if len({r.get("max_total_epochs") for r in f["per_fold"]}) > 1:
            print("warning: the folds ran under different epoch budgets: their mean and "
                  "spread mix schedules (the report says which)")
    return 0


def _cmd_evaluate(a) -> int:
    from alphaprune import api

    r = api.evaluate(a.model_path, a.data, a.split, model_name=a.model,
                     model_kwargs=_model_kwargs(a))
    if a.json:
        print(json.dumps(r))
    else:
        print(f"{r['split']}: accuracy {r['accuracy']:.4f}  loss {r['loss']:.4f}  "
              f"n={r['n_samples']}  params {r['params']:,}  FLOPs {r['flops']:,}")
    return 0


def _cmd_report(a) -> int:
    from alphaprune.report import write_comparison, write_report

    if len(a.runs) == 1:
        paths = write_report(a.runs[0], a.out)
    else:
        paths = write_comparison(a.runs, a.out or "comparison")
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _cmd_compare(a) -> int:
    from dataclasses import asdict

    from alphaprune.compare import METHODS, CompareConfig, compare
    from alphaprune.parallel import hardware

    os_keys = ("handover", "branch_init", "importance", "distill", "temperature", "feature_distill",
               "max_acc_drop", "warmup_steps", "balance", "solver", "streams", "final_takes_rest",
               "auto_steps", "final_ema", "final_lr", "keep")
    cfg = CompareConfig(checkpoint=a.checkpoint, model=a.model, model_kwargs=_model_kwargs(a),
                        targets=a.targets, match=a.match, latency_batch=a.latency_batch,
                        tp_round_to=a.tp_round_to,
                        methods=a.methods or list(METHODS), budget=a.budget, lr=a.lr,
                        step_size=a.step_size, decay_rate=a.decay_rate, mu=a.mu,
                        factor=a.factor, patience=a.patience, data=asdict(_data_cfg(a)),
                        quick=a.quick, **hardware(a),
                        os_options={k: getattr(a, k) for k in os_keys if getattr(a, k) is not None})
    if not compare(cfg, a.out, progress=not a.no_progress):
        return 0  # another rank than 0 of a multi-process run: rank 0 reports
    print((Path(a.out) / "results.md").read_text())
    return 0


def _cmd_inspect(a) -> int:
    from alphaprune.inspection import format_inspection, inspect_model
    from alphaprune.modelfile import load_checkpoint
    from alphaprune.models import create_model
    from alphaprune.models.user import build_user_model, is_user_spec

    if a.model is None and a.checkpoint is None:
        raise UserError("inspect needs --model NAME or --checkpoint FILE")
    if a.input_size < 1:
        raise UserError(f"--input-size must be >= 1, got {a.input_size}")
    if a.checkpoint:
        mf = load_checkpoint(a.checkpoint, a.model, model_kwargs=_model_kwargs(a))
        model, in_ch = mf.model, int(mf.kwargs.get("in_channels", a.in_channels))
    elif is_user_spec(a.model):
        model = build_user_model(a.model, _model_kwargs(a))
        in_ch = a.in_channels
    else:
        model = create_model(a.model, width=a.width, num_classes=a.num_classes,
                             in_channels=a.in_channels)
        in_ch = a.in_channels
    r = inspect_model(model, (in_ch, a.input_size, a.input_size), streams=a.streams, keep=a.keep)
    print(json.dumps(r) if a.json else format_inspection(r))
    return 0


def _cmd_export(a) -> int:
    from alphaprune.export import SUFFIXES, export_model

    ext = Path(a.out).suffix.lower()
    owner = next((f for f, sfx in SUFFIXES.items() if sfx == ext and f != a.format), None)
    # named for another format misleads whoever opens it (an unknown format: export says so)
    if owner is not None and a.format in SUFFIXES:
        print(f"alphaprune: warning: --out {a.out} has the {owner} extension ({ext}), but the "
              f"file is {a.format} (usually {SUFFIXES[a.format]})", file=sys.stderr, flush=True)
    r = export_model(a.model_path, a.format, a.out, force=a.force, input_size=a.input_size,
                     model_name=a.model, model_kwargs=_model_kwargs(a))
    if a.json:
        print(json.dumps(r))
        return 0
    runtime = {"onnx": "onnxruntime", "torchscript": "TorchScript", "pt2": "torch.export"}[a.format]
    lat = "; ".join(f"batch {b}: PyTorch {v['pytorch']:.2f} ms, {runtime} {v['exported']:.2f} ms"
                    for b, v in r["latency_ms"].items())
    print(f"exported {a.model_path} -> {r['path']} ({a.format}, input {tuple(r['input_shape'])}, "
          f"any batch): max relative error {r['max_rel_error']:.1e} against PyTorch on random "
          f"inputs; latency (median, {r['threads']} thread(s)) {lat}")
    return 0


def _cmd_demo(a) -> int:
    from alphaprune.demo import run_demo

    run_demo(a.out)
    return 0


_COMMANDS = {"train": _cmd_train, "evaluate": _cmd_evaluate, "prune": _cmd_prune,
             "report": _cmd_report, "compare": _cmd_compare, "demo": _cmd_demo,
             "inspect": _cmd_inspect, "export": _cmd_export}


# what --resume may change: where and how long it runs, and how it reports (README)
RESUME_MAY_CHANGE = frozenset({"accelerator", "devices", "num_nodes", "strategy",
                               "max_total_epochs", "no_progress", "out", "resume", "force",
                               "command"})


def _subcommand(parser: argparse.ArgumentParser, argv: list[str]):
    """``(name, sub-parser)`` of the command in ``argv``, or ``(None, None)``."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    cmd = next((t for t in argv if t in sub.choices), None)
    return (cmd, sub.choices[cmd]) if cmd else (None, None)


def _given(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The destinations of the options spelled out in ``argv`` (not left at their default)."""
    _, sp = _subcommand(parser, argv)
    if sp is None:
        return set()
    flags = {o: act.dest for act in sp._actions for o in act.option_strings}
    return {flags[t.split("=", 1)[0]] for t in argv if t.split("=", 1)[0] in flags}


# settings whose option is not named after them
OPTION_OF = {"streams": "--prune-streams"}


def _check_resume(a, given: set[str], section: str) -> None:
    """Refuse ``--resume`` with a setting that differs from the run's recorded one."""
    from alphaprune.rundir import recorded as recorded_config

    recorded = recorded_config(Path(a.out), section)
    if section == "prune":  # an option added since the run was made: it ran without it
        from alphaprune.prune import RECORDED_BEFORE

        recorded = {**RECORDED_BEFORE, **recorded}
    flat = {k: v for k, v in recorded.items() if not isinstance(v, dict)}
    for nested in ("optim", "data"):
        flat.update(recorded.get(nested) or {})
    changed = []
    for dest in sorted(given - RESUME_MAY_CHANGE):
        value = getattr(a, dest)
        if dest == "model_kwargs":
            value = _model_kwargs(a)
        if dest in flat and not _same_setting(dest, value, flat[dest]):
            flag = OPTION_OF.get(dest, f"--{dest.replace('_', '-')}")
            changed.append(f"{flag} (recorded {flat[dest]!r}, given {value!r})")
    if changed:
        raise UserError(f"--resume continues the run as recorded, but {', '.join(changed)} "
                        "changed: drop them to continue, or start a new run (another --out, or "
                        "--force)")


def _norm(v):
    return list(v) if isinstance(v, tuple) else v


def _same_setting(dest: str, given, recorded) -> bool:
    """Whether a given option equals its recorded value; paths (recorded absolute) compare
    by the file or folder they name, so the run's own command plus --resume continues it."""
    from alphaprune.pipeline import same_data

    if dest in ("data", "checkpoint") and isinstance(given, str) and isinstance(recorded, str):
        return same_data(given, recorded)  # a checkpoint is a path as a data folder is
    return _norm(given) == _norm(recorded)


def _config_path(argv: list[str]) -> str | None:
    for i, t in enumerate(argv):
        if t == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if t.startswith("--config="):
            return t.split("=", 1)[1]
    return None


def _config_settings(path: str, command: str) -> dict:
    """The settings of a ``--config`` file for ``command``: a flat mapping of option names,
    or a run's ``config.yaml`` (its command's section, with ``optim`` and ``data`` merged)."""
    import yaml

    try:
        with open(path) as f:
            doc = yaml.safe_load(f) or {}
    except OSError as e:
        raise UserError(f"--config {path}: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise UserError(f"--config {path} is not valid YAML ({type(e).__name__})") from e
    if not isinstance(doc, dict):
        raise UserError(f"--config {path} must hold a mapping of option names to values")
    if isinstance(doc.get(command), dict):  # a run's config.yaml
        section = dict(doc[command])
        for nested in ("optim", "data"):
            if isinstance(section.get(nested), dict):
                section.update(section.pop(nested))
        if section.get("fold") is not None:
            raise UserError(f"--config {path} is one fold of a --folds run: repeat the folds "
                            "run's own config.yaml (the folder above it)")
        if command == "prune":  # a run from before an option did what it did then
            from alphaprune.prune import RECORDED_BEFORE

            section = {**RECORDED_BEFORE, **section}
        # cross-validation keys a run records whether or not it used them
        doc = {k: v for k, v in section.items() if not (k in ("fold", "folds") and v is None)}
    elif "command" in doc and doc["command"] != command:
        raise UserError(f"--config {path} records a '{doc['command']}' run, not '{command}'")
    return doc


def _apply_config(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Defaults of the sub-command from ``--config`` (command-line options still win)."""
    path = _config_path(argv)
    if path is not None and "--resume" in argv:  # its values would pass the resume check unseen
        raise UserError(f"--resume continues the run as it recorded it: drop --config {path} "
                        "(a setting that may change, such as --max-total-epochs, is given as "
                        "an option)")
    cmd, sp = _subcommand(parser, argv)
    if path is None or cmd is None:
        return
    actions = {a.dest: a for a in sp._actions if a.option_strings}
    settings = {k: v for k, v in _config_settings(path, cmd).items() if k != "command"}
    unknown = sorted(k for k in settings if k not in actions or k in ("config", "help"))
    if unknown:
        raise UserError(f"--config {path}: unknown key(s) {', '.join(unknown)} for "
                        f"'alphaprune {cmd}': use the long option names with _ (see --help)")
    if "resume" in settings:
        raise UserError(f"--config {path}: 'resume' continues a run as it recorded it, with no "
                        "config: pass --resume on the command line instead")
    if isinstance(settings.get("model_kwargs"), dict):
        settings["model_kwargs"] = json.dumps(settings["model_kwargs"])
    settings = {k: _config_value(actions[k], v, f"--config {path}: {k}") for k, v in settings.items()}
    for k in settings:
        actions[k].required = False
    sp.set_defaults(**settings)


_LISTS = (_floats, _widths, _names)  # options written "a,b,c" that a run's config.yaml records as lists


def _config_value(action: argparse.Action, value, where: str):
    """A ``--config`` value as the option would parse it: YAML's numbers, booleans and
    lists do not pass through argparse's ``type``, so they are checked here (``epochs:
    1.7`` failed deep in training; ``nesterov: 'false'`` and ``lr: true`` were taken)."""
    if value is None:  # a run's config.yaml records an option left unset as null
        if action.required:
            raise UserError(f"{where} is required: give it a value")
        return action.default
    if action.nargs == 0:  # a switch: --force, --no-channels-last, ...
        if not isinstance(value, bool):
            raise UserError(f"{where} takes true or false, got {value!r}")
        return value
    if action.type is json.loads and not isinstance(value, str):
        return value  # a recorded structure (the solver's widths)
    if isinstance(value, list) and (action.type in _LISTS or action.dest == "methods"):
        value = ",".join(str(v) for v in value)
    if isinstance(value, (bool, list, dict)) or (action.type is None and not isinstance(value, str)):
        raise UserError(f"{where} takes {_kind(action)}, got {value!r}")
    try:
        got = action.type(str(value)) if action.type is not None else value
    except (ValueError, TypeError, argparse.ArgumentTypeError):
        raise UserError(f"{where} takes {_kind(action)}, got {value!r}") from None
    if action.choices is not None and got not in action.choices:
        raise UserError(f"{where} is one of {', '.join(map(str, action.choices))}, got {value!r}")
    return got


def _kind(action: argparse.Action) -> str:
    return {int: "an integer", float: "a number", _floats: "numbers (a list or 'a,b')",
            _widths: "integers (a list or 'a,b')",
            _names: "unit names (a list or 'a,b')"}.get(action.type, "text")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``alphaprune`` console script."""
    keep_freed_memory()  # faster training, steady timings (alphaprune.allocator)
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        _apply_config(parser, argv)
    except UserError as e:
        print(f"alphaprune: error: {e}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    try:
        if getattr(args, "resume", False) and args.command in ("train", "prune"):
            _check_resume(args, _given(parser, argv), args.command)
        return _COMMANDS[args.command](args)
    except UserError as e:
        print(f"alphaprune: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"alphaprune: interrupted; {_after_interrupt(args)}", file=sys.stderr)
        return 130
    except (RuntimeError, MemoryError) as e:
        if not isinstance(e, MemoryError) and "can't allocate memory" not in str(e):
            raise
        asked = re.search(r"allocate (\d+) bytes", str(e))
        what = f"{int(asked.group(1)) / 2**30:,.1f} GiB asked for" if asked else first_line(e, 80)
        print(f"alphaprune: error: out of memory ({what}): use a smaller model, --batch-size "
              "or input size", file=sys.stderr)
        return 2


def _after_interrupt(a) -> str:
    """How to go on after an interrupt: ``--resume`` only where it has a checkpoint to
    continue from; compare continues its unfinished rows by itself."""
    from alphaprune.rundir import has_progress

    if a.command == "compare":
        return "run the same command again: it continues the unfinished rows"
    if a.command not in ("train", "prune"):
        return "run the same command again"
    if has_progress(Path(a.out)):
        return "continue with the same command plus --resume"
    return "no checkpoint was written yet: run the same command again, without --resume"


def entry() -> None:
    """The ``alphaprune`` console script and ``python -m alphaprune``: :func:`main`, then
    exit with its code. After an interrupt the process ends at once: what an interrupted
    run keeps is already on disk (atomic writes, the resume checkpoint), and the
    interpreter's own shutdown after a Ctrl-C during training has been seen to abort in a
    C++ destructor writing to the closed stderr (exit -6 instead of 130). A reader that
    closes the output early (``alphaprune inspect ... | head``) ends it quietly, with the
    shell's code for a broken pipe, not a traceback."""
    try:
        code = main()
    except BrokenPipeError:
        # Python would flush stdout again at exit and fail once more: point it at nothing
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(128 + 13)  # SIGPIPE
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    sys.exit(code)


if __name__ == "__main__":
    entry()
