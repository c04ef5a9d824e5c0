"""``/v1/tokens`` request and response bodies."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.ingest.models import ApiToken
from shared.auth import Scope, parse_ttl

TokenStatus = Literal["active", "expired", "revoked"]


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scopes: list[Scope] = Field(min_length=1, max_length=4)
    subject: str = Field(default="uptake", min_length=1, max_length=200)
    ttl: str | None = Field(
        default=None,
        description="How long until it expires: 90d, 12h, 30m, 2w, 3600s, or 'never'. "
        "Default: 90d, except for ingest-only write keys (never).",
        examples=["90d"],
    )

    @field_validator("ttl")
    @classmethod
    def _ttl_parses(cls, value: str | None) -> str | None:
        if value is not None:
            parse_ttl(value)
        return value

    @field_validator("subject")
    @classmethod
    def _subject_printable(cls, value: str) -> str:
        if not value.strip() or not value.isprintable():
            raise ValueError("subject must be printable text")
        return value


class TokenOut(BaseModel):
    id: str
    subject: str
    scopes: list[str]
    status: TokenStatus
    origin: str = Field(
        description="cli, api, seen (made elsewhere, recorded on first use), "
        "revoked (known only by its revoked id)"
    )
    key_id: str | None
    created_by: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, row: ApiToken, *, now: datetime | None = None) -> TokenOut:
        now = now or datetime.now(UTC)
        status: TokenStatus = "active"
        if row.revoked_at is not None:
            status = "revoked"
        elif row.expires_at is not None and row.expires_at <= now:
            status = "expired"
        return cls(
            id=row.id,
            subject=row.subject,
            scopes=list(row.scopes),
            status=status,
            origin=row.origin,
            key_id=row.key_id,
            created_by=row.created_by,
            created_at=row.created_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            last_used_at=row.last_used_at,
        )


class TokenCreated(TokenOut):
    token: str = Field(description="The token itself: shown this once, never stored")


class TokenList(BaseModel):
    count: int
    items: list[TokenOut]


class TokenRevokedOut(TokenOut):
    known: bool = Field(description="false: the registry had no record of this id before")
