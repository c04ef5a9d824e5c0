"""Playbooks' tables: templates, the team, what it knows of accounts, task groups, tasks."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.audit import audit_log_table
from shared.db import UTCDateTime, new_metadata


class Base(DeclarativeBase):
    metadata = new_metadata()
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


# Every service's audit trail (shared/audit.py), here so its migrations know the table.
audit_log = audit_log_table(Base.metadata)


OPEN_ONLY = text("status = 'open'")


class Playbook(Base):
    """A template; ``definition`` is the validated :class:`PlaybookTemplate` as JSON."""

    __tablename__ = "playbooks"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    phase: Mapped[str] = mapped_column(String(20))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    definition: Mapped[dict[str, Any]]
    version: Mapped[int] = mapped_column(Integer, default=1)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class LibrarySeed(Base):
    """Built-in playbooks already loaded once: a deleted one is not brought back."""

    __tablename__ = "library_seeds"

    playbook_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    seeded_at: Mapped[datetime]


class Csm(Base):
    __tablename__ = "csms"

    email: Mapped[str] = mapped_column(String(320), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    slack_id: Mapped[str | None] = mapped_column(String(100))
    team: Mapped[str] = mapped_column(String(100), default="default", index=True)
    capacity: Mapped[int] = mapped_column(Integer, default=25)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    auto_added: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class AssignmentCursor(Base):
    """The round-robin position of a team: the last CSM picked."""

    __tablename__ = "assignment_cursors"

    team: Mapped[str] = mapped_column(String(100), primary_key=True)
    last_email: Mapped[str] = mapped_column(String(320))


class Account(Base):
    """What accounts.v1 told us; the owner is the CSM's email."""

    __tablename__ = "accounts"

    account_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(300))
    plan: Mapped[str | None] = mapped_column(String(100))
    mrr: Mapped[float | None] = mapped_column(Float)
    owner: Mapped[str | None] = mapped_column(String(320), index=True)
    stage: Mapped[str | None] = mapped_column(String(100))
    segment: Mapped[str | None] = mapped_column(String(100))
    renewal_date: Mapped[date | None] = mapped_column(Date)
    updated_at: Mapped[datetime]


class Contact(Base):
    """A person at an account: the recipients of automated emails."""

    __tablename__ = "contacts"

    account_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    email: Mapped[str | None] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(300))
    role: Mapped[str | None] = mapped_column(String(100))
    # the ``primary: true`` trait: one of the account's main contacts (an email step's
    # ``primary`` audience), and when the account last identified this person
    is_primary: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    last_seen_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]


class TaskGroup(Base):
    """One run of a playbook for an account. At most one open per (account, playbook)."""

    __tablename__ = "task_groups"
    __table_args__ = (
        Index(
            "uq_task_groups_open",
            "account_id",
            "playbook_id",
            unique=True,
            sqlite_where=OPEN_ONLY,
            postgresql_where=OPEN_ONLY,
        ),
        Index("ix_task_groups_status_started", "status", "started_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(255), index=True)
    playbook_id: Mapped[str] = mapped_column(String(100), index=True)
    playbook_name: Mapped[str] = mapped_column(String(200))
    phase: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20))  # open, completed, exited, cancelled
    assignee: Mapped[str | None] = mapped_column(String(320), index=True)
    assignment_rule: Mapped[str] = mapped_column(String(20))
    trigger_kind: Mapped[str] = mapped_column(String(20))  # alert, lifecycle, manual
    trigger_key: Mapped[str] = mapped_column(String(400))
    exit_conditions: Mapped[list[Any]]
    context: Mapped[dict[str, Any]]
    started_at: Mapped[datetime]
    closed_at: Mapped[datetime | None]
    closed_reason: Mapped[str | None] = mapped_column(String(300))


class GroupTrigger(Base):
    """Every trigger a group took (its first and the ones it absorbed): the dedupe key."""

    __tablename__ = "group_triggers"

    account_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    playbook_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    trigger_key: Mapped[str] = mapped_column(String(400), primary_key=True)
    task_group_id: Mapped[str] = mapped_column(
        ForeignKey("task_groups.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(20))
    alert_id: Mapped[str | None] = mapped_column(String(255), index=True)
    resolved_at: Mapped[datetime | None]
    created_at: Mapped[datetime]


class GroupExitEvent(Base):
    """A product event name that ends an open group (``event_seen`` exit conditions)."""

    __tablename__ = "group_exit_events"
    __table_args__ = (Index("ix_group_exit_events_account_event", "account_id", "event"),)

    task_group_id: Mapped[str] = mapped_column(
        ForeignKey("task_groups.id", ondelete="CASCADE"), primary_key=True
    )
    event: Mapped[str] = mapped_column(String(200), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(255))


class Task(Base):
    """One step of a group: a task for a person, or an email/Slack step the scheduler sends."""

    __tablename__ = "tasks"
    __table_args__ = (
        UniqueConstraint("task_group_id", "step_key"),
        Index("ix_tasks_due_automated", "status", "automated", "send_after"),
        Index("ix_tasks_assignee_status", "assignee", "status"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    task_group_id: Mapped[str] = mapped_column(ForeignKey("task_groups.id", ondelete="CASCADE"))
    account_id: Mapped[str] = mapped_column(String(255), index=True)
    step_key: Mapped[str] = mapped_column(String(100))
    position: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(10))  # task, email, slack
    automated: Mapped[bool] = mapped_column(Boolean)
    title: Mapped[str] = mapped_column(String(300))
    description: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(20))  # open, done, skipped, cancelled
    assignee: Mapped[str | None] = mapped_column(String(320))
    due_at: Mapped[datetime]
    send_after: Mapped[datetime | None]
    # the end of a customer-facing step's review window (the CSM may skip it until then;
    # an alert-started group's step is sent only if one of its alerts is still open)
    review_until: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    detail: Mapped[str | None] = mapped_column(String(1000))
    template_id: Mapped[str | None] = mapped_column(String(200))
    recipients: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    from_owner: Mapped[bool] = mapped_column(Boolean, default=False)
    step_context: Mapped[dict[str, Any]]
    sent_at: Mapped[datetime | None]
    delivery_status: Mapped[str | None] = mapped_column(String(20))
    delivery_detail: Mapped[str | None] = mapped_column(String(1000))
    delivery_attempts: Mapped[int] = mapped_column(Integer, default=0)
    delivery_updated_at: Mapped[datetime | None]


class TaskComment(Base):
    __tablename__ = "task_comments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    author: Mapped[str] = mapped_column(String(320))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime]
