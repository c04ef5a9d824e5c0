"""The health score, vectorised: daily metric arrays in, scores + components out. No I/O.

Shapes: ``values[a, m, d]`` is metric ``m`` of account ``a`` on day ``d`` (oldest first);
``end`` is the exclusive day index the score is "as of" (the recent window is the
``recent_days`` days before it). The formula is documented in the service README.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

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
    # parts scored besides the metrics (the default's event parts, a fitted model's groups)
    parts: list[str] = field(default_factory=list)
    part_points: FloatArray | None = None  # [a, k]
    part_reason: Callable[[int, int], str] | None = None  # (account, part) -> one line
    part_values: FloatArray | None = None  # [a, k] the part's value (-1..1; a model: z)
    part_weights: FloatArray | None = None  # [a, k] (a model: the group's coefficient)
    only_parts: bool = False  # a fitted model: the metrics' points are not the score's


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

PARTS = ("event_mix", "breadth", "friction")
PART_WEIGHTS = np.array([1.0, 0.5, 0.5])


@dataclass(frozen=True)
class Parts:
    """Per account (``[a, k]``, ``k`` in :data:`PARTS`) the default's event parts."""

    value: FloatArray  # [a, k] -1..1
    weight: FloatArray  # [a, k] the part's weight for that account (0: not scored)
    recent: FloatArray  # [a, k] events/day, distinct names a week, negative share
    baseline: FloatArray  # [a, k]
    worst: IntArray  # [a] the positive event name with the lowest part (-1: none)
    worst_trend: FloatArray  # [a] its recent vs baseline change


def _trend(recent: FloatArray, baseline: FloatArray, floor: float) -> FloatArray:
    """``clip((recent - baseline) / max(baseline, floor), -1, 1)``; 0 without a baseline."""
    with np.errstate(invalid="ignore", divide="ignore"):
        change = (recent - baseline) / np.maximum(baseline, floor)
    result: FloatArray = np.where(np.nan_to_num(baseline) > 0, np.clip(change, -1, 1), 0.0)
    return result


def event_parts(
    counts: FloatArray,
    negative: npt.NDArray[np.bool_],
    *,
    end: int,
    ages: IntArray,
    segments: IntArray,
    params: ScoringParams,
    peers: tuple[FloatArray, IntArray] | None = None,
) -> Parts:
    """The default's parts from per-event daily counts ``counts[a, e, d]``; ``negative[e]``
    marks friction events (errors, failures, tickets). See the README: every event name
    used weighs the same, so no single (frequent) event dominates."""
    counts = finite(np.maximum(counts, 0))
    a_n = counts.shape[0]
    pos = ~negative
    recent, baseline = window_means(counts, end, ages, params)  # [a, e]
    floor = 1.0 / params.recent_days  # one event a week: below that a change is noise
    # event mix: every positive event name used, scored like a metric, the same weight each
    peer_recent, peer_segments = peers if peers is not None else (recent, segments)
    median = segment_medians(recent, segments, finite(peer_recent), peer_segments)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.log2(recent / median)
    level = np.where(median > 0, np.clip(ratio / params.level_span, -1, 1), 1.0)
    level = np.where(recent <= 0, -1.0, level)
    change = _trend(recent, baseline, floor)
    trend = np.where(recent <= 0, -1.0, change)
    per_event = params.level_share * level + (1 - params.level_share) * trend
    used = ((np.nan_to_num(recent) + np.nan_to_num(baseline)) > 0) & pos[None, :]
    n_used = used.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mix = np.where(n_used > 0, (per_event * used).sum(axis=1) / n_used, -1.0)
    masked = np.where(used, per_event, np.inf)
    worst = np.where(n_used > 0, masked.argmin(axis=1) if masked.size else 0, -1)
    worst_trend = np.array(
        [change[a, e] if e >= 0 else 0.0 for a, e in enumerate(worst)], dtype=np.float64
    )
    # breadth: distinct event names used in the recent window vs the baseline's weeks
    span = params.recent_days + params.baseline_days
    padded = np.pad(counts, ((0, 0), (0, 0), (max(span - end, 0), 0)))
    stop = max(end, span)
    weeks = max(params.baseline_days // params.recent_days, 1)
    r = params.recent_days
    recent_names = (padded[:, pos, stop - r : stop].sum(axis=2) > 0).sum(axis=1)
    base_names = np.zeros(a_n)
    for w in range(weeks):
        hi = stop - r * (w + 1)
        base_names += (padded[:, pos, hi - r : hi].sum(axis=2) > 0).sum(axis=1)
    base_names = base_names / weeks
    has_base = np.maximum(ages, 0) > span
    breadth = np.where(has_base, _trend(recent_names.astype(np.float64), base_names, 1.0), 0.0)
    # friction: the share of negative events, recent vs baseline (add-one smoothed)
    neg_r = np.nan_to_num(recent[:, negative]).sum(axis=1)
    neg_b = np.nan_to_num(baseline[:, negative]).sum(axis=1)
    pos_r = np.nan_to_num(recent[:, pos]).sum(axis=1)
    pos_b = np.nan_to_num(baseline[:, pos]).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        odds = ((neg_r * r + 1) / (pos_r * r + 1)) / ((neg_b * r + 1) / (pos_b * r + 1))
    friction = -np.clip(np.log2(odds) / 2, -1, 1)
    has_friction = (neg_r + neg_b > 0) & has_base
    value = np.stack([mix, breadth, friction], axis=1)
    # breadth says nothing about an account that only ever uses one event name
    several_names = has_base & (base_names > 1)
    has_events = np.full(a_n, counts.shape[1] > 0)  # no per-event rollups at all: no part
    weight = PART_WEIGHTS[None, :] * np.stack([has_events, several_names, has_friction], 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share_r = np.where(neg_r + pos_r > 0, neg_r / (neg_r + pos_r), 0.0)
        share_b = np.where(neg_b + pos_b > 0, neg_b / (neg_b + pos_b), 0.0)
    return Parts(
        value=np.nan_to_num(value, nan=-1.0),
        weight=weight,
        recent=np.stack([pos_r, recent_names.astype(np.float64), share_r], axis=1),
        baseline=np.stack([pos_b, base_names, share_b], axis=1),
        worst=worst.astype(np.int64),
        worst_trend=worst_trend,
    )


def combine(
    value: FloatArray, weight: FloatArray, params: ScoringParams
) -> tuple[FloatArray, IntArray, FloatArray]:
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


def users_weights(
    values: FloatArray,
    end: int,
    weights: FloatArray,
    users: npt.NDArray[np.bool_],
    params: ScoringParams,
) -> FloatArray:
    """``[a, m]`` metric weights, with active-user metrics (``users[m]``) at 0 for an
    account that never had more than one user a day in the windows scored."""
    span = params.recent_days + params.baseline_days
    several = values[:, :, max(end - span, 0) : end].max(axis=2, initial=0) > 1  # [a, m]
    keep = ~users[None, :] | several
    result: FloatArray = weights[None, :] * keep
    return result


def part_reason(parts: Parts, names: list[str], points: FloatArray, a: int, k: int) -> str:
    """The one-line why of one of the default's parts."""
    pts = points[a, k]
    if k == 0:
        if parts.worst[a] < 0:
            return f"no product use in the recent window: {pts:+.0f}"
        worst = names[parts.worst[a]]
        return (
            f"usage by event name, each weighing the same ({worst} {parts.worst_trend[a]:+.0%}"
            f" vs 4-week baseline): {pts:+.0f}"
        )
    if k == 1:
        return (
            f"{parts.recent[a, 1]:.0f} event names used in the last week vs "
            f"{parts.baseline[a, 1]:.1f} a week before: {pts:+.0f}"
        )
    return (
        f"errors and failures {parts.recent[a, 2]:.1%} of events vs "
        f"{parts.baseline[a, 2]:.1%} in the baseline: {pts:+.0f}"
    )


def default_score(
    values: FloatArray,
    counts: FloatArray,
    negative: npt.NDArray[np.bool_],
    names: list[str],
    *,
    end: int,
    ages: IntArray,
    segments: IntArray,
    weights: FloatArray,
    users: npt.NDArray[np.bool_],
    params: ScoringParams,
    peers: tuple[FloatArray, IntArray] | None = None,
    event_peers: tuple[FloatArray, IntArray] | None = None,
) -> Scores:
    """The default: the configured metrics (active users only where an account has
    several) plus the event parts over every event name (``counts[a, e, d]``)."""
    base = score_accounts(
        values,
        end=end,
        ages=ages,
        segments=segments,
        weights=np.maximum(weights, 1e-12),
        params=params,
        peers=peers,
    )
    parts = event_parts(
        counts, negative, end=end, ages=ages, segments=segments, params=params, peers=event_peers
    )
    per_metric = params.level_share * base.level + (1 - params.level_share) * base.trend
    metric_w = users_weights(finite(values), end, weights, users, params)
    value = np.concatenate([parts.value, per_metric], axis=1)
    weight = np.concatenate([parts.weight, metric_w], axis=1)
    score, band, points = combine(value, weight, params)
    k = len(PARTS)
    part_points = points[:, :k]
    return replace(
        base,
        score=score,
        band=band,
        points=points[:, k:],
        parts=list(PARTS),
        part_points=part_points,
        part_reason=lambda a, j: part_reason(parts, names, part_points, a, j),
        part_values=parts.value,
        part_weights=parts.weight,
    )
