"""outcomes (churn, renewal, ...), account status, event names with their own rollups

Revision ID: health_0003
Revises: health_0002
Create Date: 2026-12-02 12:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "health_0003"
down_revision: str | None = "health_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("status", sa.String(length=20), nullable=True))
    op.add_column("accounts", sa.Column("churned_at", sa.Date(), nullable=True))
    op.add_column("accounts", sa.Column("churn_reason", sa.String(length=500), nullable=True))
    op.create_index(op.f("ix_accounts_status"), "accounts", ["status"], unique=False)
    op.create_table(
        "event_names",
        sa.Column("slug", sa.String(length=57), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("slug", name=op.f("pk_event_names")),
    )
    op.create_table(
        "outcomes",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("account_id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=20), nullable=False),
        sa.Column("at", sa.Date(), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("mrr", sa.Float(), nullable=True),
        sa.Column("plan", sa.String(length=300), nullable=True),
        sa.Column("segment", sa.String(length=300), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outcomes")),
    )
    op.create_index(op.f("ix_outcomes_at"), "outcomes", ["at"], unique=False)
    op.create_index(
        "uq_outcomes_account_type_at", "outcomes", ["account_id", "type", "at"], unique=True
    )


def downgrade() -> None:
    op.drop_index("uq_outcomes_account_type_at", table_name="outcomes")
    op.drop_index(op.f("ix_outcomes_at"), table_name="outcomes")
    op.drop_table("outcomes")
    op.drop_table("event_names")
    op.drop_index(op.f("ix_accounts_status"), table_name="accounts")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("churn_reason")
        batch.drop_column("churned_at")
        batch.drop_column("status")
