"""Kafka in: alerts, account changes, product events, delivery outcomes -> task groups.

One consumer group over four topics. Each batch is stored in one transaction (groups,
their tasks, the trigger keys that make replays harmless), then the runner commits the
offsets. Usage events are many and matter only when they end a group (an ``event_seen``
exit), so they are filtered by name in memory before touching the database.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.playbooks import churn, repository
from services.playbooks.flows import GroupStarter, TeamDefaults
from services.playbooks.models import Account, Contact, Task
from services.playbooks.planning import TriggerFacts
from services.playbooks.templates import matches_alert, matches_lifecycle
from shared import topics
from shared.envelope import Envelope
from shared.kafka import Record, TransientError
from shared.messages import (
    AccountUpserted,
    AlertChanged,
    ContactUpserted,
    DeliveryChanged,
    OwnerChanged,
)
from shared.textfit import clip, email_or_none

log = structlog.get_logger(__name__)

TOPICS = list(topics.CONSUMED_BY["playbooks"])
STARTING_STATUSES = {"open", "acknowledged"}
ACCOUNT_FIELDS = ("name", "plan", "mrr", "stage", "segment", "renewal_date")
# Later delivery news wins; a replayed or late "sent" never hides an "opened".
DELIVERY_RANK = {
    "deferred": 1,
    "sent": 2,
    "failed": 2,
    "suppressed": 2,
    "opened": 3,
    "clicked": 4,
    "unsubscribed": 5,
}
EXIT_NAMES_TTL = 5.0


# What accounts.v1 may say, cut to the columns it lands in (models.py; shared/textfit.py)
ACCOUNT_TEXT_MAX = {"name": 300, "plan": 100, "stage": 100, "segment": 100}
CONTACT_TEXT_MAX = {"name": 300, "role": 100}
ID_MAX = 255


def _lower(email: str | None) -> str | None:
    """An owner's email, lower-cased (none when too long to be an email)."""
    value = email_or_none(email)
    return value.lower() if value else None


class PlaybooksConsumer:
    """The batch handler given to :class:`shared.kafka.ConsumerRunner`."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        defaults: TeamDefaults,
        clock: Callable[[], datetime],
        on_stored: Callable[[], None] | None = None,
    ) -> None:
        self.sessions = sessions
        self.defaults = defaults
        self.clock = clock
        self.on_stored = on_stored  # wakes the scheduler: day-0 steps go out at once
        self._exit_names: set[str] = set()
        self._exit_names_at = 0.0

    async def exit_names(self) -> set[str]:
        if time.monotonic() - self._exit_names_at > EXIT_NAMES_TTL:
            async with self.sessions() as session:
                self._exit_names = await repository.exit_event_names(session)
            self._exit_names_at = time.monotonic()
        return self._exit_names

    async def handle(self, records: list[Record]) -> None:
        relevant = [r for r in records if r.topic != topics.USAGE_EVENTS]
        usage = [r for r in records if r.topic == topics.USAGE_EVENTS]
        milestones: set[tuple[str, str]] = set()
        if usage:
            names = await self.exit_names()
            for r in usage:
                event = r.envelope.data.get("event")
                if isinstance(event, str) and event in names:
                    milestones.add((r.envelope.account_id, event))
        if not relevant and not milestones:
            return
        try:
            await self._store(relevant, milestones)
        except IntegrityError as exc:
            if not is_start_race(exc):
                raise
            # Another replica started the same group (it consumes another topic of this
            # account): retry the batch, which now finds that group and absorbs into it.
            raise TransientError(f"concurrent group start: {exc.orig!r}") from exc
        if self.on_stored is not None:
            self.on_stored()

    async def _store(self, relevant: list[Record], milestones: set[tuple[str, str]]) -> None:
        now = self.clock()
        async with self.sessions() as session, session.begin():
            starter = await GroupStarter.load(
                session,
                account_ids=[r.envelope.account_id for r in relevant],
                trigger_keys=[_key(r) for r in relevant],
                now=now,
                defaults=self.defaults,
            )
            starter.contacts = await repository.contacts_by_key(
                session,
                [
                    (r.envelope.account_id, str(r.envelope.data.get("user_id")))
                    for r in relevant
                    if r.envelope.type == "contact.upserted"
                ],
            )
            for record in relevant:
                await self._dispatch(starter, record)
            await starter.finish()
            reachable = {
                r.envelope.account_id
                for r in relevant
                if r.envelope.type == "contact.upserted" and r.envelope.data.get("email")
            }
            await repository.release_waiting_steps(session, reachable, now=now)
            if milestones:
                await self._apply_milestones(session, milestones, now)
        self._exit_names |= starter.new_exit_events

    async def _dispatch(self, starter: GroupStarter, record: Record) -> None:
        env = record.envelope
        if env.type.startswith("alert."):
            await on_alert(starter, env, env.payload(AlertChanged))
        elif env.type == "account.upserted":
            await on_account(starter, env, env.payload(AccountUpserted))
        elif env.type == "contact.upserted":
            on_contact(starter, env, env.payload(ContactUpserted))
        elif env.type == "account.owner_changed":
            msg = env.payload(OwnerChanged)
            await change_owner(
                starter, env, _lower(msg.owner), previous_hint=_lower(msg.previous_owner)
            )
        elif env.type == "notify.delivery":
            await on_delivery(starter.session, env.payload(DeliveryChanged), starter.now)

    async def _apply_milestones(
        self, session: AsyncSession, pairs: set[tuple[str, str]], now: datetime
    ) -> None:
        exited = await repository.groups_exited_by_events(session, pairs)
        for group_id, event in exited.items():
            await repository.close_groups(
                session, [group_id], status="exited", reason=f"event seen: {event}", now=now
            )
        if exited:
            log.info("playbooks.groups_exited", count=len(exited), reason="event_seen")


def is_start_race(exc: IntegrityError) -> bool:
    """The open-group index or the trigger key refused a row another writer just stored."""
    text = str(exc.orig)
    markers = (
        "uq_task_groups_open",  # PostgreSQL names the index / constraint
        "pk_group_triggers",
        "UNIQUE constraint failed: task_groups.account_id",  # SQLite names the columns
        "UNIQUE constraint failed: group_triggers.",
    )
    return any(m in text for m in markers)


def _key(record: Record) -> str:
    env = record.envelope
    if env.type.startswith("alert."):
        return f"alert:{env.data.get('alert_id')}"
    return f"lifecycle:{env.id}"


async def on_alert(starter: GroupStarter, env: Envelope, alert: AlertChanged) -> None:
    if env.type == "alert.resolved" or alert.status == "resolved":
        if churn.resolved_for_churn(alert.details):
            await churn.cancel_account(starter, env.account_id)
        await starter.flush()
        ids = await repository.resolve_alert(
            starter.session, env.account_id, alert.alert_id, now=starter.now
        )
        await repository.close_groups(
            starter.session, ids, status="exited", reason="alert resolved", now=starter.now
        )
        for key in [k for k, g in starter.open_groups.items() if g.id in ids]:
            del starter.open_groups[key]
        return
    if alert.status not in STARTING_STATUSES:
        return  # snoozed, or deferred to the digest by the CSM's alert budget
    if len(alert.alert_id) > ID_MAX:
        log.warning("playbooks.alert_ignored", reason="alert_id too long", id=alert.alert_id[:80])
        return
    owner = _lower(alert.owner)
    starter.ensure_csm(owner)
    trigger = TriggerFacts(
        kind="alert",
        rule_type=alert.rule_type,
        severity=alert.severity,
        context={
            "alert": {
                "id": alert.alert_id,
                "rule_id": alert.rule_id,
                "rule_type": alert.rule_type,
                "severity": alert.severity,
                "title": alert.title,
                "reason": alert.reason,
                "details": alert.details,
            }
        },
    )
    for template in starter.templates:
        if matches_alert(
            template, rule_type=alert.rule_type, rule_id=alert.rule_id, severity=alert.severity
        ):
            starter.start(
                account_id=env.account_id,
                template=template,
                trigger_key=f"alert:{alert.alert_id}",
                trigger=trigger,
                alert_id=alert.alert_id,
                owner_hint=owner,
            )


async def on_account(starter: GroupStarter, env: Envelope, msg: AccountUpserted) -> None:
    account = starter.accounts.get(env.account_id)
    previous_stage = account.stage if account else None
    if account is None:
        account = Account(account_id=env.account_id, updated_at=starter.now)
        starter.session.add(account)
        starter.accounts[env.account_id] = account
    for name in ACCOUNT_FIELDS:
        value = clip(getattr(msg, name), ACCOUNT_TEXT_MAX.get(name, 0))
        if value is not None:
            setattr(account, name, value)
    account.updated_at = starter.now
    if msg.owner is not None:
        await change_owner(starter, env, _lower(msg.owner))
    stage = clip(msg.stage, ACCOUNT_TEXT_MAX["stage"])
    if stage is not None and stage != previous_stage:
        await enter_stage(starter, env, stage)
    if churn.says_churned(msg.traits):
        await churn.cancel_account(starter, env.account_id)


async def enter_stage(starter: GroupStarter, env: Envelope, stage: str) -> None:
    await starter.flush()
    exited = await repository.groups_exited_by_stage(starter.session, env.account_id, stage)
    await repository.close_groups(
        starter.session,
        exited,
        status="exited",
        reason=f"stage changed to {stage}",
        now=starter.now,
    )
    for key in [k for k, g in starter.open_groups.items() if g.id in exited]:
        del starter.open_groups[key]
    trigger = TriggerFacts(kind="lifecycle", context={"stage": stage})
    for template in starter.templates:
        if matches_lifecycle(template, event="stage_entered", stage=stage):
            starter.start(
                account_id=env.account_id,
                template=template,
                trigger_key=f"lifecycle:{env.id}",
                trigger=trigger,
            )


async def change_owner(
    starter: GroupStarter, env: Envelope, owner: str | None, *, previous_hint: str | None = None
) -> None:
    """A new owner joins the team and takes over the previous owner's open tasks of the
    account; a change from a known owner starts the handoff play."""
    account = starter.accounts.get(env.account_id)
    if account is None:
        account = Account(account_id=env.account_id, updated_at=starter.now)
        starter.session.add(account)
        starter.accounts[env.account_id] = account
    previous = account.owner or previous_hint
    if owner is None or owner == previous:
        account.owner = owner or account.owner
        return
    account.owner = owner
    starter.ensure_csm(owner)
    if previous is None:
        return  # the first owner is an assignment, not a handoff
    await starter.flush()
    moved = await repository.hand_over_open_work(
        starter.session, env.account_id, previous=previous, owner=owner
    )
    if previous in starter.team.members:
        starter.team.members[previous].load -= moved
    starter.team.members[owner].load += moved
    trigger = TriggerFacts(
        kind="lifecycle", context={"previous_owner": previous, "new_owner": owner}
    )
    for template in starter.templates:
        if matches_lifecycle(template, event="owner_changed", stage=None):
            starter.start(
                account_id=env.account_id,
                template=template,
                trigger_key=f"lifecycle:{env.id}",
                trigger=trigger,
            )


def primary_trait(traits: dict[str, Any]) -> bool | None:
    """The ``primary`` trait as a bool (true/"true"/"yes"/1), or None when not given."""
    value = traits.get("primary")
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "1")
    return value is True or value == 1


def on_contact(starter: GroupStarter, env: Envelope, msg: ContactUpserted) -> None:
    """Keep the contact; a user id too long to key it is dropped, an email too long to be
    one is left out, the name and role are cut to their columns. ``last_seen_at`` (the
    identify's time) only moves forward: a late, older identify changes nothing known."""
    now = starter.now
    if len(msg.user_id) > ID_MAX:
        log.warning("playbooks.contact_ignored", reason="user_id too long", id=msg.user_id[:80])
        return
    values = {
        "email": email_or_none(msg.email),
        "name": clip(msg.name, CONTACT_TEXT_MAX["name"]),
        "role": clip(msg.role, CONTACT_TEXT_MAX["role"]),
    }
    contact = starter.contacts.get((env.account_id, msg.user_id))
    if contact is None:
        contact = Contact(account_id=env.account_id, user_id=msg.user_id, updated_at=now)
        starter.contacts[(env.account_id, msg.user_id)] = contact
        starter.session.add(contact)
    # An identify older than the one stored only fills what is still unknown.
    newer = contact.last_seen_at is None or env.occurred_at >= contact.last_seen_at
    for name, value in values.items():
        if value is not None and (newer or getattr(contact, name) is None):
            setattr(contact, name, value)
    primary = primary_trait(msg.traits)
    if primary is not None and newer:
        contact.is_primary = primary
    elif contact.is_primary is None:
        contact.is_primary = False
    if newer:
        contact.last_seen_at = env.occurred_at
    contact.updated_at = now


def _step_of(msg: DeliveryChanged) -> tuple[str, str] | None:
    if msg.task_group_id and msg.step_key:
        return msg.task_group_id, msg.step_key
    group_id, sep, step_key = msg.idempotency_key.partition(":")
    return (group_id, step_key) if sep and group_id and step_key else None


async def on_delivery(session: AsyncSession, msg: DeliveryChanged, now: datetime) -> None:
    """Show the outcome on the step; the highest-ranked news wins, so replays change nothing."""
    where = _step_of(msg)
    if where is None:
        return
    task = await session.scalar(
        select(Task).where(Task.task_group_id == where[0], Task.step_key == where[1])
    )
    if task is None:
        return
    rank = DELIVERY_RANK.get(msg.status, 0)
    if task.delivery_status is not None and DELIVERY_RANK.get(task.delivery_status, 0) > rank:
        return
    task.delivery_status = msg.status
    task.delivery_detail = (msg.detail or "")[:1000] or None
    task.delivery_attempts = max(task.delivery_attempts, msg.attempts)
    task.delivery_updated_at = now
