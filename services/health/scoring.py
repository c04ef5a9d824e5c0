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
