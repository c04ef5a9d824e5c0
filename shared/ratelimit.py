"""Token buckets per API token: ingest's events per second, and every service's writes.

Both are in-process (per replica): N replicas behind a load balancer allow up to N times
the rate, which is the point of a limit that guards each process rather than a quota.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import HTTPException, Request
from prometheus_client import Counter

if TYPE_CHECKING:
    from shared.auth import TokenClaims

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
WRITES_LIMITED = Counter(
    "uptake_http_writes_rate_limited_total", "Write requests refused with 429 (per token limit)"
)


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """A bucket per key (an API token's id), refilled at ``rate`` per second up to ``burst``."""

    def __init__(self, *, rate: float, burst: float, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str, amount: float = 1.0, *, now: float | None = None) -> float:
        """0.0 if allowed (and consumed), else the seconds to wait before retrying."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._buckets.clear()  # bounded memory beats perfect fairness
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
        bucket.updated = now
        if amount > self.burst:
            return math.inf
        if bucket.tokens >= amount:
            bucket.tokens -= amount
            return 0.0
        return (amount - bucket.tokens) / self.rate


def retry_after(wait: float) -> str:
    """``Retry-After`` as whole seconds, at least 1 (a client that retries at once is refused
    again)."""
    return "60" if math.isinf(wait) else str(max(1, math.ceil(wait)))


def limit_writes(request: Request, claims: TokenClaims) -> None:
    """429 with ``Retry-After`` once this token has used its write burst (``API_WRITE_RATE``,
    ``API_WRITE_BURST``). Reads are never limited here; a request is counted once however
    many scope guards its route has."""
    limiter: RateLimiter | None = getattr(request.app.state, "write_limiter", None)
    if limiter is None or request.method in SAFE_METHODS:
        return
    state = request.state
    if getattr(state, "write_counted", False):
        return
    state.write_counted = True
    wait = limiter.take(claims.token_id or f"sub:{claims.subject}")
    if wait:
        state.rate_limited = True
        WRITES_LIMITED.inc()
        raise HTTPException(
            429,
            detail=f"write rate limit exceeded for this token ({limiter.rate:g}/s, "
            f"burst {limiter.burst:g}); retry after the Retry-After seconds",
            headers={"Retry-After": retry_after(wait)},
        )
