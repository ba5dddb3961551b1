"""Seeded, stratified train/val/test splits and subsets."""

from __future__ import annotations

import numpy as np
import pytest

from alphaprune.data import Splits, make_splits, stratified_subset
from alphaprune.errors import UserError

COUNTS = [50, 30, 20, 11, 7]


@pytest.fixture
def y() -> np.ndarray:
    """Imbalanced labels in a shuffled order (118 samples, 5 classes)."""
    labels = np.repeat(np.arange(len(COUNTS)), COUNTS)
    return np.random.default_rng(123).permutation(labels)


def _parts(s: Splits) -> list[np.ndarray]:
    return [s.train, s.val, s.test]


def test_same_seed_gives_the_same_split(y):
    a, b = make_splits(y, seed=7), make_splits(y, seed=7)
    for pa, pb in zip(_parts(a), _parts(b)):
        assert np.array_equal(pa, pb)


def test_different_seed_gives_a_different_split(y):
    a, b = make_splits(y, seed=0), make_splits(y, seed=1)
    assert not np.array_equal(a.val, b.val)
    assert not np.array_equal(a.test, b.test)
    assert not np.array_equal(a.train, b.train)


@pytest.mark.parametrize("val_frac, test_frac", [(0.1, 0.1), (0.2, 0.3), (0.0, 0.25), (0.5, 0.0),
                                                 (0.0, 0.0)])
def test_splits_are_disjoint_sorted_and_cover_everything(y, val_frac, test_frac):
    s = make_splits(y, val_frac, test_frac, seed=3)
    parts = _parts(s)
    for p in parts:
        assert p.dtype.kind == "i"
        assert np.array_equal(p, np.sort(p))
        assert len(np.unique(p)) == len(p)
    assert not set(s.train) & set(s.val)
    assert not set(s.train) & set(s.test)
    assert not set(s.val) & set(s.test)
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(y)))
    assert np.array_equal(s.get("all"), np.arange(len(y)))
    assert s.get("train") is s.train and s.get("val") is s.val and s.get("test") is s.test


@pytest.mark.parametrize("val_frac, test_frac", [(0.1, 0.1), (0.2, 0.3), (0.0, 0.25), (0.5, 0.0),
                                                 (0.15, 0.15)])
def test_each_class_is_split_in_the_requested_proportions(y, val_frac, test_frac):
    s = make_splits(y, val_frac, test_frac, seed=5)
    train_frac = 1 - val_frac - test_frac
    for part, frac in [(s.train, train_frac), (s.val, val_frac), (s.test, test_frac)]:
        got = np.bincount(y[part], minlength=len(COUNTS))
        for c, n_c in enumerate(COUNTS):
            assert abs(got[c] - frac * n_c) <= 1, (frac, c, got[c], n_c)
    n = len(y)
    assert abs(len(s.val) - val_frac * n) <= len(COUNTS)
    assert abs(len(s.test) - test_frac * n) <= len(COUNTS)
    if val_frac == 0:
        assert len(s.val) == 0
    if test_frac == 0:
        assert len(s.test) == 0


@pytest.mark.parametrize("val_frac, test_frac", [(-0.1, 0.1), (0.1, 1.0), (0.6, 0.4), (1.0, 0.0),
                                                 (0.5, 0.7)])
def test_bad_fractions_raise_user_error(y, val_frac, test_frac):
    with pytest.raises(UserError, match="split fractions"):
        make_splits(y, val_frac, test_frac)


def test_unknown_split_name_raises_user_error(y):
    with pytest.raises(UserError, match="unknown split 'dev'"):
        make_splits(y).get("dev")


@pytest.mark.parametrize("n", [1, 5, 17, 40, 100, 117])
def test_stratified_subset_has_n_samples_in_class_proportions(y, n):
    idx = stratified_subset(y, n, seed=2)
    assert len(idx) == n
    assert len(np.unique(idx)) == n
    assert np.array_equal(idx, np.sort(idx))
    assert idx.min() >= 0 and idx.max() < len(y)
    got = np.bincount(y[idx], minlength=len(COUNTS))
    for c, n_c in enumerate(COUNTS):
        assert abs(got[c] - n * n_c / len(y)) <= 1, (c, got[c])


def test_stratified_subset_is_seeded(y):
    assert np.array_equal(stratified_subset(y, 40, seed=4), stratified_subset(y, 40, seed=4))
    assert not np.array_equal(stratified_subset(y, 40, seed=4), stratified_subset(y, 40, seed=5))


def test_full_size_subset_is_everything(y):
    assert np.array_equal(stratified_subset(y, len(y)), np.arange(len(y)))


@pytest.mark.parametrize("n", [0, -3, 119])
def test_subset_out_of_range_raises_user_error(y, n):
    with pytest.raises(UserError, match="--subset must be between 1 and 118"):
        stratified_subset(y, n)


@pytest.mark.parametrize("subset", [20, 59, 100])
def test_make_splits_with_subset_splits_only_n_samples(y, subset):
    s = make_splits(y, 0.2, 0.2, seed=1, subset=subset)
    everything = np.concatenate(_parts(s))
    assert len(everything) == subset
    assert len(np.unique(everything)) == subset
    got = np.bincount(y[everything], minlength=len(COUNTS))
    for c, n_c in enumerate(COUNTS):
        assert abs(got[c] - subset * n_c / len(y)) <= 1
    assert np.array_equal(s.get("all"), np.sort(everything))
    again = make_splits(y, 0.2, 0.2, seed=1, subset=subset)
    for pa, pb in zip(_parts(s), _parts(again)):
        assert np.array_equal(pa, pb)
