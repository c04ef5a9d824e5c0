"""The audit trail: every write and admin action on a service's REST API, in its own database.

One ``audit_log`` table per service (each service's migrations create it). A pure ASGI
middleware records each non-GET ``/v1`` request that reached a :func:`shared.auth.require_scope`
guard with a valid token: who (token subject and id), what (method, path, route name and
template, target id, a redacted summary of the body), when, and the answer's status. So
any such route is covered the day it is added, and the tracking firehose and the public
unsubscribe/tracking links (no guard: their own auth, or none) are not.

The row is written before the response leaves (a client that reads the trail right after
its write finds it). A failed write is logged loudly and counted, and the response goes out
as it was: the trail never turns a done action into a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

import orjson
import structlog
from prometheus_client import Counter
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    func,
    or_,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.auth import TokenClaims, token_from_header
from shared.background import BackgroundTask
from shared.db import UTCDateTime, new_metadata
from shared.ratelimit import SAFE_METHODS
from shared.redaction import summarize, withhold

log = structlog.get_logger(__name__)

AUDIT_WRITE_FAILURES = Counter(
    "uptake_audit_write_failures_total", "Audit rows that could not be written"
)
AUDIT_PRUNED = Counter("uptake_audit_pruned_total", "Audit rows deleted past their retention")
# Request bytes kept for the summary (a longer body is described by its size only): enough
# for the largest template or playbook a service takes, so big bodies keep their field names.
BODY_CAP = 1024 * 1024
RESPONSE_CAP = 64 * 1024  # response bytes held to find a created resource's id
WRITE_TIMEOUT = 5.0
PRUNE_INTERVAL = 3600.0


def audit_log_table(metadata: MetaData) -> Table:
    """The ``audit_log`` table in a service's metadata (so its migrations know it)."""
    return Table(
        "audit_log",
        metadata,
        Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("at", UTCDateTime(), nullable=False),
        Column("subject", String(255), nullable=False),
        Column("token_id", String(64), nullable=False),
        Column("method", String(10), nullable=False),
        Column("path", String(1000), nullable=False),
        Column("action", String(200), nullable=False),
        Column("route", String(300), nullable=False),
        Column("target", String(500), nullable=True),
        Column("status", Integer, nullable=False),
        Column("summary", JSON, nullable=True),
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_subject_at", "subject", "at"),
        Index("ix_audit_log_action_at", "action", "at"),
    )


AUDIT_LOG = audit_log_table(new_metadata())  # for queries: the same table in every service


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: datetime
    subject: str
    token_id: str
    method: str
    path: str
    action: str
    route: str
    target: str | None
    status: int
    summary: dict[str, Any] | None

    def row(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "subject": self.subject[:255],
            "token_id": self.token_id[:64],
            "method": self.method[:10],
            "path": self.path[:1000],
            "action": self.action[:200],
            "route": self.route[:300],
            "target": self.target[:500] if self.target is not None else None,
            "status": self.status,
            "summary": self.summary,
        }


async def write_entry(sessions: async_sessionmaker[AsyncSession], entry: AuditEntry) -> None:
    async with sessions() as session, session.begin():
        await session.execute(AUDIT_LOG.insert().values(entry.row()))


async def list_entries(
    session: AsyncSession,
    *,
    since: datetime | None,
    subject: str | None,
    action: str | None,
    limit: int,
    offset: int,
) -> tuple[list[dict[str, Any]], int]:
    """Newest first; ``action`` matches the route name or its ``METHOD /template``."""
    where = []
    if since is not None:
        where.append(AUDIT_LOG.c.at >= since)
    if subject is not None:
        where.append(AUDIT_LOG.c.subject == subject)
    if action is not None:
        where.append(or_(AUDIT_LOG.c.action == action, AUDIT_LOG.c.route == action))
    total = await session.scalar(select(func.count()).select_from(AUDIT_LOG).where(*where))
    rows = await session.execute(
        select(AUDIT_LOG)
        .where(*where)
        .order_by(AUDIT_LOG.c.at.desc(), AUDIT_LOG.c.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return [dict(r._mapping) for r in rows], int(total or 0)


async def prune(session: AsyncSession, *, older_than: datetime) -> int:
    result = await session.execute(delete(AUDIT_LOG).where(AUDIT_LOG.c.at < older_than))
    return int(getattr(result, "rowcount", 0) or 0)


class AuditPruner:
    """Deletes rows past ``AUDIT_RETENTION_DAYS``: once at start, then every hour."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        retention_days: int,
        interval: float = PRUNE_INTERVAL,
    ) -> None:
        self.sessions = sessions
        self.retention = timedelta(days=retention_days)
        self.interval = interval
        self._background = BackgroundTask()

    async def start(self) -> None:
        self._background.start("audit-pruner", self._run)

    async def stop(self) -> None:
        await self._background.stop()

    async def prune_once(self) -> int:
        cutoff = datetime.now(UTC) - self.retention
        async with self.sessions() as session, session.begin():
            deleted = await prune(session, older_than=cutoff)
        if deleted:
            AUDIT_PRUNED.inc(deleted)
            log.info("audit.pruned", rows=deleted, older_than=cutoff.isoformat())
        return deleted

    async def _run(self) -> None:
        while True:
            try:
                await self.prune_once()
            except Exception as exc:  # the next pass tries again
                log.error("audit.prune_failed", error=type(exc).__name__)
            await asyncio.sleep(self.interval)


def _target(path_params: dict[str, Any], response: bytes | None) -> str | None:
    """The path's ids (``/v1/alert-rules/{rule_id}`` -> the rule id), else a created
    resource's ``id`` (or ``email``) from the JSON answer."""
    if path_params:
        return "/".join(withhold(str(v)) for v in path_params.values())
    if not response:
        return None
    try:
        parsed = orjson.loads(response)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(parsed, dict):
        return None
    # the resource itself, else one it wraps ({"created": true, "task_group": {"id": ...}})
    for candidate in (parsed, *(v for v in parsed.values() if isinstance(v, dict))):
        for key in ("id", "email"):
            value = candidate.get(key)
            if isinstance(value, str | int) and not isinstance(value, bool):
                return withhold(str(value))
    return None


class _Exchange:
    """One audited request as it passes: the first body bytes, and the held response."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.body = bytearray()
        self.body_size = 0
        self.start: Message | None = None
        self.response = bytearray()
        self.flushed = False
        self.recorded = False

    def claims(self) -> TokenClaims | None:
        state = self.scope.get("state") or {}
        if state.get("rate_limited"):
            return None  # a refused flood is counted in metrics, not written row by row
        claims: TokenClaims | None = state.get("token_claims")
        return claims

    def entry(self, status: int, response: bytes | None) -> AuditEntry | None:
        claims = self.claims()
        if claims is None:
            return None
        scope = self.scope
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        token = token_from_header(headers.get("authorization"))
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        summary = summarize(
            bytes(self.body),
            content_type=headers.get("content-type", ""),
            body_size=self.body_size,
            query=query,
            known=(token,) if token else (),
        )
        return AuditEntry(
            at=datetime.now(UTC),
            subject=claims.subject,
            token_id=claims.token_id,
            method=scope["method"],
            path=withhold(scope["path"], known=(token,) if token else ()),
            action=getattr(route, "name", None) or "unmatched",
            route=f"{scope['method']} {template}",
            target=_target(scope.get("path_params") or {}, response),
            status=status,
            summary=summary or None,
        )


class AuditMiddleware:
    """Records audited requests (see the module docstring); passes the rest straight on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] in SAFE_METHODS
            or not scope["path"].startswith("/v1/")
        ):
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(scope)

        async def receive_wrapper() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunk = message.get("body", b"")
                exchange.body_size += len(chunk)
                room = BODY_CAP - len(exchange.body)
                if room > 0:
                    exchange.body += chunk[:room]
            return message

        async def send_wrapper(message: Message) -> None:
            if exchange.flushed:
                await send(message)
                return
            if message["type"] == "http.response.start":
                exchange.start = message
                return
            if message["type"] != "http.response.body" or exchange.start is None:
                await send(message)
                return
            exchange.response += message.get("body", b"")
            more = bool(message.get("more_body", False))
            if more and len(exchange.response) <= RESPONSE_CAP:
                return
            status = int(exchange.start["status"])
            answer = bytes(exchange.response) if not more and status < 300 else None
            await self._record(exchange, status, answer)
            exchange.flushed = True
            await send(exchange.start)
            await send(
                {"type": "http.response.body", "body": bytes(exchange.response), "more_body": more}
            )

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        except Exception:
            if not exchange.recorded:
                await self._record(exchange, 500, None)
            raise

    async def _record(self, exchange: _Exchange, status: int, response: bytes | None) -> None:
        exchange.recorded = True
        try:
            entry = exchange.entry(status, response)
            if entry is None:
                return
            runtime = getattr(exchange.scope["app"].state, "runtime", None)
            if runtime is None:
                raise RuntimeError("service not started (no database)")
            async with asyncio.timeout(WRITE_TIMEOUT):
                await write_entry(runtime.sessions, entry)
        except Exception as exc:
            AUDIT_WRITE_FAILURES.inc()
            _log_failure(exchange.scope, status, exc)


def _log_failure(scope: Scope, status: int, exc: Exception) -> None:
    """Loud, and without the summary or the SQL parameters: no secret reaches a log. The
    logger is fetched fresh (a cached one keeps the stream of an earlier
    ``configure_logging``), and a failing log stream still leaves the response alone."""
    with contextlib.suppress(Exception):
        structlog.get_logger(__name__).error(
            "audit.write_failed",
            method=scope["method"],
            route=getattr(scope.get("route"), "path", None),
            status=status,
            error=type(exc).__name__,
            consequence="this action is missing from GET /v1/audit",
        )
