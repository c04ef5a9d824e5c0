"""Which account a user belongs to: kept in ingest's database, cached in process.

A ``group`` call ties a user to an account; later events of that user without a
``groupId`` land on that account. The cache is an LRU with a TTL so a user moved by a
``group`` call on another replica is picked up within a minute.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.ingest.models import UserAccount
from shared.db import upsert

T = TypeVar("T")
CACHE_TTL_SECONDS = 60.0
DATABASE_TROUBLE = (DBAPIError, PoolTimeout, OSError, TimeoutError)
"""What a database that is down, gone, locked or slow raises (the driver's errors are
wrapped in ``DBAPIError``; a refused connection can surface as ``OSError``)."""


class DirectoryError(RuntimeError):
    """The account database could not answer in time: the request should be retried."""


def user_key(user_id: str | None, anonymous_id: str | None) -> str:
    return f"u:{user_id}" if user_id is not None else f"a:{anonymous_id}"


class AccountDirectory:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        cache_size: int,
        timeout: float = 5.0,
    ) -> None:
        self._sessions = sessions
        self._timeout = timeout
        self._background: set[asyncio.Task[Any]] = set()
        self._cache: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._cache_size = cache_size

    def _cached(self, key: str, now: float) -> str | None:
        hit = self._cache.get(key)
        if hit is None or now - hit[1] > CACHE_TTL_SECONDS:
            return None
        self._cache.move_to_end(key)
        return hit[0]

    def _store(self, key: str, account_id: str, now: float) -> None:
        self._cache[key] = (account_id, now)
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def resolve(self, keys: set[str]) -> dict[str, str]:
        """Accounts for the given user keys; keys with no known account are left out."""
        now = time.monotonic()
        found: dict[str, str] = {}
        missing: list[str] = []
        for key in keys:
            account = self._cached(key, now)
            if account is None:
                missing.append(key)
            else:
                found[key] = account
        if missing:
            rows = await self._bounded(self._load(missing), "account lookup")
            for key, account in rows:
                found[key] = account
                self._store(key, account, now)
        return found

    async def _load(self, keys: list[str]) -> list[tuple[str, str]]:
        async with self._sessions() as session:
            rows = await session.execute(
                select(UserAccount.user_key, UserAccount.account_id).where(
                    UserAccount.user_key.in_(keys)
                )
            )
            return list(rows.tuples())

    async def remember(self, pairs: dict[str, str]) -> None:
        """Store user -> account links (committed before the events are acknowledged)."""
        if not pairs:
            return
        now = datetime.now(UTC)
        rows = [{"user_key": k, "account_id": v, "updated_at": now} for k, v in pairs.items()]
        await self._bounded(self._store_links(rows), "storing account links")
        mono = time.monotonic()
        for key, account in pairs.items():
            self._store(key, account, mono)

    async def _store_links(self, rows: list[dict[str, object]]) -> None:
        async with self._sessions() as session, session.begin():
            await upsert(
                session, UserAccount, rows, keys=["user_key"], update=["account_id", "updated_at"]
            )

    async def _bounded(self, work: Coroutine[Any, Any, T], what: str) -> T:
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
