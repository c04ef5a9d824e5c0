"""Health's own settings on top of the shared ones."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from pydantic import Field

from shared.settings import BaseServiceSettings

DEFAULT_CONFIG = Path(__file__).resolve().parent / "default_config.yaml"


class HealthSettings(BaseServiceSettings):
    config_file: Path = Field(default=DEFAULT_CONFIG, alias="HEALTH_CONFIG_FILE")
    # The day scores are computed for; unset = today (UTC). Demos and tests that replay a
    # backdated history pin it so "the last 7 days" means the same days on every run.
    as_of: date | None = Field(default=None, alias="HEALTH_AS_OF")
    consumer_group: str = Field(default="health", alias="HEALTH_CONSUMER_GROUP")
    consumer_batch: int = Field(default=5000, alias="HEALTH_CONSUMER_BATCH", ge=1, le=20_000)
    debounce_seconds: float = Field(default=2.0, alias="HEALTH_DEBOUNCE_SECONDS", ge=0)
    debounce_max_seconds: float = Field(default=30.0, alias="HEALTH_DEBOUNCE_MAX_SECONDS", gt=0)
    # live traffic is rescored this soon (or later, paced by what the last run cost)
    live_interval_seconds: float = Field(default=0.5, alias="HEALTH_LIVE_INTERVAL", ge=0)
    recompute_interval_seconds: float = Field(
        default=3600.0, alias="HEALTH_RECOMPUTE_INTERVAL", gt=0
    )
    outbox_interval_seconds: float = Field(default=1.0, alias="HEALTH_OUTBOX_INTERVAL", gt=0)
    alert_budget_per_csm: int = Field(default=20, alias="HEALTH_ALERT_BUDGET", ge=0)
    # event names with rollups of their own; the rest share "other" (event:* / users:*)
    max_event_metrics: int = Field(default=200, alias="HEALTH_MAX_EVENT_METRICS", ge=0, le=100_000)
    # Alerts open only on settled data: an account that got backdated events (or events
    # from a backlog) opens none until this long after the last of them (see alerts.py).
    settle_seconds: float = Field(default=30.0, alias="HEALTH_SETTLE_SECONDS", ge=0, le=86_400)

    def today(self) -> date:
        return self.as_of or datetime.now(UTC).date()
