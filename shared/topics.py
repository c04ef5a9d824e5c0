"""Kafka topic names (DESIGN.md, Topics and the envelope)."""

from __future__ import annotations

USAGE_EVENTS = "usage.events.v1"
ACCOUNTS = "accounts.v1"
HEALTH_SCORES = "health.scores.v1"
HEALTH_ALERTS = "health.alerts.v1"
NOTIFY_REQUESTS = "notify.requests.v1"
NOTIFY_DELIVERIES = "notify.deliveries.v1"
USAGE_UNATTRIBUTED = "usage.unattributed.v1"

ALL = (
    USAGE_EVENTS,
    ACCOUNTS,
    HEALTH_SCORES,
    HEALTH_ALERTS,
    NOTIFY_REQUESTS,
    NOTIFY_DELIVERIES,
    USAGE_UNATTRIBUTED,
)


def dlq(topic: str) -> str:
    """The dead-letter topic of a topic."""
    return f"{topic}.dlq"


def all_with_dlq() -> list[str]:
    return [*ALL, *(dlq(t) for t in ALL)]
