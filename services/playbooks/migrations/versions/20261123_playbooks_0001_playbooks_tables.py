"""playbooks tables

Revision ID: playbooks_0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "playbooks_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "accounts",
        sa.Column("account_id", sa.String(length=255), nullable=False),
        sa.Column("name", sa.String(length=300), nullable=True),
        sa.Column("plan", sa.String(length=100), nullable=True),
        sa.Column("mrr", sa.Float(), nullable=True),
        sa.Column("owner", sa.String(length=320), nullable=True),
        sa.Column("stage", sa.String(length=100), nullable=True),
        sa.Column("segment", sa.String(length=100), nullable=True),
        sa.Column("renewal_date", sa.Date(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_accounts")),
    )
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_accounts_owner"), ["owner"], unique=False)

    op.create_table(
        "assignment_cursors",
        sa.Column("team", sa.String(length=100), nullable=False),
        sa.Column("last_email", sa.String(length=320), nullable=False),
        sa.PrimaryKeyConstraint("team", name=op.f("pk_assignment_cursors")),
    )
    op.create_table(
        "contacts",
        sa.Column("account_id", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("name", sa.String(length=300), nullable=True),
        sa.Column("role", sa.String(length=100), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "user_id", name=op.f("pk_contacts")),
    )
    op.create_table(
        "csms",
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("slack_id", sa.String(length=100), nullable=True),
        sa.Column("team", sa.String(length=100), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("auto_added", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("email", name=op.f("pk_csms")),
    )
    with op.batch_alter_table("csms", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_csms_team"), ["team"], unique=False)

    op.create_table(
        "library_seeds",
        sa.Column("playbook_id", sa.String(length=100), nullable=False),
        sa.Column("seeded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("playbook_id", name=op.f("pk_library_seeds")),
    )
    op.create_table(
        "playbooks",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("phase", sa.String(length=20), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("builtin", sa.Boolean(), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_playbooks")),
    )
    op.create_table(
        "task_groups",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=255), nullable=False),
        sa.Column("playbook_id", sa.String(length=100), nullable=False),
        sa.Column("playbook_name", sa.String(length=200), nullable=False),
        sa.Column("phase", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("assignee", sa.String(length=320), nullable=True),
        sa.Column("assignment_rule", sa.String(length=20), nullable=False),
        sa.Column("trigger_kind", sa.String(length=20), nullable=False),
        sa.Column("trigger_key", sa.String(length=400), nullable=False),
        sa.Column("exit_conditions", sa.JSON(), nullable=False),
        sa.Column("context", sa.JSON(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_reason", sa.String(length=300), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_groups")),
    )
    with op.batch_alter_table("task_groups", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_task_groups_account_id"), ["account_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_task_groups_assignee"), ["assignee"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_task_groups_playbook_id"), ["playbook_id"], unique=False
        )
        batch_op.create_index(
            "ix_task_groups_status_started", ["status", "started_at"], unique=False
        )
        batch_op.create_index(
            "uq_task_groups_open",
            ["account_id", "playbook_id"],
            unique=True,
            sqlite_where=sa.text("status = 'open'"),
            postgresql_where=sa.text("status = 'open'"),
        )

    op.create_table(
        "group_exit_events",
        sa.Column("task_group_id", sa.String(length=32), nullable=False),
        sa.Column("event", sa.String(length=200), nullable=False),
        sa.Column("account_id", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_group_id"],
            ["task_groups.id"],
            name=op.f("fk_group_exit_events_task_group_id_task_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_group_id", "event", name=op.f("pk_group_exit_events")),
    )
    with op.batch_alter_table("group_exit_events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_group_exit_events_account_event", ["account_id", "event"], unique=False
        )

    op.create_table(
        "group_triggers",
        sa.Column("account_id", sa.String(length=255), nullable=False),
        sa.Column("playbook_id", sa.String(length=100), nullable=False),
        sa.Column("trigger_key", sa.String(length=400), nullable=False),
        sa.Column("task_group_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("alert_id", sa.String(length=255), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_group_id"],
            ["task_groups.id"],
            name=op.f("fk_group_triggers_task_group_id_task_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "account_id", "playbook_id", "trigger_key", name=op.f("pk_group_triggers")
        ),
    )
    with op.batch_alter_table("group_triggers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_group_triggers_alert_id"), ["alert_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_group_triggers_task_group_id"), ["task_group_id"], unique=False
        )

    op.create_table(
        "tasks",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("task_group_id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=255), nullable=False),
        sa.Column("step_key", sa.String(length=100), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=10), nullable=False),
        sa.Column("automated", sa.Boolean(), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("assignee", sa.String(length=320), nullable=True),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("send_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("detail", sa.String(length=1000), nullable=True),
        sa.Column("template_id", sa.String(length=200), nullable=True),
        sa.Column("recipients", sa.JSON(), nullable=True),
        sa.Column("from_owner", sa.Boolean(), nullable=False),
        sa.Column("step_context", sa.JSON(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivery_status", sa.String(length=20), nullable=True),
        sa.Column("delivery_detail", sa.String(length=1000), nullable=True),
        sa.Column("delivery_attempts", sa.Integer(), nullable=False),
        sa.Column("delivery_updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["task_group_id"],
            ["task_groups.id"],
            name=op.f("fk_tasks_task_group_id_task_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
        sa.UniqueConstraint(
            "task_group_id", "step_key", name=op.f("uq_tasks_task_group_id_step_key")
        ),
    )
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_tasks_account_id"), ["account_id"], unique=False)
        batch_op.create_index("ix_tasks_assignee_status", ["assignee", "status"], unique=False)
        batch_op.create_index(
            "ix_tasks_due_automated", ["status", "automated", "send_after"], unique=False
        )

    op.create_table(
        "task_comments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("task_id", sa.String(length=32), nullable=False),
        sa.Column("author", sa.String(length=320), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_task_comments_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_comments")),
    )
    with op.batch_alter_table("task_comments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_task_comments_task_id"), ["task_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("task_comments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_task_comments_task_id"))

    op.drop_table("task_comments")
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_tasks_due_automated")
        batch_op.drop_index("ix_tasks_assignee_status")
        batch_op.drop_index(batch_op.f("ix_tasks_account_id"))

    op.drop_table("tasks")
    with op.batch_alter_table("group_triggers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_group_triggers_task_group_id"))
        batch_op.drop_index(batch_op.f("ix_group_triggers_alert_id"))

    op.drop_table("group_triggers")
    with op.batch_alter_table("group_exit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_group_exit_events_account_event")

    op.drop_table("group_exit_events")
    with op.batch_alter_table("task_groups", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_task_groups_open",
            sqlite_where=sa.text("status = 'open'"),
            postgresql_where=sa.text("status = 'open'"),
        )
        batch_op.drop_index("ix_task_groups_status_started")
        batch_op.drop_index(batch_op.f("ix_task_groups_playbook_id"))
        batch_op.drop_index(batch_op.f("ix_task_groups_assignee"))
        batch_op.drop_index(batch_op.f("ix_task_groups_account_id"))

    op.drop_table("task_groups")
    op.drop_table("playbooks")
    op.drop_table("library_seeds")
    with op.batch_alter_table("csms", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_csms_team"))

    op.drop_table("csms")
    op.drop_table("contacts")
    op.drop_table("assignment_cursors")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_accounts_owner"))

    op.drop_table("accounts")
