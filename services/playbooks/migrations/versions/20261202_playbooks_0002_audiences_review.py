"""contacts.is_primary / last_seen_at (email audiences); tasks.review_until (review window)

Revision ID: playbooks_0002
Revises: playbooks_0001
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "playbooks_0002"
down_revision: str | None = "playbooks_0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "contacts",
        sa.Column("is_primary", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("contacts", sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True))
    # What we knew last is when we last heard of them.
    op.execute("UPDATE contacts SET last_seen_at = updated_at")
    op.add_column("tasks", sa.Column("review_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("review_until")
    with op.batch_alter_table("contacts") as batch:
        batch.drop_column("last_seen_at")
        batch.drop_column("is_primary")
