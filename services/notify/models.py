"""Notify's tables: the delivery log, the event outbox, suppressions, templates, engagement.

Times are stored in UTC; :class:`UTCDateTime` gives them back timezone-aware on SQLite too.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.audit import audit_log_table
from shared.db import UTCDateTime, new_metadata


class Base(DeclarativeBase):
    metadata = new_metadata()


# Every service's audit trail (shared/audit.py), here so its migrations know the table.
audit_log = audit_log_table(Base.metadata)


# Delivery statuses. ``queued``/``retrying``/``deferred`` wait for ``next_attempt_at``;
# ``sending`` holds a lease; the rest are final.
WAITING = ("queued", "retrying", "deferred")
FINAL = ("sent", "failed", "suppressed")


class Delivery(Base):
    """One message to one recipient; (idempotency_key, recipient_key) makes it once."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("idempotency_key", "recipient_key"),
        Index("ix_deliveries_due", "status", "next_attempt_at"),
        Index("ix_deliveries_recipient_sent", "recipient_key", "sent_at"),
        Index("ix_deliveries_account", "account_id", "created_at"),
        Index("ix_deliveries_recipient_capped", "recipient_key", "capped_at"),
        Index("ix_deliveries_account_capped", "account_id", "capped_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(300))
    recipient_key: Mapped[str] = mapped_column(String(320))
    account_id: Mapped[str] = mapped_column(String(255))
    channel: Mapped[str] = mapped_column(String(16))
    template_id: Mapped[str] = mapped_column(String(100))
    recipient: Mapped[str | None] = mapped_column(String(320))
    recipient_name: Mapped[str | None] = mapped_column(String(300))
    contact_id: Mapped[str | None] = mapped_column(String(255))
    recipient_role: Mapped[str | None] = mapped_column(String(100))
    context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    from_name: Mapped[str | None] = mapped_column(String(300))
    reply_to: Mapped[str | None] = mapped_column(String(320))
    task_group_id: Mapped[str | None] = mapped_column(String(255))
    step_key: Mapped[str | None] = mapped_column(String(255))
    automated: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    deferrals: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # claimed again while still ``sending``: its process died mid-send, the provider may
    # already have the message (Slack is asked before posting again)
    resumed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    last_error: Mapped[str | None] = mapped_column(Text)
    provider_response: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(400))
    request_envelope: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # when this automated email took its place under the frequency caps (set in the same
    # transaction that checked them, before the send; cleared when it fails for good)
    capped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    clicked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class CapLock(Base):
    """One row per capped key (``account:<id>``, ``contact:<recipient key>``): the cap
    check locks it (an upsert: a row lock on PostgreSQL, the write lock on SQLite), so two
    replicas cannot both count the same free slot and both send."""

    __tablename__ = "cap_locks"

    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    touched_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OutboxEvent(Base):
    """A Kafka message stored with the change that caused it; the relay publishes it."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_pending", "published_at", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(255))
    key: Mapped[bytes | None] = mapped_column(LargeBinary)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[list[list[str]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Suppression(Base):
    """An address that must not be emailed (unsubscribed, bounced, or added by hand)."""

    __tablename__ = "suppressions"

    email: Mapped[str] = mapped_column(String(320), primary_key=True)
    reason: Mapped[str] = mapped_column(String(40))
    note: Mapped[str | None] = mapped_column(Text)
    account_id: Mapped[str | None] = mapped_column(String(255))
    delivery_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Template(Base):
    """A custom template, or an override of a built-in one with the same id."""

    __tablename__ = "templates"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(300))
    channel: Mapped[str] = mapped_column(String(16))
    description: Mapped[str | None] = mapped_column(Text)
    subject: Mapped[str | None] = mapped_column(Text)
    html: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str | None] = mapped_column(Text)
    blocks: Mapped[list[Any] | None] = mapped_column(JSON)
    sample_context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Engagement(Base):
    """First open / first click per link of a delivery: the dedupe mark for engagement events."""

    __tablename__ = "engagements"
    __table_args__ = (UniqueConstraint("delivery_id", "kind", "url_hash"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))
    url_hash: Mapped[str] = mapped_column(String(64))
    url: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
