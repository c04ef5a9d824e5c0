"""Every query of the health service. The caller owns the transaction; nothing commits here."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import Select, Table, bindparam, case, delete, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.health.eventnames import COUNT_PREFIX, OTHER, USERS_PREFIX
from services.health.models import (
    Account,
    Alert,
    AlertRule,
    ConfigEntry,
    Contact,
    EventName,
    Outcome,
    OwnerChange,
    Rollup,
    RollupUser,
    Score,
    ScoreHistory,
    SeenMessage,
)
from services.health.rollups import MAX_VALUE, Key
from shared.db import upsert

CHUNK = 2000


def _insert(session: AsyncSession, model: type[Any]) -> Any:
    """INSERT on the table (Core: no ORM bulk bookkeeping on the hot path)."""
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    return (pg_insert if dialect == "postgresql" else sqlite_insert)(model.__table__)


def _is_pg(session: AsyncSession) -> bool:
    return session.bind is not None and session.bind.dialect.name == "postgresql"


# PostgreSQL: one statement over arrays (unnest) instead of thousands of VALUES tuples.
PG_SEEN = text(
    "INSERT INTO seen_messages (account_id, message_id) "
    "SELECT * FROM unnest(CAST(:a AS varchar[]), CAST(:m AS varchar[])) "
    "ON CONFLICT DO NOTHING RETURNING account_id, message_id"
)
PG_ADD = text(
    "INSERT INTO rollups (account_id, metric, day, value) "
    "SELECT * FROM unnest(CAST(:a AS varchar[]), CAST(:m AS varchar[]), "
    "CAST(:d AS date[]), CAST(:v AS float8[])) "
    "ON CONFLICT (account_id, metric, day) DO UPDATE SET value = "
    "LEAST(GREATEST(rollups.value + excluded.value, -CAST(:cap AS float8)), CAST(:cap AS float8))"
)
PG_USERS = text(
    "INSERT INTO rollup_users (account_id, metric, day, user_key) "
    "SELECT * FROM unnest(CAST(:a AS varchar[]), CAST(:m AS varchar[]), "
    "CAST(:d AS date[]), CAST(:u AS varchar[])) "
    "ON CONFLICT DO NOTHING RETURNING account_id, metric, day"
)


# PostgreSQL, one round trip for a batch's usage: register/widen the accounts, add the
# new active users, and add every increment (the new users counted per key) to rollups.
# The user keys and the other increments belong to different metrics, so no rollup row
# is hit twice by the final upsert.
PG_USAGE = text(
    "WITH touched AS ("
    " INSERT INTO accounts (account_id, first_seen, last_active, dirty_at, traits,"
    " created_at, updated_at)"
    " SELECT t.a, t.f, t.l, CAST(:now AS timestamptz), CAST('{}' AS json),"
    " CAST(:now AS timestamptz), CAST(:now AS timestamptz)"
    " FROM unnest(CAST(:ta AS varchar[]), CAST(:tf AS date[]), CAST(:tl AS date[]))"
    " AS t(a, f, l)"
    " ON CONFLICT (account_id) DO UPDATE SET"
    " first_seen = LEAST(accounts.first_seen, excluded.first_seen),"
    " last_active = GREATEST(accounts.last_active, excluded.last_active),"
    " dirty_at = excluded.dirty_at"
    " RETURNING 1),"
    " users AS ("
    " INSERT INTO rollup_users (account_id, metric, day, user_key)"
    " SELECT * FROM unnest(CAST(:ua AS varchar[]), CAST(:um AS varchar[]),"
    " CAST(:ud AS date[]), CAST(:uu AS varchar[]))"
    " ON CONFLICT DO NOTHING RETURNING account_id, metric, day),"
    " increments AS ("
    " SELECT account_id, metric, day, CAST(count(*) AS float8) AS value FROM users"
    " GROUP BY account_id, metric, day"
    " UNION ALL SELECT * FROM unnest(CAST(:a AS varchar[]), CAST(:m AS varchar[]),"
    " CAST(:d AS date[]), CAST(:v AS float8[])))"
    " INSERT INTO rollups (account_id, metric, day, value)"
    " SELECT account_id, metric, day, value FROM increments"
    " ON CONFLICT (account_id, metric, day) DO UPDATE SET value = LEAST(GREATEST("
    "rollups.value + excluded.value, -CAST(:cap AS float8)), CAST(:cap AS float8))"
)


async def store_usage(
    session: AsyncSession,
    days: dict[str, tuple[date, date]],
    users: set[tuple[str, str, date, str]],
    added: dict[Key, float],
    now: datetime,
) -> None:
    """Accounts touched, new active users and rollup increments of a batch (PostgreSQL:
    one statement; SQLite: one per table)."""
    if not _is_pg(session):
        await touch_accounts(session, days, now)
        new_users = await add_users(session, users)  # only new users count
        await add_rollups(session, {**added, **new_users})  # disjoint metric keys
        return
    accounts = sorted(days.items())  # one lock order for concurrent batches
    found = list(users)
    params = {
        "now": now,
        "ta": [a for a, _ in accounts],
        "tf": [first for _, (first, _) in accounts],
        "tl": [last for _, (_, last) in accounts],
        "ua": [u[0] for u in found],
        "um": [u[1] for u in found],
        "ud": [u[2] for u in found],
        "uu": [u[3] for u in found],
        **_increment_arrays(added),
    }
    await session.execute(PG_USAGE, params)


def _increment_arrays(added: dict[Key, float]) -> dict[str, Any]:
    """Rollup increments as the parallel arrays (``a m d v``) and cap the PostgreSQL
    statements unnest."""
    keys = list(added)
    return {
        "a": [k[0] for k in keys],
        "m": [k[1] for k in keys],
        "d": [k[2] for k in keys],
        "v": [added[k] for k in keys],
        "cap": MAX_VALUE,
    }


def _clamped(value: Any) -> Any:
    """SQLite's two-argument min/max: ``value`` within +-MAX_VALUE."""
    return func.min(func.max(value, -MAX_VALUE), MAX_VALUE)


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# dedupe + rollups ------------------------------------------------------------------------


async def insert_seen(session: AsyncSession, pairs: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """Store dedupe marks; returns the (account, message_id) pairs not seen before."""
    new: set[tuple[str, str]] = set()
    unique = list(dict.fromkeys(pairs))
    if _is_pg(session) and unique:
        accounts, messages = zip(*unique, strict=True)
        result = await session.execute(PG_SEEN, {"a": list(accounts), "m": list(messages)})
        return {(a, m) for a, m in result.tuples()}
    for chunk in _chunks(unique):
        stmt = _insert(session, SeenMessage).on_conflict_do_nothing(
            index_elements=["account_id", "message_id"]
        )
        stmt = stmt.returning(stmt.table.c.account_id, stmt.table.c.message_id)
        result = await session.execute(stmt, [{"account_id": a, "message_id": m} for a, m in chunk])
        new.update((a, m) for a, m in result.tuples())
    return new


async def add_rollups(session: AsyncSession, added: dict[Key, float]) -> None:
    """value += increment, per (account, metric, day)."""
    if _is_pg(session) and added:
        await session.execute(PG_ADD, _increment_arrays(added))
        return
    rows = [{"account_id": a, "metric": m, "day": d, "value": v} for (a, m, d), v in added.items()]
    for chunk in _chunks(rows):
        stmt = _insert(session, Rollup)
        stmt = stmt.on_conflict_do_update(
            index_elements=["account_id", "metric", "day"],
            set_={"value": _clamped(Rollup.value + stmt.excluded.value)},
        )
        await session.execute(stmt, list(chunk))


async def set_last_rollups(session: AsyncSession, last: dict[Key, tuple[datetime, float]]) -> None:
    """The value of the latest event of the day wins (``last`` metrics)."""
    rows = [
        {"account_id": a, "metric": m, "day": d, "value": v, "last_at": ts}
        for (a, m, d), (ts, v) in last.items()
    ]
    for chunk in _chunks(rows):
        stmt = _insert(session, Rollup)
        newer = (Rollup.last_at.is_(None)) | (stmt.excluded.last_at >= Rollup.last_at)
        stmt = stmt.on_conflict_do_update(
            index_elements=["account_id", "metric", "day"],
            set_={
                "value": case((newer, stmt.excluded.value), else_=Rollup.value),
                "last_at": case((newer, stmt.excluded.last_at), else_=Rollup.last_at),
            },
        )
        await session.execute(stmt, list(chunk))


async def add_users(
    session: AsyncSession, users: set[tuple[str, str, date, str]]
) -> dict[Key, float]:
    """Add active users to their day's set; returns how many were new per (account, metric,
    day): the increments of the ``distinct_users`` rollups."""
    added: dict[Key, float] = {}
    if _is_pg(session) and users:
        found = list(users)
        params = {
            "a": [u[0] for u in found],
            "m": [u[1] for u in found],
            "d": [u[2] for u in found],
            "u": [u[3] for u in found],
        }
        for key in (await session.execute(PG_USERS, params)).tuples():
            added[key] = added.get(key, 0.0) + 1.0
        return added
    rows = [{"account_id": a, "metric": m, "day": d, "user_key": u} for a, m, d, u in users]
    for chunk in _chunks(rows):
        stmt = _insert(session, RollupUser).on_conflict_do_nothing(
            index_elements=["account_id", "metric", "day", "user_key"]
        )
        stmt = stmt.returning(stmt.table.c.account_id, stmt.table.c.metric, stmt.table.c.day)
        for key in (await session.execute(stmt, list(chunk))).tuples():
            added[key] = added.get(key, 0.0) + 1.0
    return added


async def touch_accounts(
    session: AsyncSession, days: dict[str, tuple[date, date]], now: datetime
) -> None:
    """Register accounts seen in usage; widen first-seen/last-active; mark them for scoring."""
    rows = [
        {
            "account_id": a,
            "first_seen": first,
            "last_active": last,
            "dirty_at": now,
            "traits": {},
            "created_at": now,
            "updated_at": now,
        }
        for a, (first, last) in sorted(days.items())
    ]
    for chunk in _chunks(rows):
        stmt = _insert(session, Account)
        ex = stmt.excluded
        stmt = stmt.on_conflict_do_update(
            index_elements=["account_id"],
            set_={
                "first_seen": case(
                    (
                        Account.first_seen.is_(None) | (ex.first_seen < Account.first_seen),
                        ex.first_seen,
                    ),
                    else_=Account.first_seen,
                ),
                "last_active": case(
                    (
                        Account.last_active.is_(None) | (ex.last_active > Account.last_active),
                        ex.last_active,
                    ),
                    else_=Account.last_active,
                ),
                "dirty_at": ex.dirty_at,
            },
        )
        await session.execute(stmt, list(chunk))


# accounts --------------------------------------------------------------------------------


async def get_accounts(session: AsyncSession, ids: Iterable[str]) -> dict[str, Account]:
    wanted = list(set(ids))
    found: dict[str, Account] = {}
    for chunk in _chunks(wanted, 500):
        rows = await session.scalars(select(Account).where(Account.account_id.in_(chunk)))
        found.update((acc.account_id, acc) for acc in rows)
    return found


async def contacts_of(session: AsyncSession, account_id: str) -> list[Contact]:
    rows = await session.scalars(
        select(Contact).where(Contact.account_id == account_id).order_by(Contact.user_id)
    )
    return list(rows)


async def dirty_account_ids(session: AsyncSession, limit: int = 50_000) -> list[str]:
    rows = await session.scalars(
        select(Account.account_id).where(Account.dirty_at.is_not(None)).limit(limit)
    )
    return list(rows)


# pg_advisory_xact_lock key of a recompute: one at a time across replicas
RECOMPUTE_LOCK = 0x4845414C5448  # "HEALTH"


async def take_write_lock(session: AsyncSession) -> None:
    """One recompute at a time, held until the transaction ends.

    PostgreSQL: a transaction-level advisory lock, so replicas recomputing at once take
    turns instead of racing on ``uq_alerts_one_active`` or overspending the budget.
    SQLite: write first, so a long read-then-write transaction holds the (single)
    write lock from its start instead of failing at its first write when a consumer
    batch committed meanwhile (SQLITE_BUSY_SNAPSHOT)."""
    if _is_pg(session):
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": RECOMPUTE_LOCK})
    else:
        await session.execute(text("UPDATE config SET key = key WHERE 1 = 0"))


async def dirty_marks(session: AsyncSession, ids: list[str] | None) -> dict[str, datetime]:
    """The dirty marks as they are now; a recompute clears exactly these when it is done."""
    query = select(Account.account_id, Account.dirty_at).where(Account.dirty_at.is_not(None))
    if ids is None:
        return {a: d for a, d in (await session.execute(query)).tuples() if d is not None}
    marks: dict[str, datetime] = {}
    for chunk in _chunks(ids, 500):
        rows = await session.execute(query.where(Account.account_id.in_(chunk)))
        marks.update((a, d) for a, d in rows.tuples() if d is not None)
    return marks


async def clear_dirty(session: AsyncSession, marks: dict[str, datetime]) -> None:
    """Clear marks not renewed meanwhile (a batch stored after our read re-marks the account)."""
    if not marks:
        return
    table: Table = Account.__table__  # type: ignore[assignment]  # Core, not ORM: an executemany UPDATE with its own WHERE
    stmt = (
        update(table)
        .where(table.c.account_id == bindparam("a"), table.c.dirty_at == bindparam("d"))
        .values(dirty_at=None)
    )
    rows = [{"a": a, "d": d} for a, d in marks.items()]
    for chunk in _chunks(rows):
        await session.execute(stmt, list(chunk))


async def mark_dirty(session: AsyncSession, ids: list[str], now: datetime) -> None:
    for chunk in _chunks(ids, 500):
        await session.execute(
            update(Account).where(Account.account_id.in_(chunk)).values(dirty_at=now)
        )


async def set_settled_at(session: AsyncSession, ids: list[str], until: datetime) -> None:
    for chunk in _chunks(ids, 500):
        await session.execute(
            update(Account).where(Account.account_id.in_(chunk)).values(settled_at=until)
        )


async def count_dirty(session: AsyncSession) -> int:
    found = await session.scalar(
        select(func.count()).select_from(Account).where(Account.dirty_at.is_not(None))
    )
    return int(found or 0)


async def all_accounts(session: AsyncSession) -> list[Account]:
    return list(await session.scalars(select(Account).order_by(Account.account_id)))


async def owner_changes(session: AsyncSession, ids: list[str] | None) -> list[OwnerChange]:
    query = select(OwnerChange).order_by(OwnerChange.id)
    if ids is not None:
        query = query.where(OwnerChange.account_id.in_(ids))
    return list(await session.scalars(query))


async def load_rollups(
    session: AsyncSession,
    start: date,
    end: date,
    ids: list[str] | None,
    metrics: list[str] | None = None,
) -> list[tuple[str, str, date, float]]:
    """Rollup rows with ``start <= day < end`` (of the given accounts, or all; of the
    given metric keys, or all)."""
    query = select(Rollup.account_id, Rollup.metric, Rollup.day, Rollup.value).where(
        Rollup.day >= start, Rollup.day < end
    )
    if metrics is not None:
        query = query.where(Rollup.metric.in_(sorted(set(metrics))))
    if ids is None:
        return [tuple(r) for r in (await session.execute(query)).tuples()]  # type: ignore[misc]
    rows: list[tuple[str, str, date, float]] = []
    for chunk in _chunks(ids, 500):
        result = await session.execute(query.where(Rollup.account_id.in_(chunk)))
        rows.extend(result.tuples())
    return rows


Series = tuple[str, str, list[int], list[float]]  # account, metric, day offsets, values

PG_SERIES = text(
    "SELECT account_id, metric, array_agg(day - CAST(:start AS date)), array_agg(value) "
    "FROM rollups WHERE day >= :start AND day < :end "
    "AND (CAST(:ids AS varchar[]) IS NULL OR account_id = ANY(CAST(:ids AS varchar[]))) "
    "AND metric = ANY(CAST(:metrics AS varchar[])) "
    "GROUP BY account_id, metric"
)


async def load_series(
    session: AsyncSession, start: date, end: date, ids: list[str] | None, metrics: list[str]
) -> list[Series]:
    """Per account and metric (of ``metrics``: rollup keys), the days (as offsets from
    ``start``) and values in the window.

    On PostgreSQL the grouping happens in the database: ~metrics rows per account
    instead of one per day, which is most of a full recompute's load time.
    """
    metrics = sorted(set(metrics))
    if _is_pg(session):
        params = {"start": start, "end": end, "ids": ids, "metrics": metrics}
        result = await session.execute(PG_SERIES, params)
        return [(a, m, d, v) for a, m, d, v in result.tuples()]
    grouped: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
    for a, m, d, v in await load_rollups(session, start, end, ids, metrics):
        days, values = grouped.setdefault((a, m), ([], []))
        days.append((d - start).days)
        values.append(v)
    return [(a, m, d, v) for (a, m), (d, v) in grouped.items()]


async def window_totals(
    session: AsyncSession, start: date, end: date, metrics: list[str]
) -> list[tuple[str, str, float]]:
    """Per account and metric (rollup keys), the sum over ``start <= day < end``
    (segment medians)."""
    result = await session.execute(
        select(Rollup.account_id, Rollup.metric, func.sum(Rollup.value))
        .where(Rollup.day >= start, Rollup.day < end, Rollup.metric.in_(sorted(set(metrics))))
        .group_by(Rollup.account_id, Rollup.metric)
    )
    return [(a, m, float(v or 0)) for a, m, v in result.tuples()]


async def account_segments(session: AsyncSession) -> list[tuple[str, str | None]]:
    result = await session.execute(select(Account.account_id, Account.segment))
    return list(result.tuples())


# outcomes and per-event metrics ----------------------------------------------------------


async def status_outcomes(session: AsyncSession) -> list[tuple[str, str, date, int]]:
    """Every churn and reactivation (account, type, at, id): who is churned on which day."""
    result = await session.execute(
        select(Outcome.account_id, Outcome.type, Outcome.at, Outcome.id).where(
            Outcome.type.in_(("churned", "reactivated"))
        )
    )
    return list(result.tuples())


async def churned_with_alerts(session: AsyncSession, as_of: date) -> list[str]:
    """Accounts churned by ``as_of`` that still have a not-resolved alert."""
    result = await session.scalars(
        select(Account.account_id).where(
            Account.status == "churned",
            Account.churned_at <= as_of,
            Account.account_id.in_(select(Alert.account_id).where(Alert.status != "resolved")),
        )
    )
    return list(result)


async def outcomes_of(session: AsyncSession, account_id: str) -> list[Outcome]:
    rows = await session.scalars(
        select(Outcome)
        .where(Outcome.account_id == account_id)
        .order_by(Outcome.at.desc(), Outcome.id.desc())
    )
    return list(rows)


async def outcomes_since(session: AsyncSession, since: date) -> list[Outcome]:
    rows = await session.scalars(select(Outcome).where(Outcome.at >= since).order_by(Outcome.id))
    return list(rows)


async def first_rollup_day(session: AsyncSession) -> date | None:
    day: date | None = await session.scalar(select(func.min(Rollup.day)))
    return day


async def history_at(session: AsyncSession, day: date) -> dict[str, tuple[float, str]]:
    """Every account's stored score and band as of ``day`` (score history)."""
    result = await session.execute(
        select(ScoreHistory.account_id, ScoreHistory.score, ScoreHistory.band).where(
            ScoreHistory.day == day
        )
    )
    return {a: (s, b) for a, s, b in result.tuples()}


async def event_keys(session: AsyncSession) -> list[tuple[str, str]]:
    """(rollup key, display name) of every event name with rollups of its own, counts
    and users, plus the two "other" keys."""
    rows = (await session.execute(select(EventName.slug, EventName.name))).tuples()
    named = sorted((slug, name) for slug, name in rows)
    named.append((OTHER, "other events"))
    return [(COUNT_PREFIX + s, n) for s, n in named] + [(USERS_PREFIX + s, n) for s, n in named]


async def event_volumes(
    session: AsyncSession, start_30: date, start_90: date, end: date
) -> list[tuple[str, float, float, int]]:
    """Per ``event:`` rollup key: events over the last 30 and 90 days (``start <= day <
    end``) and how many accounts had one in the last 30."""
    recent = Rollup.day >= start_30
    result = await session.execute(
        select(
            Rollup.metric,
            func.sum(case((recent, Rollup.value), else_=0.0)),
            func.sum(Rollup.value),
            func.count(func.distinct(case((recent, Rollup.account_id), else_=None))),
        )
        .where(Rollup.metric.like("event:%"), Rollup.day >= start_90, Rollup.day < end)
        .group_by(Rollup.metric)
    )
    return [(m, float(v30 or 0), float(v90 or 0), int(n or 0)) for m, v30, v90, n in result]


async def active_account_count(session: AsyncSession, start: date, end: date) -> int:
    """Accounts with any event in ``start <= day < end`` (the catalog's share base)."""
    count = await session.scalar(
        select(func.count(func.distinct(Rollup.account_id))).where(
            Rollup.metric.like("event:%"), Rollup.day >= start, Rollup.day < end
        )
    )
    return int(count or 0)


# scores ----------------------------------------------------------------------------------


async def current_scores(
    session: AsyncSession, ids: list[str] | None
) -> dict[str, tuple[float, str]]:
    """(score, band) of the given accounts (or all): what a change is measured against."""
    query = select(Score.account_id, Score.score, Score.band)
    if ids is None:
        return {a: (s, b) for a, s, b in (await session.execute(query)).tuples()}
    found: dict[str, tuple[float, str]] = {}
    for chunk in _chunks(ids, 500):
        rows = await session.execute(query.where(Score.account_id.in_(chunk)))
        found.update((a, (s, b)) for a, s, b in rows.tuples())
    return found


async def _upsert_many(
    session: AsyncSession, model: type[Any], rows: list[dict[str, Any]], keys: list[str]
) -> None:
    """One cached statement, executed over many rows (batched by the driver layer)."""
    if not rows:
        return
    stmt = _insert(session, model)
    update = {c: stmt.excluded[c] for c in rows[0] if c not in keys}
    stmt = stmt.on_conflict_do_update(index_elements=keys, set_=update)
    for chunk in _chunks(rows):
        await session.execute(stmt, list(chunk))


async def store_scores(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    await _upsert_many(session, Score, rows, ["account_id"])


async def store_history(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    await _upsert_many(session, ScoreHistory, rows, ["account_id", "day"])


async def score_history(session: AsyncSession, account_id: str, limit: int) -> list[ScoreHistory]:
    rows = await session.scalars(
        select(ScoreHistory)
        .where(ScoreHistory.account_id == account_id)
        .order_by(ScoreHistory.day.desc())
        .limit(limit)
    )
    return list(rows)


OPEN_STATUSES = ("open", "acknowledged")


def open_alert_counts() -> Any:
    """Per account, its alerts still waiting for someone (open or acknowledged)."""
    return (
        select(Alert.account_id, func.count().label("open_alerts"))
        .where(Alert.status.in_(OPEN_STATUSES))
        .group_by(Alert.account_id)
        .subquery()
    )


def accounts_query(
    *,
    band: str | None,
    owner: str | None,
    segment: str | None,
    stage: str | None,
    sort: str,
) -> Select[Account, Score]:
    query = select(Account, Score).outerjoin(Score, Score.account_id == Account.account_id)
    if band is not None:
        query = query.where(Score.band == band)
    if owner is not None:
        query = query.where(Account.owner == owner.lower())
    if segment is not None:
        query = query.where(Account.segment == segment)
    if stage is not None:
        query = query.where(Account.stage == stage)
    key = sort.removeprefix("-")
    column: Any
    if key == "alerts":
        counts = open_alert_counts()
        query = query.outerjoin(counts, counts.c.account_id == Account.account_id)
        column = func.coalesce(counts.c.open_alerts, 0)
    else:
        column = {
            "score": Score.score,
            "change": Score.change,
            "account_id": Account.account_id,
            "name": Account.name,
            "mrr": Account.mrr,
            "owner": Account.owner,
            "stage": Account.stage,
            "segment": Account.segment,
            "renewal_date": Account.renewal_date,
        }[key]
    order = column.desc() if sort.startswith("-") else column.asc()
    return query.order_by(order.nulls_last(), Account.account_id)


async def sparklines(
    session: AsyncSession, account_ids: list[str], start: date
) -> tuple[dict[str, list[ScoreHistory]], dict[str, int]]:
    """Score history since ``start`` (oldest first) and open alert counts, for a few accounts."""
    rows = await session.scalars(
        select(ScoreHistory)
        .where(ScoreHistory.account_id.in_(account_ids), ScoreHistory.day >= start)
        .order_by(ScoreHistory.account_id, ScoreHistory.day)
    )
    history: dict[str, list[ScoreHistory]] = {a: [] for a in account_ids}
    for row in rows:
        history[row.account_id].append(row)
    counts = await session.execute(
        select(Alert.account_id, func.count())
        .where(Alert.account_id.in_(account_ids), Alert.status.in_(OPEN_STATUSES))
        .group_by(Alert.account_id)
    )
    return history, {a: n for a, n in counts.tuples()}


# config and rules ------------------------------------------------------------------------


async def get_config(session: AsyncSession, key: str) -> dict[str, Any] | None:
    entry = await session.get(ConfigEntry, key)
    return entry.value if entry is not None else None


async def put_config(session: AsyncSession, key: str, value: dict[str, Any], now: datetime) -> None:
    await upsert(
        session,
        ConfigEntry,
        [{"key": key, "value": value, "updated_at": now}],
        keys=["key"],
        update=["value", "updated_at"],
    )


async def list_rules(session: AsyncSession, *, enabled_only: bool = False) -> list[AlertRule]:
    query = select(AlertRule).order_by(AlertRule.id)
    if enabled_only:
        query = query.where(AlertRule.enabled.is_(True))
    return list(await session.scalars(query))


async def delete_rule(session: AsyncSession, rule_id: str) -> bool:
    result = await session.execute(delete(AlertRule).where(AlertRule.id == rule_id))
    return bool(getattr(result, "rowcount", 0))


# alerts ----------------------------------------------------------------------------------


async def active_alerts(session: AsyncSession, ids: list[str]) -> list[Alert]:
    found: list[Alert] = []
    for chunk in _chunks(ids, 500):
        rows = await session.scalars(
            select(Alert).where(Alert.account_id.in_(chunk), Alert.status != "resolved")
        )
        found.extend(rows)
    return found


async def alert_history(
    session: AsyncSession, ids: list[str]
) -> dict[tuple[str, str], tuple[int, datetime | None]]:
    """Per (account, rule): how many alerts ever, and when the last one was resolved."""
    found: dict[tuple[str, str], tuple[int, datetime | None]] = {}
    for chunk in _chunks(ids, 500):
        result = await session.execute(
            select(Alert.account_id, Alert.rule_id, func.count(), func.max(Alert.resolved_at))
            .where(Alert.account_id.in_(chunk))
            .group_by(Alert.account_id, Alert.rule_id)
        )
        for a, r, n, last in result.tuples():
            found[(a, r)] = (int(n), last)
    return found


async def opened_on_by_owner(session: AsyncSession, start: datetime) -> dict[str | None, int]:
    """Alerts opened (not deferred) since ``start``, per owner: what the budget has spent."""
    result = await session.execute(
        select(Alert.owner, func.count())
        .where(Alert.opened_at >= start, Alert.published.is_(True))
        .group_by(Alert.owner)
    )
    return {owner: int(n) for owner, n in result.tuples()}


def alerts_query(
    *,
    status: str | None,
    account_id: str | None,
    owner: str | None,
    rule_id: str | None,
    severity: int | None,
    opened_since: date | None = None,
) -> Select[Any]:
    query = select(Alert)
    if opened_since is not None:
        query = query.where(Alert.opened_at >= datetime.combine(opened_since, time(), UTC))
    if status is not None:
        query = query.where(Alert.status == status)
    if account_id is not None:
        query = query.where(Alert.account_id == account_id)
    if owner is not None:
        query = query.where(Alert.owner == owner.lower())
    if rule_id is not None:
        query = query.where(Alert.rule_id == rule_id)
    if severity is not None:
        query = query.where(Alert.severity >= severity)
    return query.order_by(Alert.priority.desc(), Alert.opened_at.desc(), Alert.id)


async def deferred_alerts(session: AsyncSession, day: date) -> list[Alert]:
    """Alerts still deferred that were first deferred on or before ``day`` (carried over)."""
    rows = await session.scalars(
        select(Alert)
        .where(Alert.deferred_day <= day, Alert.status == "deferred")
        .order_by(Alert.owner, Alert.priority.desc())
    )
    return list(rows)
