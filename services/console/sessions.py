"""Sign-in sessions: the API token stays on the server, the browser holds a signed id.

The cookie carries only a random session id and its HMAC (keyed by ``UPTAKE_SECRET``), so
a stolen or forged cookie value names no token and a guessed id fails the signature.
Each session has its own CSRF token, which every form posts back.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field

COOKIE = "uptake_console"
MAX_SESSIONS = 10_000  # an in-memory store: the oldest go first past this


@dataclass
class Session:
    id: str
    expires_at: float
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    token: str | None = None
    subject: str | None = None
    scopes: frozenset[str] = frozenset()
    flash: str | None = None

    @property
    def signed_in(self) -> bool:
        return self.token is not None

    @property
    def can_write(self) -> bool:
        return "write" in self.scopes

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes


class SessionStore:
    """Sessions by id, in this process's memory (a restart signs everyone out)."""

    def __init__(self, secret: str, ttl_seconds: float) -> None:
        self._key = hashlib.sha256(b"console-session:" + secret.encode()).digest()
        self._ttl = ttl_seconds
        self._sessions: dict[str, Session] = {}

    def _sign(self, session_id: str) -> str:
        return hmac.new(self._key, session_id.encode(), hashlib.sha256).hexdigest()

    def cookie_value(self, session: Session) -> str:
        return f"{session.id}.{self._sign(session.id)}"

    def new(self, *, expires_at: float | None = None) -> Session:
        now = time.time()
        self._sweep(now)
        session = Session(id=secrets.token_urlsafe(32), expires_at=expires_at or now + self._ttl)
        self._sessions[session.id] = session
        return session

    def get(self, cookie: str | None) -> Session | None:
        """The live session a cookie names, if its signature holds and it has not expired."""
        if not cookie or "." not in cookie:
            return None
        session_id, _, signature = cookie.rpartition(".")
        if not hmac.compare_digest(signature, self._sign(session_id)):
            return None
        session = self._sessions.get(session_id)
        if session is None:
            return None
        if session.expires_at <= time.time():
            self._sessions.pop(session_id, None)
            return None
        return session

    def sign_in(
        self,
        old: Session | None,
        *,
        token: str,
        subject: str,
        scopes: frozenset[str],
        token_expires_at: float | None,
    ) -> Session:
        """A fresh id at sign-in (an id seen before it cannot be fixed on a victim)."""
        if old is not None:
            self.drop(old)
        ends = time.time() + self._ttl
        if token_expires_at is not None:
            ends = min(ends, token_expires_at)
        session = self.new(expires_at=ends)
        session.token, session.subject, session.scopes = token, subject, scopes
        return session

    def drop(self, session: Session) -> None:
        self._sessions.pop(session.id, None)

    def ttl(self, session: Session) -> int:
        return max(0, int(session.expires_at - time.time()))

    def _sweep(self, now: float) -> None:
        if len(self._sessions) < MAX_SESSIONS:
            return
        for sid in [s for s, v in self._sessions.items() if v.expires_at <= now]:
            del self._sessions[sid]
        while len(self._sessions) >= MAX_SESSIONS:
            del self._sessions[next(iter(self._sessions))]


def csrf_ok(session: Session | None, submitted: str | None) -> bool:
    return (
        session is not None
        and bool(submitted)
        and hmac.compare_digest(session.csrf.encode(), (submitted or "").encode())
    )
