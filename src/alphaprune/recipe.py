"""How a prune run spends its epochs (``--recipe``), and the measured default by budget.

* ``handover``: objective selection as designed. The alpha-scheduler's phases hand each
  unit's output over to its branch (alpha from 1 towards 0, each alpha trained until
  validation stops improving), then the alpha = 0 phase trains the branches alone with a
  cosine lr.
* ``onecycle``: straight to alpha = 0 on the branches ``--branch-init`` chose from the
  pretrained network, distilled from it throughout, every epoch of the budget in that one
  phase with a one-cycle lr up to :data:`ONECYCLE_LR` (the ``kd`` peer's schedule, on the
  inherited weights instead of random ones).

By default (``--recipe`` not given) a run takes ``onecycle`` only where it led on seed
means: on VGG-16/4 at 30 epochs on 40,000 images it led the hand-over at 65% of the
parameters removed (two seeds) and at 35% (one seed), and trailed it at 90% and at every
budget of 20,000 images or 8 epochs (BENCHMARKS.md sections 15, 17, 19 and 21). So: an
explicit budget (``--max-total-epochs``) of at least :data:`ONECYCLE_MIN_EPOCHS` epochs and
:data:`ONECYCLE_MIN_IMAGE_EPOCHS` image-epochs, at most :data:`ONECYCLE_MAX_CUT` of the
parameters removed, and none of the hand-over's own options given.
"""

from __future__ import annotations

from dataclasses import dataclass

from alphaprune.errors import UserError

RECIPES = ("handover", "onecycle")
ONECYCLE_LR = 0.05                   # the kd peer's peak lr
ONECYCLE_MIN_EPOCHS = 30
ONECYCLE_MIN_IMAGE_EPOCHS = 1_200_000
ONECYCLE_MAX_CUT = 0.65              # share of the parameters removed
# options that shape the alpha > 0 phases or the alpha = 0 phase's lr: a run that sets one
# asked for the hand-over (PruneConfig field -> its command-line flag)
HANDOVER_OPTIONS = {"step_size": "--step-size", "decay_rate": "--decay-rate", "mu": "--mu",
                    "factor": "--factor", "cooldown": "--cooldown",
                    "max_acc_drop": "--max-acc-drop"}


@dataclass(frozen=True)
class Budget:
    """What the default recipe is chosen on."""

    epochs: int | None          # the explicit --max-total-epochs (None: not given)
    train_images: int           # images of the train split the run trains on
    params_removed: float       # share of the parameters the planned widths remove


def handover_options(cfg) -> list[str]:
    """The hand-over's own options a prune config sets, as command-line flags."""
    given = [flag for name, flag in HANDOVER_OPTIONS.items() if getattr(cfg, name) is not None]
    if cfg.scheduler != "step":
        given.append(f"--scheduler {cfg.scheduler}")
    if cfg.final_schedule not in (None, "onecycle"):
        given.append(f"--final-schedule {cfg.final_schedule}")
    if cfg.final_takes_rest:
        given.append("--final-takes-rest")
    if cfg.handover != "stochastic":
        given.append(f"--handover {cfg.handover}")
    return given


def check_recipe(cfg, budget_given: bool) -> None:
    """Reject a ``--recipe`` that the run's other options contradict (before anything is
    written).

    Raises:
        UserError: an unknown recipe; ``onecycle`` with a hand-over option, or without a
            budget to spread its one cycle over.
    """
    if cfg.recipe is None or cfg.recipe == "handover":
        return
    if cfg.recipe not in RECIPES:
        raise UserError(f"unknown --recipe '{cfg.recipe}': use {' or '.join(RECIPES)}")
    # a recorded onecycle run holds step size 1 (straight to alpha = 0): that is no conflict
    given = [f for f in handover_options(cfg) if not (f == "--step-size" and cfg.step_size == 1.0)]
    if given:
        raise UserError(f"--recipe onecycle goes straight to alpha = 0, so {', '.join(given)} "
                        "has nothing to shape: drop it or pass --recipe handover")
    if not budget_given and cfg.final_max_epochs is None:
        raise UserError("--recipe onecycle spreads one lr cycle over the run's epochs: pass "
                        "--max-total-epochs N (or --final-max-epochs N)")


def choose_recipe(cfg, budget: Budget) -> tuple[str, str]:
    """``(recipe, why)``: the given ``--recipe``, or the measured default for this budget."""
    if cfg.recipe is not None:
        return cfg.recipe, "given (--recipe)"
    given = handover_options(cfg)
    if given:
        return "handover", f"hand-over options given ({', '.join(given)})"
    if budget.epochs is None:
        return "handover", "no explicit budget (--max-total-epochs)"
    image_epochs = budget.epochs * budget.train_images
    short = ([f"{ONECYCLE_MIN_EPOCHS} epochs"] if budget.epochs < ONECYCLE_MIN_EPOCHS else []) + \
        ([f"{ONECYCLE_MIN_IMAGE_EPOCHS:,} image-epochs"]
         if image_epochs < ONECYCLE_MIN_IMAGE_EPOCHS else [])
    if short:
        return "handover", (f"budget {budget.epochs} epochs x {budget.train_images} images "
                            f"({image_epochs:,} image-epochs) is under {' and '.join(short)}")
    # to the percent: widths in multiples of 8 remove a little more than the target asks
    if round(budget.params_removed, 2) > ONECYCLE_MAX_CUT:
        return "handover", (f"{budget.params_removed:.0%} of the parameters removed is over "
                            f"{ONECYCLE_MAX_CUT:.0%}")
    return "onecycle", (f"budget {budget.epochs} epochs x {budget.train_images} images, "
                        f"{budget.params_removed:.0%} of the parameters removed")


def recipe_settings(cfg, recipe: str) -> dict:
    """The config fields a recipe sets (those the user left unset keep their defaults)."""
    if recipe == "handover":
        return {"recipe": recipe, "final_schedule": cfg.final_schedule or "cosine"}
    epochs = cfg.final_max_epochs or cfg.max_total_epochs
    return {"recipe": recipe, "step_size": 1.0, "final_schedule": "onecycle",
            "final_max_epochs": epochs, "final_patience": cfg.final_patience or epochs,
            "final_lr": cfg.final_lr or ONECYCLE_LR}
