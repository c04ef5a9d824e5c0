"""Every alert rule on hand-made arrays (pure), the backtest, and the rollup aggregation."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from services.health.config import MetricDef, ScoringParams, load_config_file, load_default_rules
from services.health.rollups import MAX_VALUE, EventFacts, aggregate
from services.health.rules import evaluate, unknown_metrics, validate_params
from services.health.snapshot import NEVER, Cube, backtest, snapshot_at

DAYS = 120
PARAMS = ScoringParams()


def cube(series: dict[str, Any], **facts: Any) -> Cube:
    """One account per series; metrics 'events' (the series) and 'feature_b' (facts)."""
    names = list(series)
    n = len(names)
    values = np.zeros((n, 2, DAYS))
    for i, name in enumerate(names):
        values[i, 0] = series[name]
    for i, b in facts.pop("feature_b", {}).items():
        values[i, 1] = b
    return Cube(
        account_ids=names,
        metric_keys=["events", "feature_b"],
        metric_names=["events", "feature b"],
        weights=np.array([1.0, 0.0]),
        values=values,
        first_day=date(2026, 1, 1),
        first_seen=np.array(facts.pop("first_seen", [0] * n)),
        last_active=np.full(n, NEVER),
        segments=np.zeros(n, dtype=np.int64),
        stage=facts.pop("stage", [None] * n),
        plan=facts.pop("plan", [None] * n),
        renewal=np.array(facts.pop("renewal", [np.nan] * n), dtype=float),
        stage_since=np.array(facts.pop("stage_since"), dtype=np.int64)
        if "stage_since" in facts
        else None,
        owner_changes=facts.pop("owner_changes", []),
    )


D = np.arange(DAYS)
STEADY = np.full(DAYS, 20.0)


def fired(c: Cube, rule_type: str, params: dict[str, Any] | None = None) -> set[str]:
    snap = snapshot_at(c, DAYS, PARAMS)
    return {c.account_ids[h.index] for h in evaluate(rule_type, params or {}, snap)}


def test_band_and_score_drop_fire_on_a_sudden_drop_only() -> None:
    c = cube({"steady": STEADY, "p": STEADY, "drop": np.where(D < DAYS - 4, 20.0, 1.0)})
    assert fired(c, "band_drop") == {"drop"}
    assert fired(c, "score_drop", {"points": 20}) == {"drop"}
    assert fired(c, "score_drop", {"points": 90}) == set()


def test_metric_decline_threshold() -> None:
    c = cube({"steady": STEADY, "minus30": np.where(D < DAYS - 7, 20.0, 14.0)})
    assert fired(c, "metric_decline", {"percent": 25}) == {"minus30"}
    assert fired(c, "metric_decline", {"percent": 35}) == set()
    assert fired(c, "metric_decline", {"percent": 25, "metric": "feature_b"}) == set()


def test_inactivity_counts_days_since_last_activity() -> None:
    c = cube({"steady": STEADY, "quiet": np.where(D < DAYS - 15, 20.0, 0.0)})
    assert fired(c, "inactivity", {"days": 14}) == {"quiet"}
    assert fired(c, "inactivity", {"days": 16}) == set()


def test_expansion_growth_streak_plan_limit_and_features() -> None:
    growth = 10 * 1.15 ** (D / 7)
    bumpy = growth.copy()
    bumpy[DAYS - 14 : DAYS - 7] = bumpy[DAYS - 21 : DAYS - 14].mean() * 0.9  # one flat week
    c = cube(
        {"steady": STEADY, "growth": growth, "bumpy": bumpy},
        plan=["pro", "starter", None],
        feature_b={0: np.where(D > DAYS - 10, 1.0, 0.0)},
    )
    assert fired(c, "expansion") == {"growth"}
    limits = {"mode": "plan_limit", "limits": {"pro": 22, "starter": 1000}, "share": 0.8}
    assert fired(c, "expansion", limits) == {"steady"}
    both = {"mode": "features", "features": ["events", "feature_b"], "days": 30}
    assert fired(c, "expansion", both) == {"steady"}


def test_onboarding_stalled_needs_stage_age_and_low_usage() -> None:
    low = np.where(D > DAYS - 30, np.where(D < DAYS - 20, 2.0, 0.0), 0.0)
    c = cube(
        {"stalled": low, "young": low, "adopting": low, "busy": STEADY},
        first_seen=[DAYS - 30, DAYS - 5, DAYS - 30, DAYS - 30],
        stage=["onboarding", "onboarding", "adoption", "onboarding"],
    )
    assert fired(c, "onboarding_stalled") == {"stalled"}


def test_onboarding_stalled_counts_days_in_the_stage_not_since_first_seen() -> None:
    """An old account moved back into onboarding 3 days ago is not stalled yet."""
    low = np.zeros(DAYS)
    c = cube(
        {"moved_back": low, "long_in_stage": low},
        first_seen=[0, 0],
        stage=["onboarding", "onboarding"],
        stage_since=[DAYS - 3, DAYS - 20],
    )
    assert fired(c, "onboarding_stalled") == {"long_in_stage"}
    [hit] = evaluate("onboarding_stalled", {}, snapshot_at(c, DAYS, PARAMS))
    assert hit.details["days_in_stage"] == 20 and hit.details["age_days"] == DAYS
    assert hit.reason.startswith("onboarding for 20 days")


def test_unknown_metric_keys_in_params_are_named() -> None:
    keys = ["events", "active_users"]
    check = lambda t, p: unknown_metrics(t, validate_params(t, p), keys)  # noqa: E731
    assert check("metric_decline", {}) == []  # none = any metric
    assert [loc for loc, _ in check("metric_decline", {"metric": "evnts"})] == [("metric",)]
    assert check("onboarding_stalled", {"metric": "active_users"}) == []
    assert [loc for loc, _ in check("expansion", {"metric": "nope"})] == [("metric",)]
    features = {"mode": "features", "features": ["events", "feature_x"]}
    [(loc, msg)] = check("expansion", features)
    assert loc == ("features", 1) and "feature_x" in msg and "active_users" in msg
    assert check("inactivity", {}) == []


def test_huge_property_values_are_clamped_not_summed_into_inf() -> None:
    metrics = [MetricDef(key="rows", kind="sum", property="rows")]
    t = datetime(2026, 3, 1, 12, tzinfo=UTC)
    events = [
        EventFacts("a", "Import", "u1", t, {"rows": 1.7e308}),
        EventFacts("a", "Import", "u1", t, {"rows": 1.7e308}),
        EventFacts("a", "Import", "u1", t, {"rows": "1e999"}),  # inf as text: skipped
        EventFacts("a", "Import", "u1", t, {"rows": float("nan")}),
        EventFacts("b", "Import", "u1", t, {"rows": -1e300}),
    ]
    inc = aggregate(events, metrics)
    assert inc.added[("a", "rows", date(2026, 3, 1))] == MAX_VALUE
    assert inc.added[("b", "rows", date(2026, 3, 1))] == -MAX_VALUE


def test_owner_changed_within_days() -> None:
    c = cube({"a": STEADY, "b": STEADY, "c": STEADY}, owner_changes=[(0, DAYS - 3), (1, DAYS - 40)])
    assert fired(c, "owner_changed", {"days": 30}) == {"a"}


def test_renewal_near_with_low_score() -> None:
    c = cube(
        {
            "low_soon": np.where(D < DAYS - 7, 20.0, 2.0),
            "ok_soon": STEADY,
            "low_far": np.zeros(DAYS),
        },
        renewal=[DAYS + 20, DAYS + 20, DAYS + 200],
    )
    assert fired(c, "renewal_risk", {"days": 60, "below": 50}) == {"low_soon"}


def test_params_are_validated_with_the_field_named() -> None:
    assert validate_params("inactivity", {})["days"] == 14
    with pytest.raises(ValidationError, match="days"):
        validate_params("inactivity", {"days": 0})
    with pytest.raises(ValidationError, match="limits"):
        validate_params("expansion", {"mode": "plan_limit"})
    with pytest.raises(ValueError, match="unknown rule type"):
        validate_params("nope", {})


def test_backtest_counts_openings_per_week_with_cooldown() -> None:
    # "flappy" goes quiet for 15 days twice: two inactivity spells, 30 days apart
    flappy = np.full(DAYS, 20.0)
    flappy[50:66] = 0
    flappy[80:96] = 0
    c = cube({"steady": STEADY, "flappy": flappy})
    result = backtest(
        c,
        rule_type="inactivity",
        params={"days": 14},
        end=DAYS,
        days=90,
        cooldown_days=0,
        scoring=PARAMS,
    )
    assert result["total"] == 2
    assert [a["account_id"] for a in result["accounts"]] == ["flappy"]
    assert sum(w["alerts"] for w in result["weeks"]) == 2
    cooled = backtest(
        c,
        rule_type="inactivity",
        params={"days": 14},
        end=DAYS,
        days=90,
        cooldown_days=60,
        scoring=PARAMS,
    )
    assert cooled["total"] == 1


def test_rollup_aggregation_per_kind() -> None:
    metrics = [
        MetricDef(key="events", kind="count"),
        MetricDef(key="users", kind="distinct_users"),
        MetricDef(key="reports", kind="count", events=["Report Created"]),
        MetricDef(key="rows", kind="sum", property="rows"),
        MetricDef(key="seats", kind="last", property="seats"),
    ]
    t = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)
    late = datetime(2026, 2, 1, 1, 0, tzinfo=UTC)
    events = [
        EventFacts("a", "Report Created", "u1", t, {"rows": 3, "seats": 5}),
        EventFacts("a", "Login", "u2", t.replace(hour=1), {"rows": "2.5", "seats": 9}),
        EventFacts("a", "Login", "u1", late, {"rows": "x"}),
    ]
    inc = aggregate(events, metrics)
    day, old = date(2026, 3, 1), date(2026, 2, 1)
    assert inc.added[("a", "events", day)] == 2 and inc.added[("a", "events", old)] == 1
    assert inc.added[("a", "reports", day)] == 1 and ("a", "reports", old) not in inc.added
    assert inc.added[("a", "rows", day)] == 5.5 and ("a", "rows", old) not in inc.added
    assert inc.last[("a", "seats", day)] == (t, 5.0)
    assert {u for *_, u in inc.users if _[2] == day} == {"u1", "u2"}
    assert inc.days["a"] == (old, day)


def test_the_default_rules_on_events_fire_with_its_weight_at_zero() -> None:
    """The default config scores the all-events count at weight 0 (the event parts score
    usage), yet its rules read it: a live decline, a growth streak and a stalled onboarding
    on ``events`` still alert under the default formula with per-event rollups."""
    path = Path(__file__).parents[2] / "services/health/default_config.yaml"
    config = load_config_file(path)
    assert config.scoring.event_parts and config.metrics[0].weight == 0
    assert [m.key for m in config.metrics] == ["events", "active_users"]
    rules = {r.id: r for r in load_default_rules(path)}
    weekly = np.repeat(np.arange(DAYS // 7 + 1) * 2.0 + 5, 7)[:DAYS]
    series = {
        "steady": STEADY,
        "declining": np.where(D < DAYS - 7, 20.0, 8.0),
        "growing": 5 * 1.3 ** (weekly - 5),
        "stalled": np.where(D < DAYS - 20, 0.0, 0.5),
    }
    names = list(series)
    values = np.zeros((len(names), 2, DAYS))
    for i, name in enumerate(names):
        values[i, 0] = series[name]
        values[i, 1] = np.minimum(series[name], 3.0)
    c = Cube(
        account_ids=names,
        metric_keys=config.keys,
        metric_names=[m.name for m in config.metrics],
        weights=np.array([m.weight for m in config.metrics]),
        values=values,
        first_day=date(2026, 1, 1),
        first_seen=np.array([0, 0, 0, DAYS - 20]),
        last_active=np.full(len(names), DAYS - 1),
        segments=np.zeros(len(names), dtype=np.int64),
        stage=[None, None, None, "onboarding"],
        plan=[None] * len(names),
        renewal=np.full(len(names), np.nan),
        storage_keys=config.storage_keys,
        user_metrics=[m.kind == "distinct_users" for m in config.metrics],
        event_keys=["event:Report"],
        event_names=["Report"],
        event_values=values[:, :1, :].copy(),
    )
    snap = snapshot_at(c, DAYS, config.scoring)

    def hits(rule_id: str) -> dict[str, Any]:
        rule = rules[rule_id]
        return {names[h.index]: h.details for h in evaluate(rule.type, rule.params, snap)}

    decline = hits("metric-decline")
    assert set(decline) == {"declining"} and decline["declining"]["metric"] == "events"
    assert set(hits("expansion-growth")) == {"growing"}
    assert set(hits("onboarding-stalled")) == {"stalled"}
