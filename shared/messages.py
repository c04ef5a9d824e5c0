"""One pydantic model per message type; producers and consumers import the same class.

The envelope's ``type`` names which model its ``data`` holds (see :data:`MESSAGE_TYPES`).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared import topics


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")


# usage.events.v1 -----------------------------------------------------------------------


class UsageEvent(Message):
    """One product event (Segment ``track`` or ``page``). ``message_id`` is the dedup key."""

    message_id: str
    kind: Literal["track", "page", "screen"] = "track"
    event: str
    user_id: str | None = None
    anonymous_id: str | None = None
    timestamp: datetime
    properties: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)


# accounts.v1 ---------------------------------------------------------------------------


class AccountUpserted(Message):
    """Traits of an account, from a Segment ``group`` call or a CS tool. ``None`` = unchanged."""

    message_id: str
    name: str | None = None
    plan: str | None = None
    mrr: float | None = None
    owner: str | None = None
    stage: str | None = None
    segment: str | None = None
    renewal_date: date | None = None
    traits: dict[str, Any] = Field(default_factory=dict)


class ContactUpserted(Message):
    """A person at an account, from a Segment ``identify`` call."""

    message_id: str
    user_id: str
    email: str | None = None
    name: str | None = None
    role: str | None = None
    traits: dict[str, Any] = Field(default_factory=dict)


class OwnerChanged(Message):
    """The account's CSM changed (a churn-risk signal and a handoff trigger)."""

    message_id: str
    previous_owner: str | None
    owner: str | None
    changed_at: datetime


# health.scores.v1 / health.alerts.v1 ---------------------------------------------------

Band = Literal["green", "yellow", "red"]


class ScoreComponent(Message):
    metric: str
    weight: float
    level: float
    trend: float
    points: float
    reason: str


class HealthScored(Message):
    score: float
    band: Band
    previous_score: float | None = None
    previous_band: Band | None = None
    components: list[ScoreComponent] = Field(default_factory=list)
    computed_at: datetime


AlertStatus = Literal["open", "acknowledged", "snoozed", "resolved", "deferred"]


class AlertChanged(Message):
    """An alert was opened, updated or resolved; the envelope type says which."""

    alert_id: str
    rule_id: str
    rule_type: str
    status: AlertStatus
    severity: int = Field(ge=1, le=5)
    priority: float = 0.0
    owner: str | None = None
    title: str
    reason: str
    details: dict[str, Any] = Field(default_factory=dict)
    opened_at: datetime
    resolved_at: datetime | None = None


# notify.requests.v1 / notify.deliveries.v1 ---------------------------------------------

Channel = Literal["email", "slack"]


class Recipient(Message):
    """One person (or channel) a message goes to; notify renders each recipient's own copy.

    ``name`` and ``role`` feed the template's ``recipient.*`` context, so nobody is greeted
    by another person's name.
    """

    email: str | None = None
    name: str | None = None
    role: str | None = None
    slack_channel: str | None = None
    contact_id: str | None = None


class NotifyRequested(Message):
    """A message to send. ``idempotency_key`` (``<task_group_id>:<step_key>``) makes it once."""

    idempotency_key: str = Field(min_length=1, max_length=300)
    channel: Channel
    template_id: str
    to: list[Recipient]
    context: dict[str, Any] = Field(default_factory=dict)
    from_name: str | None = None
    reply_to: str | None = None
    task_group_id: str | None = None
    step_key: str | None = None
    automated: bool = True


DeliveryStatus = Literal[
    "sent", "failed", "deferred", "retrying", "suppressed", "opened", "clicked", "unsubscribed"
]


class DeliveryChanged(Message):
    idempotency_key: str
    status: DeliveryStatus
    channel: Channel
    recipient: str | None = None
    attempts: int = 0
    detail: str | None = None
    task_group_id: str | None = None
    step_key: str | None = None
    url: str | None = None


# auth.revocations.v1 (compacted, keyed by token id) ----------------------------------


class TokenRevoked(Message):
    """A token that no service may accept any more. The envelope's key is the token id."""

    token_id: str = Field(min_length=1, max_length=64)
    revoked_at: datetime
    expires_at: datetime | None = None


# auth.token-uses.v1 (compacted, keyed by token id) ----------------------------------


class TokenUsed(Message):
    """A token's latest use at a service other than ingest (at most one a minute per token
    and process), for the registry's ``last_used_at``; the key is the token id."""

    token_id: str = Field(min_length=1, max_length=64)
    subject: str = Field(max_length=200)
    scopes: list[str] = Field(max_length=8)
    key_id: str | None = Field(default=None, max_length=64)
    issued_at: datetime | None = None
    expires_at: datetime | None = None
    used_at: datetime
    service: str = Field(max_length=40)


MESSAGE_TYPES: dict[str, tuple[str, type[Message]]] = {
    "usage.track": (topics.USAGE_EVENTS, UsageEvent),
    "account.upserted": (topics.ACCOUNTS, AccountUpserted),
    "contact.upserted": (topics.ACCOUNTS, ContactUpserted),
    "account.owner_changed": (topics.ACCOUNTS, OwnerChanged),
    "health.scored": (topics.HEALTH_SCORES, HealthScored),
    "alert.opened": (topics.HEALTH_ALERTS, AlertChanged),
    "alert.updated": (topics.HEALTH_ALERTS, AlertChanged),
    "alert.resolved": (topics.HEALTH_ALERTS, AlertChanged),
    "notify.requested": (topics.NOTIFY_REQUESTS, NotifyRequested),
    "notify.delivery": (topics.NOTIFY_DELIVERIES, DeliveryChanged),
    "token.revoked": (topics.AUTH_REVOCATIONS, TokenRevoked),
    "token.used": (topics.AUTH_TOKEN_USES, TokenUsed),
}
"""Envelope ``type`` -> (topic, model of ``data``)."""
