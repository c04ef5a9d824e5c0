"""Caps that hold across replicas (cap_locks, deliveries.capped_at); recipient roles

Revision ID: notify_0003
Revises: notify_0002
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = "notify_0003"
down_revision: str | None = "notify_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cap_locks",
        sa.Column("key", sa.String(400), nullable=False),
        sa.Column("touched_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_cap_locks"),
    )
    op.add_column("deliveries", sa.Column("recipient_role", sa.String(100), nullable=True))
    op.add_column("deliveries", sa.Column("capped_at", sa.DateTime(timezone=True), nullable=True))
    # Automated emails already sent keep counting against the caps.
    op.execute(
        "UPDATE deliveries SET capped_at = sent_at "
        "WHERE channel = 'email' AND automated AND status = 'sent'"
    )
    op.create_index(
        "ix_deliveries_recipient_capped", "deliveries", ["recipient_key", "capped_at"]
    )
    op.create_index("ix_deliveries_account_capped", "deliveries", ["account_id", "capped_at"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_account_capped", table_name="deliveries")
    op.drop_index("ix_deliveries_recipient_capped", table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("capped_at")
        batch.drop_column("recipient_role")
    op.drop_table("cap_locks")
