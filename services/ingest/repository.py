"""Every query of ingest's database; the caller owns the transaction.

Statements are the same on SQLite and PostgreSQL. Row locks (``FOR UPDATE``) are
PostgreSQL's way to keep replicas apart; SQLite renders none and has one writer anyway.
Under pysqlite a transaction begins at the first write, so every read that must see a
stable row is made after a write of the same transaction (see :func:`lock_contacts`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.ingest.models import (
    Contact,
    PendingEvent,
    UserAccount,
    UserAlias,
    UserMembership,
)


def _insert(session: AsyncSession, model: type[Any]) -> Any:
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    return (pg_insert if dialect == "postgresql" else sqlite_insert)(model)


# links and aliases --------------------------------------------------------------------


async def load_links(
    session: AsyncSession, keys: Sequence[str]
) -> tuple[dict[str, str], dict[str, tuple[str, str | None]]]:
    """Direct links of ``keys``, and for the keys without one their alias
    (alias key -> (user key, that user's account or None))."""
    rows = await session.execute(
        select(UserAccount.user_key, UserAccount.account_id).where(UserAccount.user_key.in_(keys))
    )
    direct = dict(rows.tuples().all())
    rest = [k for k in keys if k not in direct]
    aliased: dict[str, tuple[str, str | None]] = {}
    if rest:
        found = await session.execute(
            select(UserAlias.alias_key, UserAlias.user_key, UserAccount.account_id)
            .outerjoin(UserAccount, UserAccount.user_key == UserAlias.user_key)
            .where(UserAlias.alias_key.in_(rest))
        )
        aliased = {alias: (user, account) for alias, user, account in found.tuples()}
    return direct, aliased


async def store_links(
    session: AsyncSession, links: dict[str, tuple[str, datetime]], now: datetime
) -> set[str]:
    """Upsert user -> account links, each only if its group call is not older than the
    stored one; returns the keys whose link was written."""
    stmt = _insert(session, UserAccount).values(
        [
            {"user_key": k, "account_id": a, "linked_at": at, "updated_at": now}
            for k, (a, at) in links.items()
        ]
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["user_key"],
        set_={c: stmt.excluded[c] for c in ("account_id", "linked_at", "updated_at")},
        where=UserAccount.linked_at <= stmt.excluded.linked_at,
    ).returning(UserAccount.user_key)
    return set((await session.execute(stmt)).scalars())


async def add_memberships(
    session: AsyncSession, pairs: Iterable[tuple[str, str]], now: datetime
) -> set[tuple[str, str]]:
    """Record (user key, account) memberships; returns the ones that are new."""
    rows = [{"user_key": k, "account_id": a, "created_at": now} for k, a in set(pairs)]
    if not rows:
        return set()
    stmt = (
        _insert(session, UserMembership)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["user_key", "account_id"])
        .returning(UserMembership.user_key, UserMembership.account_id)
    )
    return set((await session.execute(stmt)).tuples())


async def memberships_of(session: AsyncSession, keys: Iterable[str]) -> dict[str, set[str]]:
    rows = await session.execute(
        select(UserMembership.user_key, UserMembership.account_id).where(
            UserMembership.user_key.in_(list(keys))
        )
    )
    out: dict[str, set[str]] = {}
    for key, account in rows.tuples():
        out.setdefault(key, set()).add(account)
    return out


async def store_aliases(session: AsyncSession, aliases: dict[str, str], now: datetime) -> set[str]:
    """Upsert alias -> user; returns the alias keys that are new or now point elsewhere."""
    stmt = _insert(session, UserAlias).values(
        [{"alias_key": a, "user_key": u, "created_at": now} for a, u in aliases.items()]
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["alias_key"],
        set_={"user_key": stmt.excluded.user_key, "created_at": stmt.excluded.created_at},
        where=UserAlias.user_key != stmt.excluded.user_key,
    ).returning(UserAlias.alias_key)
    return set((await session.execute(stmt)).scalars())


# contacts -----------------------------------------------------------------------------


async def lock_contacts(
    session: AsyncSession, seeds: dict[str, str], now: datetime
) -> dict[str, Contact]:
    """The contacts of ``seeds`` (user key -> user id), made empty when new, locked.

    The insert comes first so that the read happens inside a write transaction on
    SQLite too, and so that PostgreSQL has a row to lock even for a first identify.
    """
    if seeds:
        await session.execute(
            _insert(session, Contact)
            .values(
                [
                    {
                        "user_key": k,
                        "user_id": u,
                        "traits": {},
                        "stamps": {},
                        "message_id": "",
                        "updated_at": now,
                    }
                    for k, u in sorted(seeds.items())
                ]
            )
            .on_conflict_do_nothing(index_elements=["user_key"])
        )
    return await contacts_of(session, seeds.keys(), lock=True)


async def contacts_of(
    session: AsyncSession, keys: Iterable[str], *, lock: bool = False
) -> dict[str, Contact]:
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    stmt = select(Contact).where(Contact.user_key.in_(wanted)).order_by(Contact.user_key)
    if lock:
        stmt = stmt.with_for_update()
    return {c.user_key: c for c in (await session.execute(stmt)).scalars()}


# parked events ------------------------------------------------------------------------


async def park(session: AsyncSession, rows: list[dict[str, Any]]) -> dict[int, int]:
    """Insert parked events (a re-sent message id is a no-op); returns id -> row index
    of the rows actually inserted."""
    if not rows:
        return {}
    stmt = (
        _insert(session, PendingEvent)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["user_key", "message_id"])
        .returning(PendingEvent.id, PendingEvent.user_key, PendingEvent.message_id)
    )
    index = {(r["user_key"], r["message_id"]): i for i, r in enumerate(rows)}
    return {pid: index[(key, mid)] for pid, key, mid in (await session.execute(stmt)).tuples()}


async def pending_counts(session: AsyncSession, keys: Iterable[str]) -> dict[str, int]:
    rows = await session.execute(
        select(PendingEvent.user_key, func.count())
        .where(PendingEvent.user_key.in_(list(keys)))
        .group_by(PendingEvent.user_key)
    )
    return dict(rows.tuples().all())


async def newest_parked(session: AsyncSession, key: str, count: int) -> list[int]:
    """Ids of the ``count`` most recently parked events of a user."""
    rows = await session.execute(
        select(PendingEvent.id)
        .where(PendingEvent.user_key == key)
        .order_by(PendingEvent.id.desc())
        .limit(count)
    )
    return list(rows.scalars())


async def delete_pending(session: AsyncSession, ids: Sequence[int]) -> None:
    if ids:
        await session.execute(delete(PendingEvent).where(PendingEvent.id.in_(list(ids))))


@dataclass(frozen=True, slots=True)
class Releasable:
    event: PendingEvent
    account_id: str


def _account_of_pending() -> Any:
    """The account a parked row's user resolves to now: its own link, else its alias's."""
    direct = (
        select(UserAccount.account_id)
        .where(UserAccount.user_key == PendingEvent.user_key)
        .scalar_subquery()
    )
    via_alias = (
        select(UserAccount.account_id)
        .join(UserAlias, UserAlias.user_key == UserAccount.user_key)
        .where(UserAlias.alias_key == PendingEvent.user_key)
        .scalar_subquery()
    )
    return func.coalesce(direct, via_alias)


async def releasable(
    session: AsyncSession, *, keys: Iterable[str] | None, limit: int
) -> list[Releasable]:
    """Parked events whose users resolve to an account now (of ``keys`` and their
    aliases, or of anyone when ``keys`` is None), oldest first, locked (skip locked)."""
    account = _account_of_pending().label("account_id")
    stmt = select(PendingEvent, account).where(account.is_not(None))
    if keys is not None:
        wanted = list(keys)
        aliases = select(UserAlias.alias_key).where(UserAlias.user_key.in_(wanted))
        stmt = stmt.where(
            or_(PendingEvent.user_key.in_(wanted), PendingEvent.user_key.in_(aliases))
        )
    stmt = stmt.order_by(PendingEvent.id).limit(limit)
    stmt = stmt.with_for_update(skip_locked=True, of=PendingEvent)
    rows = await session.execute(stmt)
    return [Releasable(event, account_id) for event, account_id in rows.tuples()]


async def expired(session: AsyncSession, *, before: datetime, limit: int) -> list[PendingEvent]:
    """Parked events older than ``before`` whose users still resolve to no account: one
    linked meanwhile (by another replica, after this one's release pass) is released to
    ``usage.events.v1`` by the next pass, not given up as unattributed."""
    stmt = (
        select(PendingEvent)
        .where(PendingEvent.parked_at < before, _account_of_pending().is_(None))
        .order_by(PendingEvent.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list((await session.execute(stmt)).scalars())


async def pending_users(
    session: AsyncSession, *, limit: int, offset: int
) -> tuple[list[tuple[str, int, datetime]], int, int]:
    """Parked users (key, events, oldest parked) most events first; users and events."""
    rows = await session.execute(
        select(PendingEvent.user_key, func.count(), func.min(PendingEvent.parked_at))
        .group_by(PendingEvent.user_key)
        .order_by(func.count().desc(), PendingEvent.user_key)
        .limit(limit)
        .offset(offset)
    )
    totals = await session.execute(
        select(func.count(func.distinct(PendingEvent.user_key)), func.count())
    )
    users, events = totals.one()
    return list(rows.tuples().all()), int(users), int(events)
