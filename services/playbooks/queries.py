"""Read-side queries of the REST API (lists with filters, detail views, stats).

The write side lives in :mod:`repository`; both leave the transaction to the caller.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.playbooks import repository
from services.playbooks.models import Csm, GroupTrigger, Task, TaskComment, TaskGroup
from services.playbooks.planning import progress
from services.playbooks.schemas import (
    CommentOut,
    CsmOut,
    CsmStats,
    Delivery,
    PlaybookStats,
    Stats,
    TaskGroupOut,
    TaskOut,
)


def task_out(task: Task, now: datetime, comments: list[TaskComment] | None = None) -> TaskOut:
    delivery = None
    if task.automated:
        delivery = Delivery(
            status=task.delivery_status,
            detail=task.delivery_detail,
            attempts=task.delivery_attempts,
            updated_at=task.delivery_updated_at,
        )
    return TaskOut(
        id=task.id,
        task_group_id=task.task_group_id,
        account_id=task.account_id,
        step_key=task.step_key,
        position=task.position,
        type=task.type,
        automated=task.automated,
        title=task.title,
        description=task.description,
        status=task.status,
        assignee=task.assignee,
        due_at=task.due_at,
        overdue=task.status == "open" and task.due_at < now,
        completed_at=task.completed_at,
        detail=task.detail,
        template_id=task.template_id,
        send_after=task.send_after,
        review_until=task.review_until,
        pending_send=task.automated and task.status == "open",
        sent_at=task.sent_at,
        delivery=delivery,
        comments=None
        if comments is None
        else [
            CommentOut(id=c.id, author=c.author, body=c.body, created_at=c.created_at)
            for c in comments
        ],
    )


@dataclass(frozen=True, slots=True)
class GroupFilter:
    account_id: str | None = None
    playbook_id: str | None = None
    status: str | None = None
    assignee: str | None = None


@dataclass(frozen=True, slots=True)
class TaskFilter:
    assignee: str | None = None
    status: str | None = None
    due_before: datetime | None = None
    overdue: bool | None = None
    account_id: str | None = None
    task_group_id: str | None = None
    type: str | None = None


async def _page(
    session: AsyncSession, query: Select[Any], limit: int, offset: int
) -> tuple[list[Any], int]:
    total = await session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    rows = list(await session.scalars(query.limit(limit).offset(offset)))
    return rows, int(total or 0)


async def list_groups(
    session: AsyncSession, f: GroupFilter, *, now: datetime, limit: int, offset: int
) -> tuple[list[TaskGroupOut], int]:
    query = select(TaskGroup).order_by(TaskGroup.started_at.desc(), TaskGroup.id)
    if f.account_id:
        query = query.where(TaskGroup.account_id == f.account_id)
    if f.playbook_id:
        query = query.where(TaskGroup.playbook_id == f.playbook_id)
    if f.status:
        query = query.where(TaskGroup.status == f.status)
    if f.assignee is not None:
        if f.assignee in ("", "unassigned"):
            query = query.where(TaskGroup.assignee.is_(None))
        else:
            query = query.where(TaskGroup.assignee == f.assignee.lower())
    groups, total = await _page(session, query, limit, offset)
    return await groups_out(session, groups, now=now, with_tasks=False), total


async def groups_out(
    session: AsyncSession, groups: list[TaskGroup], *, now: datetime, with_tasks: bool
) -> list[TaskGroupOut]:
    ids = [g.id for g in groups]
    tasks: dict[str, list[Task]] = {i: [] for i in ids}
    triggers: dict[str, int] = {}
    if ids:
        for t in await session.scalars(
            select(Task).where(Task.task_group_id.in_(ids)).order_by(Task.position)
        ):
            tasks[t.task_group_id].append(t)
        counted = await session.execute(
            select(GroupTrigger.task_group_id, func.count())
            .where(GroupTrigger.task_group_id.in_(ids))
            .group_by(GroupTrigger.task_group_id)
        )
        triggers = {gid: int(n) for gid, n in counted.tuples()}
    out = []
    for g in groups:
        steps = tasks[g.id]
        out.append(
            TaskGroupOut(
                id=g.id,
                account_id=g.account_id,
                playbook_id=g.playbook_id,
                playbook_name=g.playbook_name,
                phase=g.phase,
                status=g.status,
                assignee=g.assignee,
                assignment_rule=g.assignment_rule,
                trigger_kind=g.trigger_kind,
                trigger_key=g.trigger_key,
                triggers=triggers.get(g.id, 0),
                context=g.context,
                started_at=g.started_at,
                closed_at=g.closed_at,
                closed_reason=g.closed_reason,
                progress=progress([t.status for t in steps]),
                steps_total=len(steps),
                steps_open=sum(1 for t in steps if t.status == "open"),
                overdue=sum(1 for t in steps if t.status == "open" and t.due_at < now),
                tasks=[task_out(t, now) for t in steps] if with_tasks else None,
            )
        )
    return out


async def list_tasks(
    session: AsyncSession, f: TaskFilter, *, now: datetime, limit: int, offset: int
) -> tuple[list[TaskOut], int]:
    query = select(Task).order_by(Task.due_at, Task.id)
    if f.assignee is not None:
        query = query.where(repository.assignee_clause(f.assignee))
    if f.status:
        query = query.where(Task.status == f.status)
    if f.due_before:
        query = query.where(Task.due_at < f.due_before)
    if f.overdue is not None:
        overdue = repository.overdue_clause(now)
        query = query.where(overdue if f.overdue else ~overdue)
    if f.account_id:
        query = query.where(Task.account_id == f.account_id)
    if f.task_group_id:
        query = query.where(Task.task_group_id == f.task_group_id)
    if f.type:
        query = query.where(Task.type == f.type)
    tasks, total = await _page(session, query, limit, offset)
    return [task_out(t, now) for t in tasks], total


async def comments_of(session: AsyncSession, task_id: str) -> list[TaskComment]:
    return list(
        await session.scalars(
            select(TaskComment).where(TaskComment.task_id == task_id).order_by(TaskComment.id)
        )
    )


async def csms_out(session: AsyncSession, csms: list[Csm]) -> list[CsmOut]:
    loads = await repository.loads_by_csm(session)
    return [
        CsmOut(
            email=c.email,
            name=c.name,
            slack_id=c.slack_id,
            team=c.team,
            capacity=c.capacity,
            active=c.active,
            auto_added=c.auto_added,
            open_tasks=int(loads.get(c.email, 0)),
            created_at=c.created_at,
            updated_at=c.updated_at,
        )
        for c in csms
    ]


def week_start(now: datetime) -> datetime:
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday())


async def stats(session: AsyncSession, *, now: datetime) -> Stats:
    monday = week_start(now)
    human = Task.automated.is_(False)
    per_csm = await session.execute(
        select(
            Task.assignee,
            func.sum(case((Task.status == "open", 1), else_=0)),
            func.sum(case(((Task.status == "open") & (Task.due_at < now), 1), else_=0)),
            func.sum(case(((Task.status == "done") & (Task.completed_at >= monday), 1), else_=0)),
        )
        .where(human)
        .group_by(Task.assignee)
    )
    counts = {a: (int(o or 0), int(d or 0), int(w or 0)) for a, o, d, w in per_csm.tuples()}
    csms = list(await session.scalars(select(Csm).order_by(Csm.email)))
    csm_stats = [
        CsmStats(
            email=c.email,
            name=c.name,
            team=c.team,
            capacity=c.capacity,
            open=counts.get(c.email, (0, 0, 0))[0],
            overdue=counts.get(c.email, (0, 0, 0))[1],
            done_this_week=counts.get(c.email, (0, 0, 0))[2],
        )
        for c in csms
    ]
    return Stats(
        generated_at=now,
        week_started_at=monday,
        unassigned_open=counts.get(None, (0, 0, 0))[0],
        csms=csm_stats,
        playbooks=await _playbook_stats(session),
    )


async def _playbook_stats(session: AsyncSession) -> list[PlaybookStats]:
    rows = await session.execute(
        select(
            TaskGroup.playbook_id,
            TaskGroup.playbook_name,
            TaskGroup.status,
            TaskGroup.started_at,
            TaskGroup.closed_at,
        )
    )
    by_playbook: dict[str, dict[str, Any]] = {}
    for playbook_id, name, status, started, closed in rows.tuples():
        entry = by_playbook.setdefault(
            playbook_id, {"name": name, "started": 0, "status": {}, "days": []}
        )
        entry["started"] += 1
        entry["status"][status] = entry["status"].get(status, 0) + 1
        if status == "completed" and closed is not None:
            entry["days"].append((closed - started).total_seconds() / 86400)
    out = []
    for playbook_id, e in sorted(by_playbook.items()):
        completed = e["status"].get("completed", 0)
        out.append(
            PlaybookStats(
                playbook_id=playbook_id,
                playbook_name=e["name"],
                started=e["started"],
                open=e["status"].get("open", 0),
                completed=completed,
                exited=e["status"].get("exited", 0) + e["status"].get("cancelled", 0),
                completion_rate=round(completed / e["started"], 4) if e["started"] else None,
                median_days_to_complete=round(statistics.median(e["days"]), 2)
                if e["days"]
                else None,
            )
        )
    return out
