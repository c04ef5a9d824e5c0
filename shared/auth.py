"""Scoped API tokens signed with ``UPTAKE_SECRET`` (HS256 JWTs), and FastAPI guards.

Scopes: ``ingest`` (post events), ``read``, ``write``, ``admin``. ``admin`` holds every
scope and ``write`` holds ``read``, so one operator token can do what a tool needs.
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, get_args

import jwt
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

Scope = Literal["ingest", "read", "write", "admin"]
SCOPES: tuple[str, ...] = get_args(Scope)
IMPLIED: dict[str, frozenset[str]] = {
    "admin": frozenset(SCOPES),
    "write": frozenset({"write", "read"}),
    "read": frozenset({"read"}),
    "ingest": frozenset({"ingest"}),
}
ALGORITHM = "HS256"
BEARER = HTTPBearer(auto_error=False, description="A token from `uptake token create`")


@dataclass(frozen=True, slots=True)
class TokenClaims:
    subject: str
    scopes: frozenset[str]
    token_id: str
    expires_at: float | None

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


class InvalidToken(Exception):
    pass


def create_token(
    secret: str, *, scopes: list[str], subject: str = "uptake", ttl_seconds: int | None = None
) -> str:
    unknown = set(scopes) - set(SCOPES)
    if unknown or not scopes:
        raise ValueError(f"unknown scopes {sorted(unknown)}; choose from {list(SCOPES)}")
    now = int(time.time())
    claims: dict[str, object] = {
        "sub": subject,
        "scopes": sorted(set(scopes)),
        "iat": now,
        "jti": uuid.uuid4().hex,
    }
    if ttl_seconds:
        claims["exp"] = now + ttl_seconds
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


@lru_cache(maxsize=4096)
def _decode(secret: str, token: str) -> TokenClaims:
    """Verifying a signature costs microseconds; ingest sees the same few keys all day."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM], options={"verify_exp": False})
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from exc
    granted: set[str] = set()
    for scope in claims.get("scopes", []):
        granted |= IMPLIED.get(scope, frozenset())
    return TokenClaims(
        subject=str(claims.get("sub", "")),
        scopes=frozenset(granted),
        token_id=str(claims.get("jti", "")),
        expires_at=claims.get("exp"),
    )


def verify_token(secret: str, token: str) -> TokenClaims:
    claims = _decode(secret, token)
    if claims.expires_at is not None and claims.expires_at < time.time():
        raise InvalidToken("token expired")
    return claims


def token_from_header(authorization: str | None) -> str | None:
    """Bearer, or Basic with the token as username and an empty password (Segment SDKs)."""
    if not authorization:
        return None
    kind, _, value = authorization.partition(" ")
    kind = kind.lower()
    if kind == "bearer":
        return value.strip() or None
    if kind == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[0] or None
    return None


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


def authorize(secret: str, token: str | None, scope: str) -> TokenClaims:
    """401 without a valid token, 403 when the token lacks the scope."""
    if not token:
        raise _unauthorized("missing token: send Authorization: Bearer <token>")
    try:
        claims = verify_token(secret, token)
    except InvalidToken as exc:
        raise _unauthorized(f"invalid token: {exc}") from exc
    if not claims.allows(scope):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"token lacks the '{scope}' scope")
    return claims


def require_scope(scope: Scope) -> Callable[[Request], Awaitable[TokenClaims]]:
    """A FastAPI dependency: ``Depends(require_scope("read"))``.

    The secret is read from ``request.app.state.settings`` so one dependency serves all apps.
    """

    async def dependency(
        request: Request,
        _: HTTPAuthorizationCredentials | None = Depends(BEARER),  # documents the scheme
    ) -> TokenClaims:
        token = token_from_header(request.headers.get("authorization"))
        return authorize(request.app.state.settings.secret, token, scope)

    return dependency
