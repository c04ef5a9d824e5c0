"""What the end-to-end tests do to the system: post usage histories, poll the REST APIs."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import httpx

from tests.support import auth, http_client

T = TypeVar("T")


def collapse_history(
    account: str,
    *,
    owner: str,
    contact: str,
    steady_days: int = 35,
    silent_days: int = 7,
    per_day: int = 12,
    today: date | None = None,
) -> list[dict[str, Any]]:
    """Sign-up, one contact, ``steady_days`` of steady use, then ``silent_days`` of nothing."""
    today = today or datetime.now(UTC).date()
    first = today - timedelta(days=steady_days + silent_days)
    calls: list[dict[str, Any]] = [
        {
            "type": "group",
            "userId": f"{account}-u0",
            "groupId": account,
            "messageId": f"{account}-group",
            "timestamp": f"{first}T08:00:00Z",
            "traits": {
                "name": f"{account} Inc",
                "plan": "pro",
                "mrr": 2000,
                "owner": owner,
                "stage": "adopted",
                "segment": "mid-market",
            },
        },
        {
            "type": "identify",
            "userId": f"{account}-u0",
            "messageId": f"{account}-identify",
            "context": {"groupId": account},
            "timestamp": f"{first}T08:00:00Z",
            "traits": {"email": contact, "name": "Casey Contact", "role": "champion"},
        },
    ]
    for day in range(steady_days):
        when = first + timedelta(days=day)
        for i in range(per_day):
            calls.append(
                {
                    "type": "track",
                    "userId": f"{account}-u{i % 3}",
                    "event": "Report Created",
                    "context": {"groupId": account},
                    "messageId": f"{account}-{day}-{i}",
                    "timestamp": f"{when}T{9 + i % 8:02d}:00:00Z",
                }
            )
    return calls


async def post_calls(ingest: str, calls: list[dict[str, Any]], *, batch: int = 400) -> int:
    """Post as Segment batches; returns how many events ingest accepted."""
    accepted = 0
    async with http_client(base_url=ingest, headers=auth("ingest"), timeout=30) as client:
        for i in range(0, len(calls), batch):
            r = await client.post("/v1/batch", json={"batch": calls[i : i + batch]})
            r.raise_for_status()
            accepted += r.json().get("accepted", len(calls[i : i + batch]))
    return accepted


async def eventually(
    probe: Callable[[], Awaitable[T] | T], *, timeout: float = 30, what: str = "condition"
) -> T:
    """Poll ``probe`` (plain or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.2)


async def get_json(url: str, **params: Any) -> Any:
    async with http_client(headers=auth("read"), timeout=10) as client:
        r = await client.get(url, params=params)
        r.raise_for_status()
        return r.json()


async def events_counted(health: str, account: str, days: int = 90) -> int:
    """How many usage events health has rolled up for the account (the ``events`` metric)."""
    try:
        body = await get_json(f"{health}/v1/accounts/{account}/metrics", days=days)
    except httpx.HTTPStatusError as exc:
        if exc.response.status_code == 404:
            return 0
        raise
    series = {m["metric"]: m for m in body["metrics"]}
    return int(sum(series["events"]["values"]))


async def make_csm(playbooks: str, email: str, slack_id: str) -> None:
    async with http_client(headers=auth("write"), timeout=10) as client:
        r = await client.post(
            f"{playbooks}/v1/csms",
            json={"email": email, "name": email.split("@")[0], "slack_id": slack_id},
        )
        assert r.status_code in (200, 201), r.text
