"""Ingest's own settings on top of the shared ones."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field

from shared.settings import BaseServiceSettings


class IngestSettings(BaseServiceSettings):
    max_event_bytes: int = Field(default=32 * 1024, alias="INGEST_MAX_EVENT_BYTES")
    max_batch_bytes: int = Field(default=500 * 1024, alias="INGEST_MAX_BATCH_BYTES")
    max_batch_events: int = Field(default=2500, alias="INGEST_MAX_BATCH_EVENTS")
    rate_limit_events_per_second: float = Field(default=10_000, alias="INGEST_RATE_LIMIT", gt=0)
    rate_limit_burst: float = Field(default=50_000, alias="INGEST_RATE_BURST", gt=0)
    publish_timeout_seconds: float = Field(default=5.0, alias="INGEST_PUBLISH_TIMEOUT", gt=0)
    database_timeout_seconds: float = Field(default=5.0, alias="INGEST_DATABASE_TIMEOUT", gt=0)
    account_cache_size: int = Field(default=100_000, alias="INGEST_ACCOUNT_CACHE_SIZE")
    pending_max_age: timedelta = Field(default=timedelta(days=7), alias="INGEST_PENDING_MAX_AGE")
    pending_max_events: int = Field(default=10_000, alias="INGEST_PENDING_MAX_EVENTS", ge=1)
    pending_sweep_interval: float = Field(default=60.0, alias="INGEST_PENDING_SWEEP_INTERVAL", gt=0)
    pending_release_chunk: int = Field(default=1000, alias="INGEST_PENDING_RELEASE_CHUNK", ge=1)
    # How often the last uses of tokens (noted at most once a minute each) are written.
    token_usage_flush_interval: float = Field(
        default=10.0, alias="INGEST_TOKEN_USAGE_FLUSH_INTERVAL", gt=0
    )
