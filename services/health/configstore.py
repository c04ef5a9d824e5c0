"""Runtime configuration: the database's copy (set over REST) over the YAML default.

Read on every batch, so it is cached for a few seconds; a PUT on this replica refreshes
the cache at once, other replicas pick it up within the TTL.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.health import repository as repo
from services.health.config import MetricsConfig, RuleDef
from services.health.models import AlertRule
from services.health.rules import validate_params

METRICS_KEY = "metrics"
ALERTS_KEY = "alerts"
SEEDED_KEY = "rules_seeded"


class ConfigStore:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        default_metrics: MetricsConfig,
        default_budget: int,
        ttl: float = 5.0,
    ) -> None:
        self._sessions = sessions
        self._default_metrics = default_metrics
        self._default_budget = default_budget
        self._ttl = ttl
        self._cache: dict[str, tuple[float, Any]] = {}

    async def _read(self, key: str) -> dict[str, Any] | None:
        hit = self._cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < self._ttl:
            value: dict[str, Any] | None = hit[1]
            return value
        started = time.monotonic()
        async with self._sessions() as session:
            value = await repo.get_config(session, key)
        current = self._cache.get(key)
        if current is not None and current[0] >= started:
            # a PUT on this replica stored a newer value while this read was on its way:
            # keep it (caching what was read would undo the PUT here for a whole TTL)
            newer: dict[str, Any] | None = current[1]
            return newer
        self._cache[key] = (time.monotonic(), value)
        return value

    async def metrics(self) -> MetricsConfig:
        stored = await self._read(METRICS_KEY)
        if stored is None:
            return self._default_metrics
        return MetricsConfig.model_validate(stored)

    async def set_metrics(self, session: AsyncSession, config: MetricsConfig) -> None:
        value = config.model_dump(mode="json")
        await repo.put_config(session, METRICS_KEY, value, datetime.now(UTC))
        self._cache[METRICS_KEY] = (time.monotonic(), value)

    async def alert_budget(self) -> int:
        stored = await self._read(ALERTS_KEY)
        if stored is None:
            return self._default_budget
        return int(stored.get("daily_budget_per_csm", self._default_budget))

    async def set_alert_budget(self, session: AsyncSession, budget: int) -> None:
        value = {"daily_budget_per_csm": budget}
        await repo.put_config(session, ALERTS_KEY, value, datetime.now(UTC))
        self._cache[ALERTS_KEY] = (time.monotonic(), value)

    async def seed_rules(self, defaults: list[RuleDef]) -> None:
        """The YAML's rules go in once; after that the database (REST) owns them."""
        async with self._sessions() as session, session.begin():
            if await repo.get_config(session, SEEDED_KEY) is not None:
                return
            now = datetime.now(UTC)
            for rule in defaults:
                params = validate_params(rule.type, rule.params)
                session.add(rule_row(rule, params, now))
            await repo.put_config(session, SEEDED_KEY, {"at": now.isoformat()}, now)


def rule_row(rule: RuleDef, params: dict[str, Any], now: datetime) -> AlertRule:
    return AlertRule(
        id=rule.id,
        type=rule.type,
        name=rule.name,
        enabled=rule.enabled,
        severity=rule.severity,
        cooldown_days=rule.cooldown_days,
        params=params,
        created_at=now,
        updated_at=now,
    )
