"""``notify.requests.v1`` -> the delivery log. Stored, then committed; sending is the worker's.

Each request becomes one delivery per recipient, unique on (idempotency key, recipient),
so a replayed or duplicated request inserts nothing new. A request that does not validate
is dead-lettered through the outbox in the same transaction, so the batch flows on.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.notify import repository
from services.notify.policy import recipient_key, recipients_of
from services.notify.settings import NotifySettings
from shared import topics
from shared.envelope import Envelope
from shared.kafka import Record
from shared.messages import NotifyRequested

log = structlog.get_logger(__name__)
REQUEST_TYPE = "notify.requested"


LIMITS = {
    "template_id": 100,
    "from_name": 300,
    "reply_to": 320,
    "task_group_id": 255,
    "step_key": 255,
}
RECIPIENT_LIMITS = {"email": 320, "name": 300, "slack_channel": 320, "contact_id": 255}


EMAIL = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+$")


def invalid_field(request: NotifyRequested) -> str | None:
    """Why the delivery log cannot take this request (names the field), or ``None``."""
    for name, limit in LIMITS.items():
        value = getattr(request, name)
        if value is not None and len(value) > limit:
            return f"{name} is longer than {limit} characters"
        if value is not None and "\0" in value:
            return f"{name} contains a NUL character"
    if "\0" in request.idempotency_key:
        return "idempotency_key contains a NUL character"
    for i, recipient in enumerate(request.to):
        for name, limit in RECIPIENT_LIMITS.items():
            value = getattr(recipient, name)
            if value is not None and len(value) > limit:
                return f"to[{i}].{name} is longer than {limit} characters"
            if value is not None and any(c in value for c in "\r\n\0"):
                return f"to[{i}].{name} contains a line break"
        if recipient.email is not None and not EMAIL.match(recipient.email.strip()):
            return f"to[{i}].email is not an email address"
    return None


def delivery_rows(
    request: NotifyRequested, envelope: Envelope, *, now: datetime, default_channel: str
) -> list[dict[str, Any]]:
    """The deliveries one request asks for (recipients deduplicated by key)."""
    rows: dict[str, dict[str, Any]] = {}
    raw = envelope.to_bytes()
    for recipient in recipients_of(request):
        key = recipient_key(request.channel, recipient, default_channel)
        if key in rows:
            continue
        address = recipient.email if request.channel == "email" else recipient.slack_channel
        rows[key] = {
            "id": uuid.uuid4().hex,
            "idempotency_key": request.idempotency_key,
            "recipient_key": key[:320],
            "account_id": envelope.account_id,
            "channel": request.channel,
            "template_id": request.template_id,
            "recipient": address.strip() if address else None,
            "recipient_name": recipient.name,
            "contact_id": recipient.contact_id,
            "context": request.context,
            "from_name": request.from_name,
            "reply_to": request.reply_to,
            "task_group_id": request.task_group_id,
            "step_key": request.step_key,
            "automated": request.automated,
            "status": "queued",
            "attempts": 0,
            "deferrals": 0,
            "next_attempt_at": now,
            "request_envelope": raw,
            "created_at": now,
            "updated_at": now,
        }
    return list(rows.values())


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
        rows: list[dict[str, Any]] = []
        dead: list[dict[str, Any]] = []
        for record in records:
            env = record.envelope
            if env.type != REQUEST_TYPE:
                continue
            try:
                request = env.payload(NotifyRequested)
            except ValidationError as exc:
                dead.append(self._dead_letter(record, f"invalid notify.requested: {exc}", now))
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
            rows.extend(new)
        if not rows and not dead:
            return
        async with self.sessions() as session, session.begin():
            inserted = await repository.insert_deliveries(session, rows)
            await repository.add_outbox(session, dead)
        if inserted or dead:
            log.info("notify.requests_stored", new=len(inserted), dead=len(dead))
            self.on_stored()

    def _dead_letter(self, record: Record, error: str, now: datetime) -> dict[str, Any]:
        return repository.outbox_row(
            topics.dlq(record.topic),
            raw=(record.envelope.key, record.envelope.to_bytes()),
            headers=[
                ("x-original-topic", record.topic),
                ("x-original-partition", str(record.partition)),
                ("x-original-offset", str(record.offset)),
                ("x-consumer-group", self.settings.consumer_group),
                ("x-error", error[:1000]),
            ],
            now=now,
        )
