"""Alpha-schedulers: the alpha sequence of each, threshold snapping, state round trips, registry."""

from __future__ import annotations

import copy
import math

import pytest

from alphaprune.errors import UserError
from alphaprune.schedules import (
    SCHEDULERS,
    ExponentialAlpha,
    MultiplicativeAlpha,
    PlateauAlpha,
    StepAlpha,
    make_scheduler,
)

EXTRA = 3  # steps taken after alpha reached 0: it must stay 0


def _phase_sequence(s, n: int) -> list[float]:
    """The alphas of ``n`` phases: ``start()`` for the first, then one ``step()`` per phase."""
    return [s.start()] + [s.step() for _ in range(n - 1)]


def _exp_expected(rate: float, threshold: float = 0.015, alpha0: float = 1.0) -> list[float]:
    out, t = [], 1
    while alpha0 * math.exp(-rate * t) > threshold:
        out.append(alpha0 * math.exp(-rate * t))
        t += 1
    return out + [0.0]


# --------------------------------------------------------------------------- per-phase schedulers


@pytest.mark.parametrize("name, options, expected", [
    ("step", {"step_size": 0.1}, [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]),
    ("step", {}, [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]),  # default 0.1
    ("step", {"step_size": 0.25}, [0.75, 0.5, 0.25, 0.0]),
    ("step", {"step_size": 0.5}, [0.5, 0.0]),
    ("step", {"step_size": 1.0}, [0.0]),
    ("step", {"step_size": 0.3}, [0.7, 0.4, 0.1, 0.0]),  # 0.1 - 0.3 < 0 snaps to 0
    ("step", {"step_size": 0.3, "threshold": 0.15}, [0.7, 0.4, 0.0]),  # 0.1 <= threshold
    ("step", {"step_size": 0.25, "threshold": 0.25}, [0.75, 0.5, 0.0]),  # at threshold -> 0
    ("step", {"step_size": 0.1, "threshold": 0.0}, [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]),
    ("step", {"step_size": 0.2, "alpha0": 0.6}, [0.4, 0.2, 0.0]),
    ("exponential", {"decay_rate": 0.5}, _exp_expected(0.5)),
    ("exponential", {}, _exp_expected(0.5)),  # default rate 0.5
    ("exponential", {"decay_rate": 1.0},
     [math.exp(-1), math.exp(-2), math.exp(-3), math.exp(-4), 0.0]),
    ("exponential", {"decay_rate": 1.0, "threshold": 0.05}, [math.exp(-1), math.exp(-2), 0.0]),
    ("exponential", {"decay_rate": 2.0, "alpha0": 0.5}, _exp_expected(2.0, alpha0=0.5)),
    ("multiplicative", {"mu": 0.5}, [0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0]),
    ("multiplicative", {}, [0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0]),  # default mu 0.5
    ("multiplicative", {"mu": 0.1}, [0.1, 0.0]),  # 0.01 <= 0.015
    ("multiplicative", {"mu": 0.5, "threshold": 0.125}, [0.5, 0.25, 0.0]),  # at threshold -> 0
])
def test_per_phase_alpha_sequence(name, options, expected):
    s = make_scheduler(name, **options)
    got = _phase_sequence(s, len(expected) + EXTRA)
    assert got == pytest.approx(expected + [0.0] * EXTRA, abs=1e-12)
    assert got[len(expected) - 1:] == [0.0] * (EXTRA + 1)  # exactly 0, and it stays 0
    assert all(a > b for a, b in zip(got, got[1:len(expected)]))  # strictly decreasing to 0


@pytest.mark.parametrize("name, options", [
    ("step", {"step_size": 0.1}), ("exponential", {"decay_rate": 0.5}),
    ("multiplicative", {"mu": 0.5}),
])
def test_per_phase_schedulers_ignore_the_metric(name, options):
    a, b = make_scheduler(name, **options), make_scheduler(name, **options)
    a.start(), b.start()
    assert [a.step() for _ in range(5)] == [b.step(m) for m in (5.0, 0.1, math.nan, 1e9, -3.0)]


@pytest.mark.parametrize("name, per_epoch", [
    ("step", False), ("exponential", False), ("multiplicative", False), ("plateau", True),
])
def test_per_epoch_flag(name, per_epoch):
    assert make_scheduler(name).per_epoch is per_epoch


def test_exponential_counts_decreases_in_t():
    s = ExponentialAlpha(decay_rate=0.5)
    assert s.start() == pytest.approx(math.exp(-0.5)) and s.t == 1
    assert s.step() == pytest.approx(math.exp(-1.0)) and s.t == 2


# --------------------------------------------------------------------------- plateau


@pytest.mark.parametrize("options, metrics, expected", [
    # patience 1: the first non-improving epoch reduces
    ({"patience": 1}, [1.0, 1.0], [0.5, 0.25]),
    ({"patience": 1}, [3.0, 2.0, 1.0], [0.5, 0.5, 0.5]),  # improving: never reduces
    # patience 2, and the best is reset after a reduction
    ({"patience": 2}, [1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95],
     [0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125]),
    # an improvement resets the count of bad epochs
    ({"patience": 2}, [1.0, 1.1, 0.9, 1.0, 0.8], [0.5, 0.5, 0.5, 0.5, 0.5]),
    # after a reduction a worse value than the old best is a fresh start, not a bad epoch
    ({"patience": 1}, [1.0, 2.0, 3.0, 3.0], [0.5, 0.25, 0.25, 0.125]),
    # cooldown: epochs right after a reduction are not counted
    ({"patience": 1, "cooldown": 0}, [1.0] * 6, [0.5, 0.25, 0.25, 0.125, 0.125, 0.0625]),
    ({"patience": 1, "cooldown": 2}, [1.0] * 6, [0.5, 0.25, 0.25, 0.25, 0.125, 0.125]),
    # min_delta: an improvement must beat the best by more than min_delta
    ({"patience": 1, "min_delta": 0.1}, [1.0, 0.95], [0.5, 0.25]),
    ({"patience": 1, "min_delta": 0.1}, [1.0, 0.85], [0.5, 0.5]),
    ({"patience": 1, "min_delta": 0.5}, [1.0, 0.5], [0.5, 0.25]),  # exactly min_delta: no
    ({"patience": 1, "min_delta": 0.5}, [1.0, 0.49], [0.5, 0.5]),
    # a NaN metric never improves
    ({"patience": 1}, [1.0, math.nan], [0.5, 0.25]),
    # factor and threshold snapping; once 0 it stays 0
    ({"patience": 1, "factor": 0.1}, [1.0, 1.0, 1.0, 0.5, 2.0], [0.1, 0.0, 0.0, 0.0, 0.0]),
    ({"patience": 1, "factor": 0.5, "threshold": 0.125}, [1.0, 1.0, 1.0, 1.0, 1.0],
     [0.5, 0.25, 0.25, 0.0, 0.0]),
    ({"patience": 1, "factor": 0.5}, [1.0] * 14,
     [0.5, 0.25, 0.25, 0.125, 0.125, 0.0625, 0.0625, 0.03125, 0.03125, 0.015625, 0.015625,
      0.0, 0.0, 0.0]),
])
def test_plateau_alpha_sequence(options, metrics, expected):
    s = make_scheduler("plateau", **options)
    first = s.start()
    assert first == pytest.approx(options.get("factor", 0.5))
    assert [s.step(m) for m in metrics] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("options, expected", [
    ({}, 0.5), ({"factor": 0.25}, 0.25), ({"factor": 0.5, "alpha0": 0.8}, 0.4),
    ({"factor": 0.01}, 0.0),  # 0.01 <= threshold 0.015
    ({"factor": 0.5, "threshold": 0.5}, 0.0),
])
def test_plateau_start_is_one_reduction_from_alpha0(options, expected):
    s = make_scheduler("plateau", **options)
    assert s.start() == pytest.approx(expected)
    assert s.alpha == pytest.approx(expected) and s.t == 1


def test_plateau_reduce_resets_counting():
    s = PlateauAlpha(factor=0.5, patience=3, cooldown=0)
    s.start()
    assert [s.step(m) for m in (1.0, 2.0, 2.0)] == [0.5, 0.5, 0.5]  # two bad epochs
    assert s.reduce() == 0.25 and s.t == 2
    assert (s.bad_epochs, s.best) == (0, math.inf)
    # counting starts over: 5.0 is a new best, then 3 bad epochs are needed again
    assert [s.step(m) for m in (5.0, 5.0, 5.0, 5.0)] == [0.25, 0.25, 0.25, 0.125]


def test_plateau_reduce_starts_the_cooldown():
    s = PlateauAlpha(factor=0.5, patience=1, cooldown=2)
    s.start()
    assert s.reduce() == 0.25
    # two epochs not counted (their best is kept), then the first bad epoch reduces
    assert [s.step(1.0) for _ in range(4)] == [0.25, 0.25, 0.125, 0.125]


@pytest.mark.parametrize("alpha, expected", [(0.02, 0.0), (0.04, 0.02), (0.0, 0.0)])
def test_plateau_reduce_snaps_and_stays_at_zero(alpha, expected):
    s = PlateauAlpha(factor=0.5)
    s.start()
    s.alpha = alpha
    assert s.reduce() == pytest.approx(expected)
    if expected == 0.0:
        assert s.reduce() == 0.0 and s.step(0.1) == 0.0 and s.step(None) == 0.0


def test_plateau_step_needs_the_metric():
    s = PlateauAlpha()
    s.start()
    with pytest.raises(ValueError):
        s.step(None)


# --------------------------------------------------------------------------- state round trip


ROUND_TRIP_CASES = [
    ("step", {"step_size": 0.1}, [None] * 12, 4),
    ("step", {"step_size": 0.3, "threshold": 0.15}, [None] * 5, 1),
    ("exponential", {"decay_rate": 0.5}, [None] * 12, 5),
    ("multiplicative", {"mu": 0.5}, [None] * 10, 3),
    ("multiplicative", {"mu": 0.5}, [None] * 10, 8),  # after alpha reached 0
    # mid-count of bad epochs
    ("plateau", {"patience": 3}, [1.0, 2.0, 2.0, 2.0, 1.5, 1.5, 1.5, 1.5], 3),
    # inside a cooldown
    ("plateau", {"patience": 1, "cooldown": 2}, [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0], 3),
    ("plateau", {"patience": 2, "min_delta": 0.05, "factor": 0.3},
     [1.0, 0.97, 0.96, 0.9, 0.89, 0.88, 0.7, 0.7, 0.7], 5),
]


def _feed(s, metrics):
    if s.per_epoch:
        return [s.step(m) for m in metrics]
    return [s.step() for _ in metrics]


@pytest.mark.parametrize("name, options, metrics, cut", ROUND_TRIP_CASES)
def test_state_dict_round_trip_continues_identically(name, options, metrics, cut):
    ref = make_scheduler(name, **options)
    ref.start()
    expected = _feed(ref, metrics)

    s = make_scheduler(name, **options)
    s.start()
    first = _feed(s, metrics[:cut])
    state = copy.deepcopy(s.state_dict())
    assert all(isinstance(v, (int, float, str, bool)) for v in state.values()), state

    resumed = make_scheduler(name, **options)
    resumed.start()  # a fresh controller calls start() before loading the checkpoint
    resumed.load_state_dict(state)
    assert resumed.alpha == s.alpha
    rest = _feed(resumed, metrics[cut:])
    assert first + rest == expected
    assert resumed.state_dict() == ref.state_dict()


def test_state_dict_is_a_copy():
    s = make_scheduler("multiplicative", mu=0.5)
    s.start()
    state = s.state_dict()
    s.step()
    assert state["alpha"] == 0.5 and s.alpha == 0.25


# --------------------------------------------------------------------------- registry


def test_registry_names():
    assert set(SCHEDULERS) == {"step", "exponential", "multiplicative", "plateau"}


@pytest.mark.parametrize("name, cls, attr, default", [
    ("step", StepAlpha, "step_size", 0.1),
    ("exponential", ExponentialAlpha, "decay_rate", 0.5),
    ("multiplicative", MultiplicativeAlpha, "mu", 0.5),
    ("plateau", PlateauAlpha, "factor", 0.5),
    ("plateau", PlateauAlpha, "patience", 3),
    ("plateau", PlateauAlpha, "cooldown", 0),
])
def test_make_scheduler_defaults_and_none_means_default(name, cls, attr, default):
    s = make_scheduler(name)
    assert type(s) is cls and getattr(s, attr) == default
    assert (s.alpha0, s.threshold) == (1.0, 0.015)
    assert getattr(make_scheduler(name, **{attr: None}), attr) == default


@pytest.mark.parametrize("name", ["", "Linear", "steps", "cosine", "plateau "])
def test_unknown_scheduler_name(name):
    with pytest.raises(UserError, match="unknown scheduler") as e:
        make_scheduler(name)
    for known in SCHEDULERS:
        assert known in str(e.value)


@pytest.mark.parametrize("name, options, flag", [
    ("step", {"step_size": 0}, "step-size"),
    ("step", {"step_size": 1.5}, "step-size"),
    ("step", {"step_size": -0.1}, "step-size"),
    ("step", {"step_size": math.nan}, "step-size"),
    ("exponential", {"decay_rate": 0}, "decay-rate"),
    ("exponential", {"decay_rate": -0.5}, "decay-rate"),
    ("multiplicative", {"mu": 0}, "mu"),
    ("multiplicative", {"mu": 1}, "mu"),
    ("multiplicative", {"mu": 1.5}, "mu"),
    ("plateau", {"factor": 1}, "factor"),
    ("plateau", {"factor": 0}, "factor"),
    ("plateau", {"patience": 0}, "patience"),
    ("plateau", {"cooldown": -1}, "cooldown"),
    ("plateau", {"min_delta": -0.1}, "min-delta"),
    ("step", {"threshold": 1}, "threshold"),
    ("exponential", {"threshold": 1.0}, "threshold"),
    ("multiplicative", {"threshold": -0.1}, "threshold"),
    ("plateau", {"threshold": 1}, "threshold"),
    ("step", {"alpha0": 0}, "alpha0"),
    ("step", {"alpha0": 1.5}, "alpha0"),
])
def test_out_of_range_arguments_raise_user_error(name, options, flag):
    with pytest.raises(UserError, match=flag):
        make_scheduler(name, **options)


@pytest.mark.parametrize("name, options, ignored", [
    # options of other schedulers, even out-of-range ones, are ignored
    ("step", {"step_size": 0.5, "mu": 7.0, "decay_rate": -1.0, "factor": 2.0, "patience": 0,
              "cooldown": -5, "min_delta": -1.0}, ["mu", "decay_rate", "factor", "patience",
                                                    "cooldown", "min_delta"]),
    ("exponential", {"decay_rate": 0.2, "step_size": 0.0, "mu": 1.0}, ["step_size", "mu"]),
    ("multiplicative", {"mu": 0.9, "step_size": 5.0, "factor": 1.0}, ["step_size", "factor"]),
    ("plateau", {"factor": 0.3, "patience": 2, "step_size": 0.0, "mu": 3.0, "decay_rate": 0},
     ["step_size", "mu", "decay_rate"]),
    ("step", {"unknown_option": 1, "threshold": 0.2}, ["unknown_option"]),
])
def test_make_scheduler_ignores_options_it_does_not_take(name, options, ignored):
    s = make_scheduler(name, **options)
    for k, v in options.items():
        if k in ignored:
            assert not hasattr(s, k), k
        else:
            assert getattr(s, k) == v, k
    assert 0.0 <= s.start() < 1.0
