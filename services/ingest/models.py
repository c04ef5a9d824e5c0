"""Ingest's tables: which account a user belongs to (learned from ``group`` calls)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import new_metadata


class Base(DeclarativeBase):
    metadata = new_metadata()


class UserAccount(Base):
    """The account a user (``u:<userId>`` or ``a:<anonymousId>``) was last grouped with."""

    __tablename__ = "user_accounts"

    user_key: Mapped[str] = mapped_column(String(300), primary_key=True)
    account_id: Mapped[str] = mapped_column(String(255))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
