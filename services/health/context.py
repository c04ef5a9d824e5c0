"""The live parts of the health service that routes reach through ``request.app.state``."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.health.configstore import ConfigStore
from services.health.eventnames import EventNames
from services.health.outbox import OutboxRelay
from services.health.recompute import Recomputer
from services.health.scheduler import RecomputeScheduler
from services.health.settings import HealthSettings


@dataclass
class HealthContext:
    settings: HealthSettings
    sessions: async_sessionmaker[AsyncSession]
    store: ConfigStore
    recomputer: Recomputer
    scheduler: RecomputeScheduler
    outbox: OutboxRelay
    event_names: EventNames


def health_of(request: Request) -> HealthContext:
    ctx: HealthContext = request.app.state.health
    return ctx
