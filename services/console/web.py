"""What every page and action shares: the session, the form and its CSRF check, rendering."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qsl, quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from services.console.api import Api
from services.console.sessions import COOKIE, Session, SessionStore, csrf_ok
from services.console.settings import ConsoleSettings

TEMPLATES = Path(__file__).parent / "templates"
MAX_FORM = 64 * 1024


@dataclass
class Console:
    settings: ConsoleSettings
    api: Api
    sessions: SessionStore
    templates: Environment


def new_console(settings: ConsoleSettings, api: Api) -> Console:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["money"] = lambda v: "-" if v is None else f"${v:,.0f}"
    env.filters["signed"] = lambda v: "-" if v is None else f"{v:+.0f}"
    env.filters["q"] = lambda v: quote(str(v), safe="")
    env.filters["day"] = lambda v: (v or "-")[:10]
    env.filters["when"] = lambda v: (v or "-")[:16].replace("T", " ")
    sessions = SessionStore(settings.secret, settings.session_hours * 3600)
    return Console(settings=settings, api=api, sessions=sessions, templates=env)


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


class Refused(Exception):
    """An action the console itself refuses (no CSRF token, a read-only token): 403."""

    def __init__(self, detail: str, status: int = 403) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status


class SignInRequired(Exception):
    def __init__(self, back: str = "/") -> None:
        super().__init__(back)
        self.back = back


def session_of(request: Request) -> Session | None:
    return console_of(request).sessions.get(request.cookies.get(COOKIE))


def signed_in(request: Request) -> Session:
    """The signed-in session, else off to the sign-in page (and back here after)."""
    session = session_of(request)
    if session is None or not session.signed_in:
        back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(back)
    return session


def safe_back(value: str | None, default: str = "/") -> str:
    """Only a path on this site (never ``//host`` or a scheme): no open redirect."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    return value


async def form_of(request: Request) -> tuple[Session | None, dict[str, str]]:
    """The posted form once its CSRF token matches the session's; else 403."""
    if request.headers.get("content-type", "").split(";")[0].strip() not in (
        "application/x-www-form-urlencoded",
        "",
    ):
        raise Refused("forms are posted as application/x-www-form-urlencoded", 415)
    body = await request.body()
    if len(body) > MAX_FORM:
        raise Refused("form too large", 413)
    try:
        fields = dict(parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=50))
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refused("unreadable form", 400) from exc
    session = session_of(request)
    if not csrf_ok(session, fields.get("csrf")):
        raise Refused("missing or wrong CSRF token: reload the page and try again")
    return session, fields


async def acting(request: Request, scope: str = "write") -> tuple[Session, dict[str, str]]:
    """A signed-in session allowed to act, and its form (CSRF-checked)."""
    session, fields = await form_of(request)
    if session is None or not session.signed_in:
        raise SignInRequired(safe_back(fields.get("back")))
    if scope not in session.scopes:
        raise Refused(f"your token is not allowed to do this (needs the '{scope}' scope)")
    return session, fields


def set_cookie(request: Request, response: Response, session: Session) -> None:
    console = console_of(request)
    response.set_cookie(
        COOKIE,
        console.sessions.cookie_value(session),
        max_age=console.sessions.ttl(session),
        httponly=True,
        samesite="strict",
        secure=console.settings.secure_cookie,
        path="/",
    )


def render(request: Request, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    """A page; a visitor without a session gets an anonymous one (its CSRF token)."""
    console = console_of(request)
    session = session_of(request)
    fresh = session is None
    if session is None:
        session = console.sessions.new(expires_at=time.time() + 3600)
    flash, session.flash = session.flash, None
    html = console.templates.get_template(template).render(
        session=session,
        csrf=session.csrf,
        flash=flash,
        path=request.url.path,
        here=request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        **context,
    )
    response = HTMLResponse(html, status_code=status)
    if fresh:
        set_cookie(request, response, session)
    return response


def back_to(request: Request, session: Session, fields: dict[str, str], message: str) -> Response:
    session.flash = message
    return RedirectResponse(safe_back(fields.get("back")), status_code=303)


def refuse(detail: str, status: int = 403) -> NoReturn:
    raise Refused(detail, status)
