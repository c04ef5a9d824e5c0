"""Scoped API tokens signed with ``UPTAKE_SECRET`` (HS256 JWTs), and FastAPI guards.

Scopes: ``ingest`` (post events), ``read``, ``write``, ``admin``. ``admin`` holds every
scope and ``write`` holds ``read``, so one operator token can do what a tool needs.

A token carries a key id (``kid`` header: a short hash of the secret that signed it, never
the secret), so during a rotation a service knows which of ``UPTAKE_SECRET`` and
``UPTAKE_SECRET_PREVIOUS`` to check it with. Tokens expire after 90 days unless they only
hold ``ingest`` (SDK write keys live in deployed code). Each service refuses the ids in
its revoked set, which :mod:`shared.revocations` keeps from ``auth.revocations.v1``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, get_args

import jwt
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.ratelimit import limit_writes
from shared.tokenuse import UsageBuffer

if TYPE_CHECKING:
    from shared.settings import BaseServiceSettings

Scope = Literal["ingest", "read", "write", "admin"]
SCOPES: tuple[str, ...] = get_args(Scope)
IMPLIED: dict[str, frozenset[str]] = {
    "admin": frozenset(SCOPES),
    "write": frozenset({"write", "read"}),
    "read": frozenset({"read"}),
    "ingest": frozenset({"ingest"}),
}
ALGORITHM = "HS256"
# Every require_scope dependency made: routes behind one are rate limited and audited.
SCOPE_GUARDS: set[Callable[..., Any]] = set()
BEARER = HTTPBearer(auto_error=False, description="A token from `uptake token create`")
CACHE_SIZE = 4096  # verified tokens per authenticator
DEFAULT_TTL_SECONDS = 90 * 86400
MAX_TTL_SECONDS = 10 * 365 * 86400
Ttl = int | None | Literal["default"]
"""Seconds until expiry; ``None``: never; ``"default"``: :func:`default_ttl` of the scopes."""


@dataclass(frozen=True, slots=True)
class TokenClaims:
    subject: str
    scopes: frozenset[str]  # as granted: with what each issued scope implies
    token_id: str
    expires_at: float | None
    issued: tuple[str, ...] = ()  # the scopes as issued
    issued_at: float | None = None
    key_id: str | None = None  # None: made before tokens carried one

    def allows(self, scope: str) -> bool:
        return scope in self.scopes


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    claims: TokenClaims


class InvalidToken(Exception):
    """Why a token is refused; ``detail`` is the 401's text."""

    @property
    def detail(self) -> str:
        return f"invalid token: {self}"


class TokenExpired(InvalidToken):
    def __init__(self, expires_at: float) -> None:
        super().__init__(f"token expired at {format_instant(expires_at)}")

    @property
    def detail(self) -> str:
        return str(self)


class TokenRevoked(InvalidToken):
    def __init__(self) -> None:
        super().__init__("token revoked")

    @property
    def detail(self) -> str:
        return str(self)


def format_instant(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def key_id(secret: str) -> str:
    """A short, one-way name for a secret: tells keys apart, reveals nothing of them."""
    return hashlib.sha256(b"uptake-token-key\x00" + secret.encode()).hexdigest()[:12]


def default_ttl(scopes: Iterable[str]) -> int | None:
    """Write keys (``ingest`` only) never expire by default; every other token in 90 days."""
    return None if set(scopes) <= {"ingest"} else DEFAULT_TTL_SECONDS


_TTL = re.compile(r"^(\d{1,6})([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_ttl(text: str) -> int | None:
    """``90d``, ``12h``, ``30m``, ``2w``, ``3600s`` -> seconds; ``never`` (or ``0``) -> None."""
    value = text.strip().lower()
    if value in ("never", "0"):
        return None
    match = _TTL.match(value)
    if not match:
        raise ValueError("ttl must look like 90d, 12h, 30m, 2w or 3600s, or be 'never'")
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if not 0 < seconds <= MAX_TTL_SECONDS:
        raise ValueError("ttl must be more than 0 and at most 3650d")
    return seconds


def _granted(scopes: Iterable[str]) -> frozenset[str]:
    granted: set[str] = set()
    for scope in scopes:
        granted |= IMPLIED.get(scope, frozenset())
    return frozenset(granted)


def issue_token(
    secret: str,
    *,
    scopes: list[str],
    subject: str = "uptake",
    ttl_seconds: Ttl = "default",
    now: float | None = None,
) -> IssuedToken:
    """Sign a new token (with a fresh id, the secret's key id, and its expiry)."""
    unknown = set(scopes) - set(SCOPES)
    if unknown or not scopes:
        raise ValueError(f"unknown scopes {sorted(unknown)}; choose from {list(SCOPES)}")
    issued = tuple(sorted(set(scopes)))
    ttl = default_ttl(issued) if ttl_seconds == "default" else ttl_seconds
    issued_at = int(now if now is not None else time.time())
    kid = key_id(secret)
    claims = TokenClaims(
        subject=subject,
        scopes=_granted(issued),
        token_id=uuid.uuid4().hex,
        expires_at=float(issued_at + ttl) if ttl else None,
        issued=issued,
        issued_at=float(issued_at),
        key_id=kid,
    )
    payload: dict[str, object] = {
        "sub": subject,
        "scopes": list(issued),
        "iat": issued_at,
        "jti": claims.token_id,
    }
    if claims.expires_at is not None:
        payload["exp"] = int(claims.expires_at)
    token = jwt.encode(payload, secret, algorithm=ALGORITHM, headers={"kid": kid})
    return IssuedToken(token=token, claims=claims)


def create_token(
    secret: str, *, scopes: list[str], subject: str = "uptake", ttl_seconds: Ttl = "default"
) -> str:
    return issue_token(secret, scopes=scopes, subject=subject, ttl_seconds=ttl_seconds).token


Keys = tuple[tuple[str, str], ...]  # (key id, secret), the signing secret first


def keyring(secret: str, previous: str | None = None) -> Keys:
    keys = [(key_id(secret), secret)]
    if previous and previous != secret:
        keys.append((key_id(previous), previous))
    return tuple(keys)


def decode_claims(keys: Keys, token: str) -> TokenClaims:
    """Check the signature with the secret the ``kid`` names (or, without one, each)."""
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.PyJWTError as exc:
        raise InvalidToken(str(exc)) from exc
    if kid is None:  # made before tokens carried a key id: try each accepted secret
        candidates = [secret for _, secret in keys]
    else:
        candidates = [secret for known, secret in keys if known == kid]
        if not candidates:
            raise InvalidToken(f"signed with a key that is no longer accepted (key id {kid!r})")
    error: jwt.PyJWTError | None = None
    for secret in candidates:
        try:
            claims: dict[str, Any] = jwt.decode(
                token, secret, algorithms=[ALGORITHM], options={"verify_exp": False}
            )
            break
        except jwt.PyJWTError as exc:
            error = exc
    else:
        raise InvalidToken(str(error)) from error
    raw_scopes = claims.get("scopes", [])
    issued = tuple(str(s) for s in raw_scopes) if isinstance(raw_scopes, list) else ()
    expires_at, issued_at = claims.get("exp"), claims.get("iat")
    return TokenClaims(
        subject=str(claims.get("sub", "")),
        scopes=_granted(issued),
        token_id=str(claims.get("jti", "")),
        expires_at=float(expires_at) if isinstance(expires_at, int | float) else None,
        issued=issued,
        issued_at=float(issued_at) if isinstance(issued_at, int | float) else None,
        key_id=str(kid) if kid is not None else None,
    )


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


class Authenticator:
    """What one service checks a token against: its accepted keys, the revoked token ids
    (a set :class:`shared.revocations.RevocationWatcher` keeps current) and, where the
    registry lives, a buffer of last uses. One per app, on ``app.state.auth``."""

    def __init__(
        self, keys: Keys, *, revoked: set[str] | None = None, usage: UsageBuffer | None = None
    ) -> None:
        self.keys = keys
        self.revoked: set[str] = revoked if revoked is not None else set()
        self.usage = usage
        self._verified: dict[str, TokenClaims] = {}

    @classmethod
    def from_settings(cls, settings: BaseServiceSettings) -> Authenticator:
        return cls(keyring(settings.secret, settings.secret_previous))

    def verify(self, token: str) -> TokenClaims:
        # Verifying a signature costs microseconds; ingest sees the same few keys all day.
        # Expiry and revocation are checked on every call, cached or not.
        claims = self._verified.get(token)
        if claims is None:
            claims = decode_claims(self.keys, token)
            if len(self._verified) >= CACHE_SIZE:
                self._verified.clear()
            self._verified[token] = claims
        now = time.time()
        if claims.expires_at is not None and claims.expires_at < now:
            raise TokenExpired(claims.expires_at)
        if claims.token_id in self.revoked:
            raise TokenRevoked()
        if self.usage is not None:
            self.usage.note(claims, now)
        return claims

    def authenticate(self, token: str | None) -> TokenClaims:
        """401 without a valid, unexpired, unrevoked token."""
        if not token:
            raise _unauthorized("missing token: send Authorization: Bearer <token>")
        try:
            return self.verify(token)
        except InvalidToken as exc:
            raise _unauthorized(exc.detail) from exc

    def authorize(self, token: str | None, scope: str) -> TokenClaims:
        """401 without a valid token, 403 when the token lacks the scope."""
        return check_scope(self.authenticate(token), scope)


def verify_token(secret: str, token: str, *, previous: str | None = None) -> TokenClaims:
    return Authenticator(keyring(secret, previous)).verify(token)


def authorize(secret: str, token: str | None, scope: str) -> TokenClaims:
    return Authenticator(keyring(secret)).authorize(token, scope)


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


def authenticator_of(request: Request) -> Authenticator:
    """The app's authenticator (made from its settings if the app has none yet)."""
    state = request.app.state
    auth: Authenticator | None = getattr(state, "auth", None)
    if auth is None:
        auth = state.auth = Authenticator.from_settings(state.settings)
    return auth


def check_scope(claims: TokenClaims, scope: str) -> TokenClaims:
    """403 when the token lacks the scope."""
    if not claims.allows(scope):
        raise HTTPException(status.HTTP_403_FORBIDDEN, detail=f"token lacks the '{scope}' scope")
    return claims


def require_scope(scope: Scope) -> Callable[[Request], Awaitable[TokenClaims]]:
    """A FastAPI dependency: ``Depends(require_scope("read"))``.

    The keys and revoked ids come from ``request.app.state.auth`` so one dependency serves
    all apps. The verified claims go on ``request.state.token_claims`` (the audit trail's
    "who"), also when the scope is lacking: a refused attempt is recorded too. Writes are
    then counted against the token's rate limit (:func:`shared.ratelimit.limit_writes`).
    """

    async def dependency(
        request: Request,
        _: HTTPAuthorizationCredentials | None = Depends(BEARER),  # documents the scheme
    ) -> TokenClaims:
        token = token_from_header(request.headers.get("authorization"))
        claims = authenticator_of(request).authenticate(token)
        request.state.token_claims = claims
        limit_writes(request, claims)
        return check_scope(claims, scope)

    SCOPE_GUARDS.add(dependency)
    return dependency


def guarded(dependant: Any) -> bool:
    """Whether a route's dependency tree holds a :func:`require_scope` guard."""
    return any(d.call in SCOPE_GUARDS or guarded(d) for d in dependant.dependencies)
