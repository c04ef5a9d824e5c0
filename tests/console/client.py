"""A signed-in console visitor over plain HTTP (cookies kept, redirects not followed)."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.support import http_client_sync

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF field in the page"
    return found[1]


class Visitor:
    def __init__(self, base: str) -> None:
        self.http = http_client_sync(base_url=base, timeout=30, follow_redirects=False)

    def sign_in(self, token: str) -> httpx.Response:
        page = self.http.get("/login")
        return self.http.post("/login", data={"token": token, "csrf": csrf_of(page.text)})

    def page(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(path, params=params)

    def post(
        self, path: str, data: dict[str, str], *, from_page: str = "/portfolio"
    ) -> httpx.Response:
        """Post a form with the CSRF token of a page the visitor just loaded."""
        token = csrf_of(self.http.get(from_page).text)
        return self.http.post(path, data={"csrf": token, "back": from_page, **data})

    def close(self) -> None:
        self.http.close()
