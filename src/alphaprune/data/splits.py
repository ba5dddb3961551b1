"""Seeded, stratified train/val/test splits and subsets."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alphaprune.errors import UserError

__all__ = ["Splits", "make_splits", "stratified_subset", "rotate_fold"]


@dataclass
class Splits:
    """Index arrays into a dataset, one per split."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray

    def get(self, name: str) -> np.ndarray:
        if name == "all":
            return np.sort(np.concatenate([self.train, self.val, self.test]))
        if name not in ("train", "val", "test"):
            raise UserError(f"unknown split '{name}': use train, val, test or all")
        return getattr(self, name)


def stratified_subset(y: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of a stratified subset of ``n`` samples (class shares kept), sorted."""
    if not 0 < n <= len(y):
        raise UserError(f"--subset must be between 1 and {len(y)}, got {n}")
    if n == len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    quota = np.floor(counts * n / len(y)).astype(int)
    # hand out the remainder to the classes with the largest fractional parts
    rest = n - quota.sum()
    frac = counts * n / len(y) - quota
    quota[np.argsort(-frac, kind="stable")[:rest]] += 1
    out = [rng.permutation(np.flatnonzero(y == c))[:q] for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(out))


def make_splits(y: np.ndarray, val_frac: float = 0.1, test_frac: float = 0.1,
                seed: int = 0, subset: int | None = None) -> Splits:
    """Split indices per class with a fixed seed.

    Args:
        y: labels of the whole dataset.
        val_frac, test_frac: fractions for validation and test (train gets the rest).
        seed: the same seed always gives the same split.
        subset: if given, split only a stratified subset of this many samples.
    """
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise UserError(f"split fractions val={val_frac} test={test_frac} must be in [0, 1) "
                        "and sum to less than 1")
    pool = stratified_subset(y, subset, seed) if subset is not None else np.arange(len(y))
    rng = np.random.default_rng(seed + 1)
    parts = {"train": [], "val": [], "test": []}
    for c in np.unique(y[pool]):
        idx = rng.permutation(pool[y[pool] == c])
        n_val, n_test = int(round(len(idx) * val_frac)), int(round(len(idx) * test_frac))
        parts["val"].append(idx[:n_val])
        parts["test"].append(idx[n_val:n_val + n_test])
        parts["train"].append(idx[n_val + n_test:])
    return Splits(**{k: np.sort(np.concatenate(v)) for k, v in parts.items()})


def rotate_fold(y: np.ndarray, splits: Splits, folds: int, fold: int, seed: int = 0) -> Splits:
    """Cross-validation fold ``fold`` (1-based) of ``folds``: the images of the train and val
    splits are dealt, per class and seeded, into ``folds`` parts of near-equal size; part
    ``fold`` is the validation split and the others the training split. The test split is
    kept as it is, so every fold is scored on the same held-out images."""
    if folds < 2:
        raise UserError(f"--folds must be at least 2, got {folds}: 2 or more folds rotate the "
                        "validation split (leave --folds out for one run)")
    if not 1 <= fold <= folds:
        raise UserError(f"fold {fold} is not among folds 1..{folds}")
    pool = np.concatenate([splits.train, splits.val])
    if folds > len(pool):  # before dealing: a billion parts would exhaust the memory first
        raise UserError(f"--folds {folds} leaves an empty split on {len(pool)} images: use fewer "
                        "folds or more data")
    rng = np.random.default_rng(seed + 2)
    val = []
    for c in np.unique(y[pool]):
        idx = rng.permutation(pool[y[pool] == c])
        val.append(np.array_split(idx, folds)[fold - 1])
    val = np.sort(np.concatenate(val))
    train = np.setdiff1d(pool, val)
    if len(val) == 0 or len(train) == 0:
        raise UserError(f"--folds {folds} leaves an empty split on {len(pool)} images: use fewer "
                        "folds or more data")
    return Splits(train=train, val=val, test=splits.test)
