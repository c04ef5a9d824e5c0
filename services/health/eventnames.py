"""Every event name seen is a metric: its rollup keys, and the bounded registry of names.

A name with its own metric rolls up as ``event:<slug>`` (events per day) and
``users:<slug>`` (distinct users per day). The slug is the name itself, or ``#`` and a
hash when the name would not fit the rollup column (63 characters) or could be taken
for a hash or for "other". At most ``cap`` names are registered per installation (the
``event_names`` table, so every replica agrees); events of any other name are counted
under ``event:*`` / ``users:*``. Names a metric of the config picks are registered
beyond the cap, so a configured metric always has rollups of its own.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.health.models import EventName
from shared.db import upsert
from shared.envelope import utcnow

OTHER = "*"
SLUG_MAX = 57  # "event:" / "users:" + 57 = 63, the rollup column's length
COUNT_PREFIX = "event:"
USERS_PREFIX = "users:"
# pg_advisory_xact_lock key of a registration: the cap holds across replicas
REGISTER_LOCK = 0x4556454E54  # "EVENT"
CACHE_MAX = 100_000  # names remembered per process (a flood of one-off names is forgotten)


def slug_of(name: str) -> str:
    if len(name) <= SLUG_MAX and name[:1] not in ("#", OTHER, "") and name.isprintable():
        return name
    return "#" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def count_key(slug: str) -> str:
    return COUNT_PREFIX + slug


def users_key(slug: str) -> str:
    return USERS_PREFIX + slug


def keys_of(slug: str) -> tuple[str, str]:
    """The rollup keys of a slug: (events per day, distinct users per day)."""
    return COUNT_PREFIX + slug, USERS_PREFIX + slug


class EventNames:
    """Which names have metrics of their own: the database's registry, cached per process.

    A name is looked up (and registered, while under the cap) the first time a batch
    carries it; after that the answer comes from memory. Once the cap is reached no
    row is ever removed, so a name counted as "other" stays "other" on every replica.
    """

    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, cap: int) -> None:
        self._sessions = sessions
        self._cap = cap
        self._known: dict[str, str] = {}  # name -> its slug, or OTHER

    @property
    def cap(self) -> int:
        return self._cap

    async def slugs(self, names: set[str], *, pinned: Iterable[str] = ()) -> dict[str, str]:
        """name -> the slug it rolls up under (OTHER beyond the cap)."""
        pinned = set(pinned)
        missing = {n for n in names | pinned if n not in self._known}
        missing |= {n for n in pinned if self._known.get(n) == OTHER}
        if missing:
            if len(self._known) > CACHE_MAX:
                self._known.clear()
            async with self._sessions() as session, session.begin():
                found = await register(session, missing, cap=self._cap, pinned=pinned)
            self._known.update(found)
        return {n: self._known[n] for n in names}


async def register(
    session: AsyncSession, names: set[str], *, cap: int, pinned: set[str] | None = None
) -> dict[str, str]:
    """Register ``names`` while fewer than ``cap`` are (``pinned`` ones in any case);
    returns name -> slug or OTHER. Registrations are serialised (PostgreSQL: an advisory
    lock held to the end of the transaction; SQLite: a write first, which takes the single
    write lock before the count is read), so concurrent replicas keep the cap."""
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": REGISTER_LOCK})
    else:
        await session.execute(text("UPDATE event_names SET slug = slug WHERE 1 = 0"))
    pinned = pinned or set()
    slugs = {n: slug_of(n) for n in names}
    rows = await session.scalars(
        select(EventName.slug).where(EventName.slug.in_(set(slugs.values())))
    )
    existing = set(rows)
    count = await session.scalar(select(func.count()).select_from(EventName)) or 0
    now: datetime = utcnow()
    out: dict[str, str] = {}
    new: list[dict[str, object]] = []
    # pinned names first, then by name: the same names win the last places on every run
    for name in sorted(names, key=lambda n: (n not in pinned, n)):
        slug = slugs[name]
        if slug in existing:
            out[name] = slug
        elif count < cap or name in pinned:
            new.append({"slug": slug, "name": name.replace("\x00", "\ufffd"), "created_at": now})
            existing.add(slug)
            count += 1
            out[name] = slug
        else:
            out[name] = OTHER
    await upsert(session, EventName, new, keys=["slug"], update=[])
    return out
