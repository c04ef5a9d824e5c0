"""Every query notify makes. The caller owns the transaction."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.notify.library import builtin_templates
from services.notify.models import (
    WAITING,
    CapLock,
    Delivery,
    Engagement,
    OutboxEvent,
    Suppression,
    Template,
)
from services.notify.rendering import TemplateSpec
from shared.envelope import Envelope


def _dialect(session: AsyncSession) -> str:
    return session.bind.dialect.name if session.bind is not None else "sqlite"


def _insert(session: AsyncSession, model: type[Any]) -> Any:
    return (pg_insert if _dialect(session) == "postgresql" else sqlite_insert)(model)


# deliveries ------------------------------------------------------------------------------


# asyncpg takes at most 32,767 bind parameters a statement, SQLite (3.32+) 32,766; a row
# of ``deliveries`` binds about 24, so 1,000 rows a statement stays far below both.
INSERT_CHUNK = 1000


async def insert_deliveries(session: AsyncSession, rows: list[dict[str, Any]]) -> list[str]:
    """Store new deliveries; ones already logged under the same key are left alone.

    One multi-row INSERT per :data:`INSERT_CHUNK` rows (a Kafka batch of big requests
    would otherwise pass the drivers' bind-parameter limits)."""
    inserted: list[str] = []
    for start in range(0, len(rows), INSERT_CHUNK):
        stmt = (
            _insert(session, Delivery)
            .values(rows[start : start + INSERT_CHUNK])
            .on_conflict_do_nothing(index_elements=["idempotency_key", "recipient_key"])
            .returning(Delivery.id)
        )
        inserted.extend((await session.execute(stmt)).scalars())
    return inserted


def _claimable(now: datetime) -> Any:
    return or_(
        and_(Delivery.status.in_(WAITING), Delivery.next_attempt_at <= now),
        and_(Delivery.status == "sending", Delivery.lease_until < now),
    )


async def claim_due(
    session: AsyncSession, *, now: datetime, lease_until: datetime, limit: int
) -> list[Delivery]:
    """Mark due deliveries ``sending`` under a lease, in one UPDATE, and return them.

    One write statement: exclusive across workers (``SKIP LOCKED`` on PostgreSQL, the
    write lock on SQLite). A lease that ran out (the process died mid-send) makes the
    delivery claimable again.
    """
    due = select(Delivery.id).where(_claimable(now)).order_by(Delivery.next_attempt_at).limit(limit)
    if _dialect(session) == "postgresql":
        # Lock the rows first: an IN (subquery ... SKIP LOCKED) may be re-run by PostgreSQL.
        ids = list((await session.execute(due.with_for_update(skip_locked=True))).scalars())
        if not ids:
            return []
        target: Any = Delivery.id.in_(ids)
    else:
        target = Delivery.id.in_(due.scalar_subquery())  # one write statement on SQLite
    stmt = (
        update(Delivery)
        .where(target, _claimable(now))
        # SET expressions read the row as it was: ``resumed`` marks a lease that ran out
        .values(
            status="sending",
            lease_until=lease_until,
            updated_at=now,
            resumed=Delivery.status == "sending",
        )
        .returning(Delivery)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    return list((await session.execute(stmt)).scalars())


async def extend_leases(session: AsyncSession, ids: list[str], *, until: datetime) -> None:
    await session.execute(
        update(Delivery)
        .where(Delivery.id.in_(ids), Delivery.status == "sending")
        .values(lease_until=until)
        .execution_options(synchronize_session=False)
    )


async def set_delivery(session: AsyncSession, delivery_id: str, **values: Any) -> None:
    await session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


async def mark_engaged(
    session: AsyncSession, delivery_id: str, *, kind: str, now: datetime
) -> None:
    """The first open / click time on the delivery itself (kept if already set)."""
    column = Delivery.opened_at if kind == "open" else Delivery.clicked_at
    await session.execute(
        update(Delivery)
        .where(Delivery.id == delivery_id, column.is_(None))
        .values({column.key: now})
        .execution_options(synchronize_session=False)
    )


async def get_delivery(session: AsyncSession, delivery_id: str) -> Delivery | None:
    return await session.get(Delivery, delivery_id)


async def lock_cap_keys(session: AsyncSession, keys: Sequence[str], *, now: datetime) -> None:
    """Take the cap locks of ``keys`` for this transaction, one at a time in sorted order
    (so two transactions never wait on each other in a cycle). An upsert: it creates the
    row on first use and, either way, holds the row lock (PostgreSQL) or the database's
    write lock (SQLite) until commit; a second replica checking the same key waits here
    and then counts what the first one reserved."""
    for key in sorted(set(keys)):
        stmt = (
            _insert(session, CapLock)
            .values(key=key, touched_at=now)
            .on_conflict_do_update(index_elements=["key"], set_={"touched_at": now})
        )
        await session.execute(stmt)


def _capped(since: datetime, delivery_id: str) -> Any:
    return and_(
        Delivery.channel == "email",
        Delivery.automated.is_(True),
        Delivery.capped_at > since,
        Delivery.id != delivery_id,
    )


async def capped_times_of_recipient(
    session: AsyncSession, recipient_key: str, *, since: datetime, exclude_id: str
) -> list[datetime]:
    """When this contact's other automated emails took their cap slot, inside the window."""
    rows = await session.scalars(
        select(Delivery.capped_at).where(
            Delivery.recipient_key == recipient_key, _capped(since, exclude_id)
        )
    )
    return [t for t in rows if t is not None]


async def capped_times_of_account(
    session: AsyncSession,
    account_id: str,
    *,
    since: datetime,
    exclude_id: str,
    exclude_key: str,
) -> list[datetime]:
    """One time per other automated email (idempotency key) of the account inside the
    window: its first recipient's slot. Co-recipients of one request share its slot."""
    rows = await session.execute(
        select(Delivery.idempotency_key, func.min(Delivery.capped_at))
        .where(
            Delivery.account_id == account_id,
            Delivery.idempotency_key != exclude_key,
            _capped(since, exclude_id),
        )
        .group_by(Delivery.idempotency_key)
    )
    return [t for _, t in rows.tuples() if t is not None]


async def list_deliveries(
    session: AsyncSession,
    *,
    filters: dict[str, str | None],
    limit: int,
    offset: int,
) -> list[Delivery]:
    stmt = select(Delivery)
    for column, value in filters.items():
        if value is None:
            continue
        if column == "recipient":  # an address matches whatever its case
            stmt = stmt.where(
                or_(Delivery.recipient == value, Delivery.recipient_key == value.strip().lower())
            )
        else:
            stmt = stmt.where(getattr(Delivery, column) == value)
    stmt = stmt.order_by(Delivery.created_at.desc(), Delivery.id).limit(limit).offset(offset)
    return list((await session.execute(stmt)).scalars())


# outbox ----------------------------------------------------------------------------------


def outbox_row(
    topic: str,
    envelope: Envelope | None = None,
    *,
    raw: tuple[bytes | None, bytes] | None = None,
    headers: Sequence[tuple[str, str]] = (),
    now: datetime,
) -> dict[str, Any]:
    key: bytes | None
    if envelope is not None:
        key, value = envelope.key, envelope.to_bytes()
        headers = [("trace_id", envelope.trace_id), *headers]
    elif raw is not None:
        key, value = raw
    else:
        raise ValueError("an outbox row needs an envelope or raw bytes")
    return {
        "topic": topic,
        "key": key,
        "value": value,
        "headers": [list(h) for h in headers],
        "created_at": now,
    }


async def add_outbox(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    for start in range(0, len(rows), INSERT_CHUNK):
        await session.execute(
            _insert(session, OutboxEvent).values(rows[start : start + INSERT_CHUNK])
        )


async def pending_outbox(session: AsyncSession, *, limit: int) -> list[OutboxEvent]:
    rows = await session.execute(
        select(OutboxEvent)
        .where(OutboxEvent.published_at.is_(None))
        .order_by(OutboxEvent.id)
        .limit(limit)
    )
    return list(rows.scalars())


async def mark_published(session: AsyncSession, ids: list[int], *, now: datetime) -> None:
    await session.execute(
        update(OutboxEvent)
        .where(OutboxEvent.id.in_(ids))
        .values(published_at=now)
        .execution_options(synchronize_session=False)
    )


async def prune_outbox(session: AsyncSession, *, before: datetime) -> None:
    await session.execute(
        delete(OutboxEvent).where(
            OutboxEvent.published_at.is_not(None), OutboxEvent.published_at < before
        )
    )


# suppressions ----------------------------------------------------------------------------


async def suppressed_among(session: AsyncSession, emails: set[str]) -> set[str]:
    """Which of these addresses (lower-cased) are suppressed."""
    if not emails:
        return set()
    wanted = {e.strip().lower() for e in emails}
    rows = await session.execute(select(Suppression.email).where(Suppression.email.in_(wanted)))
    return set(rows.scalars())


async def add_suppression(session: AsyncSession, row: dict[str, Any]) -> bool:
    """True when the address was not suppressed before."""
    row = {**row, "email": row["email"].strip().lower()}
    stmt = (
        _insert(session, Suppression)
        .values(row)
        .on_conflict_do_nothing(index_elements=["email"])
        .returning(Suppression.email)
    )
    return (await session.execute(stmt)).scalar() is not None


async def set_suppression_account(session: AsyncSession, email: str, account_id: str) -> None:
    await session.execute(
        update(Suppression)
        .where(Suppression.email == email.strip().lower())
        .values(account_id=account_id)
    )


async def get_suppression(session: AsyncSession, email: str) -> Suppression | None:
    return await session.get(Suppression, email.strip().lower())


async def remove_suppression(session: AsyncSession, email: str) -> bool:
    result = await session.execute(
        delete(Suppression)
        .where(Suppression.email == email.strip().lower())
        .returning(Suppression.email)
    )
    return result.scalar() is not None


async def list_suppressions(
    session: AsyncSession, *, limit: int, offset: int, account_id: str | None = None
) -> list[Suppression]:
    query = select(Suppression)
    if account_id is not None:
        query = query.where(Suppression.account_id == account_id)
    rows = await session.execute(
        query.order_by(Suppression.created_at.desc()).limit(limit).offset(offset)
    )
    return list(rows.scalars())


# templates -------------------------------------------------------------------------------


def spec_of(row: Template) -> TemplateSpec:
    return TemplateSpec(
        id=row.id,
        name=row.name,
        channel="slack" if row.channel == "slack" else "email",
        subject=row.subject,
        html=row.html,
        text=row.text,
        blocks=row.blocks,
        description=row.description,
        sample_context=row.sample_context or {},
        builtin=False,
    )


async def get_template(session: AsyncSession, template_id: str) -> TemplateSpec | None:
    """A stored template (custom, or overriding a built-in), else the built-in."""
    row = await session.get(Template, template_id)
    if row is not None:
        return spec_of(row)
    return builtin_templates().get(template_id)


async def get_templates(session: AsyncSession, ids: set[str]) -> dict[str, TemplateSpec]:
    """Stored templates (custom or overrides) for these ids, else the built-ins."""
    rows = await session.execute(select(Template).where(Template.id.in_(ids)))
    stored = {row.id: spec_of(row) for row in rows.scalars()}
    builtins = builtin_templates()
    return {i: stored.get(i) or builtins[i] for i in ids if i in stored or i in builtins}


async def list_templates(session: AsyncSession) -> list[TemplateSpec]:
    stored = {row.id: spec_of(row) for row in (await session.execute(select(Template))).scalars()}
    merged = {**builtin_templates(), **stored}
    return [merged[k] for k in sorted(merged)]


async def put_template(session: AsyncSession, row: dict[str, Any]) -> bool:
    """Create or replace; True when it was created. Writes before it reads (SQLite locks)."""
    changes = {k: v for k, v in row.items() if k not in {"id", "created_at"}}
    updated = await session.execute(
        update(Template).where(Template.id == row["id"]).values(**changes).returning(Template.id)
    )
    if updated.scalar() is not None:
        return False
    return await insert_template(session, row)


async def insert_template(session: AsyncSession, row: dict[str, Any]) -> bool:
    """Insert unless the id is taken; True when inserted."""
    stmt = (
        _insert(session, Template)
        .values(row)
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(Template.id)
    )
    return (await session.execute(stmt)).scalar() is not None


async def delete_template(session: AsyncSession, template_id: str) -> bool:
    result = await session.execute(
        delete(Template).where(Template.id == template_id).returning(Template.id)
    )
    return result.scalar() is not None


# engagement ------------------------------------------------------------------------------


async def record_engagement(
    session: AsyncSession, *, delivery_id: str, kind: str, url: str | None, now: datetime
) -> bool:
    """True the first time this delivery is opened (or this link clicked)."""
    url_hash = hashlib.sha256((url or "").encode()).hexdigest()
    stmt = (
        _insert(session, Engagement)
        .values(delivery_id=delivery_id, kind=kind, url_hash=url_hash, url=url, created_at=now)
        .on_conflict_do_nothing(index_elements=["delivery_id", "kind", "url_hash"])
        .returning(Engagement.id)
    )
    return (await session.execute(stmt)).scalar() is not None
