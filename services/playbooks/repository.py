"""Every query of the playbooks service. The caller owns the transaction.

Helpers here flush but never commit: a consumer batch, a route or a scheduler pass
stores its whole effect (and its dedupe marks) in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import structlog
from prometheus_client import Counter
from sqlalchemy import Select, and_, func, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.playbooks.assignment import Member, Team
from services.playbooks.models import (
    Account,
    AssignmentCursor,
    Contact,
    Csm,
    GroupExitEvent,
    GroupTrigger,
    LibrarySeed,
    Playbook,
    Task,
    TaskGroup,
)
from services.playbooks.templates import (
    PlaybookTemplate,
    TemplateError,
    exit_events,
    parse_template,
)
from shared.db import upsert

log = structlog.get_logger(__name__)

INVALID_TEMPLATES = Counter(
    "uptake_playbooks_invalid_templates_total",
    "Stored playbook versions that no longer validate (counted once per version loaded)",
)

_TEMPLATES: dict[tuple[str, int, datetime], PlaybookTemplate | TemplateError] = {}


def stored_template(row: Playbook) -> PlaybookTemplate | TemplateError:
    """The stored playbook validated as a new one would be (cached per version).

    A row saved before a rule tightened (a 150-character role on SQLite, a condition
    value that no longer fits) comes back as the :class:`TemplateError`: it is logged
    and counted once per version, never raised, so no batch or GET fails on it.
    """
    key = (row.id, row.version, row.updated_at)
    cached = _TEMPLATES.get(key)
    if cached is None:
        if len(_TEMPLATES) > 1000:
            _TEMPLATES.clear()
        try:
            cached = parse_template(row.definition)
        except TemplateError as exc:
            cached = exc
            INVALID_TEMPLATES.inc()
            log.warning(
                "playbooks.stored_template_invalid",
                playbook_id=row.id,
                version=row.version,
                errors=[p.model_dump() for p in exc.problems],
            )
        _TEMPLATES[key] = cached
    return cached


async def enabled_templates(session: AsyncSession) -> list[PlaybookTemplate]:
    """Templates that may start groups; a stored one that no longer validates is skipped."""
    rows = await session.scalars(select(Playbook).where(Playbook.enabled.is_(True)))
    parsed = [stored_template(r) for r in rows]
    return [t for t in parsed if isinstance(t, PlaybookTemplate)]


async def accounts_by_id(session: AsyncSession, ids: Iterable[str]) -> dict[str, Account]:
    ids = list(set(ids))
    if not ids:
        return {}
    rows = await session.scalars(select(Account).where(Account.account_id.in_(ids)))
    return {r.account_id: r for r in rows}


async def open_groups_of(
    session: AsyncSession, account_ids: Iterable[str]
) -> dict[tuple[str, str], TaskGroup]:
    ids = list(set(account_ids))
    if not ids:
        return {}
    rows = await session.scalars(
        select(TaskGroup).where(TaskGroup.account_id.in_(ids), TaskGroup.status == "open")
    )
    return {(g.account_id, g.playbook_id): g for g in rows}


async def seen_triggers(
    session: AsyncSession, account_ids: Iterable[str], keys: Iterable[str]
) -> set[tuple[str, str, str]]:
    """(account, playbook, trigger key) already taken by a group: the replay guard."""
    ids, key_list = list(set(account_ids)), list(set(keys))
    if not ids or not key_list:
        return set()
    rows = await session.execute(
        select(GroupTrigger.account_id, GroupTrigger.playbook_id, GroupTrigger.trigger_key).where(
            GroupTrigger.account_id.in_(ids), GroupTrigger.trigger_key.in_(key_list)
        )
    )
    return {(a, p, k) for a, p, k in rows.tuples()}


async def loads_by_csm(session: AsyncSession) -> dict[str, int]:
    """Open tasks for a person, per assignee: what capacity is measured against."""
    rows = await session.execute(
        select(Task.assignee, func.count())
        .where(Task.status == "open", Task.automated.is_(False), Task.assignee.is_not(None))
        .group_by(Task.assignee)
    )
    return {str(email): int(n) for email, n in rows.tuples()}


async def load_team(session: AsyncSession, *, lock: bool = False) -> Team:
    """Every CSM with their open-task load, and the round-robin cursors.

    ``lock`` takes the CSM rows FOR UPDATE (PostgreSQL) so replicas assign one at a time
    and capacity holds across them; SQLite has one writer anyway.
    """
    query = select(Csm)
    if lock and session.bind is not None and session.bind.dialect.name == "postgresql":
        query = query.with_for_update()
    csms = list(await session.scalars(query))
    loads = await loads_by_csm(session)
    members = {
        c.email: Member(c.email, c.team, c.capacity, c.active, loads.get(c.email, 0)) for c in csms
    }
    cursors = {c.team: c.last_email for c in await session.scalars(select(AssignmentCursor))}
    return Team(members=members, cursors=cursors)


async def save_cursors(session: AsyncSession, team: Team, before: dict[str, str]) -> None:
    rows = [{"team": t, "last_email": e} for t, e in team.cursors.items() if before.get(t) != e]
    await upsert(session, AssignmentCursor, rows, keys=["team"], update=["last_email"])


async def add_csms(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Insert CSMs that are not in the team yet (owners seen on accounts)."""
    await upsert(session, Csm, rows, keys=["email"])


async def contacts_of(
    session: AsyncSession, account_ids: Iterable[str]
) -> dict[str, list[Contact]]:
    ids = list(set(account_ids))
    out: dict[str, list[Contact]] = {i: [] for i in ids}
    if ids:
        for c in await session.scalars(select(Contact).where(Contact.account_id.in_(ids))):
            out[c.account_id].append(c)
    return out


async def contacts_by_key(
    session: AsyncSession, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], Contact]:
    """Contacts by (account, user), for a batch of contact upserts in one query."""
    wanted = list(set(keys))
    if not wanted:
        return {}
    rows = await session.scalars(
        select(Contact).where(tuple_(Contact.account_id, Contact.user_id).in_(wanted))
    )
    return {(c.account_id, c.user_id): c for c in rows}


async def csms_by_email(session: AsyncSession, emails: Iterable[str]) -> dict[str, Csm]:
    wanted = list({e for e in emails if e})
    if not wanted:
        return {}
    return {c.email: c for c in await session.scalars(select(Csm).where(Csm.email.in_(wanted)))}


async def hand_over_open_work(
    session: AsyncSession, account_id: str, *, previous: str, owner: str
) -> int:
    """The account's open groups and tasks of the previous owner go to the new one."""
    await session.execute(
        update(TaskGroup)
        .where(
            TaskGroup.account_id == account_id,
            TaskGroup.status == "open",
            TaskGroup.assignee == previous,
        )
        .values(assignee=owner)
    )
    result = await session.execute(
        update(Task)
        .where(Task.account_id == account_id, Task.status == "open", Task.assignee == previous)
        .values(assignee=owner)
        .returning(Task.automated)
    )
    return sum(1 for automated in result.scalars() if not automated)


# Closing groups ------------------------------------------------------------------------


async def close_groups(
    session: AsyncSession, group_ids: list[str], *, status: str, reason: str, now: datetime
) -> int:
    """Close open groups and cancel their open steps (an exit condition, or by hand)."""
    if not group_ids:
        return 0
    result = await session.execute(
        update(TaskGroup)
        .where(TaskGroup.id.in_(group_ids), TaskGroup.status == "open")
        .values(status=status, closed_at=now, closed_reason=reason[:300])
        .returning(TaskGroup.id)
    )
    closed = list(result.scalars())
    if closed:
        await session.execute(
            update(Task)
            .where(Task.task_group_id.in_(closed), Task.status == "open")
            .values(status="cancelled", completed_at=now, detail=reason[:1000])
        )
    return len(closed)


async def complete_finished_groups(
    session: AsyncSession, group_ids: Iterable[str], *, now: datetime
) -> list[str]:
    """Groups without an open step left become ``completed``."""
    ids = list(set(group_ids))
    if not ids:
        return []
    still_open = select(Task.task_group_id).where(
        Task.task_group_id.in_(ids), Task.status == "open"
    )
    result = await session.execute(
        update(TaskGroup)
        .where(
            TaskGroup.id.in_(ids),
            TaskGroup.status == "open",
            TaskGroup.id.not_in(still_open),
        )
        .values(status="completed", closed_at=now, closed_reason="all steps finished")
        .returning(TaskGroup.id)
    )
    return list(result.scalars())


async def groups_exited_by_events(
    session: AsyncSession, pairs: set[tuple[str, str]]
) -> dict[str, str]:
    """Open groups whose ``event_seen`` exit names one of these (account, event) pairs."""
    if not pairs:
        return {}
    rows = await session.execute(
        select(GroupExitEvent.task_group_id, GroupExitEvent.event)
        .join(TaskGroup, TaskGroup.id == GroupExitEvent.task_group_id)
        .where(
            tuple_(GroupExitEvent.account_id, GroupExitEvent.event).in_(list(pairs)),
            TaskGroup.status == "open",
        )
    )
    return {gid: event for gid, event in rows.tuples()}


async def exit_event_names(session: AsyncSession) -> set[str]:
    """Every event name some open group or some playbook waits for."""
    rows = await session.scalars(
        select(GroupExitEvent.event)
        .join(TaskGroup, TaskGroup.id == GroupExitEvent.task_group_id)
        .where(TaskGroup.status == "open")
        .distinct()
    )
    names = set(rows)
    for playbook in await session.scalars(select(Playbook)):
        template = stored_template(playbook)
        if isinstance(template, PlaybookTemplate):  # an invalid one starts no groups
            names.update(exit_events(template))
    return names


async def resolve_alert(
    session: AsyncSession, account_id: str, alert_id: str, *, now: datetime
) -> list[str]:
    """Mark the alert's triggers resolved; return open groups whose alerts all resolved."""
    await session.execute(
        update(GroupTrigger)
        .where(
            GroupTrigger.account_id == account_id,
            GroupTrigger.alert_id == alert_id,
            GroupTrigger.resolved_at.is_(None),
        )
        .values(resolved_at=now)
    )
    touched = select(GroupTrigger.task_group_id).where(
        GroupTrigger.account_id == account_id, GroupTrigger.alert_id == alert_id
    )
    unresolved = select(GroupTrigger.task_group_id).where(
        GroupTrigger.kind == "alert",
        GroupTrigger.resolved_at.is_(None),
        GroupTrigger.account_id == account_id,
    )
    groups = await session.scalars(
        select(TaskGroup).where(
            TaskGroup.id.in_(touched),
            TaskGroup.status == "open",
            TaskGroup.id.not_in(unresolved),
        )
    )
    return [
        g.id for g in groups if any(c.get("kind") == "alert_resolved" for c in g.exit_conditions)
    ]


async def groups_with_open_alerts(session: AsyncSession, group_ids: Iterable[str]) -> set[str]:
    """Those of the groups that took at least one alert not resolved yet."""
    ids = list(set(group_ids))
    if not ids:
        return set()
    rows = await session.scalars(
        select(GroupTrigger.task_group_id)
        .where(
            GroupTrigger.task_group_id.in_(ids),
            GroupTrigger.kind == "alert",
            GroupTrigger.resolved_at.is_(None),
        )
        .distinct()
    )
    return set(rows)


async def groups_exited_by_stage(session: AsyncSession, account_id: str, stage: str) -> list[str]:
    groups = await session.scalars(
        select(TaskGroup).where(TaskGroup.account_id == account_id, TaskGroup.status == "open")
    )
    out = []
    for g in groups:
        for c in g.exit_conditions:
            if c.get("kind") == "stage_changed" and (not c.get("stages") or stage in c["stages"]):
                out.append(g.id)
                break
    return out


# Due steps -----------------------------------------------------------------------------

WAITING_FOR_RECIPIENT = "waiting for a recipient"


async def release_waiting_steps(
    session: AsyncSession, account_ids: Iterable[str], *, now: datetime
) -> int:
    """Email steps postponed for want of a contact are due again once the account has a
    contact with an email: the welcome email follows its first ``identify`` at once
    instead of at the next retry ten minutes later."""
    ids = list(set(account_ids))
    if not ids:
        return 0
    result = await session.execute(
        update(Task)
        .where(
            Task.account_id.in_(ids),
            Task.status == "open",
            Task.type == "email",
            Task.detail == WAITING_FOR_RECIPIENT,
            Task.send_after > now,
        )
        .values(send_after=now, detail=None)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def due_steps_query(now: datetime, limit: int, *, skip_locked: bool) -> Select[Task, TaskGroup]:
    query = (
        select(Task, TaskGroup)
        .join(TaskGroup, TaskGroup.id == Task.task_group_id)
        .where(
            Task.status == "open",
            Task.automated.is_(True),
            Task.send_after <= now,
            TaskGroup.status == "open",
        )
        .order_by(Task.send_after)
        .limit(limit)
    )
    if skip_locked:
        query = query.with_for_update(of=Task, skip_locked=True)
    return query


def overdue_clause(now: datetime) -> Any:
    return and_(Task.status == "open", Task.due_at < now)


def assignee_clause(assignee: str) -> Any:
    if assignee in ("unassigned", ""):
        return Task.assignee.is_(None)
    return or_(Task.assignee == assignee.lower())


async def seed_library(
    session: AsyncSession, templates: list[PlaybookTemplate], *, now: datetime
) -> list[str]:
    """Load the built-in playbooks never loaded before; edits and deletions stay."""
    seeded = set(await session.scalars(select(LibrarySeed.playbook_id)))
    fresh = [t for t in templates if t.id not in seeded]
    rows = [
        {
            "id": t.id,
            "name": t.name,
            "phase": t.phase,
            "enabled": t.enabled,
            "builtin": True,
            "definition": t.model_dump(mode="json"),
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }
        for t in fresh
    ]
    await upsert(session, Playbook, rows, keys=["id"])
    await upsert(
        session,
        LibrarySeed,
        [{"playbook_id": t.id, "seeded_at": now} for t in fresh],
        keys=["playbook_id"],
    )
    return [t.id for t in fresh]
