"""One Alembic history per service, run by one command (``uptake migrate``).

Each service keeps ``services/<name>/migrations/``; its ``env.py`` calls :func:`run_env`.
``alembic -n <service> revision --autogenerate -m "..."`` (root ``alembic.ini``) adds a step.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from shared.db import create_engine

SERVICES_DIR = Path(__file__).resolve().parent.parent / "services"


def alembic_config(service: str, url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(SERVICES_DIR / service / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.set_main_option("version_table", f"alembic_version_{service}")
    return cfg


def upgrade(service: str, url: str) -> None:
    if url.startswith("sqlite"):
        # Makes the parent folder of the SQLite file, as the app's engine would.
        asyncio.run(create_engine(url).dispose())
    command.upgrade(alembic_config(service, url), "head")


async def upgrade_async(service: str, url: str) -> None:
    """Alembic's env runs its own event loop, so it gets a thread of its own."""
    await asyncio.to_thread(upgrade, service, url)


def _do_run(connection: Connection, metadata: MetaData, version_table: str) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=version_table,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_env(metadata: MetaData) -> None:
    """Body of every service's ``env.py``: online migrations on the async engine."""
    cfg = context.config
    url = cfg.get_main_option("sqlalchemy.url")
    version_table = cfg.get_main_option("version_table") or "alembic_version"
    if not url:
        raise RuntimeError("no sqlalchemy.url: run through `uptake migrate`")
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=metadata, version_table=version_table)
        with context.begin_transaction():
            context.run_migrations()
        return

    async def _online() -> None:
        engine = create_async_engine(url, poolclass=pool.NullPool)
        async with engine.connect() as conn:
            await conn.run_sync(_do_run, metadata, version_table)
            await conn.commit()
        await engine.dispose()

    asyncio.run(_online())


def create_audit_log() -> None:
    """The ``audit_log`` table as first shipped (shared/audit.py), for every service's
    history; kept here frozen, so a later change to the table is a new step."""
    import sqlalchemy as sa
    from alembic import op

    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("token_id", sa.String(64), nullable=False),
        sa.Column("method", sa.String(10), nullable=False),
        sa.Column("path", sa.String(1000), nullable=False),
        sa.Column("action", sa.String(200), nullable=False),
        sa.Column("route", sa.String(300), nullable=False),
        sa.Column("target", sa.String(500), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_subject_at", "audit_log", ["subject", "at"])
    op.create_index("ix_audit_log_action_at", "audit_log", ["action", "at"])


def drop_audit_log() -> None:
    from alembic import op

    op.drop_table("audit_log")
