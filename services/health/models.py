"""Health's tables: account registry, rollups and their dedupe marks, scores, rules, alerts.

Every consumed message leaves a ``seen_messages`` row in the same transaction as its
effect, which is what makes replays change nothing.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.audit import audit_log_table
from shared.db import new_metadata

BigId = BigInteger().with_variant(Integer, "sqlite")
Json = JSON()


class Base(DeclarativeBase):
    metadata = new_metadata()


# Every service's audit trail (shared/audit.py), here so its migrations know the table.
audit_log = audit_log_table(Base.metadata)


class Account(Base):
    """What health knows of an account: traits from ``accounts.v1`` and PUT, usage dates."""

    __tablename__ = "accounts"

    account_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(300))
    plan: Mapped[str | None] = mapped_column(String(300))
    mrr: Mapped[float | None] = mapped_column(Float)
    owner: Mapped[str | None] = mapped_column(String(320), index=True)
    stage: Mapped[str | None] = mapped_column(String(300))
    segment: Mapped[str | None] = mapped_column(String(300))
    renewal_date: Mapped[date | None] = mapped_column(Date)
    traits: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    first_seen: Mapped[date | None] = mapped_column(Date)
    last_active: Mapped[date | None] = mapped_column(Date)
    previous_owner: Mapped[str | None] = mapped_column(String(320))
    owner_changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # when the stage last changed; None = the first stage known, held since first seen
    stage_changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    traits_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # churned | None (active): the latest churn or reactivation outcome (``outcomes``)
    status: Mapped[str | None] = mapped_column(String(20), index=True)
    churned_at: Mapped[date | None] = mapped_column(Date)
    churn_reason: Mapped[str | None] = mapped_column(String(500))
    dirty_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    # no alert opens, changes or resolves for the account before this (wall clock): set a
    # settle delay past the last backdated event or backlog batch that touched it
    settled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Contact(Base):
    __tablename__ = "contacts"

    account_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(300), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(300))
    role: Mapped[str | None] = mapped_column(String(300))
    traits: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OwnerChange(Base):
    """Every change of CSM with its date: it feeds the owner-changed rule."""

    __tablename__ = "owner_changes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(String(255), index=True)
    previous_owner: Mapped[str | None] = mapped_column(String(320))
    owner: Mapped[str | None] = mapped_column(String(320))
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    source: Mapped[str] = mapped_column(String(100))


class SeenMessage(Base):
    """A consumed message's dedupe key (``data.message_id``), per account."""

    __tablename__ = "seen_messages"

    account_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(300), primary_key=True)


class Rollup(Base):
    """One metric of one account on one (UTC) day."""

    __tablename__ = "rollups"

    account_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    metric: Mapped[str] = mapped_column(String(63), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    value: Mapped[float] = mapped_column(Float)
    last_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_rollups_day", "day"),)


class RollupUser(Base):
    """Who was active, for ``distinct_users`` metrics (a set, so replays are harmless)."""

    __tablename__ = "rollup_users"

    account_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    metric: Mapped[str] = mapped_column(String(63), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    user_key: Mapped[str] = mapped_column(String(300), primary_key=True)


class EventName(Base):
    """An event name with rollups of its own (``event:<slug>`` counts, ``users:<slug>``
    distinct users). At most ``HEALTH_MAX_EVENT_METRICS`` rows; names beyond the cap are
    counted under ``event:*`` / ``users:*`` ("other"). Registered here, not in memory, so
    every replica agrees on which names have their own metric."""

    __tablename__ = "event_names"

    slug: Mapped[str] = mapped_column(String(57), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Outcome(Base):
    """What became of an account: churned, renewed, downgraded, upgraded, reactivated.

    One row per (account, type, day): recording the same outcome again changes nothing.
    ``mrr``, ``plan`` and ``segment`` are the account's when it was recorded (MRR lost).
    """

    __tablename__ = "outcomes"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(20))
    at: Mapped[date] = mapped_column(Date, index=True)
    reason: Mapped[str | None] = mapped_column(String(500))
    source: Mapped[str] = mapped_column(String(20))  # group (accounts.v1) | api
    mrr: Mapped[float | None] = mapped_column(Float)
    plan: Mapped[str | None] = mapped_column(String(300))
    segment: Mapped[str | None] = mapped_column(String(300))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index("uq_outcomes_account_type_at", "account_id", "type", "at", unique=True),
    )


class Score(Base):
    """The current score of an account."""

    __tablename__ = "scores"

    account_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    score: Mapped[float] = mapped_column(Float, index=True)
    band: Mapped[str] = mapped_column(String(10), index=True)
    change: Mapped[float] = mapped_column(Float, default=0.0)  # vs a week before
    components: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list)
    as_of: Mapped[date] = mapped_column(Date)
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ScoreHistory(Base):
    """One score per account per as-of day (a recompute on the same day overwrites it)."""

    __tablename__ = "score_history"

    account_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    score: Mapped[float] = mapped_column(Float)
    band: Mapped[str] = mapped_column(String(10))
    components: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list)
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AlertRule(Base):
    __tablename__ = "alert_rules"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    type: Mapped[str] = mapped_column(String(50))
    name: Mapped[str] = mapped_column(String(200))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    severity: Mapped[int] = mapped_column(Integer, default=3)
    cooldown_days: Mapped[int] = mapped_column(Integer, default=7)
    params: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Alert(Base):
    """One alert; at most one not-resolved per (account, rule) — a partial unique index."""

    __tablename__ = "alerts"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(255))
    rule_id: Mapped[str] = mapped_column(String(100))
    rule_type: Mapped[str] = mapped_column(String(50))
    seq: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), index=True)
    severity: Mapped[int] = mapped_column(Integer)
    priority: Mapped[float] = mapped_column(Float)
    owner: Mapped[str | None] = mapped_column(String(320), index=True)
    title: Mapped[str] = mapped_column(String(300))
    reason: Mapped[str] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    published: Mapped[bool] = mapped_column(Boolean, default=False)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    acknowledged_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    snoozed_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    resolved_by: Mapped[str | None] = mapped_column(String(20))
    deferred_day: Mapped[date | None] = mapped_column(Date)

    __table_args__ = (
        Index("ix_alerts_account_rule", "account_id", "rule_id"),
        Index(
            "uq_alerts_one_active",
            "account_id",
            "rule_id",
            unique=True,
            postgresql_where=text("status <> 'resolved'"),
            sqlite_where=text("status <> 'resolved'"),
        ),
    )


class ConfigEntry(Base):
    """Runtime configuration set over REST (metrics, alert budget), overriding the YAML."""

    __tablename__ = "config"

    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(Json)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OutboxMessage(Base):
    """A message to publish, written in the transaction that caused it (publish after commit)."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    topic: Mapped[str] = mapped_column(String(200))
    key: Mapped[bytes] = mapped_column(LargeBinary)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ScoreModel(Base):
    """A fitted health model, one row per fit (versioned by id). Which one scores is the
    ``score_model`` config entry, so every replica uses the same."""

    __tablename__ = "score_models"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    as_of: Mapped[date] = mapped_column(Date)
    horizon_days: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[list[str]] = mapped_column(Json)  # rollup keys the features read
    params: Mapped[dict[str, Any]] = mapped_column(Json)  # FittedModel.params()
    evaluation: Mapped[dict[str, Any]] = mapped_column(Json)  # held-out AUCs, counts
