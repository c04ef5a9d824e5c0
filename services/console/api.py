"""The four services' REST APIs, called with the signed-in person's own token.

The console holds no data of its own: every page is read from these calls and every
button is one of them, so the services' scopes and audit log apply to the person.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from services.console.settings import ConsoleSettings

SERVICES = ("ingest", "health", "playbooks", "notify")


class ApiError(Exception):
    """A call the service refused or could not answer; ``status`` is what to show."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):  # validation errors: field and message
        return "; ".join(
            f"{'.'.join(str(x) for x in e.get('loc', [])[1:])}: {e.get('msg')}"
            if isinstance(e, dict)
            else str(e)
            for e in detail
        )
    return str(detail)


class Api:
    """One shared connection pool; the token goes on each request."""

    def __init__(
        self, settings: ConsoleSettings, transport: httpx.AsyncBaseTransport | None = None
    ):
        self.base = {name: settings.api_url(name) for name in SERVICES}
        self.client = httpx.AsyncClient(
            timeout=settings.api_timeout_seconds,
            transport=transport,
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=20),
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def call(
        self,
        token: str,
        method: str,
        service: str,
        path: str,
        *,
        params: Any = None,
        json: Any = None,
    ) -> Any:
        try:
            response = await self.client.request(
                method,
                f"{self.base[service]}{path}",
                params=params,
                json=json,
                headers={"Authorization": f"Bearer {token}"},
            )
        except httpx.HTTPError as exc:
            raise ApiError(502, f"{service} is unreachable ({type(exc).__name__})") from exc
        if response.status_code >= 400:
            status = response.status_code if response.status_code < 500 else 502
            raise ApiError(status, f"{service}: {_detail(response)}")
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    async def get(self, token: str, service: str, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None and v != ""}
        return await self.call(token, "GET", service, path, params=clean)

    async def post(self, token: str, service: str, path: str, body: Any = None) -> Any:
        return await self.call(token, "POST", service, path, json=body)

    async def put(self, token: str, service: str, path: str, body: Any) -> Any:
        return await self.call(token, "PUT", service, path, json=body)

    async def ready(self) -> dict[str, str]:
        """Each API's /readyz, for the console's own readiness."""
        checks: dict[str, str] = {}
        for name, base in self.base.items():
            try:
                r = await self.client.get(f"{base}/healthz", timeout=2)
                checks[name] = "ok" if r.status_code == 200 else f"status {r.status_code}"
            except httpx.HTTPError as exc:
                checks[name] = f"unreachable: {type(exc).__name__}"
        return checks


def seg(value: str) -> str:
    """One id as a path segment of a service's URL: quoted whole, so an account id with
    ``/``, ``?``, ``#`` or ``%`` names that account and nothing else."""
    return quote(value, safe="")
