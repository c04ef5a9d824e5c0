"""Starting task groups: one per (account, playbook, trigger), absorbed by an open one.

A :class:`GroupStarter` is one transaction's view of what starting needs (templates, the
team and its loads, the accounts, their open groups, the triggers already taken), loaded
in a few queries so a consumer batch of a thousand alerts costs a handful of round trips.
The replay guard is the ``group_triggers`` row, stored in the same transaction as the
group: a replayed alert finds its key and changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.playbooks import repository
from services.playbooks.assignment import Member, Team, assign
from services.playbooks.models import (
    Account,
    Contact,
    GroupExitEvent,
    GroupTrigger,
    Task,
    TaskGroup,
)
from services.playbooks.planning import (
    AccountFacts,
    StepPlan,
    TriggerFacts,
    conditions_hold,
    plan_steps,
)
from services.playbooks.templates import PlaybookTemplate, Step, exit_events


def new_id() -> str:
    return uuid.uuid4().hex


CSM_NAME_MAX = 200  # csms.name


def csm_name_from_email(email: str) -> str:
    """ "ann.lee@x" -> "Ann Lee", cut to fit the column (a local part may be 300 chars)."""
    local = email.split("@", 1)[0]
    words = local.replace("_", ".").replace("-", ".").split(".")
    name = " ".join(p.capitalize() for p in words if p)
    return (name or email)[:CSM_NAME_MAX]


def facts_of(account: Account | None, account_id: str, owner_hint: str | None) -> AccountFacts:
    if account is None:
        return AccountFacts(account_id=account_id, owner=owner_hint)
    return AccountFacts(
        account_id=account.account_id,
        name=account.name,
        plan=account.plan,
        mrr=account.mrr,
        owner=account.owner or owner_hint,
        stage=account.stage,
        segment=account.segment,
        renewal_date=account.renewal_date,
    )


@dataclass(slots=True)
class TeamDefaults:
    team: str = "default"
    capacity: int = 25
    review_minutes: float = 15.0  # PLAYBOOKS_REVIEW_MINUTES


def review_delay(step: Step, *, trigger_kind: str, default_minutes: float) -> timedelta:
    """How long a step waits after its due time for the CSM's review.

    The step's own ``delay_minutes`` when given; else ``default_minutes`` for a day-0
    email to the customer of an alert-started group (the alert may be a blip: the CSM
    gets a chance to look, and a resolved alert cancels the send); else none."""
    if not step.automated:
        return timedelta(0)
    if step.delay_minutes is not None:
        return timedelta(minutes=step.delay_minutes)
    if trigger_kind == "alert" and step.due_days == 0 and step.to_contacts:
        return timedelta(minutes=default_minutes)
    return timedelta(0)


def recipients_json(step: Step) -> dict[str, Any] | None:
    """The recipients spec a task keeps: an email to contacts carries its audience."""
    if step.to_contacts and step.type == "email":
        spec = step.to.model_dump(mode="json") if step.to else {"kind": "contacts"}
        return {**spec, "audience": step.effective_audience().model_dump(mode="json")}
    return step.to.model_dump(mode="json") if step.to else None


@dataclass(slots=True)
class Started:
    group: TaskGroup
    created: bool  # False: an open group absorbed the trigger, or the trigger was seen


@dataclass
class GroupStarter:
    session: AsyncSession
    now: datetime
    defaults: TeamDefaults
    templates: list[PlaybookTemplate]
    team: Team
    accounts: dict[str, Account]
    open_groups: dict[tuple[str, str], TaskGroup]
    seen: set[tuple[str, str, str]]
    cursors_before: dict[str, str] = field(default_factory=dict)
    new_csms: dict[str, dict[str, Any]] = field(default_factory=dict)
    new_exit_events: set[str] = field(default_factory=set)
    contacts: dict[tuple[str, str], Contact] = field(default_factory=dict)
    _groups: list[TaskGroup] = field(default_factory=list)
    _rows: dict[type[Any], list[dict[str, Any]]] = field(default_factory=dict)

    @classmethod
    async def load(
        cls,
        session: AsyncSession,
        *,
        account_ids: Iterable[str],
        trigger_keys: Iterable[str],
        now: datetime,
        defaults: TeamDefaults,
    ) -> GroupStarter:
        ids = list(set(account_ids))
        team = await repository.load_team(session, lock=True)
        return cls(
            session=session,
            now=now,
            defaults=defaults,
            templates=await repository.enabled_templates(session),
            team=team,
            accounts=await repository.accounts_by_id(session, ids),
            open_groups=await repository.open_groups_of(session, ids),
            seen=await repository.seen_triggers(session, ids, trigger_keys),
            cursors_before=dict(team.cursors),
        )

    def ensure_csm(self, email: str | None) -> None:
        """An owner not yet in the team joins it (DESIGN.md: owners are added)."""
        if not email or email in self.team.members:
            return
        self.team.members[email] = Member(email, self.defaults.team, self.defaults.capacity)
        self.new_csms[email] = {
            "email": email,
            "name": csm_name_from_email(email),
            "slack_id": None,
            "team": self.defaults.team,
            "capacity": self.defaults.capacity,
            "active": True,
            "auto_added": True,
            "created_at": self.now,
            "updated_at": self.now,
        }

    async def flush(self) -> None:
        """Write the groups started so far, parents first (queries after this see them)."""
        if self._groups:
            self.session.add_all(self._groups)
            await self.session.flush()
        for model in (Task, GroupTrigger, GroupExitEvent):  # plain rows: many, so Core inserts
            rows = self._rows.pop(model, [])
            if rows:
                await self.session.execute(insert(model), rows)
        self._groups = []

    def _row(self, model: type[Any], **values: Any) -> None:
        self._rows.setdefault(model, []).append(values)

    async def finish(self) -> None:
        """Store what the batch added: groups, new CSMs, round-robin cursors."""
        await self.flush()
        await repository.add_csms(self.session, list(self.new_csms.values()))
        await repository.save_cursors(self.session, self.team, self.cursors_before)
        self.new_csms.clear()
        self.cursors_before = dict(self.team.cursors)

    def start(
        self,
        *,
        account_id: str,
        template: PlaybookTemplate,
        trigger_key: str,
        trigger: TriggerFacts,
        alert_id: str | None = None,
        owner_hint: str | None = None,
        assignee: str | None = None,
        check_conditions: bool = True,
    ) -> Started | None:
        """Start (or absorb into the open group) one trigger; None when the account does not
        match the playbook's conditions or the trigger was already taken."""
        key = (account_id, template.id, trigger_key)
        open_group = self.open_groups.get((account_id, template.id))
        if key in self.seen:
            return Started(open_group, False) if open_group else None
        facts = facts_of(self.accounts.get(account_id), account_id, owner_hint)
        if (
            open_group is None
            and check_conditions
            and not conditions_hold(template.conditions, facts, trigger)
        ):
            return None
        self.seen.add(key)
        if open_group is not None:
            self._add_trigger(open_group, trigger_key, trigger.kind, alert_id)
            return Started(open_group, False)
        group = self._create(facts, template, trigger_key, trigger, assignee)
        self._add_trigger(group, trigger_key, trigger.kind, alert_id)
        return Started(group, True)

    def _add_trigger(
        self, group: TaskGroup, trigger_key: str, kind: str, alert_id: str | None
    ) -> None:
        self._row(
            GroupTrigger,
            account_id=group.account_id,
            playbook_id=group.playbook_id,
            trigger_key=trigger_key,
            task_group_id=group.id,
            kind=kind,
            alert_id=alert_id,
            resolved_at=None,
            created_at=self.now,
        )

    def _create(
        self,
        facts: AccountFacts,
        template: PlaybookTemplate,
        trigger_key: str,
        trigger: TriggerFacts,
        assignee: str | None,
    ) -> TaskGroup:
        plans = plan_steps(template, facts, trigger, started_at=self.now)
        self.ensure_csm(facts.owner)
        group_assignee, rule_used = self._assign_group(template, facts, plans, assignee)
        group = TaskGroup(
            id=new_id(),
            account_id=facts.account_id,
            playbook_id=template.id,
            playbook_name=template.name,
            phase=template.phase,
            status="open",
            assignee=group_assignee,
            assignment_rule=rule_used,
            trigger_kind=trigger.kind,
            trigger_key=trigger_key,
            exit_conditions=[c.model_dump(mode="json") for c in template.exit],
            context=trigger.context,
            started_at=self.now,
        )
        self._groups.append(group)
        for plan in plans:
            self._row(Task, **self._task(group, plan, facts))
        for event in exit_events(template):
            self._row(
                GroupExitEvent, task_group_id=group.id, event=event, account_id=facts.account_id
            )
            self.new_exit_events.add(event)
        if all(p.status != "open" for p in plans):
            group.status, group.closed_at = "completed", self.now
            group.closed_reason = "no step applies to this account"
        else:
            self.open_groups[(facts.account_id, template.id)] = group
        return group

    def _assign_group(
        self,
        template: PlaybookTemplate,
        facts: AccountFacts,
        plans: list[StepPlan],
        assignee: str | None,
    ) -> tuple[str | None, str]:
        needed = sum(1 for p in plans if p.needs_person and p.step.assignee is None)
        if assignee:  # a person's explicit choice (the route checked the CSM is active)
            if assignee in self.team.members:
                self.team.members[assignee].load += needed
            return assignee, "manual"
        rule = template.assignee
        chosen = assign(
            self.team,
            rule=rule.rule,
            owner=facts.owner,
            team_name=rule.team,
            fallback=rule.fallback,
            needed=needed,
        )
        return chosen.email, chosen.rule

    def _task(self, group: TaskGroup, plan: StepPlan, facts: AccountFacts) -> dict[str, Any]:
        step = plan.step
        task_assignee = group.assignee
        delay = review_delay(
            step, trigger_kind=group.trigger_kind, default_minutes=self.defaults.review_minutes
        )
        send_after = plan.due_at + delay if step.automated else None
        if step.assignee is not None and plan.needs_person:
            own = assign(
                self.team,
                rule=step.assignee.rule,
                owner=facts.owner,
                team_name=step.assignee.team,
                fallback=step.assignee.fallback,
                needed=1,
            )
            task_assignee = own.email
        return dict(
            id=new_id(),
            task_group_id=group.id,
            account_id=group.account_id,
            step_key=step.key,
            position=plan.position,
            type=step.type,
            automated=step.automated,
            title=step.title,
            description=step.description,
            status=plan.status,
            assignee=task_assignee,
            due_at=plan.due_at,
            send_after=send_after,
            review_until=send_after if delay > timedelta(0) else None,
            completed_at=self.now if plan.status != "open" else None,
            detail=plan.detail,
            template_id=step.template_id,
            recipients=recipients_json(step),
            from_owner=step.from_owner,
            step_context=step.context,
            delivery_attempts=0,
            sent_at=None,
            delivery_status=None,
            delivery_detail=None,
            delivery_updated_at=None,
        )
