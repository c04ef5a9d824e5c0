"""``/v1/task-groups``: list and filter, see one with its tasks, start one by hand, cancel."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.exc import IntegrityError

from services.playbooks import queries, repository
from services.playbooks.consumer import is_start_race
from services.playbooks.flows import GroupStarter
from services.playbooks.models import Playbook, TaskGroup
from services.playbooks.planning import TriggerFacts
from services.playbooks.routes.deps import (
    ERRORS,
    NowDep,
    Read,
    SessionDep,
    Write,
    check_assignee,
    conflict,
    not_found,
    strict_request,
)
from services.playbooks.schemas import (
    GroupStatus,
    Page,
    TaskGroupOut,
    TaskGroupStart,
    TaskGroupStarted,
)
from services.playbooks.templates import TemplateError
from shared.responses import JSONBytes

router = APIRouter(
    prefix="/v1/task-groups",
    tags=["task groups"],
    dependencies=[Depends(strict_request)],
    responses=ERRORS,
)


@router.get("", response_model=Page[TaskGroupOut], summary="Task groups, newest first")
async def list_task_groups(
    session: SessionDep,
    now: NowDep,
    _: Read,
    account_id: str | None = None,
    playbook_id: str | None = None,
    status: GroupStatus | None = None,
    assignee: Annotated[str | None, Query(description="an email, or 'unassigned'")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Page[TaskGroupOut]:
    f = queries.GroupFilter(account_id, playbook_id, status, assignee)
    items, total = await queries.list_groups(session, f, now=now, limit=limit, offset=offset)
    return Page[TaskGroupOut](items=items, total=total, limit=limit, offset=offset)


@router.get("/{group_id}", response_model=TaskGroupOut, summary="One task group with its tasks")
async def get_task_group(group_id: str, session: SessionDep, now: NowDep, _: Read) -> TaskGroupOut:
    group = await session.get(TaskGroup, group_id)
    if group is None:
        raise not_found("task group", group_id)
    [out] = await queries.groups_out(session, [group], now=now, with_tasks=True)
    return out


@router.post(
    "",
    response_model=TaskGroupStarted,
    status_code=201,
    summary="Start a playbook for an account by hand",
    responses={200: {"description": "an open group of this playbook absorbed the request"}},
)
async def start_task_group(
    body: TaskGroupStart, request: Request, session: SessionDep, now: NowDep, _: Write
) -> Any:
    row = await session.get(Playbook, body.playbook_id)
    if row is None:
        raise not_found("playbook", body.playbook_id)
    template = repository.stored_template(row)
    if isinstance(template, TemplateError):
        raise conflict(
            f"playbook {row.id!r} as stored no longer validates ({template}); "
            f"fix it with PUT /v1/playbooks/{row.id}"
        )
    trigger_key = f"manual:{body.request_id or uuid.uuid4().hex}"
    starter = await GroupStarter.load(
        session,
        account_ids=[body.account_id],
        trigger_keys=[trigger_key],
        now=now,
        defaults=request.app.state.team_defaults,
    )
    if body.assignee is not None:
        check_assignee(starter.team.members.get(body.assignee))
    started = starter.start(
        account_id=body.account_id,
        template=template,
        trigger_key=trigger_key,
        trigger=TriggerFacts(kind="manual"),
        assignee=body.assignee,
        check_conditions=False,
    )
    try:
        await starter.finish()
    except IntegrityError as exc:
        if not is_start_race(exc):
            raise
        raise conflict("a group of this playbook was just started for the account; retry") from exc
    if started is None:  # the request id was used for a group that has closed since
        raise conflict(f"request_id {body.request_id!r} already started a group")
    await session.flush()
    [out] = await queries.groups_out(session, [started.group], now=now, with_tasks=True)
    result = TaskGroupStarted(created=started.created, task_group=out)
    return JSONBytes(result.model_dump(mode="json"), status_code=201 if started.created else 200)


@router.post("/{group_id}/cancel", response_model=TaskGroupOut, summary="Cancel an open group")
async def cancel_task_group(
    group_id: str, session: SessionDep, now: NowDep, _: Write
) -> TaskGroupOut:
    group = await session.get(TaskGroup, group_id)
    if group is None:
        raise not_found("task group", group_id)
    if group.status != "open":
        raise conflict(f"task group is {group.status}")
    await repository.close_groups(
        session, [group_id], status="cancelled", reason="cancelled by hand", now=now
    )
    await session.refresh(group)
    [out] = await queries.groups_out(session, [group], now=now, with_tasks=True)
    return out
