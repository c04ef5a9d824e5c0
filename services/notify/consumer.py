"""``notify.requests.v1`` -> the delivery log. Stored, then committed; sending is the worker's.

Each request becomes one delivery per recipient, unique on (idempotency key, recipient),
so a replayed or duplicated request inserts nothing new. A request that does not validate
is dead-lettered through the outbox in the same transaction, so the batch flows on. A
recipient that cannot be sent to (say the address ``n/a``) is logged ``failed`` with its
``failed`` event, while its co-recipients are queued as usual.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.notify import repository
from services.notify.policy import (
    delivery_event,
    recipient_key,
    recipients_of,
    redact_data,
    redacted_bytes,
)
from services.notify.settings import NotifySettings
from shared import topics
from shared.envelope import Envelope
from shared.kafka import Record
from shared.messages import NotifyRequested, Recipient

log = structlog.get_logger(__name__)
REQUEST_TYPE = "notify.requested"


LIMITS = {
    "template_id": 100,
    "from_name": 300,
    "reply_to": 320,
    "task_group_id": 255,
    "step_key": 255,
}
MAX_RECIPIENTS = 1000  # a bigger audience is split into several requests by the sender
ROLE_MAX = 100  # deliveries.recipient_role: a longer role is cut, it only feeds templates
RECIPIENT_LIMITS = {"email": 320, "name": 300, "slack_channel": 320, "contact_id": 255}


EMAIL = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+$")


def invalid_field(request: NotifyRequested) -> str | None:
    """Why the request as a whole cannot be logged (names the field), or ``None``.

    Recipients are judged one by one (:func:`recipient_problem`): one bad address fails
    that recipient, never its co-recipients.
    """
    for name, limit in LIMITS.items():
        value = getattr(request, name)
        if value is not None and len(value) > limit:
            return f"{name} is longer than {limit} characters"
        if value is not None and "\0" in value:
            return f"{name} contains a NUL character"
    if "\0" in request.idempotency_key:
        return "idempotency_key contains a NUL character"
    if len(request.to) > MAX_RECIPIENTS:
        return f"to has {len(request.to)} recipients, more than {MAX_RECIPIENTS}"
    return None


def recipient_problem(i: int, recipient: Recipient) -> str | None:
    """Why this one recipient cannot be sent to (names the field), or ``None``."""
    for name, limit in RECIPIENT_LIMITS.items():
        value = getattr(recipient, name)
        if value is not None and len(value) > limit:
            return f"to[{i}].{name} is longer than {limit} characters"
        if value is not None and any(c in value for c in "\r\n\0"):
            return f"to[{i}].{name} contains a line break"
    if recipient.email is not None and not EMAIL.match(recipient.email.strip()):
        return f"to[{i}].email is not an email address"
    return None


def _storable(value: str | None, limit: int) -> str | None:
    """A refused recipient's value as the log can hold it: no control characters, cut."""
    if value is None:
        return None
    return " ".join(value.replace("\0", " ").split())[:limit]


def _storable_recipient(recipient: Recipient) -> Recipient:
    return Recipient(
        **{name: _storable(getattr(recipient, name), n) for name, n in RECIPIENT_LIMITS.items()}
    )


def _envelope_for(envelope: Envelope, request: NotifyRequested, recipient: Recipient) -> bytes:
    """What one delivery keeps of its request: the request with only this recipient (so the
    log grows with recipients, not with their square), webhook URLs redacted."""
    data = {**request.model_dump(mode="json"), "to": [recipient.model_dump(mode="json")]}
    return envelope.model_copy(update={"data": redact_data(data)}).to_bytes()


def delivery_rows(
    request: NotifyRequested, envelope: Envelope, *, now: datetime, default_channel: str
) -> list[dict[str, Any]]:
    """The deliveries one request asks for (recipients deduplicated by key).

    A recipient that cannot be sent to (a malformed address...) is logged ``failed`` at
    once, with the reason in ``last_error``; the others are ``queued``.
    """
    rows: dict[str, dict[str, Any]] = {}
    for i, given in enumerate(recipients_of(request)):
        problem = recipient_problem(i, given)
        recipient = _storable_recipient(given) if problem else given
        key = recipient_key(request.channel, recipient, default_channel)[:320]
        if key in rows:
            continue
        address = recipient.email if request.channel == "email" else recipient.slack_channel
        rows[key] = {
            "id": uuid.uuid4().hex,
            "idempotency_key": request.idempotency_key,
            "recipient_key": key,
            "account_id": envelope.account_id,
            "channel": request.channel,
            "template_id": request.template_id,
            "recipient": address.strip() if address else None,
            "recipient_name": recipient.name,
            "contact_id": recipient.contact_id,
            "recipient_role": _storable(given.role, ROLE_MAX),
            "context": request.context,
            "from_name": request.from_name,
            "reply_to": request.reply_to,
            "task_group_id": request.task_group_id,
            "step_key": request.step_key,
            "automated": request.automated,
            "status": "failed" if problem else "queued",
            "attempts": 0,
            "deferrals": 0,
            "next_attempt_at": now,
            "last_error": f"invalid recipient: {problem}" if problem else None,
            "request_envelope": _envelope_for(envelope, request, recipient),
            "created_at": now,
            "updated_at": now,
        }
    return list(rows.values())


def refused_event(row: dict[str, Any], trace_id: str) -> Envelope:
    """The ``failed`` event of a recipient refused on arrival."""
    return delivery_event(
        status="failed",
        idempotency_key=row["idempotency_key"],
        channel=row["channel"],
        account_id=row["account_id"],
        recipient=row["recipient"],
        attempts=0,
        task_group_id=row["task_group_id"],
        step_key=row["step_key"],
        detail=row["last_error"],
        trace_id=trace_id,
    )


def describe(exc: ValidationError) -> str:
    """A validation error naming the fields, without echoing their values (which may be
    webhook URLs)."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in error["loc"]) or "data"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


@dataclass
class _Arrival:
    """One request of a batch: its record, its deliveries, and the trace to publish under."""

    record: Record
    rows: list[dict[str, Any]]
    trace_id: str

    @property
    def all_refused(self) -> bool:
        return all(r["status"] == "failed" for r in self.rows)


class RequestConsumer:
    """The batch handler for :class:`shared.kafka.ConsumerRunner`."""

    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        settings: NotifySettings,
        clock: Callable[[], datetime],
        on_stored: Callable[[], None],
    ) -> None:
        self.sessions = sessions
        self.settings = settings
        self.clock = clock
        self.on_stored = on_stored

    async def handle(self, records: list[Record]) -> None:
        now = self.clock()
        arrivals: list[_Arrival] = []
        dead: list[dict[str, Any]] = []
        for record in records:
            env = record.envelope
            if env.type != REQUEST_TYPE:
                continue
            try:
                request = env.payload(NotifyRequested)
            except ValidationError as exc:
                error = f"invalid notify.requested: {describe(exc)}"
                dead.append(self._dead_letter(record, error, now))
                continue
            problem = invalid_field(request)
            if problem:
                dead.append(self._dead_letter(record, f"invalid notify.requested: {problem}", now))
                continue
            new = delivery_rows(
                request, env, now=now, default_channel=self.settings.slack_default_channel
            )
            if not new:
                dead.append(self._dead_letter(record, "request has no recipients", now))
                continue
            arrivals.append(_Arrival(record, new, env.trace_id))
        if not arrivals and not dead:
            return
        async with self.sessions() as session, session.begin():
            rows = [row for a in arrivals for row in a.rows]
            inserted = set(await repository.insert_deliveries(session, rows))
            dead.extend(self._refusals(arrivals, inserted, now))
            await repository.add_outbox(session, dead)
        if inserted or dead:
            log.info("notify.requests_stored", new=len(inserted), outbox=len(dead))
            self.on_stored()

    def _refusals(
        self, arrivals: list[_Arrival], inserted: set[str], now: datetime
    ) -> list[dict[str, Any]]:
        """``failed`` events for recipients refused on arrival (first arrival only), and the
        dead letter of a request none of whose recipients could be taken."""
        out: list[dict[str, Any]] = []
        for arrival in arrivals:
            new = [r for r in arrival.rows if r["id"] in inserted]
            refused = [r for r in new if r["status"] == "failed"]
            out.extend(
                repository.outbox_row(
                    topics.NOTIFY_DELIVERIES, refused_event(r, arrival.trace_id), now=now
                )
                for r in refused
            )
            if refused and arrival.all_refused:
                reasons = "; ".join(str(r["last_error"]) for r in refused)
                out.append(self._dead_letter(arrival.record, f"no valid recipient: {reasons}", now))
        return out

    def _dead_letter(self, record: Record, error: str, now: datetime) -> dict[str, Any]:
        return repository.outbox_row(
            topics.dlq(record.topic),
            raw=(record.envelope.key, redacted_bytes(record.envelope)),
            headers=[
                ("x-original-topic", record.topic),
                ("x-original-partition", str(record.partition)),
                ("x-original-offset", str(record.offset)),
                ("x-consumer-group", self.settings.consumer_group),
                ("x-error", error[:1000]),
            ],
            now=now,
        )
