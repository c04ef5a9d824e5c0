"""The token registry: every API token's id, subject, scopes, dates and last use.

Both ``uptake token ...`` (writing ingest's database directly) and ``/v1/tokens`` go
through here. A token string is handed out once and never stored: the registry keeps its
id (``jti``) and metadata. Revoking marks the row, then announces the id on
``auth.revocations.v1``; the database is the record, and ingest re-announces every
revocation the topic lacks when it starts (:mod:`services.ingest.token_upkeep`), so a
revocation whose announcement failed, or a broker that lost its data, heals itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.ingest.models import ApiToken
from shared.auth import IssuedToken, TokenClaims, Ttl, issue_token
from shared.db import upsert
from shared.kafka import Publisher
from shared.revocations import announce, revocation_message
from shared.tokenuse import SUBJECT_MAX, TokenUse, from_epoch

TOKEN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True, slots=True)
class CreatedToken:
    token: str  # shown once, never stored
    row: ApiToken


async def record_issued(
    session: AsyncSession, *, issued: IssuedToken, origin: str, created_by: str | None
) -> ApiToken:
    claims = issued.claims
    row = ApiToken(
        id=claims.token_id,
        subject=claims.subject,
        scopes=list(claims.issued),
        key_id=claims.key_id,
        origin=origin,
        created_by=created_by,
        created_at=from_epoch(claims.issued_at) or datetime.now(UTC),
        expires_at=from_epoch(claims.expires_at),
    )
    session.add(row)
    await session.flush()
    return row


async def list_tokens(session: AsyncSession, *, include_revoked: bool = True) -> list[ApiToken]:
    query = select(ApiToken).order_by(ApiToken.created_at, ApiToken.id)
    if not include_revoked:
        query = query.where(ApiToken.revoked_at.is_(None))
    return list((await session.scalars(query)).all())


async def mark_revoked(
    session: AsyncSession, *, token_id: str, at: datetime
) -> tuple[ApiToken, bool]:
    """Set ``revoked_at`` (the first revocation's time stays). An id the registry does not
    know (a token made before it) gets a row of its own, so the revocation is kept.
    Returns the row and whether the id was known before."""
    row = await session.get(ApiToken, token_id, with_for_update=True)
    known = row is not None
    if row is None:
        row = ApiToken(
            id=token_id, subject="", scopes=[], origin="revoked", created_at=at, revoked_at=at
        )
        session.add(row)
    elif row.revoked_at is None:
        row.revoked_at = at
    await session.flush()
    return row, known


async def revoked_unexpired(session: AsyncSession, *, now: datetime) -> list[ApiToken]:
    """What must stay refused: revoked tokens that have not expired anyway."""
    query = select(ApiToken).where(
        ApiToken.revoked_at.is_not(None),
        or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > now),
    )
    return list((await session.scalars(query)).all())


async def record_uses(session: AsyncSession, uses: list[TokenUse]) -> None:
    """Move each token's ``last_used_at`` forward; a token made outside the registry
    (``create_token`` in code, or before the registry existed) gets its row on first use."""
    for use in uses:
        used_at = datetime.fromtimestamp(use.used_at, UTC)
        claims = use.claims
        result = await session.execute(
            update(ApiToken)
            .where(
                ApiToken.id == claims.token_id,
                or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at < used_at),
            )
            .values(last_used_at=used_at)
        )
        if getattr(result, "rowcount", 0):
            continue
        await upsert(session, ApiToken, [_seen_row(claims, used_at)], keys=["id"])


def _seen_row(claims: TokenClaims, used_at: datetime) -> dict[str, object]:
    return {
        "id": claims.token_id[:64],
        "subject": claims.subject[:SUBJECT_MAX],
        "scopes": list(claims.issued),
        "key_id": claims.key_id,
        "origin": "seen",
        "created_by": None,
        "created_at": from_epoch(claims.issued_at) or used_at,
        "expires_at": from_epoch(claims.expires_at),
        "last_used_at": used_at,
    }


async def create(
    sessions: async_sessionmaker[AsyncSession],
    *,
    secret: str,
    scopes: list[str],
    subject: str,
    ttl_seconds: Ttl,
    origin: str,
    created_by: str | None,
) -> CreatedToken:
    """Sign a token and record it; the token is returned only if the row was committed."""
    issued = issue_token(secret, scopes=scopes, subject=subject, ttl_seconds=ttl_seconds)
    async with sessions() as session, session.begin():
        row = await record_issued(session, issued=issued, origin=origin, created_by=created_by)
    return CreatedToken(token=issued.token, row=row)


async def revoke(
    sessions: async_sessionmaker[AsyncSession],
    publisher: Publisher,
    *,
    token_id: str,
    now: datetime | None = None,
) -> tuple[ApiToken, bool]:
    """Record the revocation, then announce it (raises PublishError if the broker does
    not acknowledge: the row stays revoked, and a retry announces it again)."""
    now = now or datetime.now(UTC)
    async with sessions() as session, session.begin():
        row, known = await mark_revoked(session, token_id=token_id, at=now)
    assert row.revoked_at is not None
    await announce(
        publisher,
        [revocation_message(row.id, revoked_at=row.revoked_at, expires_at=row.expires_at)],
    )
    return row, known
