"""From loaded history to what scoring and rules need, for any day: live and backtest. No I/O.

A :class:`Cube` holds days ``0..D-1`` (day 0 = ``first_day``) of every metric for a set
of accounts plus their registry facts as day indices. ``end`` is the as-of day index:
the scores use the days before it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any

import numpy as np

from services.health.config import ScoringParams
from services.health.eventnames import COUNT_PREFIX
from services.health.model_fit import FittedModel, raw_features, reason, score_with
from services.health.rules import Snapshot, evaluate
from services.health.scoring import (
    BAND_RANK,
    FloatArray,
    IntArray,
    Scores,
    default_score,
    score_accounts,
)

NEVER = -(10**6)


@dataclass(frozen=True)
class ActiveModel:
    id: int
    model: FittedModel
    metrics: list[str]  # the rollup keys its features are built from, in order


@dataclass(frozen=True)
class Cube:
    account_ids: list[str]
    metric_keys: list[str]
    metric_names: list[str]
    weights: FloatArray  # [m]
    values: FloatArray  # [a, m, d]
    first_day: date
    first_seen: IntArray  # [a] day index (may be negative)
    last_active: IntArray  # [a] day index of the last event known (NEVER = none)
    segments: IntArray  # [a] segment codes
    stage: list[str | None]
    plan: list[str | None]
    renewal: FloatArray  # [a] day index, nan = unknown
    stage_since: IntArray | None = None  # [a] day index the current stage began (None: first seen)
    owner_changes: list[tuple[int, int]] = field(default_factory=list)  # (a, day index)
    storage_keys: list[str] = field(default_factory=list)  # [m] the rollup key each reads
    user_metrics: list[bool] = field(default_factory=list)  # [m] counts active users
    # every event name's own rollups (``event:<slug>`` / ``users:<slug>``), for the
    # default's event parts and a fitted model's per-event metrics
    event_keys: list[str] = field(default_factory=list)
    event_names: list[str] = field(default_factory=list)  # [x] display name of each key
    event_values: FloatArray | None = None  # [a, x, d]
    model: ActiveModel | None = None  # the fitted model that scores, if one is active

    def index_of(self, day: date) -> int:
        return (day - self.first_day).days

    def day_of(self, index: int) -> date:
        return self.first_day + timedelta(days=index)


def plain_recent(values: FloatArray, end: int, days: int) -> FloatArray:
    """``[a, m]`` mean per day over the ``days`` before ``end`` (what peers are compared on)."""
    start = max(0, end - days)
    window = values[:, :, start:end]
    result: FloatArray = window.sum(axis=2) / float(days)
    return result


def _days_inactive(cube: Cube, end: int) -> IntArray:
    active = cube.values[:, :, :end].sum(axis=1) > 0  # [a, d]
    idx = np.arange(active.shape[1])
    last_in_cube = np.where(active, idx[None, :], NEVER).max(axis=1, initial=NEVER)
    registry = np.where(cube.last_active < end, cube.last_active, NEVER)
    last = np.maximum(last_in_cube, registry)
    last = np.where(last == NEVER, cube.first_seen - 1, last)
    result: IntArray = np.maximum(end - 1 - last, 0).astype(np.int64)
    return result


def _owner_change_age(cube: Cube, end: int) -> FloatArray:
    since = np.full(len(cube.account_ids), np.nan)
    for a, day in cube.owner_changes:
        if day <= end and (np.isnan(since[a]) or end - day < since[a]):
            since[a] = end - day
    return since


def score_at(
    cube: Cube,
    end: int,
    params: ScoringParams,
    peers: tuple[FloatArray, IntArray] | None = None,
) -> Scores:
    """Scores of every account of the cube as of day index ``end``."""
    m = len(cube.metric_keys)
    event_peers = None
    if peers is None:
        peers = (plain_recent(cube.values, end, params.recent_days), cube.segments)
    elif peers[0].shape[1] > m:  # a subset: every account's per-event levels came along
        picks = [m + i for i, k in enumerate(cube.event_keys) if k.startswith(COUNT_PREFIX)]
        event_peers = (peers[0][:, picks], peers[1])
        peers = (peers[0][:, :m], peers[1])
    ages = np.maximum(end - cube.first_seen, 0)
    if cube.model is not None or not params.event_parts:
        base = score_accounts(
            cube.values,
            end=end,
            ages=ages,
            segments=cube.segments,
            weights=cube.weights,
            params=params,
            peers=peers,
        )
        return base if cube.model is None else with_model(base, cube, end, cube.model)
    counts, names = event_counts(cube)
    return default_score(
        cube.values,
        counts,
        np.array(params.negative(names), dtype=bool),
        names,
        end=end,
        ages=ages,
        segments=cube.segments,
        weights=cube.weights,
        users=np.array(cube.user_metrics or [False] * len(cube.metric_keys), dtype=bool),
        params=params,
        peers=peers,
        event_peers=event_peers,
    )


def event_counts(cube: Cube) -> tuple[FloatArray, list[str]]:
    """``[a, e, d]`` per-event counts (the ``event:`` keys) and their display names."""
    picks = [i for i, k in enumerate(cube.event_keys) if k.startswith(COUNT_PREFIX)]
    if cube.event_values is None or not picks:
        return np.zeros((len(cube.account_ids), 0, cube.values.shape[2])), []
    return cube.event_values[:, picks, :], [cube.event_names[i] for i in picks]


def model_inputs(cube: Cube, metrics: list[str]) -> FloatArray:
    """``[a, m, d]`` daily values of the rollup keys ``metrics`` (configured metric
    keys or per-event keys; zeros for a key the cube does not hold)."""
    days = cube.values.shape[2]
    out = np.zeros((len(cube.account_ids), len(metrics), days))
    own = {k: j for j, k in enumerate(cube.metric_keys)}
    events = {k: j for j, k in enumerate(cube.event_keys)}
    for i, key in enumerate(metrics):
        if key in own:
            out[:, i, :] = cube.values[:, own[key], :]
        elif key in events and cube.event_values is not None:
            out[:, i, :] = cube.event_values[:, events[key], :]
    return out


def with_model(base: Scores, cube: Cube, end: int, active: ActiveModel) -> Scores:
    """``base`` (kept for the rules' metric levels) scored by a fitted model instead."""
    raw, _ = raw_features(model_inputs(cube, active.metrics)[:, :, :end], end, active.metrics)
    scored = score_with(active.model, raw)
    band = np.array([BAND_RANK[b] for b in scored.band], dtype=np.int64)
    groups = [active.model.features[g[0]] for g in active.model.groups]
    return replace(
        base,
        score=scored.score,
        band=band,
        points=np.zeros_like(base.points),
        parts=groups,
        part_points=scored.points,
        part_reason=lambda a, k: reason(active.model, raw, scored.points, a, k),
        part_values=active.model.grouped(raw),
        part_weights=np.broadcast_to(active.model.coef, scored.points.shape),
        only_parts=True,
    )


def snapshot_at(
    cube: Cube,
    end: int,
    params: ScoringParams,
    peers_now: tuple[FloatArray, IntArray] | None = None,
    peers_week_ago: tuple[FloatArray, IntArray] | None = None,
) -> Snapshot:
    return Snapshot(
        metric_keys=cube.metric_keys,
        metric_names=cube.metric_names,
        values=cube.values,
        end=end,
        now=score_at(cube, end, params, peers_now),
        week_ago=score_at(cube, end - 7, params, peers_week_ago),
        age_days=np.maximum(end - cube.first_seen, 0),
        days_in_stage=np.maximum(
            end - (cube.first_seen if cube.stage_since is None else cube.stage_since), 0
        ),
        days_inactive=_days_inactive(cube, end),
        stage=cube.stage,
        plan=cube.plan,
        days_to_renewal=cube.renewal - end,
        days_since_owner_change=_owner_change_age(cube, end),
        recent_days=params.recent_days,
    )


def backtest(
    cube: Cube,
    *,
    rule_type: str,
    params: dict[str, Any],
    end: int,
    days: int,
    cooldown_days: int,
    scoring: ScoringParams,
) -> dict[str, Any]:
    """Replay one rule day by day over ``days`` days before ``end``: alerts opened per week.

    Lifecycle as live: one open alert per account, auto-resolve when the condition clears,
    no reopening within the cool-down. Snoozes and budgets are people's doing: ignored.
    """
    active: set[int] = set()
    resolved_on: dict[int, int] = {}
    per_week: dict[date, int] = defaultdict(int)
    per_account: dict[int, list[date]] = defaultdict(list)
    for e in range(end - days + 1, end + 1):
        hits = {h.index for h in evaluate(rule_type, params, snapshot_at(cube, e, scoring))}
        for a in active - hits:
            resolved_on[a] = e
        active &= hits
        for a in hits - active:
            if a in resolved_on and e - resolved_on[a] < cooldown_days:
                continue
            active.add(a)
            day = cube.day_of(e)
            per_week[day - timedelta(days=day.weekday())] += 1
            per_account[a].append(day)
    total = sum(per_week.values())
    weeks = sorted(per_week.items())
    return {
        "rule_type": rule_type,
        "params": params,
        "days": days,
        "total": total,
        "per_week_average": round(total / max(days / 7, 1), 2),
        "weeks": [{"week_start": w.isoformat(), "alerts": n} for w, n in weeks],
        "accounts": [
            {"account_id": cube.account_ids[a], "alerts": len(ds), "first": ds[0].isoformat()}
            for a, ds in sorted(per_account.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        ],
    }
