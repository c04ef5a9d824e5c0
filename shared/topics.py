"""Kafka topic names (DESIGN.md, Topics and the envelope)."""

from __future__ import annotations

USAGE_EVENTS = "usage.events.v1"
ACCOUNTS = "accounts.v1"
HEALTH_SCORES = "health.scores.v1"
HEALTH_ALERTS = "health.alerts.v1"
NOTIFY_REQUESTS = "notify.requests.v1"
NOTIFY_DELIVERIES = "notify.deliveries.v1"
USAGE_UNATTRIBUTED = "usage.unattributed.v1"
AUTH_REVOCATIONS = "auth.revocations.v1"
AUTH_TOKEN_USES = "auth.token-uses.v1"  # noqa: S105 (a topic name)

ALL = (
    USAGE_EVENTS,
    ACCOUNTS,
    HEALTH_SCORES,
    HEALTH_ALERTS,
    NOTIFY_REQUESTS,
    NOTIFY_DELIVERIES,
    USAGE_UNATTRIBUTED,
)

# What each service's consumer group reads (its group is ``<SERVICE>_CONSUMER_GROUP``,
# default the service's name). The services subscribe to these; ``uptake run`` drains them.
CONSUMED_BY: dict[str, tuple[str, ...]] = {
    "health": (USAGE_EVENTS, ACCOUNTS),
    "playbooks": (HEALTH_ALERTS, ACCOUNTS, USAGE_EVENTS, NOTIFY_DELIVERIES),
    "notify": (NOTIFY_REQUESTS,),
}


# Topics read whole by every service rather than consumed by a group: compacted (the
# latest record per key is all that matters), and without a dead-letter topic.
COMPACTED = (AUTH_REVOCATIONS, AUTH_TOKEN_USES)
TOPIC_CONFIGS: dict[str, dict[str, str]] = {t: {"cleanup.policy": "compact"} for t in COMPACTED}


def dlq(topic: str) -> str:
    """The dead-letter topic of a topic."""
    return f"{topic}.dlq"


def all_with_dlq() -> list[str]:
    """Every topic a broker needs: the event topics, their dead-letter topics, the compacted."""
    return [*ALL, *(dlq(t) for t in ALL), *COMPACTED]
