"""Playbooks' own settings on top of the shared ones."""

from __future__ import annotations

from pydantic import Field

from shared.settings import BaseServiceSettings


class PlaybooksSettings(BaseServiceSettings):
    scheduler_enabled: bool = Field(default=True, alias="PLAYBOOKS_SCHEDULER_ENABLED")
    scheduler_interval_seconds: float = Field(
        default=5.0, alias="PLAYBOOKS_SCHEDULER_INTERVAL", gt=0, le=3600
    )
    scheduler_batch_size: int = Field(default=200, alias="PLAYBOOKS_SCHEDULER_BATCH", ge=1)
    consumer_enabled: bool = Field(default=True, alias="PLAYBOOKS_CONSUMER_ENABLED")
    consumer_group: str = Field(default="playbooks", alias="PLAYBOOKS_CONSUMER_GROUP")
    default_capacity: int = Field(default=25, alias="PLAYBOOKS_DEFAULT_CAPACITY", ge=0)
    default_team: str = Field(default="default", alias="PLAYBOOKS_DEFAULT_TEAM")
    default_slack_channel: str | None = Field(default=None, alias="PLAYBOOKS_DEFAULT_SLACK_CHANNEL")
    no_recipient_retry_minutes: float = Field(
        default=10.0, alias="PLAYBOOKS_NO_RECIPIENT_RETRY_MINUTES", gt=0
    )
    no_recipient_give_up_days: float = Field(
        default=3.0, alias="PLAYBOOKS_NO_RECIPIENT_GIVE_UP_DAYS", ge=0
    )
    review_minutes: float = Field(
        default=15.0,
        alias="PLAYBOOKS_REVIEW_MINUTES",
        ge=0,
        le=10080,
        description="review window of a day-0 customer email of an alert-started group",
    )
    load_library: bool = Field(default=True, alias="PLAYBOOKS_LOAD_LIBRARY")
