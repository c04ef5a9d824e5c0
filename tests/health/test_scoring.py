"""Properties of the score (hypothesis) and the formula's documented worked example."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from services.health.config import ScoringParams
from services.health.scoring import GREEN, RED, reason, score_accounts

PARAMS = ScoringParams()
DAYS = 42
END = DAYS


def score(values: np.ndarray, ages: np.ndarray | None = None, segments: np.ndarray | None = None):  # type: ignore[no-untyped-def]
    a, m, _ = values.shape
    return score_accounts(
        values,
        end=END,
        ages=np.full(a, 365) if ages is None else ages,
        segments=np.zeros(a, dtype=np.int64) if segments is None else segments,
        weights=np.ones(m),
        params=PARAMS,
    )


cubes = st.integers(1, 6).flatmap(
    lambda a: st.integers(1, 4).flatmap(
        lambda m: arrays(
            np.float64,
            (a, m, DAYS),
            elements=st.one_of(st.just(0.0), st.floats(1e-6, 1e6)),  # realistic magnitudes
        )
    )
)
any_cubes = st.integers(1, 6).flatmap(  # anything from 0 to ~1e300, zeros common
    lambda a: st.integers(1, 4).flatmap(
        lambda m: arrays(
            np.float64,
            (a, m, DAYS),
            elements=st.one_of(st.just(0.0), st.floats(0, 1e300), st.sampled_from([1e300, 1e-300])),
        )
    )
)


@settings(max_examples=300, deadline=None)
@given(any_cubes, st.integers(0, 400))
def test_scores_stay_within_0_and_100(values: np.ndarray, age: int) -> None:
    result = score(values, ages=np.full(values.shape[0], age))
    assert np.all((result.score >= 0) & (result.score <= 100))
    assert np.all(np.isfinite(result.points)) and np.all(np.isfinite(result.level))
    assert np.all(np.isfinite(result.recent)) and np.all(np.isfinite(result.median))


def test_non_finite_values_do_not_poison_the_score() -> None:
    """inf/nan in the cube (a bad row, an overflowed sum) must not make the score NaN."""
    values = np.full((3, 1, DAYS), 10.0)
    values[0, 0, -3] = np.inf
    values[1, 0, -2] = np.nan
    values[2, 0, :] = 1.7e308  # 7 of these sum past float64's range
    result = score(values)
    assert np.all(np.isfinite(result.score)) and np.all((result.score >= 0) & (result.score <= 100))
    assert np.all(np.isfinite(result.points)) and np.all(np.isfinite(result.median))


@settings(max_examples=150, deadline=None)
@given(cubes, st.sampled_from([0.001, 0.37, 3.0, 12.5, 1000.0]))
def test_scaling_every_metric_of_every_account_keeps_bands(values: np.ndarray, k: float) -> None:
    assert np.array_equal(score(values).band, score(values * k).band)


@settings(max_examples=150, deadline=None)
@given(
    level=st.floats(1, 1e5),
    drop=st.floats(0.01, 1.0),
    peers=st.lists(st.floats(1, 1e5), min_size=0, max_size=5),
    drop_days=st.integers(1, 7),
)
def test_a_falling_series_scores_below_the_same_series_held_flat(
    level: float, drop: float, peers: list[float], drop_days: int
) -> None:
    flat = np.full(DAYS, level)
    falling = flat.copy()
    falling[DAYS - drop_days :] = level * (1 - drop)
    peer_rows = [np.full(DAYS, p) for p in peers]
    both = score(np.stack([[flat], [falling], *[[p] for p in peer_rows]]))
    alone_flat = score(np.stack([[flat], *[[p] for p in peer_rows]]))
    alone_falling = score(np.stack([[falling], *[[p] for p in peer_rows]]))
    assert both.score[1] < both.score[0]
    assert alone_falling.score[0] < alone_flat.score[0]


@settings(max_examples=100, deadline=None)
@given(cubes, st.integers(0, 400))
def test_silence_scores_red(values: np.ndarray, age: int) -> None:
    values[0] = 0.0  # account 0 never did anything (its peers: anything)
    result = score(values, ages=np.full(values.shape[0], age))
    assert result.band[0] == RED and result.score[0] == 0


def test_recent_silence_after_usage_is_red() -> None:
    values = np.full((1, 1, DAYS), 10.0)
    values[0, 0, -7:] = 0
    assert score(values).band[0] == RED


def test_steady_account_at_the_segment_median_is_green_at_neutral() -> None:
    result = score(np.full((3, 2, DAYS), 5.0))
    assert list(result.band) == [GREEN] * 3 and list(result.score) == [PARAMS.neutral] * 3


def test_new_account_is_not_punished_for_missing_history() -> None:
    values = np.zeros((2, 1, DAYS))
    values[:, 0, -3:] = 10.0  # both started three days ago
    result = score(values, ages=np.array([3, 3]))
    assert list(result.trend[:, 0]) == [0.0, 0.0] and result.band[0] == GREEN


def test_worked_example_from_the_readme() -> None:
    """README: baseline 40/day, last 7 days 22/day, segment median 40/day -> 44.91, yellow."""
    values = np.zeros((3, 1, DAYS))
    values[:, 0, :] = 40.0
    values[0, 0, -7:] = 22.0
    result = score(values)
    assert result.trend[0, 0] == -0.45
    assert round(float(result.level[0, 0]), 4) == -0.2875
    assert result.score[0] == 44.91 and result.band[0] == 1
    assert reason("reports_created", result, 0, 0, 28) == (
        "reports_created -45% vs 4-week baseline, 0.6x segment median: -30"
    )


def test_segments_are_compared_within_themselves() -> None:
    values = np.zeros((4, 1, DAYS))
    values[:2] = 100.0  # enterprise
    values[2:] = 2.0  # smb
    result = score(values, segments=np.array([0, 0, 1, 1]))
    assert np.all(result.level == 0) and np.all(result.band == GREEN)
