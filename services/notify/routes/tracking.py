"""Open pixel ``/t/o/{token}``, click redirect ``/t/c/{token}``, and ``/v1/unsubscribe``.

No auth: the signed token is the credential. A token that does not verify is refused
(404 for tracking, 400 for unsubscribe) and nothing is recorded or redirected. Engagement
is stored with its event in one transaction; the worker's relay publishes it.
"""

from __future__ import annotations

import base64
import html
from datetime import UTC, datetime
from urllib.parse import parse_qs

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from services.notify import repository
from services.notify.links import InvalidLink, LinkClaims, verify
from services.notify.policy import delivery_event
from services.notify.routes.deps import STRICT_QUERY, SessionsDep, SettingsDep, WorkerDep
from shared import topics
from shared.messages import DeliveryStatus

router = APIRouter(tags=["tracking"], dependencies=STRICT_QUERY)
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = {"Cache-Control": "no-store, max-age=0", "Referrer-Policy": "no-referrer"}


async def _engage(
    session: AsyncSession, claims: LinkClaims, status: DeliveryStatus, now: datetime
) -> bool:
    """Record the first open (or first click on a link) and queue its event.

    Writes come before reads: on SQLite a transaction that read first cannot take the
    write lock once another connection wrote.
    """
    kind = "open" if status == "opened" else "click"
    first = await repository.record_engagement(
        session, delivery_id=claims.delivery_id, kind=kind, url=claims.url, now=now
    )
    if not first:
        return False
    await repository.mark_engaged(session, claims.delivery_id, kind=kind, now=now)
    delivery = await repository.get_delivery(session, claims.delivery_id)
    if delivery is None:
        return False
    event = delivery_event(
        status=status,
        idempotency_key=delivery.idempotency_key,
        channel=delivery.channel,
        account_id=delivery.account_id,
        recipient=delivery.recipient,
        attempts=delivery.attempts,
        task_group_id=delivery.task_group_id,
        step_key=delivery.step_key,
        url=claims.url,
    )
    await repository.add_outbox(
        session, [repository.outbox_row(topics.NOTIFY_DELIVERIES, event, now=now)]
    )
    return True


@router.get("/t/o/{token}", include_in_schema=True, responses={404: {"description": "bad link"}})
async def open_pixel(
    token: str, sessions: SessionsDep, settings: SettingsDep, worker: WorkerDep
) -> Response:
    try:
        claims = verify(settings.secret, token, "open", previous=settings.secret_previous)
    except InvalidLink:
        return Response(status_code=404, headers=NO_STORE)
    async with sessions() as session, session.begin():
        recorded = await _engage(session, claims, "opened", datetime.now(UTC))
    if recorded:
        worker.wake()
    return Response(PIXEL, media_type="image/gif", headers=NO_STORE)


@router.get(
    "/t/c/{token}",
    status_code=302,
    responses={
        302: {"description": "to the link's signed target"},
        404: {"description": "bad link"},
    },
)
async def click_redirect(
    token: str, sessions: SessionsDep, settings: SettingsDep, worker: WorkerDep
) -> Response:
    try:
        claims = verify(settings.secret, token, "click", previous=settings.secret_previous)
    except InvalidLink:
        return Response("unknown link", status_code=404, headers=NO_STORE)
    assert claims.url is not None  # verify() guarantees an http(s) target for clicks
    async with sessions() as session, session.begin():
        recorded = await _engage(session, claims, "clicked", datetime.now(UTC))
    if recorded:
        worker.wake()
    return RedirectResponse(claims.url, status_code=302, headers=NO_STORE)


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html><head><meta charset='utf-8'><title>"
        f"{html.escape(title)}</title><meta name='viewport' content='width=device-width'>"
        "<meta name='robots' content='noindex'></head><body style='font-family:sans-serif;"
        f"max-width:560px;margin:40px auto'><h1>{html.escape(title)}</h1>{body}</body></html>",
        status_code=status,
        headers=NO_STORE,
    )


INVALID = "<p>This unsubscribe link is not valid. Reply to the email and we will remove you.</p>"


@router.get(
    "/v1/unsubscribe",
    response_class=HTMLResponse,
    tags=["unsubscribe"],
    responses={400: {"description": "invalid link"}},
)
async def unsubscribe_page(token: str, settings: SettingsDep) -> HTMLResponse:
    """A confirmation page. GET never unsubscribes (link scanners follow GETs)."""
    try:
        claims = verify(settings.secret, token, "unsubscribe", previous=settings.secret_previous)
    except InvalidLink:
        return _page("Invalid link", INVALID, 400)
    email = html.escape(claims.email or "this address")
    action = html.escape(f"/v1/unsubscribe?token={token}", quote=True)
    return _page(
        "Unsubscribe",
        f"<p>Stop emails like this to <b>{email}</b>?</p>"
        f"<form method='post' action='{action}'>"
        "<input type='hidden' name='List-Unsubscribe' value='One-Click'>"
        "<button type='submit'>Unsubscribe</button></form>",
    )


async def _token_of(request: Request, token: str | None) -> str | None:
    if token:
        return token
    body = (await request.body())[:8192].decode("utf-8", "replace")
    values = parse_qs(body).get("token")
    return values[0] if values else None


@router.post(
    "/v1/unsubscribe",
    response_class=HTMLResponse,
    tags=["unsubscribe"],
    responses={400: {"description": "invalid link"}},
)
async def unsubscribe_one_click(
    request: Request,
    sessions: SessionsDep,
    settings: SettingsDep,
    worker: WorkerDep,
    token: str | None = Query(default=None, max_length=4096),
) -> HTMLResponse:
    """RFC 8058 one-click: ``List-Unsubscribe=One-Click`` posted to the signed link (the
    token may also come as a ``token`` form field)."""
    token = await _token_of(request, token)
    try:
        claims = verify(
            settings.secret, token or "", "unsubscribe", previous=settings.secret_previous
        )
    except InvalidLink:
        return _page("Invalid link", INVALID, 400)
    if not claims.email:
        return _page("Invalid link", INVALID, 400)
    now = datetime.now(UTC)
    async with sessions() as session, session.begin():
        created = await repository.add_suppression(
            session,
            {
                "email": claims.email,
                "reason": "unsubscribed",
                "note": "one-click unsubscribe",
                "delivery_id": claims.delivery_id,
                "created_at": now,
            },
        )
        delivery = await repository.get_delivery(session, claims.delivery_id)
        if created and delivery is not None:
            await repository.set_suppression_account(session, claims.email, delivery.account_id)
        if created:
            event = delivery_event(
                status="unsubscribed",
                idempotency_key=delivery.idempotency_key if delivery else claims.delivery_id,
                channel="email",
                account_id=delivery.account_id if delivery else "unknown",
                recipient=claims.email,
                attempts=delivery.attempts if delivery else 0,
                task_group_id=delivery.task_group_id if delivery else None,
                step_key=delivery.step_key if delivery else None,
            )
            await repository.add_outbox(
                session, [repository.outbox_row(topics.NOTIFY_DELIVERIES, event, now=now)]
            )
    if created:
        worker.wake()
    email = html.escape(claims.email)
    return _page("Unsubscribed", f"<p><b>{email}</b> will not get these emails any more.</p>")
