"""``/v1/stats``: per CSM (open, overdue, done this week) and per playbook (started,
completed, completion rate, median days to complete)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from services.playbooks import queries
from services.playbooks.routes.deps import ERRORS, NowDep, Read, SessionDep, strict_request
from services.playbooks.schemas import Stats

router = APIRouter(
    prefix="/v1/stats", tags=["stats"], dependencies=[Depends(strict_request)], responses=ERRORS
)


@router.get("", response_model=Stats, summary="Workload and playbook outcomes")
async def get_stats(session: SessionDep, now: NowDep, _: Read) -> Stats:
    return await queries.stats(session, now=now)
