"""Fitted models in the database: save, list, and which one scores (shared by replicas)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.health import repository as repo
from services.health.model_fit import FittedModel
from services.health.models import ScoreModel
from services.health.snapshot import ActiveModel

ACTIVE_KEY = "score_model"


async def active_id(session: AsyncSession) -> int | None:
    entry = await repo.get_config(session, ACTIVE_KEY)
    return None if entry is None or entry.get("id") is None else int(entry["id"])


async def active_model(session: AsyncSession) -> ActiveModel | None:
    """The model that scores (None: the default formula), read in the caller's transaction
    so a recompute scores with one model throughout."""
    model_id = await active_id(session)
    if model_id is None:
        return None
    row = await session.get(ScoreModel, model_id)
    if row is None:
        return None
    return ActiveModel(model_id, FittedModel.from_params(row.params), list(row.metrics))


async def set_active(session: AsyncSession, model_id: int | None) -> None:
    await repo.put_config(session, ACTIVE_KEY, {"id": model_id}, datetime.now(UTC))


async def list_models(session: AsyncSession) -> list[ScoreModel]:
    return list(await session.scalars(select(ScoreModel).order_by(ScoreModel.id.desc())))
