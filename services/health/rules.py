"""Alert rules, vectorised over accounts: a snapshot of arrays in, the firing accounts out.

Every rule is a condition on the data as of a day, so the same code serves the live
evaluation (auto-resolve = the condition no longer holds) and the backtest (the
condition replayed day by day over stored history). No I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.health.scoring import BAND_NAMES, BAND_RANK, FloatArray, IntArray, Scores

BoolArray = npt.NDArray[np.bool_]


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BandDropParams(Params):
    bands: list[Literal["yellow", "red"]] = Field(default=["yellow", "red"])


class ScoreDropParams(Params):
    points: float = Field(default=20.0, gt=0, le=100)


class MetricDeclineParams(Params):
    metric: str | None = Field(default=None, description="metric key; none = any scored metric")
    percent: float = Field(default=25.0, gt=0, le=100)
    min_baseline: float = Field(default=1.0, ge=0, description="ignore tiny baselines")


class InactivityParams(Params):
    days: int = Field(default=14, ge=1, le=365)


class ExpansionParams(Params):
    mode: Literal["growth", "plan_limit", "features"] = "growth"
    metric: str = "events"
    weeks: int = Field(default=4, ge=1, le=12)
    min_growth: float = Field(default=0.10, ge=0, le=10)
    limits: dict[str, float] = Field(default_factory=dict, description="plan -> limit")
    share: float = Field(default=0.8, gt=0, le=10)
    features: list[str] = Field(default_factory=list, description="metric keys, all used")
    days: int = Field(default=30, ge=1, le=180)

    @model_validator(mode="after")
    def _mode_needs(self) -> ExpansionParams:
        if self.mode == "plan_limit" and not self.limits:
            raise ValueError("mode 'plan_limit' needs 'limits' (plan -> limit)")
        if self.mode == "features" and len(self.features) < 2:
            raise ValueError("mode 'features' needs at least two metric keys in 'features'")
        return self


class OnboardingStalledParams(Params):
    stages: list[str] = Field(default_factory=lambda: ["onboarding"])
    after_days: int = Field(default=14, ge=1, le=365)
    metric: str = "events"
    min_per_day: float = Field(default=1.0, ge=0)


class OwnerChangedParams(Params):
    days: int = Field(default=30, ge=1, le=365)


class RenewalRiskParams(Params):
    days: int = Field(default=60, ge=1, le=730)
    below: float = Field(default=50.0, gt=0, le=100)


RULE_PARAMS: dict[str, type[Params]] = {
    "band_drop": BandDropParams,
    "score_drop": ScoreDropParams,
    "metric_decline": MetricDeclineParams,
    "inactivity": InactivityParams,
    "expansion": ExpansionParams,
    "onboarding_stalled": OnboardingStalledParams,
    "owner_changed": OwnerChangedParams,
    "renewal_risk": RenewalRiskParams,
}


def validate_params(rule_type: str, params: dict[str, Any]) -> dict[str, Any]:
    """The params with defaults filled in; raises ValueError/ValidationError when invalid."""
    model = RULE_PARAMS.get(rule_type)
    if model is None:
        raise ValueError(f"unknown rule type '{rule_type}'; one of {sorted(RULE_PARAMS)}")
    return model.model_validate(params).model_dump()


Loc = tuple[str | int, ...]


def metric_references(rule_type: str, params: dict[str, Any]) -> list[tuple[Loc, str]]:
    """The metric keys the (validated) params name, each with where it sits in ``params``."""
    if rule_type == "metric_decline":
        return [] if params.get("metric") is None else [(("metric",), params["metric"])]
    if rule_type == "onboarding_stalled":
        return [(("metric",), params["metric"])]
    if rule_type == "expansion":
        if params["mode"] == "features":
            return [(("features", i), key) for i, key in enumerate(params["features"])]
        return [(("metric",), params["metric"])]
    return []


def unknown_metrics(
    rule_type: str, params: dict[str, Any], keys: list[str]
) -> list[tuple[Loc, str]]:
    """Where the params name a metric that is not configured (the rule would never fire)."""
    return [
        (loc, f"unknown metric '{key}'; configured: {', '.join(keys)}")
        for loc, key in metric_references(rule_type, params)
        if key not in keys
    ]


@dataclass(frozen=True)
class Snapshot:
    """What the rules see for a set of accounts as of one day."""

    metric_keys: list[str]
    metric_names: list[str]
    values: FloatArray  # [a, m, d] daily values, oldest first; day ``end - 1`` = yesterday
    end: int
    now: Scores
    week_ago: Scores
    age_days: IntArray  # [a] days since first seen
    days_in_stage: IntArray  # [a] days since the account entered its current stage
    days_inactive: IntArray  # [a] full days since the last day with any activity
    stage: list[str | None]
    plan: list[str | None]
    days_to_renewal: FloatArray  # [a] nan = unknown
    days_since_owner_change: FloatArray  # [a] nan = never changed
    recent_days: int = 7


@dataclass(frozen=True)
class Hit:
    index: int
    reason: str
    details: dict[str, Any] = field(default_factory=dict)


def _metric_index(snap: Snapshot, key: str) -> int | None:
    return snap.metric_keys.index(key) if key in snap.metric_keys else None


def _window_sum(snap: Snapshot, m: int, days: int) -> FloatArray:
    start = max(0, snap.end - days)
    total: FloatArray = snap.values[:, m, start : snap.end].sum(axis=1)
    return total


def _band_drop(p: BandDropParams, snap: Snapshot) -> list[Hit]:
    wanted = np.isin(snap.now.band, [BAND_RANK[b] for b in p.bands])
    mask = wanted & (snap.now.band < snap.week_ago.band)
    return [
        Hit(
            int(a),
            f"band dropped from {BAND_NAMES[snap.week_ago.band[a]]} to "
            f"{BAND_NAMES[snap.now.band[a]]} within a week (score {snap.now.score[a]:.0f})",
            {"band": BAND_NAMES[snap.now.band[a]], "previous": BAND_NAMES[snap.week_ago.band[a]]},
        )
        for a in np.flatnonzero(mask)
    ]


def _score_drop(p: ScoreDropParams, snap: Snapshot) -> list[Hit]:
    drop = snap.week_ago.score - snap.now.score
    return [
        Hit(
            int(a),
            f"score fell {drop[a]:.0f} points in a week "
            f"({snap.week_ago.score[a]:.0f} -> {snap.now.score[a]:.0f})",
            {"drop": round(float(drop[a]), 2)},
        )
        for a in np.flatnonzero(drop >= p.points)
    ]


def _metric_decline(p: MetricDeclineParams, snap: Snapshot) -> list[Hit]:
    recent, base = snap.now.recent, snap.now.baseline
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        change = np.where(base >= max(p.min_baseline, 1e-12), (recent - base) / base, 0.0)
    change = np.nan_to_num(change)
    if p.metric is not None:
        m = _metric_index(snap, p.metric)
        if m is None:
            return []
        columns = np.zeros(change.shape[1], dtype=bool)
        columns[m] = True
        change = np.where(columns[None, :], change, 0.0)
    worst = change.argmin(axis=1)
    worst_change = change[np.arange(len(worst)), worst]
    hits = []
    for a in np.flatnonzero(worst_change <= -p.percent / 100):
        name = snap.metric_names[worst[a]]
        hits.append(
            Hit(
                int(a),
                f"{name} {worst_change[a]:+.0%} vs baseline",
                {"metric": snap.metric_keys[worst[a]], "change": round(float(worst_change[a]), 4)},
            )
        )
    return hits


def _inactivity(p: InactivityParams, snap: Snapshot) -> list[Hit]:
    return [
        Hit(
            int(a),
            f"no activity for {snap.days_inactive[a]} days",
            {"days": int(snap.days_inactive[a])},
        )
        for a in np.flatnonzero(snap.days_inactive >= p.days)
    ]


def _growth(p: ExpansionParams, snap: Snapshot, m: int) -> tuple[BoolArray, str]:
    weeks = p.weeks + 1
    start = snap.end - 7 * weeks
    if start < 0:
        return np.zeros(len(snap.age_days), dtype=bool), ""
    window = snap.values[:, m, start : snap.end]
    weekly = window.reshape(window.shape[0], weeks, 7).sum(axis=2)  # [a, weeks]
    grew = weekly[:, 1:] >= weekly[:, :-1] * (1 + p.min_growth)
    mask = grew.all(axis=1) & (weekly[:, 0] > 0) & (weekly[:, 1:] > weekly[:, :-1]).all(axis=1)
    return mask, f"up {p.weeks} weeks in a row, each >= {p.min_growth:.0%}"


def _expansion(p: ExpansionParams, snap: Snapshot) -> list[Hit]:
    n = len(snap.age_days)
    if p.mode == "features":
        idx = [_metric_index(snap, k) for k in p.features]
        if any(i is None for i in idx):
            return []
        mask = np.ones(n, dtype=bool)
        for i in idx:
            assert i is not None
            mask &= _window_sum(snap, i, p.days) > 0
        why = f"uses {' and '.join(p.features)} (last {p.days} days)"
    else:
        m = _metric_index(snap, p.metric)
        if m is None:
            return []
        if p.mode == "growth":
            mask, why = _growth(p, snap, m)
            why = f"{snap.metric_names[m]} {why}"
        else:
            limit = np.array([p.limits.get(plan or "", np.nan) for plan in snap.plan])
            level = snap.now.recent[:, m]
            with np.errstate(invalid="ignore"):
                mask = np.nan_to_num(level / limit) >= p.share
            why = f"{snap.metric_names[m]} at >= {p.share:.0%} of the plan's limit"
    return [Hit(int(a), why, {"mode": p.mode}) for a in np.flatnonzero(mask)]


def _onboarding_stalled(p: OnboardingStalledParams, snap: Snapshot) -> list[Hit]:
    m = _metric_index(snap, p.metric)
    if m is None:
        return []
    in_stage = np.array([s in p.stages for s in snap.stage], dtype=bool)
    in_for = snap.days_in_stage
    mask = in_stage & (in_for >= p.after_days) & (snap.now.recent[:, m] < p.min_per_day)
    return [
        Hit(
            int(a),
            f"{snap.stage[a]} for {in_for[a]} days, {snap.metric_names[m]} "
            f"{snap.now.recent[a, m]:.1f}/day (< {p.min_per_day:g})",
            {"days_in_stage": int(in_for[a]), "age_days": int(snap.age_days[a])},
        )
        for a in np.flatnonzero(mask)
    ]


def _owner_changed(p: OwnerChangedParams, snap: Snapshot) -> list[Hit]:
    since = snap.days_since_owner_change
    with np.errstate(invalid="ignore"):
        mask = np.nan_to_num(since, nan=np.inf) <= p.days
    return [
        Hit(int(a), f"CSM changed {since[a]:.0f} days ago", {"days": int(since[a])})
        for a in np.flatnonzero(mask)
    ]


def _renewal_risk(p: RenewalRiskParams, snap: Snapshot) -> list[Hit]:
    days = np.nan_to_num(snap.days_to_renewal, nan=np.inf)
    mask = (days >= 0) & (days <= p.days) & (snap.now.score < p.below)
    return [
        Hit(
            int(a),
            f"renewal in {days[a]:.0f} days with score {snap.now.score[a]:.0f}",
            {"days_to_renewal": int(days[a])},
        )
        for a in np.flatnonzero(mask)
    ]


def evaluate(rule_type: str, params: dict[str, Any], snap: Snapshot) -> list[Hit]:
    """The accounts of ``snap`` whose condition for this rule holds, with a reason each."""
    model = RULE_PARAMS[rule_type].model_validate(params)
    if isinstance(model, BandDropParams):
        return _band_drop(model, snap)
    if isinstance(model, ScoreDropParams):
        return _score_drop(model, snap)
    if isinstance(model, MetricDeclineParams):
        return _metric_decline(model, snap)
    if isinstance(model, InactivityParams):
        return _inactivity(model, snap)
    if isinstance(model, ExpansionParams):
        return _expansion(model, snap)
    if isinstance(model, OnboardingStalledParams):
        return _onboarding_stalled(model, snap)
    if isinstance(model, OwnerChangedParams):
        return _owner_changed(model, snap)
    assert isinstance(model, RenewalRiskParams)
    return _renewal_risk(model, snap)
