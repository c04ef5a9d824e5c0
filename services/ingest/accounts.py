"""Which account a user belongs to: kept in ingest's database, cached in process.

A ``group`` call ties a user to an account; later events of that user without a
``groupId`` land on that account. An ``alias`` call, or an identify carrying both
``userId`` and ``anonymousId``, ties another id to the user, so events sent under it
land there too. The cache is an LRU with a TTL so a user moved by a ``group`` call on
another replica is picked up within a minute; a known link costs no database work.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.ingest import repository as repo

T = TypeVar("T")
CACHE_TTL_SECONDS = 60.0
DATABASE_TROUBLE = (DBAPIError, PoolTimeout, OSError, TimeoutError)
"""What a database that is down, gone, locked or slow raises (the driver's errors are
wrapped in ``DBAPIError``; a refused connection can surface as ``OSError``)."""


class DirectoryError(RuntimeError):
    """The account database could not answer in time: the request should be retried."""


def user_key(user_id: str | None, anonymous_id: str | None) -> str:
    return f"u:{user_id}" if user_id is not None else f"a:{anonymous_id}"


@dataclass(slots=True)
class Resolution:
    """What the directory knows of some user keys."""

    accounts: dict[str, str] = field(default_factory=dict)  # key -> account (maybe via alias)
    aliases: dict[str, str] = field(default_factory=dict)  # alias key -> user key


class _Lru:
    def __init__(self, size: int) -> None:
        self._items: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._size = size

    def get(self, key: str, now: float) -> str | None:
        hit = self._items.get(key)
        if hit is None or now - hit[1] > CACHE_TTL_SECONDS:
            return None
        self._items.move_to_end(key)
        return hit[0]

    def put(self, key: str, value: str, now: float) -> None:
        self._items[key] = (value, now)
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    def drop(self, key: str) -> None:
        self._items.pop(key, None)


class AccountDirectory:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        cache_size: int,
        timeout: float = 5.0,
    ) -> None:
        self.sessions = sessions
        self._timeout = timeout
        self._background: set[asyncio.Task[Any]] = set()
        self._links = _Lru(cache_size)
        self._aliases = _Lru(cache_size)

    def cached(self, key: str) -> str | None:
        """The account of ``key`` if the cache knows it (directly or through an alias)."""
        now = time.monotonic()
        account = self._links.get(key, now)
        if account is None:
            alias = self._aliases.get(key, now)
            if alias is not None:
                account = self._links.get(alias, now)
        return account

    async def resolve(self, keys: set[str]) -> Resolution:
        """Accounts for the given user keys; keys with no known account are left out."""
        now = time.monotonic()
        out = Resolution()
        missing: list[str] = []
        for key in keys:
            account = self.cached(key)
            if account is None:
                missing.append(key)
            else:
                out.accounts[key] = account
        if missing:
            direct, aliased = await self.bounded(self._load(missing), "account lookup")
            for key, account in direct.items():
                out.accounts[key] = account
                self._links.put(key, account, now)
            for alias, (user, account) in aliased.items():
                out.aliases[alias] = user
                self._aliases.put(alias, user, now)
                if account is not None:
                    out.accounts[alias] = account
                    self._links.put(user, account, now)
        return out

    async def _load(
        self, keys: list[str]
    ) -> tuple[dict[str, str], dict[str, tuple[str, str | None]]]:
        async with self.sessions() as session:
            return await repo.load_links(session, keys)

    def learned(
        self, *, links: dict[str, str], stale: Iterable[str], aliases: dict[str, str]
    ) -> None:
        """What a committed request stored: links written, links it lost to a newer
        group call (dropped, so the next lookup reads the winner), aliases."""
        now = time.monotonic()
        for key, account in links.items():
            self._links.put(key, account, now)
        for key in stale:
            self._links.drop(key)
        for alias, user in aliases.items():
            self._aliases.put(alias, user, now)

    async def write(self, work: Callable[[AsyncSession], Awaitable[T]], what: str) -> T:
        """``work`` in one transaction, bounded like every other database call."""

        async def run() -> T:
            async with self.sessions() as session, session.begin():
                return await work(session)

        return await self.bounded(run(), what)

    async def bounded(self, work: Coroutine[Any, Any, T], what: str) -> T:
        """``work`` within the timeout, its database trouble as :class:`DirectoryError`.

        On timeout the work is left to finish in the background rather than cancelled:
        a cancelled session still waits for its rollback, which a locked or stalled
        database would hold up as long as the query itself.
        """
        task = asyncio.ensure_future(work)
        try:
            return await asyncio.wait_for(asyncio.shield(task), self._timeout)
        except TimeoutError as exc:
            if task.done():  # the driver's own timeout
                raise DirectoryError(f"{what} failed: {exc!r}"[:500]) from exc
            self._background.add(task)
            task.add_done_callback(self._settled)
            raise DirectoryError(f"{what}: no answer within {self._timeout} s") from None
        except DATABASE_TROUBLE as exc:
            raise DirectoryError(f"{what} failed: {exc!r}"[:500]) from exc

    def _settled(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: it was answered with a 503 already
