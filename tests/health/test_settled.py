"""Alerts open only on settled data: history, a backlog and a ``group`` call that lands
before its usage open none (of any status, not for a moment); a real silence in the
history still alerts once settled, and a live collapse alerts as soon as the day shows it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.health import repository as repo
from services.health.app import create_app
from services.health.config import load_config_file
from services.health.configstore import ConfigStore
from services.health.context import HealthContext
from services.health.models import Account
from services.health.recompute import Recomputer
from services.health.scheduler import HEALTH_PENDING
from services.health.settings import HealthSettings
from services.health.settle import BACKLOG_KEY
from shared import topics
from shared.broker import EmbeddedBroker
from shared.db import create_engine, create_sessionmaker
from shared.envelope import Envelope
from tests.health.conftest import (
    AS_OF,
    Running,
    Send,
    account_upsert,
    daily_usage,
    day_at,
    health_settings,
    read_all,
    sender,
    settle,
    until,
    usage,
)
from tests.support import auth, http_client, read_topic, serve_app

WEEKS = 8
STEADY = [12] * (7 * WEEKS)  # 8 weeks of steady use, up to yesterday
SILENT = [12] * (7 * WEEKS - 21) + [0] * 21  # the same, silent for the last three weeks


@pytest.fixture
async def send(module_broker: EmbeddedBroker) -> AsyncIterator[Send]:
    async with sender(module_broker.bootstrap_servers, "health-settle-tests") as _send:
        yield _send


def _settings(broker: EmbeddedBroker, db_url: str, tmp: Path, **extra: Any) -> HealthSettings:
    return health_settings(broker.bootstrap_servers, db_url, tmp, **extra)


async def _alerts(url: str, account: str) -> list[dict[str, Any]]:
    """Every alert of the account, whatever its status."""
    async with http_client(base_url=url, headers=auth("read"), timeout=30) as c:
        r = await c.get("/v1/alerts", params={"account_id": account, "limit": 200})
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def _opened_on_topic(bootstrap: str, accounts: set[str]) -> list[Envelope]:
    found = await read_all(bootstrap, [topics.HEALTH_ALERTS])
    return [e for e in found if e.account_id in accounts and e.type == "alert.opened"]


def _group(account: str, when: datetime, **traits: Any) -> Envelope:
    return account_upsert(
        account, when, name=account, segment=f"seg-{account[-6:]}", mrr=500.0, **traits
    )


async def _import_in_batches(
    send: Callable[[list[Envelope]], Awaitable[None]],
    histories: dict[str, list[int]],
    *,
    weeks_per_batch: int = 2,
    pause: float = 0.6,
) -> None:
    """As an import tool does: every account's ``group`` call first, then its history a
    couple of weeks at a time, oldest first, with pauses (rescoring runs in between)."""
    await send([_group(a, day_at(len(h) + 1)) for a, h in histories.items()])
    await asyncio.sleep(pause)
    for account, counts in histories.items():
        events = daily_usage(account, counts)
        per_day = {e.occurred_at.date(): 0 for e in events}
        days = sorted(per_day)
        step = 7 * weeks_per_batch
        for start in range(0, len(days), step):
            wanted = set(days[start : start + step])
            await send([e for e in events if e.occurred_at.date() in wanted])
            await asyncio.sleep(pause)


async def test_history_import_with_every_rule_on_opens_nothing_for_steady_accounts(
    module_broker: EmbeddedBroker,
    send: Callable[[list[Envelope]], Awaitable[None]],
    database_url: Callable[[str], Awaitable[str]],
    tmp_path: Path,
) -> None:
    run = uuid.uuid4().hex[:6]
    steady = [f"steady{i}-{run}" for i in range(3)]
    silent = f"silent-{run}"
    # a settle delay longer than the pauses between an account's batches, shorter than
    # the test: the rescoring runs between batches would have alerted without it
    settings = _settings(
        module_broker, await database_url("health"), tmp_path, HEALTH_SETTLE_SECONDS=3
    )
    app = create_app(settings)
    async with serve_app(app) as url:
        histories = {a: STEADY for a in steady} | {silent: SILENT}
        await _import_in_batches(send, histories)
        last_sent = datetime.now(UTC)
        running = Running(url, app, settings)
        await settle(running)
        # the real silence alerts, once its history has settled
        opened = await until(lambda: _alerts(url, silent), timeout=30)
        assert {a["rule_type"] for a in opened} >= {"inactivity"}
        inactivity = next(a for a in opened if a["rule_type"] == "inactivity")
        assert inactivity["status"] == "open"
        assert inactivity["details"]["days"] == 21
        opened_at = datetime.fromisoformat(inactivity["opened_at"])
        assert opened_at >= last_sent  # not before the history was in
        # steady accounts: no alert of any status, none announced
        for account in steady:
            assert await _alerts(url, account) == [], account
        await read_topic(
            settings.kafka_bootstrap_servers,
            topics.HEALTH_ALERTS,
            match=lambda e: e.account_id == silent and e.type == "alert.opened",
            count=1,
            timeout=30,
        )
        announced = await _opened_on_topic(settings.kafka_bootstrap_servers, {*steady, silent})
        assert {e.account_id for e in announced} == {silent}
        # the history was scored: current scores, and a backfilled day on request
        async with http_client(base_url=url, headers=auth("write"), timeout=30) as c:
            for account in steady:
                r = await c.get(f"/v1/accounts/{account}")
                assert r.json()["health"]["band"] == "green", r.json()
            past = (AS_OF - timedelta(days=20)).isoformat()
            r = await c.post("/v1/recompute", params={"as_of": past})
            assert r.status_code == 200, r.text
            r = await c.get(f"/v1/accounts/{silent}/scores", params={"limit": 60})
            days = {row["day"] for row in r.json()}
            assert past in days and AS_OF.isoformat() in days


async def test_a_group_call_before_its_usage_is_not_inactivity(
    module_broker: EmbeddedBroker,
    send: Callable[[list[Envelope]], Awaitable[None]],
    database_url: Callable[[str], Awaitable[str]],
    tmp_path: Path,
) -> None:
    """A backdated ``group`` call (57 days ago, onboarding, renewal next month) and no usage
    yet: no inactivity, no stalled onboarding, no renewal risk — health only just met it."""
    account = f"nousage-{uuid.uuid4().hex[:6]}"
    settings = _settings(module_broker, await database_url("health"), tmp_path)
    app = create_app(settings)
    async with serve_app(app) as url:
        renewal = (AS_OF + timedelta(days=30)).isoformat()
        await send([_group(account, day_at(57), stage="onboarding", renewal_date=renewal)])
        await settle(Running(url, app, settings))
        ctx: HealthContext = app.state.health
        result = await ctx.recomputer.recompute(None)
        assert result.alerts.get("opened", 0) == 0 and not result.held
        assert await _alerts(url, account) == []
        async with http_client(base_url=url, headers=auth("read"), timeout=30) as c:
            r = await c.get(f"/v1/accounts/{account}")
        assert r.status_code == 200 and r.json()["health"] is not None  # scored all the same


async def test_state_is_in_the_database_another_replica_holds_too(
    module_broker: EmbeddedBroker,
    send: Callable[[list[Envelope]], Awaitable[None]],
    database_url: Callable[[str], Awaitable[str]],
    tmp_path: Path,
) -> None:
    """While an account's backdated history settles, a second replica's full recompute
    (same database, no consumer of its own) opens nothing for it either."""
    account = f"replica-{uuid.uuid4().hex[:6]}"
    db_url = await database_url("health")
    settings = _settings(module_broker, db_url, tmp_path, HEALTH_SETTLE_SECONDS=60)
    app = create_app(settings)
    async with serve_app(app) as url:
        await send([_group(account, day_at(len(SILENT) + 1)), *daily_usage(account, SILENT)])

        async def stored() -> bool:
            async with http_client(base_url=url, headers=auth("read"), timeout=30) as c:
                r = await c.get(f"/v1/accounts/{account}/metrics", params={"days": 60})
            if r.status_code != 200:
                return False
            series = {m["metric"]: m for m in r.json()["metrics"]}
            return sum(series["events"]["values"]) == sum(SILENT)

        await until(stored, timeout=30)
        engine = create_engine(db_url)
        try:
            sessions = create_sessionmaker(engine)
            store = ConfigStore(
                sessions, default_metrics=load_config_file(settings.config_file), default_budget=5
            )
            other = Recomputer(sessions, store, today=settings.today)
            result = await other.recompute(None)
            assert account in result.held
            assert result.alerts.get("opened", 0) == 0
            assert result.settles_at is not None and result.settles_at > datetime.now(UTC)
        finally:
            await engine.dispose()
        assert await _alerts(url, account) == []


async def test_a_backlog_caught_up_after_a_stop_opens_nothing_for_steady_accounts(
    module_broker: EmbeddedBroker,
    send: Callable[[list[Envelope]], Awaitable[None]],
    database_url: Callable[[str], Awaitable[str]],
    tmp_path: Path,
) -> None:
    """Events produced while health was down (8 weeks of history up to now, today's too),
    then health starts with small batches: behind its topics for many batches."""
    run = uuid.uuid4().hex[:6]
    steady = [f"backlog{i}-{run}" for i in range(3)]
    now = datetime.combine(AS_OF, datetime.min.time(), tzinfo=UTC) + timedelta(hours=1)
    envelopes: list[Envelope] = [_group(a, day_at(len(STEADY) + 1)) for a in steady]
    for account in steady:
        envelopes += daily_usage(account, STEADY)
        envelopes += [usage(account, now + timedelta(seconds=i)) for i in range(5)]
    await send(envelopes)
    settings = _settings(
        module_broker,
        await database_url("health"),
        tmp_path,
        HEALTH_CONSUMER_BATCH=100,
        HEALTH_DEBOUNCE_MAX_SECONDS=0.2,  # the scheduler's own backlog wait ends at once
        HEALTH_SETTLE_SECONDS=1,
    )
    app = create_app(settings)
    async with serve_app(app) as url:
        await settle(Running(url, app, settings))
        ctx: HealthContext = app.state.health
        async with ctx.sessions() as session:
            assert await repo.get_config(session, BACKLOG_KEY) is not None  # it was behind
        for account in steady:
            assert await _alerts(url, account) == [], account
        async with http_client(base_url=url, headers=auth("read"), timeout=30) as c:
            for account in steady:
                r = await c.get(f"/v1/accounts/{account}")
                assert r.json()["health"]["band"] == "green", r.json()
    announced = await _opened_on_topic(settings.kafka_bootstrap_servers, set(steady))
    assert announced == []


async def test_a_live_collapse_alerts_as_soon_as_the_day_shows_it(
    module_broker: EmbeddedBroker,
    send: Callable[[list[Envelope]], Awaitable[None]],
    database_url: Callable[[str], Awaitable[str]],
    tmp_path: Path,
) -> None:
    """A steady account (history settled, no alert) whose usage drops to one event a day,
    arriving live: when the days move on, its alert opens within the 60 s bound, with no
    backdated data to wait for."""
    account = f"collapse-{uuid.uuid4().hex[:6]}"
    settings = _settings(module_broker, await database_url("health"), tmp_path)
    app = create_app(settings)
    async with serve_app(app) as url:
        running = Running(url, app, settings)
        await send([_group(account, day_at(len(STEADY) + 1)), *daily_usage(account, STEADY)])
        await settle(running)
        assert await _alerts(url, account) == []
        # today: one event instead of twelve, live (not backdated: nothing to settle)
        today = datetime.combine(AS_OF, datetime.min.time(), tzinfo=UTC)
        await send([usage(account, today + timedelta(hours=9))])
        await settle(running)
        assert await _alerts(url, account) == []  # today is not over yet
        settings.as_of = AS_OF + timedelta(days=1)  # the day is over: it shows the drop
        opened = await until(lambda: _alerts(url, account), timeout=60)  # the 60 s bound
        assert {a["rule_type"] for a in opened} & {"band_drop", "metric_decline"}
        assert all(a["status"] == "open" for a in opened)


async def test_a_churned_account_with_late_data_keeps_no_dirty_mark_or_pending_count(
    private_broker: EmbeddedBroker,
    database_url: Callable[[str], Awaitable[str]],
    tmp_path: Path,
) -> None:
    """A churned account is not scored, so it is never judged "settled" either: backdated
    usage arriving after its churn (held for 10 minutes) must not leave it marked dirty,
    or the pending gauge (and a demo waiting for pending 0) would wait forever.

    A broker of its own: with a 600 s settle delay, the other tests' accounts on the shared
    one would be held (and pending) too."""
    gone = f"gone-{uuid.uuid4().hex[:6]}"
    settings = _settings(
        private_broker, await database_url("health"), tmp_path, HEALTH_SETTLE_SECONDS=600
    )
    app = create_app(settings)
    async with (
        sender(private_broker.bootstrap_servers, "health-settle-churn") as send,
        serve_app(app) as url,
    ):
        api = Running(url, app, settings)
        churn_day = (AS_OF - timedelta(days=1)).isoformat()
        await send([_group(gone, day_at(30)), *daily_usage(gone, [5] * 28)])
        await send([_group(gone, day_at(1), traits={"status": "churned", "churned_at": churn_day})])
        await send(daily_usage(gone, [3] * 10))  # backdated, after the churn: held
        await settle(api)  # waits for no dirty marks at all
        ctx: HealthContext = app.state.health
        async with ctx.sessions() as session:
            account = await session.get(Account, gone)
            assert account is not None and account.status == "churned"
            assert account.settled_at is not None  # it was held
            assert await repo.count_dirty(session) == 0
        async with ctx.sessions() as session, session.begin():
            await repo.mark_dirty(session, [gone], datetime.now(UTC))
        result = await ctx.recomputer.recompute([gone])
        assert gone not in result.held and result.accounts == 0
        async with ctx.sessions() as session:
            assert await repo.count_dirty(session) == 0
        await ctx.scheduler.recompute_dirty()
        assert HEALTH_PENDING._value.get() == 0
