"""The health score, vectorised: daily metric arrays in, scores + components out. No I/O.

Shapes: ``values[a, m, d]`` is metric ``m`` of account ``a`` on day ``d`` (oldest first);
``end`` is the exclusive day index the score is "as of" (the recent window is the
``recent_days`` days before it). The formula is documented in the service README.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.health.config import ScoringParams

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

RED, YELLOW, GREEN = 0, 1, 2
# Daily values are clipped to this before any sum, so windows of up to a few thousand
# days stay finite whatever is stored (rollups are clamped far below it anyway).
VALUE_LIMIT = 1e300


def finite(values: FloatArray) -> FloatArray:
    """``values`` with nan as 0 and everything within +-VALUE_LIMIT."""
    clipped: FloatArray = np.clip(
        np.nan_to_num(values, nan=0.0, posinf=VALUE_LIMIT, neginf=-VALUE_LIMIT),
        -VALUE_LIMIT,
        VALUE_LIMIT,
    )
    return clipped


BAND_NAMES = ("red", "yellow", "green")
BAND_RANK = {name: rank for rank, name in enumerate(BAND_NAMES)}


@dataclass(frozen=True)
class Scores:
    """Per account (``[a]``) and per account and metric (``[a, m]``) results."""

    score: FloatArray  # [a] 0..100, rounded to 0.01
    band: IntArray  # [a] RED / YELLOW / GREEN
    recent: FloatArray  # [a, m] mean per day over the recent window
    baseline: FloatArray  # [a, m] mean per day over the baseline window (nan: none)
    median: FloatArray  # [a, m] the segment's median recent level
    level: FloatArray  # [a, m] -1..1
    trend: FloatArray  # [a, m] -1..1
    points: FloatArray  # [a, m] contribution to (score - neutral)


def _masked_mean(window: FloatArray, days: IntArray) -> FloatArray:
    """Mean of the last ``days[a]`` days of ``window[a, m, :]``; nan where ``days`` is 0."""
    width = window.shape[2]
    keep = np.arange(width)[None, :] >= (width - days)[:, None]  # [a, width]
    total = (window * keep[:, None, :]).sum(axis=2)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        mean = total / days[:, None].astype(np.float64)
    mean[days == 0, :] = np.nan
    result: FloatArray = mean
    return result


def window_means(
    values: FloatArray, end: int, ages: IntArray, params: ScoringParams
) -> tuple[FloatArray, FloatArray]:
    """Recent and baseline means per day, counting only days the account existed."""
    span = params.recent_days + params.baseline_days
    if end < span:  # not enough days in the array: the missing past is zeros
        values = np.pad(values, ((0, 0), (0, 0), (span - end, 0)))
        end = span
    recent_win = values[:, :, end - params.recent_days : end]
    base_win = values[:, :, end - span : end - params.recent_days]
    ages = np.maximum(ages, 0)
    recent_days = np.clip(ages, 1, params.recent_days)
    base_days = np.clip(ages - params.recent_days, 0, params.baseline_days)
    return _masked_mean(recent_win, recent_days), _masked_mean(base_win, base_days)


def segment_medians(
    recent: FloatArray, segments: IntArray, peer_recent: FloatArray, peer_segments: IntArray
) -> FloatArray:
    """``[a, m]``: the median recent level of account ``a``'s segment (a loop over segments)."""
    medians = np.zeros_like(recent)
    for seg in np.unique(segments):
        peers = peer_recent[peer_segments == seg]
        target = segments == seg
        if len(peers):
            medians[target, :] = np.median(peers, axis=0)[None, :]
        else:
            medians[target, :] = np.median(recent[target], axis=0)[None, :]
    return medians


def score_accounts(
    values: FloatArray,
    *,
    end: int,
    ages: IntArray,
    segments: IntArray,
    weights: FloatArray,
    params: ScoringParams,
    peers: tuple[FloatArray, IntArray] | None = None,
) -> Scores:
    """Score every account as of day index ``end``.

    ``peers`` (recent levels and segment codes of every account) sets the segment medians
    when only some accounts are scored; by default the scored accounts are their own peers.
    """
    recent, baseline = window_means(finite(values), end, ages, params)
    peer_recent, peer_segments = peers if peers is not None else (recent, segments)
    peer_recent = finite(peer_recent)
    median = segment_medians(recent, segments, peer_recent, peer_segments)
    silent = recent <= 0
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        log_ratio = np.log2(recent / median)
        change = (recent - baseline) / baseline
    level = np.where(median > 0, np.clip(log_ratio / params.level_span, -1, 1), 1.0)
    level = np.where(silent, -1.0, level)
    trend = np.where(baseline > 0, np.clip(change, -1, 1), 0.0)
    trend = np.where(silent, -1.0, trend)
    per_metric = params.level_share * level + (1 - params.level_share) * trend
    share = weights / weights.sum()
    combined = (per_metric * share[None, :]).sum(axis=1)
    scale = np.where(combined >= 0, 100 - params.neutral, params.neutral)
    combined = np.clip(np.nan_to_num(combined, nan=-1.0), -1, 1)
    score = np.round(np.clip(params.neutral + combined * scale, 0, 100), 2)
    band = np.where(
        score >= params.green, GREEN, np.where(score >= params.yellow, YELLOW, RED)
    ).astype(np.int64)
    points = np.nan_to_num(per_metric * share[None, :] * scale[:, None])
    return Scores(score, band, recent, baseline, median, level, trend, points)


def reason(name: str, scores: Scores, a: int, m: int, baseline_days: int) -> str:
    """The one-line why of one component, e.g. "events -45% vs 4-week baseline ...: -18"."""
    points = scores.points[a, m]
    recent, baseline, median = scores.recent[a, m], scores.baseline[a, m], scores.median[a, m]
    if recent <= 0:
        return f"{name}: no activity in the recent window: {points:+.0f}"
    weeks = f"{baseline_days // 7}-week" if baseline_days % 7 == 0 else f"{baseline_days}-day"
    if np.isnan(baseline) or baseline <= 0:
        trend = f"{name} no {weeks} baseline yet"
    else:
        trend = f"{name} {(recent - baseline) / baseline:+.0%} vs {weeks} baseline"
    level = f"{recent / median:.1f}x segment median" if median > 0 else "segment has no usage"
    return f"{trend}, {level}: {points:+.0f}"


# The default formula over per-event rollups ---------------------------------------------

BALANCED_PARTS = ("event_mix", "breadth", "friction", "active_users")
BALANCED_WEIGHTS = np.array([1.0, 0.5, 0.5, 1.0])


@dataclass(frozen=True)
class Balanced:
    """Per account (``[a, k]``, ``k`` in :data:`BALANCED_PARTS`) values of the default's parts."""

    value: FloatArray  # [a, k] -1..1
    weight: FloatArray  # [a, k] the part's weight for that account (0: not scored)
    recent: FloatArray  # [a, k] what the reason shows: events/day, distinct names, share, users
    baseline: FloatArray  # [a, k]


def _trend(recent: FloatArray, baseline: FloatArray, floor: float) -> FloatArray:
    """``clip((recent - baseline) / max(baseline, floor), -1, 1)``; 0 without a baseline."""
    with np.errstate(invalid="ignore", divide="ignore"):
        change = (recent - baseline) / np.maximum(baseline, floor)
    result: FloatArray = np.where(np.nan_to_num(baseline) > 0, np.clip(change, -1, 1), 0.0)
    return result


def balanced_parts(
    counts: FloatArray,
    active: FloatArray,
    negative: npt.NDArray[np.bool_],
    *,
    end: int,
    ages: IntArray,
    segments: IntArray,
    params: ScoringParams,
    peers: tuple[FloatArray, IntArray] | None = None,
) -> Balanced:
    """The parts of the default score from per-event daily counts ``counts[a, e, d]`` and
    active users ``active[a, d]``; ``negative[e]`` marks friction events (errors, failures,
    tickets). See the README: no single event can dominate, breadth counts, and users
    count only where an account has several."""
    counts = finite(np.maximum(counts, 0))
    a_n = counts.shape[0]
    pos = ~negative
    recent, baseline = window_means(counts, end, ages, params)  # [a, e]
    floor = 1.0 / params.recent_days  # one event a week: below that a change is noise
    # event mix: every positive event name used scored like a metric, the same weight each
    peer_recent, peer_segments = peers if peers is not None else (recent, segments)
    median = segment_medians(recent, segments, finite(peer_recent), peer_segments)
    with np.errstate(invalid="ignore", divide="ignore"):
        level = np.where(
            median > 0, np.clip(np.log2(recent / median) / params.level_span, -1, 1), 1.0
        )
    level = np.where(recent <= 0, -1.0, level)
    trend = np.where(recent <= 0, -1.0, _trend(recent, baseline, floor))
    per_event = params.level_share * level + (1 - params.level_share) * trend
    # equal weight per event name used (measured: better than weights by log volume)
    volume = ((np.nan_to_num(recent) + np.nan_to_num(baseline)) > 0) * pos[None, :]
    used = volume.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mix = np.where(used > 0, (per_event * volume).sum(axis=1) / used, -1.0)
    # breadth: distinct event names used in the recent window vs the baseline's weeks
    span = params.recent_days + params.baseline_days
    padded = np.pad(counts, ((0, 0), (0, 0), (max(span - end, 0), 0)))
    stop = max(end, span)
    weeks = max(params.baseline_days // params.recent_days, 1)
    recent_names = (padded[:, pos, stop - params.recent_days : stop].sum(axis=2) > 0).sum(axis=1)
    base_names = np.zeros(a_n)
    for w in range(weeks):
        hi = stop - params.recent_days * (w + 1)
        lo = hi - params.recent_days
        base_names += (padded[:, pos, lo:hi].sum(axis=2) > 0).sum(axis=1)
    base_names = base_names / weeks
    has_base = np.maximum(ages, 0) > span
    breadth = np.where(has_base, _trend(recent_names.astype(np.float64), base_names, 1.0), 0.0)
    # friction: the share of negative events, recent vs baseline (add-one smoothed)
    neg_r = np.nan_to_num(recent[:, negative]).sum(axis=1)
    neg_b = np.nan_to_num(baseline[:, negative]).sum(axis=1)
    pos_r = np.nan_to_num(recent[:, pos]).sum(axis=1)
    pos_b = np.nan_to_num(baseline[:, pos]).sum(axis=1)
    r = params.recent_days
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = ((neg_r * r + 1) / (pos_r * r + 1)) / ((neg_b * r + 1) / (pos_b * r + 1))
    friction = -np.clip(np.log2(ratio) / 2, -1, 1)
    has_friction = (neg_r + neg_b > 0) & has_base
    # active users, only where the account has had more than one
    u_recent, u_base = window_means(finite(active[:, None, :]), end, ages, params)
    u_recent, u_base = u_recent[:, 0], u_base[:, 0]
    u_median = segment_medians(u_recent[:, None], segments, u_recent[:, None], segments)[:, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        u_level = np.where(
            u_median > 0, np.clip(np.log2(u_recent / u_median) / params.level_span, -1, 1), 1.0
        )
    u_level = np.where(u_recent <= 0, -1.0, u_level)
    u_trend = np.where(u_recent <= 0, -1.0, _trend(u_recent, u_base, floor))
    users = params.level_share * u_level + (1 - params.level_share) * u_trend
    window = active[:, max(end - span, 0) : end]
    several = window.max(axis=1, initial=0) > 1
    value = np.stack([mix, breadth, friction, users], axis=1)
    weight = BALANCED_WEIGHTS[None, :] * np.stack(
        [np.ones(a_n), np.ones(a_n), has_friction, several], axis=1
    )
    shown_recent = np.stack([pos_r, recent_names, neg_r / np.maximum(neg_r + pos_r, 1e-12), u_recent], 1)
    shown_base = np.stack([pos_b, base_names, neg_b / np.maximum(neg_b + pos_b, 1e-12), u_base], 1)
    return Balanced(np.nan_to_num(value, nan=-1.0), weight, shown_recent, shown_base)


def combine(value: FloatArray, weight: FloatArray, params: ScoringParams) -> tuple[FloatArray, IntArray, FloatArray]:
    """Score, band and points ``[a, k]`` from parts in -1..1 with per-account weights."""
    total = np.maximum(weight.sum(axis=1), 1e-12)
    share = weight / total[:, None]
    combined = np.clip(np.nan_to_num((value * share).sum(axis=1), nan=-1.0), -1, 1)
    scale = np.where(combined >= 0, 100 - params.neutral, params.neutral)
    score = np.round(np.clip(params.neutral + combined * scale, 0, 100), 2)
    band = np.where(
        score >= params.green, GREEN, np.where(score >= params.yellow, YELLOW, RED)
    ).astype(np.int64)
    points = np.nan_to_num(value * share * scale[:, None])
    return score, band, points
