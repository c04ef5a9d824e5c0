"""Scenarios through the consumer and a real broker: 90 days of usage, then bands and alerts.

Steady accounts (the segment's peers), a sudden drop, a slow decline, silence, growth,
an owner change and a stalled onboarding; then a replay of everything from offset 0.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from services.health.app import create_app
from services.health.models import Alert, OwnerChange, Rollup, Score, ScoreHistory
from shared import topics
from shared.broker import EmbeddedBroker
from shared.db import create_engine, create_sessionmaker
from shared.kafka import Publisher
from tests.health.conftest import (
    Running,
    account_upsert,
    daily_usage,
    day_at,
    health_settings,
    publish,
    read_all,
    settle,
    until,
    usage,
)
from tests.support import auth, http_client, read_topic, serve_app, skip_to_end

DAYS = 90
D = np.arange(DAYS)
SHAPES: dict[str, Any] = {
    "steady1": np.full(DAYS, 12),
    "steady2": np.full(DAYS, 12),
    "steady3": np.full(DAYS, 12),
    "drop": np.where(D < DAYS - 5, 12, 1),
    "decline": np.linspace(16, 4, DAYS).round(),
    "silence": np.where(D < DAYS - 20, 12, 0),
    "growth": (6 * 1.2 ** (D / 7)).round(),
    "owner": np.full(DAYS, 12),
    "onboarding": np.where((D >= DAYS - 25) & (D < DAYS - 18), 3, 0),
}
EXPECTED_BAND = {
    "steady1": "green",
    "drop": "red",
    "decline": "yellow",
    "silence": "red",
    "growth": "green",
    "owner": "green",
    "onboarding": "red",
}
EXPECTED_RULES = {
    "drop": {"band-drop", "score-drop", "metric-decline"},
    "decline": {"metric-decline"},
    "silence": {"inactivity"},
    "growth": {"expansion-growth"},
    "owner": {"owner-changed"},
    "onboarding": {"onboarding-stalled"},
}


@dataclass
class Scenario:
    url: str
    db_url: str
    ids: dict[str, str]
    segment: str
    bootstrap: str
    tmp: Path


def _history(run: str, segment: str) -> tuple[dict[str, str], list[Any]]:
    ids = {name: f"{name}-{run}" for name in SHAPES}
    envelopes = []
    for name, account in ids.items():
        start = 25 if name == "onboarding" else DAYS
        traits: dict[str, Any] = {"segment": segment, "name": name, "mrr": 100.0}
        traits["stage"] = "onboarding" if name == "onboarding" else "adoption"
        if name == "owner":
            traits["owner"] = "first.csm@example.com"
        envelopes.append(account_upsert(account, day_at(start, -3600), **traits))
        envelopes += daily_usage(account, SHAPES[name])
    envelopes.append(account_upsert(ids["owner"], day_at(3), owner="second.csm@example.com"))
    return ids, envelopes


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def scenario(
    request: pytest.FixtureRequest,
    broker: EmbeddedBroker,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Scenario]:
    tmp = tmp_path_factory.mktemp("health-scenario")
    if request.param == "sqlite":
        db_url = f"sqlite+aiosqlite:///{tmp / 'health.db'}"
    else:
        db_url = await request.getfixturevalue("postgres_databases")("health")
    run = uuid.uuid4().hex[:8]
    segment = f"seg-{run}"
    ids, envelopes = _history(run, segment)
    # the session broker holds every earlier test's messages (their event names and accounts
    # moved the drop's score: yellow, not red, in one run): this group starts at this history
    group = f"health-scenario-{run}"
    await skip_to_end(broker.bootstrap_servers, group, list(topics.CONSUMED_BY["health"]))
    pub = Publisher(broker.bootstrap_servers, client_id="scenario")
    await pub.start()
    await publish(pub, envelopes)
    await pub.stop()
    settings = health_settings(broker.bootstrap_servers, db_url, tmp, HEALTH_CONSUMER_GROUP=group)
    app = create_app(settings)
    async with serve_app(app) as url:
        await settle(Running(url, app, settings))
        yield Scenario(url, db_url, ids, segment, broker.bootstrap_servers, tmp)


async def _accounts(s: Scenario) -> dict[str, dict[str, Any]]:
    async with http_client(base_url=s.url, headers=auth("read")) as client:
        r = await client.get("/v1/accounts", params={"segment": s.segment, "limit": 100})
    assert r.status_code == 200, r.text
    return {item["account_id"]: item for item in r.json()["items"]}


async def _open_rules(s: Scenario) -> dict[str, set[str]]:
    async with http_client(base_url=s.url, headers=auth("read")) as client:
        out: dict[str, set[str]] = {}
        for name, account in s.ids.items():
            r = await client.get("/v1/alerts", params={"account_id": account, "status": "open"})
            assert r.status_code == 200, r.text
            out[name] = {a["rule_id"] for a in r.json()["items"]}
    return out


async def test_each_scenario_gets_its_band(scenario: Scenario) -> None:
    accounts = await _accounts(scenario)
    bands = {name: accounts[acc]["health"]["band"] for name, acc in scenario.ids.items()}
    for name, band in EXPECTED_BAND.items():
        assert bands[name] == band, (name, accounts[scenario.ids[name]]["health"])
    scores = {name: accounts[acc]["health"]["score"] for name, acc in scenario.ids.items()}
    assert scores["drop"] < scores["decline"] < scores["steady1"] < scores["growth"]


async def test_each_scenario_gets_its_alert_and_steady_gets_none(scenario: Scenario) -> None:
    rules = await _open_rules(scenario)
    for name in ("steady1", "steady2", "steady3"):
        assert rules[name] == set(), (name, rules[name])
    for name, expected in EXPECTED_RULES.items():
        assert expected <= rules[name], (name, rules[name])
    assert "owner-changed" not in rules["steady1"] | rules["drop"]
    assert "expansion-growth" not in rules["steady1"] | rules["decline"]


async def test_components_carry_reasons(scenario: Scenario) -> None:
    async with http_client(base_url=scenario.url, headers=auth("read")) as client:
        r = await client.get(f"/v1/accounts/{scenario.ids['drop']}")
        history = await client.get(f"/v1/accounts/{scenario.ids['drop']}/scores")
        metrics = await client.get(
            f"/v1/accounts/{scenario.ids['steady1']}/metrics", params={"days": 10}
        )
    health = r.json()["health"]
    # the default scores usage per event name (the all-events count is shown, weight 0)
    events = next(c for c in health["components"] if c["metric"] == "event_mix")
    assert "Report Created" in events["reason"] and "vs 4-week baseline" in events["reason"]
    assert events["points"] < -10
    assert events["reason"].endswith(f"{events['points']:+.0f}")
    assert history.status_code == 200 and history.json()[0]["band"] == "red"
    series = {m["metric"]: m["values"] for m in metrics.json()["metrics"]}
    assert series["events"][:9] == [12.0] * 9  # the as-of day itself has no events yet
    assert series["active_users"][:9] == [3.0] * 9


async def test_scores_and_alerts_are_published(scenario: Scenario) -> None:
    drop = scenario.ids["drop"]
    # earlier scores (yellow, as the drop began) come first; wait for the red one, which
    # the outbox relay may still be sending on a busy machine
    scored = await read_topic(
        scenario.bootstrap,
        topics.HEALTH_SCORES,
        match=lambda e: e.account_id == drop and e.data.get("band") == "red",
        count=1,
        timeout=60,
    )
    assert scored and scored[-1].type == "health.scored"
    assert scored[-1].data["band"] == "red" and scored[-1].data["components"]
    opened = await read_topic(
        scenario.bootstrap,
        topics.HEALTH_ALERTS,
        match=lambda e: e.account_id == drop and e.type == "alert.opened",
        count=3,
    )
    assert {e.data["rule_id"] for e in opened} >= EXPECTED_RULES["drop"]
    owner_changed = await read_topic(
        scenario.bootstrap,
        topics.ACCOUNTS,
        match=lambda e: e.account_id == scenario.ids["owner"] and e.type == "account.owner_changed",
        count=1,
        settle=0.3,
    )
    assert len(owner_changed) == 1 and owner_changed[0].source == "health"
    assert owner_changed[0].data["previous_owner"] == "first.csm@example.com"


async def _state(db_url: str, ids: list[str]) -> dict[str, Any]:
    engine = create_engine(db_url)
    sessions = create_sessionmaker(engine)
    try:
        async with sessions() as session:
            rollups = (
                await session.execute(
                    select(Rollup.account_id, Rollup.metric, Rollup.day, Rollup.value)
                    .where(Rollup.account_id.in_(ids))
                    .order_by(Rollup.account_id, Rollup.metric, Rollup.day)
                )
            ).all()
            scores = (
                await session.execute(
                    select(Score.account_id, Score.score, Score.band, Score.components)
                    .where(Score.account_id.in_(ids))
                    .order_by(Score.account_id)
                )
            ).all()
            history = (
                await session.execute(
                    select(ScoreHistory.account_id, ScoreHistory.day, ScoreHistory.score)
                    .where(ScoreHistory.account_id.in_(ids))
                    .order_by(ScoreHistory.account_id, ScoreHistory.day)
                )
            ).all()
            alerts = (
                await session.execute(
                    select(Alert.id, Alert.status, Alert.reason, Alert.opened_at, Alert.updated_at)
                    .where(Alert.account_id.in_(ids))
                    .order_by(Alert.id)
                )
            ).all()
            changes = (
                await session.execute(select(OwnerChange.id).where(OwnerChange.account_id.in_(ids)))
            ).all()
    finally:
        await engine.dispose()
    return {
        "rollups": [tuple(r) for r in rollups],
        "scores": [tuple(r) for r in scores],
        "history": [tuple(r) for r in history],
        "alerts": [tuple(r) for r in alerts],
        "owner_changes": len(changes),
    }


async def test_replay_from_offset_zero_changes_nothing(scenario: Scenario) -> None:
    ids = list(scenario.ids.values())
    before = await _state(scenario.db_url, ids)
    assert before["rollups"] and before["alerts"] and before["owner_changes"] == 1

    def ours(e: Any) -> bool:
        return e.account_id in ids

    async def published() -> list[str]:
        """The ids of the messages about these accounts health has published."""
        outputs = [topics.HEALTH_ALERTS, topics.HEALTH_SCORES, topics.ACCOUNTS]
        found = await read_all(scenario.bootstrap, outputs)
        return sorted(e.id for e in found if ours(e) and e.source == "health")

    published_before = await published()
    assert len(published_before) > 20
    settings = health_settings(scenario.bootstrap, scenario.db_url, scenario.tmp)
    app = create_app(settings)
    async with serve_app(app) as url:
        await settle(Running(url, app, settings))
    after = await _state(scenario.db_url, ids)
    assert after == before
    assert await published() == published_before


async def test_late_event_lands_on_its_own_day(scenario: Scenario) -> None:
    steady = scenario.ids["steady2"]
    late = usage(steady, day_at(40, 999), user="late-user")
    pub = Publisher(scenario.bootstrap, client_id="late")
    await pub.start()
    await publish(pub, [late, late])  # delivered twice: counted once
    await pub.stop()

    async def day_40() -> Any:
        async with http_client(base_url=scenario.url, headers=auth("read")) as client:
            r = await client.get(f"/v1/accounts/{steady}/metrics", params={"days": 45})
        series = {m["metric"]: m["values"] for m in r.json()["metrics"]}
        index = 45 - 1 - 40  # end is the day after the as-of day
        return (series["events"][index], series["active_users"][index]) == (13.0, 4.0)

    await until(day_40, timeout=20)
    engine = create_engine(scenario.db_url)
    async with create_sessionmaker(engine)() as session:
        row = await session.get(Rollup, (steady, "events", day_at(40).date()))
    await engine.dispose()
    assert row is not None and row.value == 13.0
