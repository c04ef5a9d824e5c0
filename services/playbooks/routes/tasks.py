"""``/v1/tasks``: filter (assignee, status, due before, overdue), complete, skip, reassign,
comment. Completing or skipping the last open step completes its group."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy import update

from services.playbooks import queries, repository
from services.playbooks.models import Csm, Task, TaskComment, TaskGroup
from services.playbooks.routes.deps import (
    ERRORS,
    IsoDatetime,
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
    CommentIn,
    CommentOut,
    Page,
    Reassign,
    TaskNote,
    TaskOut,
    TaskPatch,
    TaskStatus,
)

router = APIRouter(
    prefix="/v1/tasks", tags=["tasks"], dependencies=[Depends(strict_request)], responses=ERRORS
)


@router.get("", response_model=Page[TaskOut], summary="Tasks, soonest due first")
async def list_tasks(
    session: SessionDep,
    now: NowDep,
    _: Read,
    assignee: Annotated[str | None, Query(description="an email, or 'unassigned'")] = None,
    status: TaskStatus | None = None,
    due_before: IsoDatetime | None = None,
    overdue: bool | None = None,
    account_id: str | None = None,
    task_group_id: str | None = None,
    type: Annotated[str | None, Query(pattern="^(task|email|slack)$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Page[TaskOut]:
    f = queries.TaskFilter(assignee, status, due_before, overdue, account_id, task_group_id, type)
    items, total = await queries.list_tasks(session, f, now=now, limit=limit, offset=offset)
    return Page[TaskOut](items=items, total=total, limit=limit, offset=offset)


async def _task(session: SessionDep, task_id: str) -> Task:
    task = await session.get(Task, task_id)
    if task is None:
        raise not_found("task", task_id)
    return task


@router.get("/{task_id}", response_model=TaskOut, summary="One task with its comments")
async def get_task(task_id: str, session: SessionDep, now: NowDep, _: Read) -> TaskOut:
    task = await _task(session, task_id)
    return queries.task_out(task, now, await queries.comments_of(session, task_id))


@router.patch("/{task_id}", response_model=TaskOut, summary="Change a task's due date or text")
async def patch_task(
    task_id: str, body: TaskPatch, session: SessionDep, now: NowDep, _: Write
) -> TaskOut:
    task = await _task(session, task_id)
    if body.due_at is not None:
        task.due_at = body.due_at
        if task.automated and task.status == "open":
            task.send_after = body.due_at
            if task.review_until is not None:  # the window now ends at the new time
                task.review_until = body.due_at
    if body.title is not None:
        task.title = body.title
    if body.description is not None:
        task.description = body.description
    return queries.task_out(task, now)


async def _finish(
    session: SessionDep, task: Task, status: str, body: TaskNote | None, now: NowDep
) -> TaskOut:
    if task.status != "open":
        raise conflict(f"task is {task.status}")
    group = await session.get(TaskGroup, task.task_group_id)
    if group is not None and group.status != "open":
        raise conflict(f"its task group is {group.status}")
    values: dict[str, object] = {"status": status, "completed_at": now}
    if body and body.note:
        values["detail"] = body.note[:1000]
    # Conditional: a scheduler pass holding the row (FOR UPDATE) may send it meanwhile;
    # its "done" must not be overwritten by a read taken before it committed.
    result = await session.execute(
        update(Task)
        .where(Task.id == task.id, Task.status == "open")
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    await session.refresh(task)
    if not getattr(result, "rowcount", 0):
        raise conflict(f"task is {task.status}")
    if body and body.note:
        session.add(
            TaskComment(
                task_id=task.id,
                author=body.author or task.assignee or "unknown",
                body=body.note,
                created_at=now,
            )
        )
    await session.flush()
    await repository.complete_finished_groups(session, [task.task_group_id], now=now)
    return queries.task_out(task, now)


@router.post("/{task_id}/complete", response_model=TaskOut, summary="Mark a task done")
async def complete_task(
    task_id: str, session: SessionDep, now: NowDep, _: Write, body: TaskNote | None = None
) -> TaskOut:
    task = await _task(session, task_id)
    if task.automated and task.status == "open":
        raise conflict("email and slack steps are sent by the scheduler; skip them instead")
    return await _finish(session, task, "done", body, now)


@router.post("/{task_id}/skip", response_model=TaskOut, summary="Skip a task (or an unsent step)")
async def skip_task(
    task_id: str, session: SessionDep, now: NowDep, _: Write, body: TaskNote | None = None
) -> TaskOut:
    return await _finish(session, await _task(session, task_id), "skipped", body, now)


@router.post("/{task_id}/reassign", response_model=TaskOut, summary="Give a task to another CSM")
async def reassign_task(
    task_id: str, body: Reassign, session: SessionDep, now: NowDep, _: Write
) -> TaskOut:
    task = await _task(session, task_id)
    if task.status != "open":
        raise conflict(f"task is {task.status}")
    if body.assignee is not None:
        check_assignee(await session.get(Csm, body.assignee))
    task.assignee = body.assignee
    return queries.task_out(task, now)


@router.get("/{task_id}/comments", response_model=list[CommentOut], summary="A task's comments")
async def list_comments(task_id: str, session: SessionDep, _: Read) -> list[CommentOut]:
    await _task(session, task_id)
    return [
        CommentOut(id=c.id, author=c.author, body=c.body, created_at=c.created_at)
        for c in await queries.comments_of(session, task_id)
    ]


@router.post(
    "/{task_id}/comments", response_model=CommentOut, status_code=201, summary="Comment on a task"
)
async def add_comment(
    task_id: str, body: CommentIn, session: SessionDep, now: NowDep, _: Write
) -> CommentOut:
    await _task(session, task_id)
    comment = TaskComment(task_id=task_id, author=body.author, body=body.body, created_at=now)
    session.add(comment)
    await session.flush()
    return CommentOut(id=comment.id, author=comment.author, body=comment.body, created_at=now)
