"""The batch handler for ``usage.events.v1`` and ``accounts.v1`` (group ``health``).

One database transaction per batch stores the dedupe marks, the rollup increments,
the registry changes and the settle marks of accounts that got backdated or backlog
data (:mod:`settle`); only then does the runner commit the offsets. A replayed message
finds its mark and changes nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from typing import TypeVar

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.health import outcomes, settle
from services.health import repository as repo
from services.health.alerts import reassign
from services.health.config import MetricsConfig
from services.health.decode import KEY_MAX, USAGE_TYPES, Usage, usage_of
from services.health.eventnames import EventNames, keys_of
from services.health.registry import SOURCE, apply_traits, new_account, store_contacts
from services.health.rollups import EventFacts, aggregate, utc_day
from shared.envelope import Envelope, utcnow
from shared.kafka import Record
from shared.messages import AccountUpserted, ContactUpserted, UsageEvent
from shared.textfit import fit_key

log = structlog.get_logger(__name__)

LIVE_DAYS = 2  # a batch with events this recent is live traffic, older ones a backfill


Keyed = TypeVar("Keyed", AccountUpserted, ContactUpserted)


def _keyed(message: Keyed) -> Keyed:
    """The message with a dedup key that fits its column (shared/textfit.py)."""
    key = fit_key(message.message_id, KEY_MAX)
    return message if key == message.message_id else message.model_copy(update={"message_id": key})


class HealthConsumer:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        metrics: Callable[[], Awaitable[MetricsConfig]],
        on_stored: Callable[[bool], None],
        today: Callable[[], date],
        event_names: EventNames | None = None,
        settle_seconds: float = 0.0,
        behind: Callable[[], bool] = lambda: False,
    ) -> None:
        self._sessions = sessions
        self._metrics = metrics
        self._on_stored = on_stored
        self._today = today
        self._event_names = event_names  # None: no per-event rollups
        self._settle_seconds = settle_seconds
        self.behind = behind  # the runner's: this batch came from a backlog

    async def handle(self, records: list[Record]) -> None:
        usage: list[Usage] = []
        upserts: list[tuple[Envelope, AccountUpserted]] = []
        contacts: list[tuple[Envelope, ContactUpserted]] = []
        for record in records:
            env = record.envelope
            if env.source == SOURCE:
                continue  # our own announcements: already applied here
            if env.type in USAGE_TYPES:
                # decoded once by the runner (decode.decode), else read here
                decoded = record.payload
                if not isinstance(decoded, Usage):
                    decoded = usage_of(env.account_id, env.payload(UsageEvent))
                usage.append(decoded)
            elif env.type == "account.upserted":
                upserts.append((env, _keyed(env.payload(AccountUpserted))))
            elif env.type == "contact.upserted":
                contacts.append((env, _keyed(env.payload(ContactUpserted))))
        if not (usage or upserts or contacts):
            return
        config = await self._metrics()
        now = utcnow()
        per_event = await self._per_event(usage, config)
        today = self._today()
        backlog = self.behind()
        async with self._sessions() as session, session.begin():
            keys = [(u.facts.account_id, u.message_id) for u in usage]
            keys += [(e.account_id, a.message_id) for e, a in upserts]
            keys += [(e.account_id, c.message_id) for e, c in contacts]
            new = await repo.insert_seen(session, keys)
            days = await self._store_usage(session, usage, new, config, now, per_event)
            registry = await self._store_registry(session, upserts, contacts, new, now)
            unsettled = {a for a, (first, _) in days.items() if backlog or first < today}
            unsettled |= {
                e.account_id
                for e, u in upserts
                if (e.account_id, u.message_id) in new
                and (backlog or utc_day(e.occurred_at) < today)
            }
            if unsettled or backlog:
                await settle.hold(
                    session, unsettled, now=now, seconds=self._settle_seconds, backlog=backlog
                )
        newest = max((last for _, last in days.values()), default=None)
        if newest is not None or registry:
            recent = newest is not None and newest >= self._today() - timedelta(days=LIVE_DAYS)
            self._on_stored(registry or recent)

    async def _per_event(
        self, usage: list[Usage], config: MetricsConfig
    ) -> dict[str, tuple[str, str]] | None:
        """Event name -> its rollup keys (registered, in a transaction of its own, before
        the batch's: a registration is harmless if the batch then fails)."""
        if self._event_names is None or not usage:
            return None
        names = {u.facts.event for u in usage}
        slugs = await self._event_names.slugs(names, pinned=config.event_names)
        return {name: keys_of(slug) for name, slug in slugs.items()}

    async def _store_usage(
        self,
        session: AsyncSession,
        usage: list[Usage],
        new: set[tuple[str, str]],
        config: MetricsConfig,
        now: datetime,
        per_event: dict[str, tuple[str, str]] | None,
    ) -> dict[str, tuple[date, date]]:
        """Store the new events' rollups; returns each touched account's first and last
        event day (empty: nothing new)."""
        facts: list[EventFacts] = []
        for event in usage:
            key = (event.facts.account_id, event.message_id)
            if key not in new:
                continue
            new.discard(key)  # a duplicate within the batch counts once
            facts.append(event.facts)
        if not facts:
            return {}
        inc = aggregate(facts, config.metrics, per_event)
        await repo.store_usage(session, inc.days, inc.users, inc.added, now)
        if inc.last:
            await repo.set_last_rollups(session, inc.last)
        return inc.days

    async def _store_registry(
        self,
        session: AsyncSession,
        upserts: list[tuple[Envelope, AccountUpserted]],
        contacts: list[tuple[Envelope, ContactUpserted]],
        new: set[tuple[str, str]],
        now: datetime,
    ) -> bool:
        fresh = [(e, u) for e, u in upserts if (e.account_id, u.message_id) in new]
        fresh_contacts = [(e, c) for e, c in contacts if (e.account_id, c.message_id) in new]
        if not fresh and not fresh_contacts:
            return False
        ids = {e.account_id for e, _ in (*fresh, *fresh_contacts)}
        accounts = await repo.get_accounts(session, ids)
        for account_id in ids - accounts.keys():
            accounts[account_id] = new_account(account_id, now)
            session.add(accounts[account_id])
        owners: dict[str, str] = {}
        for env, upserted in sorted(fresh, key=lambda pair: pair[0].occurred_at):
            account = accounts[env.account_id]
            day = utc_day(env.occurred_at)
            if account.first_seen is None or day < account.first_seen:
                account.first_seen = day
            changed = apply_traits(session, account, upserted, occurred_at=env.occurred_at, now=now)
            if "owner" in changed:
                owners[env.account_id] = changed["owner"]
            outcome = outcomes.from_traits(account, upserted.traits, day)
            if outcome is not None:
                await outcomes.record(
                    session, account, outcome, source="group", now=now, today=self._today()
                )
        await session.flush()
        if owners:
            await reassign(session, owners, now)
        await store_contacts(session, [(e.account_id, c) for e, c in fresh_contacts], now)
        return bool(fresh)
