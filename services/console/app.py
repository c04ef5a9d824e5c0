"""The console app: pages, actions, sign-in, security headers, ops routes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

import httpx
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.console import actions, auth, pages
from services.console.api import Api, ApiError
from services.console.settings import ConsoleSettings
from services.console.web import (
    Refused,
    SignInRequired,
    console_of,
    new_console,
    render,
    session_of,
)
from shared.logging import configure_logging
from shared.metrics import MetricsMiddleware, metrics_response
from shared.responses import JSONBytes

STATIC = Path(__file__).parent / "static"
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class SecurityHeaders:
    """Pure ASGI: every response gets the policy headers (pages and errors alike)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(HEADERS)
                if scope["path"] not in ("/healthz", "/readyz", "/metrics"):
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, sending)


def create_app(
    settings: ConsoleSettings | None = None, *, transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    settings = settings or ConsoleSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(service="console", level=settings.log_level, json=settings.log_json)
        yield
        await api.close()

    api = Api(settings, transport=transport)
    app = FastAPI(
        title="Uptake console",
        description="The CS team's web console over the four REST APIs.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url="/docs",
    )
    app.state.settings = settings
    app.state.console = new_console(settings, api)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    async def readyz(request: Request) -> JSONBytes:
        """Ready when the APIs it reads are up (the console has no database or broker)."""
        checks = await console_of(request).api.ready()
        ok = all(v == "ok" for v in checks.values())
        return JSONBytes(
            {"status": "ok" if ok else "unavailable", "checks": checks},
            status_code=200 if ok else 503,
        )

    app.add_api_route("/metrics", metrics_response, methods=["GET"], include_in_schema=False)

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        path = STATIC / name
        if "/" in name or name.startswith(".") or not path.is_file():
            return Response("not found", status_code=404)
        return FileResponse(path, headers={"cache-control": "public, max-age=3600"})

    @app.get("/", include_in_schema=False)
    async def home() -> Response:
        return RedirectResponse("/portfolio", status_code=303)

    app.include_router(auth.router)
    app.include_router(pages.router)
    app.include_router(actions.router)

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, exc: SignInRequired) -> Response:
        return RedirectResponse(f"/login?back={quote(exc.back, safe='')}", status_code=303)

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused) -> Response:
        return render(request, "error.html", status=exc.status, message=exc.detail)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> Response:
        if exc.status == 401:  # the token expired or was revoked: sign in again
            session = session_of(request)
            if session is not None:
                console_of(request).sessions.drop(session)
            return RedirectResponse("/login", status_code=303)
        return render(request, "error.html", status=exc.status, message=exc.detail)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        return render(request, "error.html", status=exc.status_code, message=str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in e['loc'][1:])}: {e['msg']}" for e in exc.errors()
        )
        return render(request, "error.html", status=422, message=problems)

    app.add_middleware(SecurityHeaders)
    app.add_middleware(MetricsMiddleware)
    return app
