"""``/v1/csms``: the CS team (name, email, Slack id, team, capacity, active).

Owners seen on accounts join the team on their own (``auto_added``); adding them here
by email fills in their name, Slack id, team and capacity.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response
from sqlalchemy import select

from services.playbooks import queries
from services.playbooks.models import Csm
from services.playbooks.routes.deps import (
    ERRORS,
    NowDep,
    Read,
    SessionDep,
    Write,
    not_found,
    strict_request,
)
from services.playbooks.schemas import CsmIn, CsmOut, CsmPatch
from shared.responses import JSONBytes

router = APIRouter(
    prefix="/v1/csms", tags=["csms"], dependencies=[Depends(strict_request)], responses=ERRORS
)


@router.get("", response_model=list[CsmOut], summary="The team, with each CSM's open tasks")
async def list_csms(
    session: SessionDep, _: Read, team: str | None = None, active: bool | None = None
) -> list[CsmOut]:
    query = select(Csm).order_by(Csm.email)
    if team:
        query = query.where(Csm.team == team)
    if active is not None:
        query = query.where(Csm.active.is_(active))
    return await queries.csms_out(session, list(await session.scalars(query)))


@router.get("/{email}", response_model=CsmOut, summary="One CSM")
async def get_csm(email: str, session: SessionDep, _: Read) -> CsmOut:
    csm = await session.get(Csm, email.lower())
    if csm is None:
        raise not_found("CSM", email)
    [out] = await queries.csms_out(session, [csm])
    return out


@router.post(
    "",
    response_model=CsmOut,
    status_code=201,
    summary="Add a CSM (or fill in one added from an account owner: 200)",
    responses={200: {"model": CsmOut, "description": "the CSM existed and was updated"}},
)
async def put_csm(body: CsmIn, session: SessionDep, now: NowDep, _: Write) -> Any:
    csm = await session.get(Csm, body.email)
    created = csm is None
    if csm is None:
        csm = Csm(email=body.email, created_at=now)
        session.add(csm)
    csm.name, csm.slack_id, csm.team = body.name, body.slack_id, body.team
    csm.capacity, csm.active, csm.auto_added, csm.updated_at = (
        body.capacity,
        body.active,
        False,
        now,
    )
    await session.flush()
    [out] = await queries.csms_out(session, [csm])
    return JSONBytes(out.model_dump(mode="json"), status_code=201 if created else 200)


@router.patch("/{email}", response_model=CsmOut, summary="Change a CSM")
async def patch_csm(
    email: str, body: CsmPatch, session: SessionDep, now: NowDep, _: Write
) -> CsmOut:
    csm = await session.get(Csm, email.lower())
    if csm is None:
        raise not_found("CSM", email)
    for name, value in body.model_dump(exclude_unset=True).items():
        if value is not None or name == "slack_id":
            setattr(csm, name, value)
    csm.updated_at = now
    await session.flush()
    [out] = await queries.csms_out(session, [csm])
    return out


@router.delete(
    "/{email}", status_code=204, summary="Deactivate a CSM (kept for history; gets no new work)"
)
async def deactivate_csm(email: str, session: SessionDep, now: NowDep, _: Write) -> Response:
    csm = await session.get(Csm, email.lower())
    if csm is None:
        raise not_found("CSM", email)
    csm.active, csm.updated_at = False, now
    return Response(status_code=204)
