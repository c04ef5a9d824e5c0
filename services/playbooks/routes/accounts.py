"""``/v1/accounts/{id}``: what playbooks knows of an account (owner, stage, contacts)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from services.playbooks import repository
from services.playbooks.models import Account
from services.playbooks.routes.deps import ERRORS, Read, SessionDep, not_found, strict_request
from services.playbooks.schemas import AccountOut, ContactOut

router = APIRouter(
    prefix="/v1/accounts",
    tags=["accounts"],
    dependencies=[Depends(strict_request)],
    responses=ERRORS,
)


@router.get("/{account_id}", response_model=AccountOut, summary="An account and its contacts")
async def get_account(account_id: str, session: SessionDep, _: Read) -> AccountOut:
    account = await session.get(Account, account_id)
    if account is None:
        raise not_found("account", account_id)
    contacts = (await repository.contacts_of(session, [account_id]))[account_id]
    return AccountOut(
        account_id=account.account_id,
        name=account.name,
        plan=account.plan,
        mrr=account.mrr,
        owner=account.owner,
        stage=account.stage,
        segment=account.segment,
        renewal_date=account.renewal_date,
        updated_at=account.updated_at,
        contacts=[
            ContactOut(
                user_id=c.user_id,
                email=c.email,
                name=c.name,
                role=c.role,
                primary=bool(c.is_primary),
                last_seen_at=c.last_seen_at,
            )
            for c in sorted(contacts, key=lambda c: c.user_id)
        ],
    )
