"""Signed links for unsubscribe, open pixel and click redirect (HMAC-SHA256, no I/O).

A token is ``base64url(json payload) . base64url(HMAC(key, kind . payload))``. The key is
derived from ``UPTAKE_SECRET`` for this one purpose, so a link can never pass for an API
token or the other way round. Click targets live *inside* the signed payload: the
redirect goes only where the email said, never to a URL an attacker appends.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, urlsplit

import orjson

LinkKind = Literal["unsubscribe", "open", "click"]
_KIND_CODES: dict[str, str] = {"unsubscribe": "u", "open": "o", "click": "c"}
MAX_TOKEN_LENGTH = 4096


class InvalidLink(ValueError):
    """The token is malformed, tampered with, or of the wrong kind."""


@dataclass(frozen=True, slots=True)
class LinkClaims:
    kind: LinkKind
    delivery_id: str
    email: str | None = None
    url: str | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode(), b"uptake-notify-links-v1", hashlib.sha256).digest()


def _mac(secret: str, kind: str, payload: str) -> bytes:
    return hmac.new(_key(secret), f"{kind}.{payload}".encode(), hashlib.sha256).digest()


def is_web_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in {"http", "https"} and bool(parts.netloc)


def sign(secret: str, claims: LinkClaims) -> str:
    if claims.kind == "click" and not (claims.url and is_web_url(claims.url)):
        raise ValueError("a click link needs an http(s) target")
    body: dict[str, str] = {"d": claims.delivery_id}
    if claims.email:
        body["e"] = claims.email
    if claims.url:
        body["u"] = claims.url
    payload = _b64(orjson.dumps(body))
    code = _KIND_CODES[claims.kind]
    return f"{payload}.{_b64(_mac(secret, code, payload))}"


def verify(secret: str, token: str, kind: LinkKind, *, previous: str | None = None) -> LinkClaims:
    """The claims of a genuine token of ``kind``; :class:`InvalidLink` otherwise.

    During a rotation ``previous`` (``UPTAKE_SECRET_PREVIOUS``) verifies too: links in
    emails already sent keep working until the old secret is retired."""
    if len(token) > MAX_TOKEN_LENGTH or token.count(".") != 1:
        raise InvalidLink("malformed link")
    payload, signature = token.split(".")
    try:
        given = _unb64(signature)
    except (binascii.Error, ValueError) as exc:
        raise InvalidLink("malformed link") from exc
    code = _KIND_CODES[kind]
    if not any(
        hmac.compare_digest(given, _mac(key, code, payload)) for key in (secret, previous) if key
    ):
        raise InvalidLink("link signature does not match")
    try:
        body = orjson.loads(_unb64(payload))
    except (binascii.Error, ValueError) as exc:
        raise InvalidLink("malformed link") from exc
    if not isinstance(body, dict) or not isinstance(body.get("d"), str):
        raise InvalidLink("malformed link")
    url = body.get("u")
    if kind == "click" and not (isinstance(url, str) and is_web_url(url)):
        raise InvalidLink("click link without an http(s) target")
    return LinkClaims(kind=kind, delivery_id=body["d"], email=body.get("e"), url=url)


@dataclass(frozen=True, slots=True)
class LinkBuilder:
    """Absolute URLs under ``PUBLIC_BASE_URL`` for one delivery."""

    secret: str
    base_url: str

    def _url(self, path: str, token: str) -> str:
        return f"{self.base_url.rstrip('/')}{path}{token}"

    def unsubscribe(self, delivery_id: str, email: str) -> str:
        token = sign(self.secret, LinkClaims("unsubscribe", delivery_id, email=email))
        return self._url("/v1/unsubscribe?token=", token)

    def open_pixel(self, delivery_id: str) -> str:
        return self._url("/t/o/", sign(self.secret, LinkClaims("open", delivery_id)))

    def click(self, delivery_id: str, url: str) -> str:
        return self._url("/t/c/", sign(self.secret, LinkClaims("click", delivery_id, url=url)))

    def unsubscribe_mailto(self, mailbox: str, delivery_id: str, email: str) -> str:
        token = sign(self.secret, LinkClaims("unsubscribe", delivery_id, email=email))
        return f"mailto:{mailbox}?subject={quote('unsubscribe ' + token)}"
