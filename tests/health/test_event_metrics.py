"""Every event name is a metric: events and distinct users per day, listed in the catalog
with volumes and the share of accounts using it, picked by name in the metrics config
(with the history already rolled up), bounded by HEALTH_MAX_EVENT_METRICS with the rest
as "other", the cap kept across replicas. Real broker; SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from services.health import repository as repo
from services.health.config import MetricDef
from services.health.context import HealthContext
from services.health.eventnames import OTHER, EventNames, count_key, keys_of, slug_of, users_key
from services.health.models import EventName
from services.health.rollups import EventFacts, aggregate
from services.health.snapshot import score_at
from shared.broker import EmbeddedBroker
from shared.db import create_engine, create_sessionmaker
from shared.envelope import Envelope
from shared.migrations import upgrade_async
from tests.health.conftest import (
    AS_OF,
    Running,
    Send,
    client,
    day_at,
    get_json,
    new_account,
    sender,
    serve_health,
    settle,
    usage,
)

LONG = "Dashboard Widget Configured With A Very Long Descriptive Name For Tests"  # > 57


def running(
    broker: EmbeddedBroker, db_url: str, tmp: Path, **extra: Any
) -> AbstractAsyncContextManager[Running]:
    return serve_health(broker.bootstrap_servers, db_url, tmp, **extra)


@pytest.fixture
async def send(private_broker: EmbeddedBroker) -> AsyncIterator[Send]:
    async with sender(private_broker.bootstrap_servers, "health-event-metric-tests") as _send:
        yield _send


def events(account: str, name: str, per_day: list[int], users: int = 1) -> list[Envelope]:
    """``per_day[i]`` events named ``name`` on day ``len(per_day) - i`` before the as-of day."""
    out = []
    for i, n in enumerate(per_day):
        for k in range(n):
            out.append(
                usage(account, day_at(len(per_day) - i, k), event=name, user=f"u{k % users}")
            )
    return out


async def test_every_event_name_rolls_up_per_day_and_is_listed_in_the_catalog(
    private_broker: EmbeddedBroker,
    database_url: Callable[[str], Awaitable[str]],
    tmp_path: Path,
    send: Send,
) -> None:
    a, b = new_account("a"), new_account("b")
    batch = [
        *events(a, "Report Created", [3] * 5, users=2),
        *events(a, "Export", [1] * 5),
        *events(b, "Report Created", [1] * 5),
        *events(b, LONG, [2]),
    ]
    await send(batch + batch[:4])  # the first four again: replays count once
    async with running(private_broker, await database_url("health"), tmp_path) as api:
        await settle(api)
        catalog = await get_json(api, "/v1/metrics/catalog")
        assert catalog["cap"] == 200 and catalog["registered"] == 3
        assert catalog["active_accounts_30d"] == 2
        by_name = {m["name"]: m for m in catalog["metrics"]}
        assert list(by_name) == ["Report Created", "Export", LONG]  # most used first
        report = by_name["Report Created"]
        assert (report["events_30d"], report["events_90d"]) == (20.0, 20.0)
        assert (report["accounts_30d"], report["share_of_accounts"]) == (2, 1.0)
        assert report["count_metric"] == "event:Report Created"
        assert report["users_metric"] == "users:Report Created"
        assert (by_name["Export"]["events_30d"], by_name["Export"]["share_of_accounts"]) == (
            5.0,
            0.5,
        )
        long = by_name[LONG]
        assert long["slug"].startswith("#") and len(long["count_metric"]) <= 63
        assert long["events_90d"] == 2.0

        # Picked by name, the per-event metrics show the history rolled up before.
        config = {
            "metrics": [
                {"key": "reports", "kind": "event_count", "event": "Report Created"},
                {"key": "reporters", "kind": "event_users", "event": "Report Created"},
                {"key": "widgets", "kind": "event_count", "event": LONG, "weight": 0},
            ]
        }
        async with client(api) as c:
            assert (await c.put("/v1/config/metrics", json=config)).status_code == 200
        end = (AS_OF + timedelta(days=1)).isoformat()
        shown = await get_json(api, f"/v1/accounts/{a}/metrics", days=6, end=end)
        series = {m["metric"]: m["values"] for m in shown["metrics"]}
        assert series["reports"] == [3.0] * 5 + [0.0]
        assert series["reporters"] == [2.0] * 5 + [0.0]
        shown_b = await get_json(api, f"/v1/accounts/{b}/metrics", days=6, end=end)
        assert {m["metric"]: m["values"] for m in shown_b["metrics"]}["widgets"][4] == 2.0


async def test_config_picks_a_per_event_metric_and_the_score_follows_it(
    private_broker: EmbeddedBroker,
    database_url: Callable[[str], Awaitable[str]],
    tmp_path: Path,
    send: Send,
) -> None:
    steady, quitting = new_account("steady"), new_account("quitting")
    await send(
        [
            *events(steady, "Report Created", [10] * 35),
            *events(steady, "Page Viewed", [10] * 35),
            *events(quitting, "Report Created", [10] * 28 + [0] * 7),
            *events(quitting, "Page Viewed", [10] * 35),  # logs in as before
        ]
    )
    async with running(private_broker, await database_url("health"), tmp_path) as api:
        await settle(api)
        async with client(api) as c:
            for bad, loc in (
                ({"key": "r", "kind": "event_count"}, "event"),
                ({"key": "r", "kind": "count", "event": "Report Created"}, "event"),
            ):
                r = await c.put("/v1/config/metrics", json={"metrics": [bad]})
                assert r.status_code == 422, r.text
                assert r.json()["detail"][0]["loc"][:3] == ["body", "metrics", 0], r.text
                assert loc in r.json()["detail"][0]["msg"]
            config = {
                "metrics": [{"key": "reports", "kind": "event_count", "event": "Report Created"}]
            }
            assert (await c.put("/v1/config/metrics", json=config)).status_code == 200
            assert (await c.post("/v1/recompute")).status_code == 200
        scores = {}
        for account in (steady, quitting):
            health = (await get_json(api, f"/v1/accounts/{account}"))["health"]
            [component] = health["components"]
            assert component["metric"] == "reports"
            scores[account] = (health["score"], health["band"], component["recent"])
        assert scores[steady][2] == 10.0 and scores[quitting][2] == 0.0
        assert scores[quitting][1] == "red" and scores[steady][1] == "green"


async def test_names_beyond_the_cap_are_counted_as_other_and_configured_names_get_their_own(
    private_broker: EmbeddedBroker,
    database_url: Callable[[str], Awaitable[str]],
    tmp_path: Path,
    send: Send,
) -> None:
    account = new_account()
    await send(
        [
            *events(account, "e1", [1]),
            *events(account, "e2", [2]),
            *events(account, "e3", [3]),
            *events(account, "e4", [4]),
        ]
    )
    url = await database_url("health")
    async with running(private_broker, url, tmp_path, HEALTH_MAX_EVENT_METRICS=2) as api:
        await settle(api)
        catalog = await get_json(api, "/v1/metrics/catalog")
        assert catalog["cap"] == 2 and catalog["registered"] == 2
        volumes = {m["name"]: m["events_90d"] for m in catalog["metrics"]}
        assert volumes == {"e1": 1.0, "e2": 2.0, "(other)": 7.0}
        other = next(m for m in catalog["metrics"] if m["name"] == "(other)")
        assert (other["count_metric"], other["users_metric"]) == ("event:*", "users:*")

        # A metric that picks e4 by name registers it beyond the cap: from then on it
        # rolls up on its own.
        config = {"metrics": [{"key": "e4", "kind": "event_count", "event": "e4"}]}
        async with client(api) as c:
            assert (await c.put("/v1/config/metrics", json=config)).status_code == 200
        await send(events(account, "e4", [5]) + events(account, "e5", [1]))
        await settle(api)
        catalog = await get_json(api, "/v1/metrics/catalog")
        volumes = {m["name"]: m["events_90d"] for m in catalog["metrics"]}
        assert catalog["registered"] == 3
        assert volumes == {"e1": 1.0, "e2": 2.0, "e4": 5.0, "(other)": 8.0}


async def test_two_replicas_registering_at_once_keep_the_cap(
    database_url: Callable[[str], Awaitable[str]],
) -> None:
    url = await database_url("health")
    await upgrade_async("health", url)
    engine = create_engine(url)
    try:
        sessions = create_sessionmaker(engine)
        one, two = EventNames(sessions, cap=3), EventNames(sessions, cap=3)
        names_one = {f"n{i}" for i in range(0, 6)}
        names_two = {f"n{i}" for i in range(3, 9)}
        seen_one, seen_two = await asyncio.gather(one.slugs(names_one), two.slugs(names_two))
        async with sessions() as session:
            count = await session.scalar(select(func.count()).select_from(EventName))
            stored = set(await session.scalars(select(EventName.name)))
        assert count == 3
        for seen in (seen_one, seen_two):
            for name, slug in seen.items():
                assert slug == (slug_of(name) if name in stored else OTHER)
        # A third replica starting later gives the same answers.
        three = EventNames(sessions, cap=3)
        assert await three.slugs(names_one | names_two) == {**seen_one, **seen_two}
    finally:
        await engine.dispose()


def test_slugs_fit_the_rollup_column_and_never_pass_for_other_or_a_hash() -> None:
    assert slug_of("Report Created") == "Report Created"
    for name in ("*", "*x", "#abc", "x" * 58, "tab\tname", ""):
        slug = slug_of(name)
        assert slug.startswith("#") and len(slug) == 25 and slug != slug_of(name + "!")
        assert len(count_key(slug)) <= 63 and len(users_key(slug)) <= 63
    assert slug_of("x" * 57) == "x" * 57


def test_aggregate_adds_each_event_names_count_and_users_beside_the_configured_metrics() -> None:
    when = datetime(2026, 11, 20, 10, tzinfo=UTC)
    facts = [
        EventFacts("a", "Report Created", "u1", when, {}),
        EventFacts("a", "Report Created", "u2", when, {}),
        EventFacts("a", "Report Created", "u1", when + timedelta(days=1), {}),
        EventFacts("a", "Rare", None, when, {}),
    ]
    metrics = [
        MetricDef(key="events"),
        MetricDef(key="reports", kind="event_count", event="Report Created"),
    ]
    per_event = {"Report Created": keys_of("Report Created"), "Rare": keys_of(OTHER)}
    inc = aggregate(facts, metrics, per_event)
    day = when.date()
    assert inc.added == {
        ("a", "events", day): 3.0,
        ("a", "events", day + timedelta(days=1)): 1.0,
        ("a", "event:Report Created", day): 2.0,
        ("a", "event:Report Created", day + timedelta(days=1)): 1.0,
        ("a", "event:*", day): 1.0,
    }
    assert inc.users == {
        ("a", "users:Report Created", day, "u1"),
        ("a", "users:Report Created", day, "u2"),
        ("a", "users:Report Created", day + timedelta(days=1), "u1"),
    }
    assert metrics[1].stored_as() == "event:Report Created"


async def test_the_default_score_loads_only_per_event_counts_and_scores_the_same(
    private_broker: EmbeddedBroker,
    database_url: Callable[[str], Awaitable[str]],
    tmp_path: Path,
    send: Send,
) -> None:
    """The event parts read counts only: a recompute leaves the ``users:`` keys out of its
    cube (half the memory and reads with 200 names) and scores exactly as with them."""
    a, b = new_account("a"), new_account("b")
    await send(
        [*events(a, "Report Created", [3] * 10, users=2), *events(b, "Export", [2] * 6, users=2)]
    )
    async with running(private_broker, await database_url("health"), tmp_path) as api:
        await settle(api)
        ctx: HealthContext = api.app.state.health
        config = await ctx.store.metrics()
        as_of = ctx.settings.today()
        async with ctx.sessions() as session:
            rules = await repo.list_rules(session, enabled_only=True)
            lean, _ = await ctx.recomputer.load(session, None, as_of, config, rules)
            full, _ = await ctx.recomputer.load(
                session, None, as_of, config, rules, with_events=True
            )
        assert lean.event_keys and all(k.startswith("event:") for k in lean.event_keys)
        assert any(k.startswith("users:") for k in full.event_keys)
        assert {count_key(slug_of("Export")), count_key(slug_of("Report Created"))} <= set(
            lean.event_keys
        )
        end = lean.index_of(as_of)
        mine = score_at(lean, end, config.scoring)
        theirs = score_at(full, end, config.scoring)
        assert mine.score.tolist() == theirs.score.tolist()
        assert mine.part_values is not None and mine.part_values[:, 0].max() > -1  # event mix used
