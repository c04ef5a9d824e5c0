"""The step scheduler: sends each due email/Slack step once, as ``notify.requests.v1``.

A pass takes the due steps in one transaction, locking them with ``FOR UPDATE SKIP
LOCKED`` on PostgreSQL so several replicas split the work instead of sending twice
(SQLite runs a single scheduler: one process owns the file). It publishes the requests
and waits for the broker's acknowledgement *before* marking the steps sent and
committing; if the publish fails the transaction rolls back and the next pass retries.
A crash between the acknowledgement and the commit re-sends with the same idempotency
key (``<task_group_id>:<step_key>``), which notify drops.

``now`` is injectable (``clock``, or ``run_once(now=...)``) so tests can move time on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.playbooks import repository
from services.playbooks.flows import facts_of
from services.playbooks.models import Task, TaskGroup
from services.playbooks.outbound import ContactFacts, CsmFacts, DueStep, build_request
from shared import topics
from shared.background import finish_within, wait_for_event
from shared.envelope import Envelope, wrap
from shared.kafka import Publisher

log = structlog.get_logger(__name__)
SOURCE = "playbooks"
ALERT_GONE = "not sent: the alert was resolved during the review window"


@dataclass(frozen=True, slots=True)
class SchedulerConfig:
    batch_size: int = 200
    interval_seconds: float = 5.0
    default_slack_channel: str | None = None
    no_recipient_retry: timedelta = timedelta(minutes=10)
    no_recipient_give_up: timedelta = timedelta(days=3)


def _due_step(task: Task, group: TaskGroup) -> DueStep:
    return DueStep(
        task_group_id=group.id,
        step_key=task.step_key,
        type=task.type,
        title=task.title,
        template_id=task.template_id or "",
        recipients=task.recipients,
        from_owner=task.from_owner,
        step_context=task.step_context or {},
        group_context=group.context or {},
        playbook_id=group.playbook_id,
        playbook_name=group.playbook_name,
    )


class StepScheduler:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        publisher: Publisher,
        *,
        config: SchedulerConfig,
        clock: Callable[[], datetime],
    ) -> None:
        self.sessions = sessions
        self.publisher = publisher
        self.config = config
        self.clock = clock
        self.sent_total = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """New groups (or recipients) were stored: look for due steps now rather than at
        the next tick, so a day-0 email goes out within a second of its trigger."""
        self._wake.set()

    async def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._loop(), name="playbooks-scheduler")

    async def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        await finish_within(self._task, 30)

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                while await self.run_once() >= self.config.batch_size:
                    pass  # a full pass: more may be due right away
            except Exception as exc:
                log.warning("playbooks.scheduler_pass_failed", error=repr(exc))
            await wait_for_event(self._wake, self.config.interval_seconds)
            self._wake.clear()  # a wake during the pass above made this wait return at once

    async def run_once(self, now: datetime | None = None) -> int:
        """One pass: send the steps due at ``now``; returns how many were taken."""
        now = now or self.clock()
        async with self.sessions() as session, session.begin():
            postgres = session.bind is not None and session.bind.dialect.name == "postgresql"
            query = repository.due_steps_query(now, self.config.batch_size, skip_locked=postgres)
            rows: list[tuple[Task, TaskGroup]] = [(t, g) for t, g in await session.execute(query)]
            if not rows:
                return 0
            ready = await self._past_review(session, rows, now)
            envelopes, sent = await self._requests(session, ready, now)
            await self.publisher.publish_many((topics.NOTIFY_REQUESTS, e) for e in envelopes)
            for task in sent:
                task.status, task.sent_at, task.completed_at = "done", now, now
            await session.flush()
            await repository.complete_finished_groups(
                session, {t.task_group_id for t, _ in rows}, now=now
            )
        self.sent_total += len(envelopes)
        return len(rows)

    async def _past_review(
        self, session: AsyncSession, rows: list[tuple[Task, TaskGroup]], now: datetime
    ) -> list[tuple[Task, TaskGroup]]:
        """Steps whose review window ended go out only while their alert is still open: an
        alert-started group none of whose alerts is open any more cancels them."""
        reviewed = {
            g.id for t, g in rows if t.review_until is not None and g.trigger_kind == "alert"
        }
        still_open = await repository.groups_with_open_alerts(session, reviewed)
        ready = []
        for task, group in rows:
            if group.id in reviewed and group.id not in still_open:
                task.status, task.completed_at = "cancelled", now
                task.detail = ALERT_GONE
                log.info("playbooks.step_cancelled", task=task.id, reason="alert resolved")
            else:
                ready.append((task, group))
        return ready

    async def _requests(
        self, session: AsyncSession, rows: list[tuple[Task, TaskGroup]], now: datetime
    ) -> tuple[list[Envelope], list[Task]]:
        account_ids = {g.account_id for _, g in rows}
        accounts = await repository.accounts_by_id(session, account_ids)
        contacts = await repository.contacts_of(session, account_ids)
        owners = {
            g.assignee or (accounts[g.account_id].owner if g.account_id in accounts else None)
            for _, g in rows
        }
        csms = await repository.csms_by_email(session, [o for o in owners if o])
        envelopes: list[Envelope] = []
        sent: list[Task] = []
        for task, group in rows:
            account = accounts.get(group.account_id)
            facts = facts_of(account, group.account_id, None)
            csm_row = csms.get(group.assignee or facts.owner or "")
            csm = CsmFacts(csm_row.email, csm_row.name, csm_row.slack_id) if csm_row else None
            people = [
                ContactFacts(c.user_id, c.email, c.name, c.role, c.is_primary, c.last_seen_at)
                for c in contacts.get(group.account_id, [])
            ]
            request = build_request(
                _due_step(task, group),
                facts,
                people,
                csm,
                default_slack_channel=self.config.default_slack_channel,
            )
            if request is None:
                self._postpone(task, now)
                continue
            envelopes.append(
                wrap(
                    request,
                    type="notify.requested",
                    account_id=group.account_id,
                    source=SOURCE,
                    id=request.idempotency_key,
                )
            )
            sent.append(task)
        return envelopes, sent

    def _postpone(self, task: Task, now: datetime) -> None:
        """Nobody to send to yet (no contacts, no Slack id): retry later, then give up."""
        if now - task.due_at >= self.config.no_recipient_give_up:
            task.status, task.completed_at = "skipped", now
            task.detail = "no recipient: no contact with an email, or no Slack channel"
        else:
            task.send_after = now + self.config.no_recipient_retry
            task.detail = repository.WAITING_FOR_RECIPIENT
