"""Retry policy and the outcome of one send attempt. Pure: no clock, no I/O.

Temporary failures (SMTP 4xx, connection errors, HTTP 5xx, Slack 429) are retried with
exponential backoff and jitter; a provider's ``Retry-After`` is honoured as the least
wait. Permanent failures (SMTP 5xx, HTTP 4xx, Slack ``channel_not_found``...) are not.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

Outcome = Literal["sent", "temporary", "permanent"]


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: Outcome
    detail: str = ""
    retry_after: float | None = None
    provider_response: str | None = None

    @classmethod
    def sent(cls, response: str = "") -> SendResult:
        return cls("sent", provider_response=response)

    @classmethod
    def temporary(cls, detail: str, *, retry_after: float | None = None) -> SendResult:
        return cls("temporary", detail=detail, retry_after=retry_after)

    @classmethod
    def permanent(cls, detail: str) -> SendResult:
        return cls("permanent", detail=detail)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 8
    base_seconds: float = 30.0
    max_seconds: float = 3600.0
    jitter: float = 0.25  # +-25% around the exponential step

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Wait before attempt ``attempt + 1``, after ``attempt`` failures (1-based)."""
        step = min(self.max_seconds, self.base_seconds * 2 ** max(0, attempt - 1))
        r = (rng or random).uniform(1 - self.jitter, 1 + self.jitter)
        return float(min(self.max_seconds, step * r))

    def next_delay(
        self, attempt: int, result: SendResult, rng: random.Random | None = None
    ) -> float | None:
        """Seconds until the next try, or ``None`` when there is none (permanent or last)."""
        if result.outcome != "temporary" or attempt >= self.max_attempts:
            return None
        delay = self.backoff(attempt, rng)
        if result.retry_after is not None:
            # The provider said when: never earlier, and no more jitter than needed.
            delay = max(float(result.retry_after), min(delay, float(result.retry_after) * 1.1))
        return delay


def parse_retry_after(value: str | None, *, default: float | None = None) -> float | None:
    """``Retry-After`` in seconds (Slack sends seconds); capped to an hour."""
    if value is None:
        return default
    try:
        seconds = float(value.strip())
    except ValueError:
        return default
    return min(max(seconds, 0.0), 3600.0)


def classify_http(status: int, *, retry_after: str | None, body: str) -> SendResult:
    if 200 <= status < 300:
        return SendResult.sent(body[:500])
    detail = f"HTTP {status}: {body[:300]}"
    if status == 429:
        return SendResult.temporary(detail, retry_after=parse_retry_after(retry_after, default=1))
    if status >= 500 or status == 408:
        return SendResult.temporary(detail, retry_after=parse_retry_after(retry_after))
    return SendResult.permanent(detail)


SLACK_TEMPORARY_ERRORS = frozenset(
    {
        "ratelimited",
        "rate_limited",
        "service_unavailable",
        "internal_error",
        "fatal_error",
        "request_timeout",
    }
)


def classify_slack_api(payload: object) -> SendResult:
    """A 200 from the Web API still says ``ok: false`` for most failures."""
    if not isinstance(payload, dict):
        return SendResult.temporary("Slack answered a non-JSON body")
    if payload.get("ok") is True:
        return SendResult.sent(str(payload.get("ts", "")))
    error = str(payload.get("error", "unknown_error"))
    if error in SLACK_TEMPORARY_ERRORS:
        return SendResult.temporary(f"slack: {error}")
    return SendResult.permanent(f"slack: {error}")


def classify_smtp_code(code: int, message: str) -> SendResult:
    detail = f"SMTP {code}: {message[:300]}"
    if 400 <= code < 500 or code < 0:
        return SendResult.temporary(detail)
    return SendResult.permanent(detail)
