"""The audit trail: audit_log (shared/audit.py)

Revision ID: health_0006
Revises: health_0005
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from shared.migrations import create_audit_log, drop_audit_log

revision: str = "health_0006"
down_revision: str | None = "health_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_audit_log()


def downgrade() -> None:
    drop_audit_log()
