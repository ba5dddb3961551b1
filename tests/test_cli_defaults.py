"""The command line's defaults are the config dataclasses' defaults.

The parser spells its defaults out (importing the dataclasses' modules, which pull in
Lightning, took 12 s against 4 s for the parser's own imports on a busy 2-core machine), so
these tests keep the two from drifting.
"""

from dataclasses import fields

import pytest

from alphaprune.api import DataConfig, TrainConfig
from alphaprune.cli import build_parser
from alphaprune.compare import CompareConfig
from alphaprune.prune import PruneConfig

# CLI options whose None means "not given" on purpose, with the reason
_NOT_GIVEN = {
    "data": "required unless --resume; the run's recorded data is used then",
    "max_total_epochs": "None lets --resume keep the run's recorded budget",
    "checkpoint": "required (or recorded in the run for --resume)",
    "model_kwargs": "a JSON string on the command line, parsed into the config's dict ({} if not given)",
}


def _parsed(argv):
    return vars(build_parser().parse_args(argv))


def _defaults(obj) -> dict:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def _assert_same(parsed: dict, config_defaults: dict, skip=()) -> list[str]:
    checked = []
    for name, default in config_defaults.items():
        if name in parsed and name not in _NOT_GIVEN and name not in skip:
            flag = "--" + name.replace("_", "-")
            assert parsed[name] == default, f"{flag}: CLI {parsed[name]!r}, config {default!r}"
            checked.append(name)
    return checked


@pytest.mark.parametrize("argv", [["prune", "--out", "o"],
                                  ["train", "--out", "o"],
                                  ["compare", "--checkpoint", "c", "--data", "d", "--out", "o"]])
def test_data_options_default_to_dataconfig(argv):
    checked = _assert_same(_parsed(argv), _defaults(DataConfig()))
    assert {"val_frac", "test_frac", "seed", "batch_size", "train_seed"} <= set(checked)


def test_prune_options_default_to_pruneconfig():
    parsed = _parsed(["prune", "--out", "o"])
    checked = _assert_same(parsed, _defaults(PruneConfig()))
    # every PruneConfig field the CLI sets (_cmd_prune's keys) is compared
    assert {"prune", "balance", "handover", "branch_init", "importance", "distill",
            "warmup_steps", "patience", "max_epochs_per_phase", "final_schedule",
            "threshold", "calib_size", "temperature", "feature_distill", "round_to",
            "final_ema", "accelerator"} <= set(checked)
    checked_optim = _assert_same(parsed, _defaults(PruneConfig().optim), skip=("nesterov",))
    assert {"lr", "schedule", "momentum", "weight_decay"} <= set(checked_optim)


def test_train_options_default_to_trainconfig():
    parsed = _parsed(["train", "--out", "o"])
    assert {"model", "width", "epochs"} <= set(_assert_same(parsed, _defaults(TrainConfig())))
    assert {"lr", "schedule"} <= set(_assert_same(parsed, _defaults(TrainConfig().optim)))


def test_compare_options_default_to_compareconfig():
    parsed = _parsed(["compare", "--checkpoint", "c", "--data", "d", "--out", "o"])
    # --methods None means all; compare's --distill and --temperature are objective
    # selection's (CompareConfig's own are kd's), checked below
    checked = _assert_same(parsed, _defaults(CompareConfig()),
                           skip=("methods", "distill", "temperature"))
    assert {"targets", "budget", "lr", "step_size", "decay_rate", "mu", "factor",
            "patience"} <= set(checked)
    # objective-selection options left unset fall back to PruneConfig's defaults
    for name in ("handover", "branch_init", "importance", "distill", "temperature", "balance",
                 "warmup_steps", "feature_distill", "final_ema", "final_lr"):
        assert parsed[name] is None


def test_compare_hands_the_alpha_0_phases_lr_to_objective_selection():
    from alphaprune.compare import _os_config

    parsed = _parsed(["compare", "--checkpoint", "c", "--data", "d", "--out", "o",
                      "--final-lr", "0.02"])
    assert parsed["final_lr"] == 0.02
    cfg = CompareConfig(os_options={"final_lr": 0.02}, budget=8, step_size=0.25)
    pcfg = _os_config(cfg, "os-step", 0.5, {"checkpoint": "c"})
    assert pcfg.final_lr == 0.02 and pcfg.optim.lr == cfg.lr
