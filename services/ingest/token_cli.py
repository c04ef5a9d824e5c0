"""What ``uptake token create|list|revoke`` do: the registry in ingest's database, written
directly (``INGEST_DATABASE_URL``, else the SQLite file under ``UPTAKE_DATA_DIR``), and the
revocation announced on the broker (``KAFKA_BOOTSTRAP_SERVERS``) by the command itself."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.ingest import tokens
from services.ingest.token_schemas import TokenOut
from shared.auth import Ttl
from shared.db import create_engine, create_sessionmaker
from shared.kafka import Publisher, PublishError, wait_for_broker
from shared.migrations import upgrade
from shared.settings import BaseServiceSettings

T = TypeVar("T")
BROKER_TIMEOUT = 10.0


class RevokeFailed(RuntimeError):
    pass


def _with_registry(
    settings: BaseServiceSettings,
    work: Callable[[async_sessionmaker[AsyncSession]], Awaitable[T]],
) -> T:
    url = settings.database_url("ingest")
    if settings.auto_migrate:
        upgrade("ingest", url)  # a fresh install has no registry table yet

    async def run() -> T:
        engine = create_engine(url)
        try:
            return await work(create_sessionmaker(engine))
        finally:
            await engine.dispose()

    return asyncio.run(run())


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else "-"


def create_in_registry(
    settings: BaseServiceSettings, *, scopes: list[str], subject: str, ttl_seconds: Ttl
) -> tuple[str, str]:
    """The token and a line about it (id, scopes, expiry) for stderr."""

    async def work(sessions: async_sessionmaker[AsyncSession]) -> tokens.CreatedToken:
        return await tokens.create(
            sessions,
            secret=settings.secret,
            scopes=scopes,
            subject=subject,
            ttl_seconds=ttl_seconds,
            origin="cli",
            created_by="cli",
        )

    created = _with_registry(settings, work)
    row = created.row
    expires = _when(row.expires_at) if row.expires_at else "never"
    summary = f"token {row.id} for {row.subject!r}: {','.join(row.scopes)}; expires {expires}"
    return created.token, summary


def list_registry(settings: BaseServiceSettings, *, active_only: bool) -> list[TokenOut]:
    async def work(sessions: async_sessionmaker[AsyncSession]) -> list[TokenOut]:
        async with sessions() as session:
            rows = await tokens.list_tokens(session, include_revoked=not active_only)
        return [TokenOut.of(r) for r in rows]

    items = _with_registry(settings, work)
    return [t for t in items if t.status == "active"] if active_only else items


COLUMNS = ("ID", "SUBJECT", "SCOPES", "STATUS", "CREATED", "EXPIRES", "LAST USED", "ORIGIN", "KEY")


def _short(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M") if value is not None else "-"


def _row(t: TokenOut, when: Callable[[datetime | None], str] = _when) -> tuple[str, ...]:
    return (
        t.id,
        t.subject or "-",
        ",".join(t.scopes) or "-",
        t.status if t.status != "revoked" else f"revoked {when(t.revoked_at)}",
        when(t.created_at),
        when(t.expires_at) if t.expires_at else "never",
        when(t.last_used_at),
        t.origin,
        t.key_id or "-",
    )


def print_tokens(items: list[TokenOut], *, plain: bool) -> None:
    if plain:
        print("\t".join(COLUMNS))
        for t in items:
            print("\t".join(_row(t)))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(items)} token(s), times in UTC")
    table.add_column(COLUMNS[0], no_wrap=True, min_width=32)  # ids are copied whole
    for name in COLUMNS[1:]:
        folds = name in ("SUBJECT", "SCOPES")
        table.add_column(
            name, overflow="fold" if folds else "ellipsis", no_wrap=not folds, min_width=len(name)
        )
    for t in items:
        table.add_row(*_row(t, _short))
    Console().print(table)


def revoke_in_registry(settings: BaseServiceSettings, *, token_id: str) -> str:
    if not tokens.TOKEN_ID.match(token_id):
        raise ValueError("a token id is 1-64 letters, digits, '-' or '_' (uptake token list)")

    async def work(sessions: async_sessionmaker[AsyncSession]) -> str:
        now = datetime.now(UTC)
        try:
            await wait_for_broker(settings.kafka_bootstrap_servers, timeout=BROKER_TIMEOUT)
        except TimeoutError as exc:
            raise RevokeFailed(
                f"broker at {settings.kafka_bootstrap_servers} unreachable: nothing revoked"
            ) from exc
        publisher = Publisher(settings.kafka_bootstrap_servers, client_id="uptake-cli")
        await publisher.start()
        try:
            row, known = await tokens.revoke(sessions, publisher, token_id=token_id, now=now)
        except PublishError as exc:
            raise RevokeFailed(
                "revoked in the registry, but the broker did not acknowledge the "
                "announcement: run this again (ingest also re-announces it when it starts)"
            ) from exc
        finally:
            await publisher.stop()
        note = "" if known else " (not in the registry before: recorded now)"
        return f"token {row.id} revoked at {_when(row.revoked_at)}{note}"

    return _with_registry(settings, work)
