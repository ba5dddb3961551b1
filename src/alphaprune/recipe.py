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
parameters removed (two seeds) and at 35% (two seeds), and trailed it at 90% and at every
budget of 20,000 images or 8 epochs (BENCHMARKS.md sections 15, 17, 19 and 21); on
resnet20 at 50% it led Torch-Pruning (two seeds) and the hand-over (one seed) at 30
epochs on 20,000 images (section 28), and at 70% both its seeds led the hand-over and
Torch-Pruning (one seed each; section 29). So: an explicit budget (``--max-total-epochs``) of at least
:data:`ONECYCLE_MIN_EPOCHS` epochs and :data:`ONECYCLE_MIN_IMAGE_EPOCHS` image-epochs
(:data:`ONECYCLE_MIN_IMAGE_EPOCHS_RESIDUAL` for a network with sums, a residual network),
a parameter target (``--prune``) with at most :data:`ONECYCLE_MAX_CUT` of the parameters
removed (:data:`ONECYCLE_MAX_CUT_RESIDUAL` on a residual network), and none of the
hand-over's own options given. A hand-over with an
explicit budget has its phases laid out in it as that measured default was
(:func:`budget_layout`), unless the user laid them out.
"""

from __future__ import annotations

from dataclasses import dataclass

from alphaprune.errors import UserError
from alphaprune.schedules import make_scheduler

RECIPES = ("handover", "onecycle")
ONECYCLE_LR = 0.05                   # the kd peer's peak lr
ONECYCLE_MIN_EPOCHS = 30
ONECYCLE_MIN_IMAGE_EPOCHS = 1_200_000
ONECYCLE_MIN_IMAGE_EPOCHS_RESIDUAL = 600_000   # a network with sums (resnet20: section 28)
ONECYCLE_MAX_CUT = 0.65              # share of the parameters removed
ONECYCLE_MAX_CUT_RESIDUAL = 0.70     # a network with sums (resnet20: section 29)
# feature distillation (--feature-distill) by default: this weight, at an explicit budget of
# at most this many image-epochs (where it was measured to help: BENCHMARKS.md sections 40,
# 41 and 43; at 160,000 VGG-16/4 was about even where resnet20 lost, at 320,000 VGG lost)
FEATURE_DISTILL = 20.0
FEATURE_MAX_IMAGE_EPOCHS = 160_000
FEATURE_MAX_IMAGE_EPOCHS_RESIDUAL = 80_000   # a network with sums (resnet20: section 41)
# both recipes ship an average of their alpha = 0 phase's weights (--final-ema) by default,
# time constant in epochs (BENCHMARKS.md sections 58 and 59: the hand-over on resnet20 and
# VGG-16/4; section 61: onecycle on resnet20, better test accuracy and validation loss)
FINAL_EMA = 1.0
BUDGET_STEP = 0.25                   # the hand-over within a budget: compare's os-step layout
BUDGET_PATIENCE = 2
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
    measure: str = "params"     # the run's target: params, flops or latency
    residual: bool = False      # the network adds tensors (shortcuts), unlike a VGG

    @property
    def image_epochs(self) -> int:
        """Epochs times training images (the explicit budget's; needs ``epochs``)."""
        return self.epochs * self.train_images

    @property
    def min_image_epochs(self) -> int:
        """The fewest image-epochs at which onecycle led on this kind of network."""
        return ONECYCLE_MIN_IMAGE_EPOCHS_RESIDUAL if self.residual else ONECYCLE_MIN_IMAGE_EPOCHS

    @property
    def feature_max_image_epochs(self) -> int:
        """The most image-epochs at which the feature term helped on this kind of network."""
        return FEATURE_MAX_IMAGE_EPOCHS_RESIDUAL if self.residual else FEATURE_MAX_IMAGE_EPOCHS

    @property
    def kind(self) -> str:
        """The kind of network the defaults were measured by, in words."""
        return "a residual network" if self.residual else "a network without sums"

    @property
    def max_cut(self) -> float:
        """The largest share of the parameters removed at which onecycle led."""
        return ONECYCLE_MAX_CUT_RESIDUAL if self.residual else ONECYCLE_MAX_CUT


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
    if budget.measure != "params":
        return "handover", f"onecycle was measured on parameter targets only, not {budget.measure}"
    image_epochs, least, kind = budget.image_epochs, budget.min_image_epochs, budget.kind
    short = ([f"{ONECYCLE_MIN_EPOCHS} epochs"] if budget.epochs < ONECYCLE_MIN_EPOCHS else []) + \
        ([f"{least:,} image-epochs"] if image_epochs < least else [])
    if short:
        return "handover", (f"budget {budget.epochs} epochs x {budget.train_images} images "
                            f"({image_epochs:,} image-epochs) is under {' and '.join(short)} "
                            f"({kind})")
    # to the percent: widths in multiples of 8 remove a little more than the target asks
    if round(budget.params_removed, 2) > budget.max_cut:
        return "handover", (f"{budget.params_removed:.0%} of the parameters removed is over "
                            f"{budget.max_cut:.0%} ({kind})")
    return "onecycle", (f"budget {budget.epochs} epochs x {budget.train_images} images "
                        f"({kind}), {budget.params_removed:.0%} of the parameters removed")


def choose_feature_distill(budget: Budget, comparable: bool) -> tuple[float, str]:
    """``(weight, why)``: the measured default of ``--feature-distill`` (left unset) for this
    budget: :data:`FEATURE_DISTILL` at an explicit budget of at most
    :data:`FEATURE_MAX_IMAGE_EPOCHS` image-epochs (:data:`FEATURE_MAX_IMAGE_EPOCHS_RESIDUAL`
    for a network with sums), where the model has a unit to compare (``comparable``), else 0."""
    if budget.epochs is None:
        return 0.0, "no explicit budget (--max-total-epochs)"
    image_epochs, most = budget.image_epochs, budget.feature_max_image_epochs
    if image_epochs > most:
        return 0.0, f"{image_epochs:,} image-epochs is over {most:,} for {budget.kind}"
    if not comparable:
        return 0.0, "no unit to compare (each has dropout after its activation)"
    return FEATURE_DISTILL, f"{image_epochs:,} image-epochs is at most {most:,} for {budget.kind}"


def recipe_settings(cfg, recipe: str, budget_given: bool = False) -> dict:
    """The config fields a recipe sets (those the user left unset keep their defaults); a
    hand-over with an explicit budget also gets its phases laid out in it
    (:func:`budget_layout`)."""
    if recipe == "handover":
        return {"recipe": recipe, "final_schedule": cfg.final_schedule or "cosine",
                "final_ema": FINAL_EMA if cfg.final_ema is None else cfg.final_ema,
                **(budget_layout(cfg) if budget_given else {})}
    epochs = cfg.final_max_epochs or cfg.max_total_epochs
    return {"recipe": recipe, "step_size": 1.0, "final_schedule": "onecycle",
            "final_max_epochs": epochs, "final_patience": cfg.final_patience or epochs,
            "final_lr": cfg.final_lr or ONECYCLE_LR,
            "final_ema": FINAL_EMA if cfg.final_ema is None else cfg.final_ema}


def resolve_recipe(cfg, budget: Budget) -> dict:
    """The fields to set on a prune config: the recipe (:func:`choose_recipe`), its settings
    and why (a recorded reason is kept)."""
    recipe, why = choose_recipe(cfg, budget)
    settings = recipe_settings(cfg, recipe, budget.epochs is not None)
    if "max_epochs_per_phase" in settings:
        why += (f"; phases laid out in the {budget.epochs} epochs: alpha step "
                f"{settings['step_size']}, at most {settings['max_epochs_per_phase']} epochs "
                f"each, {settings['final_max_epochs']} at alpha = 0")
    return {**settings, "recipe_reason": cfg.recipe_reason or why}


def budget_layout(cfg) -> dict:
    """The hand-over's phases within an explicit ``--max-total-epochs``, as compare's os-step
    rows lay them out (the default that sections 15, 17 and 19 measured): alpha steps of
    :data:`BUDGET_STEP`, :data:`BUDGET_PATIENCE`, about 60% of the epochs split evenly over
    the alpha > 0 phases and the rest at alpha = 0. Prune's own defaults (steps of 0.1,
    patience 3) need more than 30 epochs before alpha = 0. Empty when the user set any of
    the layout's options, or when the budget is too small to lay out (the run then stops at
    its budget and says how to continue)."""
    d = type(cfg)()
    if (cfg.scheduler != "step" or cfg.step_size is not None or cfg.final_max_epochs is not None
            or cfg.final_patience is not None or cfg.patience != d.patience
            or cfg.max_epochs_per_phase != d.max_epochs_per_phase):
        return {}
    try:
        per, final = phase_budget("step", {"step_size": BUDGET_STEP}, cfg.max_total_epochs)
    except UserError:
        return {}
    return {"step_size": BUDGET_STEP, "patience": BUDGET_PATIENCE, "max_epochs_per_phase": per,
            "final_max_epochs": final, "final_patience": max(BUDGET_PATIENCE, final)}


def phase_budget(scheduler: str, opts: dict, budget: int) -> tuple[int, int]:
    """``(max epochs per alpha > 0 phase, max epochs of the alpha = 0 phase)`` within budget.

    About 60% of the budget goes to the alpha > 0 phases, split evenly (at least 1 each);
    the alpha = 0 phase gets the rest, so the total never exceeds the budget.
    """
    s = make_scheduler(scheduler, **opts)
    a, n = s.start(), 0
    while a > 0.0:
        n += 1
        a = s.reduce() if hasattr(s, "reduce") else s.step()
    per = max(1, int(0.6 * budget) // max(1, n))
    final = budget - n * per
    if final < 1:
        raise UserError(f"--budget {budget} is too small for the {scheduler} schedule ({n} phases "
                        "before alpha = 0): raise --budget or coarsen the schedule")
    return per, final
