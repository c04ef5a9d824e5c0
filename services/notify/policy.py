"""Pure decisions: the frequency cap, recipient keys, and the events notify publishes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from shared.envelope import Envelope, wrap
from shared.messages import DeliveryChanged, DeliveryStatus, NotifyRequested, Recipient

SOURCE = "notify"
EVENT_TYPE = "notify.delivery"


def next_allowed(
    sent_times: Sequence[datetime], *, now: datetime, cap: int, window: timedelta
) -> datetime | None:
    """When the next automated email may go, or ``None`` if it may go now.

    At most ``cap`` sends in any ``window``: with ``cap`` sends already inside the window,
    the next is allowed once the oldest of those leaves it. ``cap == 0`` means no cap.
    """
    if cap <= 0:
        return None
    recent = sorted(t for t in sent_times if t > now - window)
    if len(recent) < cap:
        return None
    return recent[-cap] + window


def recipient_key(channel: str, recipient: Recipient, default_channel: str) -> str:
    """What a delivery is unique on within its request (and what the cap counts)."""
    if channel == "email":
        if recipient.email:
            return recipient.email.strip().lower()
        return f"contact:{recipient.contact_id or recipient.name or 'unknown'}"
    return f"slack:{recipient.slack_channel or default_channel}"


def recipients_of(request: NotifyRequested) -> list[Recipient]:
    """The request's recipients; a Slack request with none goes to the default channel."""
    if request.to:
        return request.to
    return [Recipient()] if request.channel == "slack" else []


def is_url(value: str) -> bool:
    return value.strip().lower().startswith(("http://", "https://"))


def public_recipient(channel: str, recipient: str | None) -> str | None:
    """Never publish a webhook URL (it is a credential)."""
    if channel == "slack" and recipient and is_url(recipient):
        return "webhook"
    return recipient


def redact_data(data: dict[str, Any]) -> dict[str, Any]:
    """A request's ``data`` with webhook URLs (credentials) replaced by ``"webhook"``."""
    to = data.get("to")
    if not isinstance(to, list):
        return data
    return {**data, "to": [_redact_recipient(r) for r in to]}


def _redact_recipient(value: Any) -> Any:
    if isinstance(value, dict) and isinstance(value.get("slack_channel"), str):
        channel = value["slack_channel"]
        return {**value, "slack_channel": "webhook" if is_url(channel) else channel}
    return value


def redacted_bytes(envelope: Envelope) -> bytes:
    """The envelope as dead letters and the log carry it: no webhook URL in it."""
    return envelope.model_copy(update={"data": redact_data(envelope.data)}).to_bytes()


def delivery_event(
    *,
    status: DeliveryStatus,
    idempotency_key: str,
    channel: str,
    account_id: str,
    recipient: str | None,
    attempts: int,
    task_group_id: str | None,
    step_key: str | None,
    detail: str | None = None,
    url: str | None = None,
    trace_id: str | None = None,
) -> Envelope:
    message = DeliveryChanged(
        idempotency_key=idempotency_key,
        status=status,
        channel="slack" if channel == "slack" else "email",
        recipient=public_recipient(channel, recipient),
        attempts=attempts,
        detail=detail,
        task_group_id=task_group_id,
        step_key=step_key,
        url=url,
    )
    return wrap(message, type=EVENT_TYPE, account_id=account_id, source=SOURCE, trace_id=trace_id)
