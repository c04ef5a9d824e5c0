"""contacts, aliases, memberships and parked events; links ordered by the group call's time

Revision ID: ingest_0002
Revises: ingest_0001
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "ingest_0002"
down_revision: str | None = "ingest_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("user_accounts") as batch:
        batch.add_column(sa.Column("linked_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE user_accounts SET linked_at = updated_at")
    with op.batch_alter_table("user_accounts") as batch:
        batch.alter_column("linked_at", existing_type=sa.DateTime(timezone=True), nullable=False)
    op.create_table(
        "user_memberships",
        sa.Column("user_key", sa.String(300), nullable=False),
        sa.Column("account_id", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_key", "account_id", name=op.f("pk_user_memberships")),
    )
    op.execute(
        "INSERT INTO user_memberships (user_key, account_id, created_at) "
        "SELECT user_key, account_id, updated_at FROM user_accounts"
    )
    op.create_table(
        "user_aliases",
        sa.Column("alias_key", sa.String(300), nullable=False),
        sa.Column("user_key", sa.String(300), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("alias_key", name=op.f("pk_user_aliases")),
    )
    op.create_index(op.f("ix_user_aliases_user_key"), "user_aliases", ["user_key"])
    op.create_table(
        "contacts",
        sa.Column("user_key", sa.String(300), nullable=False),
        sa.Column("user_id", sa.String(300), nullable=False),
        sa.Column("traits", sa.JSON(), nullable=False),
        sa.Column("stamps", sa.JSON(), nullable=False),
        sa.Column("message_id", sa.String(100), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_key", name=op.f("pk_contacts")),
    )
    op.create_table(
        "pending_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("user_key", sa.String(300), nullable=False),
        sa.Column("message_id", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(100), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("parked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("trace_id", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_events")),
        sa.UniqueConstraint(
            "user_key", "message_id", name=op.f("uq_pending_events_user_key_message_id")
        ),
    )
    op.create_index(op.f("ix_pending_events_user_key"), "pending_events", ["user_key"])
    op.create_index(op.f("ix_pending_events_parked_at"), "pending_events", ["parked_at"])


def downgrade() -> None:
    op.drop_table("pending_events")
    op.drop_table("contacts")
    op.drop_table("user_aliases")
    op.drop_table("user_memberships")
    with op.batch_alter_table("user_accounts") as batch:
        batch.drop_column("linked_at")
