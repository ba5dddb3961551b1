"""The LightningModule of objective selection: trains the blended network at the current
alpha and scores, every epoch, both the mixture and the network that will ship (alpha = 0)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from alphaprune.blend.recalibrate import ship_bn_stats, using_bn_stats
from alphaprune.parallel import all_reduce_sums, broadcast_buffers, broadcast_floats
from alphaprune.train.features import OriginalNet, UnitTaps, feature_loss
from alphaprune.train.module import ClassifierModule, OptimConfig, RunningStats

__all__ = ["BlendModule"]


class BlendModule(ClassifierModule):
    """``ClassifierModule`` for a :class:`~alphaprune.blend.BlendedNet`.

    ``epoch_stats`` gains ``alpha``, ``ship_val_loss`` and ``ship_val_acc`` (all branches,
    alpha = 0: exactly the fused model's accuracy). While the controller's validation scores
    an average of the weights (``--final-ema``), the live weights are scored too:
    ``live_stats`` holds their ``live_val_loss`` and ``live_val_acc`` (empty otherwise; kept
    out of ``epoch_stats`` so metrics.csv keeps one set of columns).

    ``calib``: normalised training images. While alpha > 0 the all-branch network is scored
    with its branch BN statistics re-measured on them (:mod:`alphaprune.blend.recalibrate`);
    the statistics the branches accumulated under the mixture describe another network.
    ``None`` scores it with the accumulated ones.

    ``features`` = beta > 0 adds ``beta *`` :func:`~alphaprune.train.features.feature_loss`
    to the training loss: every unit's output held to the teacher's at that unit. The
    teacher must then be an :class:`~alphaprune.train.features.OriginalNet` of ``model``,
    made before this module (its copy must not carry the student's hooks).
    """

    def __init__(self, model, optim: OptimConfig | None = None, seed: int = 0,
                 calib: torch.Tensor | None = None, features: float = 0.0, **distill_kw):
        super().__init__(model, optim, **distill_kw)
        if not features >= 0.0:
            raise ValueError(f"features must be >= 0, got {features}")
        teacher = distill_kw.get("teacher")
        if features and not isinstance(teacher, OriginalNet):
            raise ValueError("feature distillation needs an OriginalNet of the model as teacher")
        self.feature_weight = float(features)
        # kept out of the module's children as the logit teacher is (not trained or saved)
        self._original = [teacher] if features else []
        self._taps = UnitTaps(model) if features else None
        if features and not self._taps.modules:  # prune refuses this before it starts
            raise ValueError("feature distillation has no unit to compare (all have dropout)")
        self._feat_sums = [0.0, 0]
        self.seed = seed
        self.calib = calib
        self.controller = None  # set by the caller, for progress_info
        self._ship = RunningStats()
        self._ship_bn = None
        self._live, self._states = RunningStats(), None
        self.live_stats: dict[str, float] = {}

    def on_fit_start(self) -> None:
        super().on_fit_start()
        for t in self._original:
            t.to(self.device)

    def on_fit_end(self) -> None:
        super().on_fit_end()
        for t in self._original:
            t.cpu()

    def training_step(self, batch, batch_idx):
        if not self.feature_weight:
            return super().training_step(batch, batch_idx)
        with self._taps.recording(), self._original[0].taps.recording():
            return super().training_step(batch, batch_idx)

    def training_loss(self, logits: torch.Tensor, x: torch.Tensor,
                      y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logit loss (:class:`ClassifierModule`), plus the feature term if enabled."""
        loss, ce = super().training_loss(logits, x, y)
        if not self.feature_weight:
            return loss, ce
        if not self._teacher:  # no logit distillation: the teacher has not run this batch
            with torch.no_grad():
                self._original[0](x)
        feat = feature_loss(self._taps, self._original[0].taps)
        self._feat_sums[0] += float(feat.detach()) * y.shape[0]
        self._feat_sums[1] += y.shape[0]
        return loss + self.feature_weight * feat, ce

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self._feat_sums = [0.0, 0]  # the epoch's feature loss, sample-weighted
        # any randomness inside the model is seeded per epoch, so a resumed run repeats it
        torch.manual_seed(self.seed * 7919 + self.current_epoch)

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        self._ship = RunningStats()
        self._ship_bn = None
        self._live, self._states = RunningStats(), None
        live = self.controller.live_state() if self.controller is not None else None
        if live is not None:
            self._states = self._live_pair(live)
        if self.calib is not None and float(self.model.alpha) > 0.0:
            self._ship_bn = ship_bn_stats(self.model, self.calib.to(self.device))

    def validation_step(self, batch, batch_idx):
        x, y = batch
        # in eval, stochastic mode already runs all branches: the mixture is the ship network
        mixture_is_ship = not any(self.model.gates())
        with using_bn_stats(self.model, self._ship_bn if mixture_is_ship else None):
            logits = self(x)
        self._val.update(F.cross_entropy(logits, y), logits, y)
        alpha = float(self.model.alpha)
        if alpha > 0.0 and not mixture_is_ship:  # score the all-branch network too
            self.model.set_alpha(0.0)
            with using_bn_stats(self.model, self._ship_bn):
                logits = self(x)
            self.model.set_alpha(alpha)
        self._ship.update(F.cross_entropy(logits, y), logits, y)
        if self._states is not None:  # the model holds the average: score the live weights too
            average, live = self._states
            self.model.load_state_dict(live)
            try:
                logits = self(x)
            finally:
                self.model.load_state_dict(average)
            self._live.update(F.cross_entropy(logits, y), logits, y)

    def _live_pair(self, live: dict) -> tuple[dict, dict]:
        """(the average as validation scores it, the live weights as they are scored): each
        with rank 0's BatchNorm statistics, as every rank scores rank 0's network (taken
        once per validation, on every rank, so the broadcasts pair up)."""
        def held():
            return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

        average = held()  # the parent broadcast rank 0's buffers into the average
        self.model.load_state_dict(live)
        broadcast_buffers(self.model)
        live = held()
        self.model.load_state_dict(average)
        return average, live

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        self.live_stats = {}
        if self._states is not None:  # the same on every rank: the controller's state is
            loss, acc = self._live.reduced(self.device).result()
            loss, acc = broadcast_floats([loss, acc], self.device)
            self.live_stats = {"live_val_loss": loss, "live_val_acc": acc}

    def compute_epoch_stats(self) -> dict[str, float]:
        """The parent's, plus alpha, the ship network's validation scores and, with feature
        distillation, ``train_feature_loss`` (the epoch's mean of the unweighted term)."""
        sl, sa = self._ship.reduced(self.device).result()
        stats = {**super().compute_epoch_stats(), "alpha": round(float(self.model.alpha), 6),
                 "ship_val_loss": sl, "ship_val_acc": sa}
        if self.feature_weight:
            total, n = all_reduce_sums(self._feat_sums, self.device)
            stats["train_feature_loss"] = total / n if n else math.nan
        return stats

    def progress_info(self) -> dict:
        info = self.controller.progress_info() if self.controller is not None else {}
        if self.epoch_stats:
            info["val_loss"] = f"{self.epoch_stats['val_loss']:.3f}"
            info["val_acc"] = f"{self.epoch_stats['val_acc']:.3f}"
            info["ship_acc"] = f"{self.epoch_stats['ship_val_acc']:.3f}"
        return info
