"""Sign-in with a personal API token, sign-out, and the development sign-in link."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response

from services.console.api import ApiError
from services.console.sessions import COOKIE, Session
from services.console.web import (
    Refused,
    console_of,
    form_of,
    render,
    safe_back,
    session_of,
    set_cookie,
)
from shared.auth import InvalidToken, verify_token

router = APIRouter(include_in_schema=False)


async def _sign_in(request: Request, token: str, back: str) -> Response:
    """Check the token by using it (a revoked or foreign token is refused there), then
    keep it server-side under a new session id."""
    console = console_of(request)
    token = token.strip()
    try:
        claims = verify_token(
            console.settings.secret, token, previous=console.settings.secret_previous
        )
    except InvalidToken:
        return _login_page(request, back, "That token is not valid here.", 401)
    if not claims.allows("read"):
        return _login_page(request, back, "That token cannot read: use a read, write or admin one.")
    try:
        await console.api.get(token, "health", "/v1/alert-rules")
    except ApiError as exc:
        if exc.status >= 500:  # not a verdict on the token: say so, and keep the form
            message = f"The services did not answer ({exc.detail}): try again in a moment."
            return _login_page(request, back, message, 503)
        return _login_page(request, back, f"The services refused that token ({exc.detail}).", 401)
    session = console.sessions.sign_in(
        session_of(request),
        token=token,
        subject=claims.subject.lower(),
        scopes=claims.scopes,
        token_expires_at=claims.expires_at,
    )
    response = RedirectResponse(safe_back(back, "/portfolio"), status_code=303)
    set_cookie(request, response, session)
    return response


def _login_page(
    request: Request, back: str, error: str | None = None, status: int = 403
) -> Response:
    return render(
        request, "login.html", status=status if error else 200, back=safe_back(back), error=error
    )


@router.get("/login")
async def login_page(
    request: Request,
    back: str = Query("/portfolio", max_length=2000),
    token: str | None = Query(None, max_length=4000),
) -> Response:
    if token is not None:
        settings = console_of(request).settings
        if not (settings.dev_login and settings.environment == "development"):
            raise Refused("sign-in links are off: paste the token into the form", 404)
        return await _sign_in(request, token, back)
    return _login_page(request, back)


@router.post("/login")
async def login(request: Request) -> Response:
    _, fields = await form_of(request)
    return await _sign_in(request, fields.get("token", ""), fields.get("back", "/portfolio"))


@router.post("/logout")
async def logout(request: Request) -> Response:
    session, _ = await form_of(request)
    if isinstance(session, Session):
        console_of(request).sessions.drop(session)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response
