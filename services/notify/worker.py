"""The delivery worker: sends what the log says is due, records every outcome, relays events.

Crash safety, step by step: a delivery is claimed (``sending`` + a lease) and committed
*before* the provider is called, and marked ``sent`` (with its event in the outbox) in one
transaction right after. The lease is short and renewed while the process lives. A process
that dies mid-send leaves a ``sending`` row whose lease runs out; it is then sent again
with the same Message-ID, so the one message that may repeat (sent, not yet marked) is
recognisable as a duplicate by mail clients. Retries, deferrals and sends
all live in the database, so a restart loses nothing.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from prometheus_client import Counter
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.notify import repository
from services.notify.compose import message_id_for
from services.notify.email_sender import EmailSender
from services.notify.models import Delivery
from services.notify.outgoing import OutgoingMessages
from services.notify.policy import delivery_event, next_allowed, redacted_bytes
from services.notify.relay import OutboxRelay
from services.notify.rendering import (
    RenderError,
    TemplateSpec,
)
from services.notify.retry import RetryPolicy, SendResult
from services.notify.settings import NotifySettings
from services.notify.slack_sender import SlackSender
from shared import topics
from shared.background import finish_within, wait_for_event
from shared.envelope import Envelope
from shared.kafka import Publisher
from shared.messages import DeliveryStatus

log = structlog.get_logger(__name__)
DELIVERIES = Counter("uptake_notify_deliveries_total", "Delivery outcomes", ["channel", "status"])
SEND_ATTEMPTS = Counter(
    "uptake_notify_send_attempts_total", "Calls to a provider", ["channel", "outcome"]
)
Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def _without_secrets(raw: bytes) -> bytes:
    """A stored request as a dead letter may carry it: webhook URLs redacted (rows stored
    before requests were kept redacted still hold them)."""
    try:
        return redacted_bytes(Envelope.parse(raw))
    except ValueError:
        return raw


@dataclass
class BatchFacts:
    """Read once per claimed batch: templates and suppressed addresses. (The caps are not
    read here: they are checked per delivery under a database lock, see ``_admit``.)"""

    templates: dict[str, TemplateSpec]
    suppressed: set[str]

    def is_suppressed(self, email: str) -> bool:
        return email.strip().lower() in self.suppressed


class DeliveryWorker:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        publisher: Publisher,
        settings: NotifySettings,
        clock: Clock = utcnow,
        rng: random.Random | None = None,
        batch_size: int = 50,
    ) -> None:
        self.sessions = sessions
        self.publisher = publisher
        self.settings = settings
        self.clock = clock
        self.rng = rng or random.Random()
        self.batch_size = batch_size
        self.email = EmailSender(settings)
        self.slack = SlackSender(settings)
        self.outgoing = OutgoingMessages(settings, clock)
        self.policy = RetryPolicy(
            max_attempts=settings.max_attempts,
            base_seconds=settings.retry_base_seconds,
            max_seconds=settings.retry_max_seconds,
        )
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._inflight: set[str] = set()
        self._sem = asyncio.Semaphore(settings.send_concurrency)
        bind = sessions.kw.get("bind")
        sqlite = bind is not None and bind.dialect.name == "sqlite"
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if sqlite else None
        self.relay = OutboxRelay(sessions=sessions, publisher=publisher, clock=clock)

    # lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="notify:worker")
        self._heartbeat_task = asyncio.create_task(self._heartbeat(), name="notify:lease")

    async def pause(self) -> None:
        """Send nothing more (``uptake run``'s drain): the sends in hand finish and their
        results are published; what is queued stays queued for the next start. Stopped
        now, no delivery result can come after playbooks (which reads them) has stopped."""
        self._stopping.set()
        self._wake.set()
        await finish_within(self._task, 30)
        await self.relay.publish_pending()

    async def stop(self) -> None:
        await self.pause()
        if self._heartbeat_task is not None:
            await self._heartbeat_task
        await self.slack.close()

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncSession]:
        """A write transaction. On SQLite the worker's writers queue here, in process, rather
        than in SQLite's busy handler, whose sleeps (up to 100 ms) would set the pace."""
        async with self._write_lock or nullcontext(), self.sessions() as session, session.begin():
            yield session

    async def _heartbeat(self) -> None:
        """Renew the lease of what this process holds, every third of the lease.

        A short lease that is renewed while alive: a process that dies gives its deliveries
        back within one lease (``NOTIFY_SEND_LEASE``), however long a send may take.
        """
        lease = timedelta(seconds=self.settings.send_lease_seconds)
        while True:
            if await wait_for_event(self._stopping, lease.total_seconds() / 3):
                return
            held = list(self._inflight)
            if not held:
                continue
            try:
                async with self._writing() as session:
                    await repository.extend_leases(session, held, until=self.clock() + lease)
            except Exception as exc:
                log.warning("notify.lease_renewal_failed", error=repr(exc), held=len(held))

    def wake(self) -> None:
        self._wake.set()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            busy = False
            try:
                await self.relay.publish_pending()
                busy = await self.run_due() >= self.batch_size
                await self.relay.publish_pending()
                await self.relay.prune()
            except Exception as exc:  # keep the loop alive; the log shows what broke
                log.error("notify.worker_error", error=repr(exc))
            if busy:
                continue
            await wait_for_event(self._wake, self.settings.poll_interval_seconds)

    # sending -----------------------------------------------------------------------------

    async def run_due(self) -> int:
        """Claim what is due and process it; one recipient's deliveries go one by one."""
        now = self.clock()
        lease = now + timedelta(seconds=self.settings.send_lease_seconds)
        async with self._writing() as session:
            claimed = await repository.claim_due(
                session, now=now, lease_until=lease, limit=self.batch_size
            )
        if not claimed:
            return 0
        self._inflight.update(d.id for d in claimed)
        try:
            facts = await self._facts(claimed, now)
        except Exception:
            self._inflight.difference_update(d.id for d in claimed)
            raise  # left ``sending``: the lease brings them back
        by_recipient: dict[str, list[Delivery]] = defaultdict(list)
        for delivery in claimed:
            by_recipient[delivery.recipient_key].append(delivery)
        await asyncio.gather(*(self._process_all(ds, facts) for ds in by_recipient.values()))
        return len(claimed)

    async def _facts(self, batch: list[Delivery], now: datetime) -> BatchFacts:
        """What the checks need for a whole batch, in two queries instead of two each."""
        emails = {d.recipient for d in batch if d.channel == "email" and d.recipient}
        async with self.sessions() as session:
            return BatchFacts(
                templates=await repository.get_templates(session, {d.template_id for d in batch}),
                suppressed=await repository.suppressed_among(session, emails),
            )

    async def _process_all(self, deliveries: list[Delivery], facts: BatchFacts) -> None:
        async with self._sem:
            for delivery in deliveries:
                try:
                    await self.process(delivery, facts)
                except Exception as exc:
                    await self._unexpected(delivery, exc)
                finally:
                    self._inflight.discard(delivery.id)

    async def _unexpected(self, d: Delivery, exc: Exception) -> None:
        """A bug or bad data must not loop forever: fail it. If even that cannot be stored
        (database down), it stays ``sending`` and is tried again when the lease runs out."""
        log.error("notify.process_failed", delivery=d.id, error=repr(exc))
        if isinstance(exc, OperationalError | OSError | TimeoutError):
            return  # the database or the network: transient, the lease brings it back
        try:
            await self._fail(d, f"internal error: {exc!r}", attempts=d.attempts + 1)
        except Exception as again:
            log.error("notify.fail_not_stored", delivery=d.id, error=repr(again))

    async def process(self, d: Delivery, facts: BatchFacts) -> None:
        """Checks (template, address, suppression, cap), then render + send + record."""
        now = self.clock()
        template = facts.templates.get(d.template_id)
        if template is None:
            return await self._fail(d, f"unknown template '{d.template_id}'", attempts=d.attempts)
        if d.channel == "email" and not d.recipient:
            return await self._fail(d, "recipient has no email address", attempts=d.attempts)
        if d.channel == "email" and d.recipient and facts.is_suppressed(d.recipient):
            return await self._finish(d, "suppressed", detail="address is suppressed")
        if d.channel == "email" and d.automated and not await self._admit(d, now):
            return None  # deferred until the caps allow it
        try:
            result = await self._send(d, template)
        except RenderError as exc:
            return await self._fail(d, f"template does not render: {exc}", attempts=d.attempts)
        SEND_ATTEMPTS.labels(d.channel, result.outcome).inc()
        await self._record(d, result)

    async def _admit(self, d: Delivery, now: datetime) -> bool:
        """Check both caps and take a slot under them, or defer: one transaction holding
        the account's and the contact's cap locks, so replicas cannot over-send.

        A slot is this delivery's ``capped_at``, committed before the send; other replicas
        count it from then on. The per-contact cap counts the contact's automated emails,
        the per-account cap the account's automated emails (one per request, whatever the
        number of its recipients).
        """
        s = self.settings
        contact_window = timedelta(seconds=s.frequency_cap_window_seconds)
        account_window = timedelta(seconds=s.account_cap_window_seconds)
        keys = [f"account:{d.account_id}"] if s.account_cap > 0 else []
        keys += [f"contact:{d.recipient_key}"] if s.frequency_cap > 0 else []
        waits: list[tuple[datetime, str]] = []
        async with self._writing() as session:
            await repository.lock_cap_keys(session, keys, now=now)
            if s.frequency_cap > 0:
                times = await repository.capped_times_of_recipient(
                    session, d.recipient_key, since=now - contact_window, exclude_id=d.id
                )
                until = next_allowed(times, now=now, cap=s.frequency_cap, window=contact_window)
                if until is not None:
                    waits.append((until, "frequency cap"))
            if s.account_cap > 0:
                times = await repository.capped_times_of_account(
                    session,
                    d.account_id,
                    since=now - account_window,
                    exclude_id=d.id,
                    exclude_key=d.idempotency_key,
                )
                until = next_allowed(times, now=now, cap=s.account_cap, window=account_window)
                if until is not None:
                    waits.append((until, "account cap"))
            if waits:
                until, cap = max(waits)
                await self._defer(session, d, until, cap=cap, now=now)
                return False
            await repository.set_delivery(session, d.id, capped_at=now)
        return True

    async def _send(self, d: Delivery, template: TemplateSpec) -> SendResult:
        if d.channel == "slack":
            message = self.outgoing.slack(d, template)
            return await self.slack.send(
                message, channel=d.recipient, delivery_id=d.id, resumed=d.resumed
            )
        return await self.email.send(self.outgoing.email(d, template), delivery_id=d.id)

    # recording outcomes ------------------------------------------------------------------

    async def _record(self, d: Delivery, result: SendResult) -> None:
        attempts = d.attempts + 1
        if result.outcome == "sent":
            return await self._finish(
                d, "sent", attempts=attempts, provider_response=result.provider_response
            )
        delay = self.policy.next_delay(attempts, result, self.rng)
        if delay is None:
            return await self._fail(d, result.detail, attempts=attempts)
        now = self.clock()
        log.info("notify.retry", delivery=d.id, attempts=attempts, delay=round(delay, 2))
        retry_at = now + timedelta(seconds=delay)
        detail = f"{result.detail[:1000]}; next try at {retry_at.isoformat()}"
        event = self._event(d, "retrying", attempts, detail)
        async with self._writing() as session:
            await repository.set_delivery(
                session,
                d.id,
                status="retrying",
                attempts=attempts,
                next_attempt_at=retry_at,
                lease_until=None,
                last_error=result.detail[:2000],
                updated_at=now,
            )
            await repository.add_outbox(
                session, [repository.outbox_row(topics.NOTIFY_DELIVERIES, event, now=now)]
            )

    def _event(
        self, d: Delivery, status: DeliveryStatus, attempts: int, detail: str | None
    ) -> Envelope:
        trace_id = None
        try:
            trace_id = Envelope.parse(d.request_envelope).trace_id
        except ValueError:
            pass
        return delivery_event(
            status=status,
            idempotency_key=d.idempotency_key,
            channel=d.channel,
            account_id=d.account_id,
            recipient=d.recipient,
            attempts=attempts,
            task_group_id=d.task_group_id,
            step_key=d.step_key,
            detail=detail,
            trace_id=trace_id,
        )

    async def _finish(
        self,
        d: Delivery,
        status: DeliveryStatus,
        *,
        attempts: int | None = None,
        detail: str | None = None,
        provider_response: str | None = None,
        extra_outbox: list[dict[str, Any]] | None = None,
    ) -> None:
        now = self.clock()
        attempts = d.attempts if attempts is None else attempts
        values: dict[str, Any] = {
            "status": status,
            "attempts": attempts,
            "lease_until": None,
            "updated_at": now,
        }
        if status == "sent":
            values["sent_at"] = now
            values["provider_response"] = (provider_response or "")[:2000]
            values["message_id"] = (
                message_id_for(d.id, self.settings.sender_address) if d.channel == "email" else None
            )
        if detail and status != "sent":
            values["last_error"] = detail[:2000]
        if status == "failed":
            values["capped_at"] = None  # never delivered: its cap slot goes back
        event = self._event(d, status, attempts, detail)
        async with self._writing() as session:
            await repository.set_delivery(session, d.id, **values)
            await repository.add_outbox(
                session,
                [
                    repository.outbox_row(topics.NOTIFY_DELIVERIES, event, now=now),
                    *(extra_outbox or []),
                ],
            )
        DELIVERIES.labels(d.channel, status).inc()
        log.info("notify.delivery", delivery=d.id, status=status, attempts=attempts)

    async def _fail(self, d: Delivery, detail: str, *, attempts: int) -> None:
        """Permanent failure or the last try: log it, dead-letter the request, publish."""
        dead = repository.outbox_row(
            topics.dlq(topics.NOTIFY_REQUESTS),
            raw=(d.account_id.encode(), _without_secrets(d.request_envelope)),
            headers=[
                ("x-original-topic", topics.NOTIFY_REQUESTS),
                ("x-consumer-group", self.settings.consumer_group),
                ("x-delivery-id", d.id),
                ("x-attempts", str(attempts)),
                ("x-error", detail[:1000]),
            ],
            now=self.clock(),
        )
        await self._finish(d, "failed", attempts=attempts, detail=detail, extra_outbox=[dead])

    async def _defer(
        self, session: AsyncSession, d: Delivery, until: datetime, *, cap: str, now: datetime
    ) -> None:
        """Over a cap: wait for its window, never drop. Published once. The caller's
        transaction (the one holding the cap locks) stores it."""
        detail = f"{cap}: next allowed at {until.isoformat()}"
        DELIVERIES.labels(d.channel, "deferred").inc()
        log.info("notify.deferred", delivery=d.id, cap=cap, until=until.isoformat())
        await repository.set_delivery(
            session,
            d.id,
            status="deferred",
            deferrals=d.deferrals + 1,
            next_attempt_at=until,
            lease_until=None,
            last_error=detail,
            capped_at=None,
            updated_at=now,
        )
        if d.deferrals == 0:
            event = self._event(d, "deferred", d.attempts, detail)
            await repository.add_outbox(
                session, [repository.outbox_row(topics.NOTIFY_DELIVERIES, event, now=now)]
            )
