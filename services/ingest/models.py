"""Ingest's tables: who belongs to which account, who is whom, contacts, parked events.

Everything here exists so that no well-formed call is refused for want of an account:
links and memberships come from ``group`` calls, aliases from ``alias`` and identify
calls, contacts from identify traits, and events nobody can attribute yet wait in
``pending_events`` until their user is linked.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Integer, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.audit import audit_log_table
from shared.db import UTCDateTime, new_metadata


class Base(DeclarativeBase):
    metadata = new_metadata()


# Every service's audit trail (shared/audit.py), here so its migrations know the table.
audit_log = audit_log_table(Base.metadata)


class UserAccount(Base):
    """The account a user (``u:<userId>`` or ``a:<anonymousId>``) was last grouped with.

    "Last" is by the group call's own time (``linked_at``), so a replayed or late group
    call does not move a user back.
    """

    __tablename__ = "user_accounts"

    user_key: Mapped[str] = mapped_column(String(300), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    linked_at: Mapped[datetime] = mapped_column(UTCDateTime())


class UserMembership(Base):
    """Every account a user was ever grouped with: the user is a contact of each."""

    __tablename__ = "user_memberships"

    user_key: Mapped[str] = mapped_column(String(300), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class UserAlias(Base):
    """Another id of a known user: ``a:<anonymousId>`` or a previous id -> ``u:<userId>``."""

    __tablename__ = "user_aliases"

    alias_key: Mapped[str] = mapped_column(String(300), primary_key=True)
    user_key: Mapped[str] = mapped_column(String(300), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Contact(Base):
    """A person's identify traits merged over time: each trait's latest value (by the
    identify's own timestamp, kept per trait in ``stamps``) wins."""

    __tablename__ = "contacts"

    user_key: Mapped[str] = mapped_column(String(300), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(300))
    traits: Mapped[dict[str, Any]] = mapped_column(JSON)
    stamps: Mapped[dict[str, str]] = mapped_column(JSON)
    message_id: Mapped[str] = mapped_column(String(100))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class PendingEvent(Base):
    """A usage event whose user has no account yet; published once the user is linked."""

    __tablename__ = "pending_events"
    __table_args__ = (UniqueConstraint("user_key", "message_id"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    user_key: Mapped[str] = mapped_column(String(300), index=True)
    message_id: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(100))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    parked_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    trace_id: Mapped[str] = mapped_column(String(200))


class ApiToken(Base):
    """One API token of the registry (ingest issues the SDK write keys, so it keeps them all).

    Only the token's id (its ``jti``) and metadata are stored, never the token itself.
    ``origin``: ``cli`` or ``api`` (made here), ``seen`` (made elsewhere, with
    ``shared.auth.create_token``, and recorded on first use), ``revoked`` (known only
    because its id was revoked).
    """

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    subject: Mapped[str] = mapped_column(String(200))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    origin: Mapped[str] = mapped_column(String(20))
    created_by: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True, index=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
