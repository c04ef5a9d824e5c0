"""The audit trail: audit_log (shared/audit.py)

Revision ID: playbooks_0003
Revises: playbooks_0002
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from shared.migrations import create_audit_log, drop_audit_log

revision: str = "playbooks_0003"
down_revision: str | None = "playbooks_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_audit_log()


def downgrade() -> None:
    drop_audit_log()
