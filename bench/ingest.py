"""Ingest throughput with wrk: single events and 100-event batches, next to a bare endpoint;
then events parked for users with no account yet, and their release once linked.

Run: ``python -m bench.ingest`` (or ``make bench``). One ingest worker process, the
embedded Tansu broker, SQLite; wrk on the same machine (it competes for the cores, and
does so equally for the bare endpoint, which is why the ratio is the figure to read).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import orjson

from bench.support import BENCH_SECRET, WrkResult, embedded_broker, process, service, wrk
from shared.auth import create_token
from shared.broker import free_port

DURATION = int(os.environ.get("BENCH_SECONDS", "10"))
PARKED_EVENTS = int(os.environ.get("BENCH_PARKED_EVENTS", "20000"))


def single_event() -> bytes:
    return orjson.dumps(
        {
            "userId": "user-1",
            "event": "Report Created",
            "groupId": "acct-bench",
            "properties": {"rows": 120, "format": "pdf"},
            "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
            "timestamp": "2026-11-20T10:00:00Z",
        }
    )


def batch_of(n: int) -> bytes:
    return orjson.dumps(
        {
            "batch": [
                {
                    "type": "track",
                    "userId": f"user-{i % 40}",
                    "event": "Report Created",
                    "groupId": f"acct-{i % 20}",
                    "messageId": f"m-{i}",
                    "properties": {"rows": i, "format": "pdf"},
                    "timestamp": "2026-11-20T10:00:00Z",
                }
                for i in range(n)
            ]
        }
    )


async def parked_then_released(
    url: str, headers: dict[str, str], admin_token: str
) -> tuple[float, float]:
    """Events for users with no account yet (parked), then one group call per user:
    (parked events/s, released events/s, until ``/v1/pending`` is empty)."""
    run = uuid.uuid4().hex[:8]
    users = [f"parked-{run}-{u}" for u in range(50)]
    bodies = [
        orjson.dumps(
            {
                "batch": [
                    {
                        "type": "track",
                        "userId": users[(b * 100 + i) % len(users)],
                        "event": "Report Created",
                        "messageId": f"{run}-{b}-{i}",
                        "properties": {"rows": i},
                        "timestamp": "2026-11-20T10:00:00Z",
                    }
                    for i in range(100)
                ]
            }
        )
        for b in range(PARKED_EVENTS // 100)
    ]
    admin = {**headers, "Authorization": f"Bearer {admin_token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        queue = list(reversed(bodies))

        retried: list[str] = []

        async def worker() -> None:
            while queue:
                body = queue.pop()
                r = await client.post("/v1/batch", content=body)
                if r.status_code in (429, 503):  # as an SDK does: retry later
                    retried.append(r.text[:200])
                    queue.append(body)
                    await asyncio.sleep(0.1)
                    continue
                r.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(8)))
        parked = len(bodies) * 100 / (time.perf_counter() - started)
        if retried:
            print(f"parking: {len(retried)} requests retried, e.g. {retried[0]}", flush=True)
        groups = [
            {"type": "group", "userId": u, "groupId": f"acct-parked-{i % 20}"}
            for i, u in enumerate(users)
        ]
        started = time.perf_counter()
        (await client.post("/v1/batch", json={"batch": groups})).raise_for_status()
        while True:
            listed = (await client.get("/v1/pending", headers=admin)).json()
            if listed["events"] == 0:
                break
            await asyncio.sleep(0.05)
        released = len(bodies) * 100 / (time.perf_counter() - started)
    return parked, released


@contextmanager
def bare_endpoint() -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with process(
        [sys.executable, "-m", "bench.bare_app"], {"BARE_PORT": str(port)}, f"{url}/readyz"
    ):
        yield url


def show(label: str, result: WrkResult, events_per_request: int = 1) -> None:
    print(
        f"{label:38s} {result.requests_per_second:10,.0f} req/s "
        f"{result.requests_per_second * events_per_request:10,.0f} events/s "
        f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:6.2f} ms"
        + (f"  non-2xx {result.non_2xx}" if result.non_2xx else "")
        + (f"  socket errors: {result.errors}" if result.errors else ""),
        flush=True,
    )


def main() -> None:
    token = create_token(BENCH_SECRET, scopes=["ingest"], subject="bench")
    admin_token = create_token(BENCH_SECRET, scopes=["admin"], subject="bench")
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    with embedded_broker() as broker:
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "INGEST_RATE_LIMIT": "10000000",
            "INGEST_RATE_BURST": "10000000",
        }
        with bare_endpoint() as bare:
            ceiling = wrk(
                f"{bare}/v1/track", body=single_event(), headers=headers, duration=DURATION
            )
        with service("ingest", env) as ingest:
            wrk(f"{ingest}/v1/track", body=single_event(), headers=headers, duration=2)  # warm
            single = wrk(
                f"{ingest}/v1/track", body=single_event(), headers=headers, duration=DURATION
            )
            batch = wrk(
                f"{ingest}/v1/batch",
                body=batch_of(100),
                headers=headers,
                duration=DURATION,
                connections=16,
            )
            parked, released = asyncio.run(parked_then_released(ingest, headers, admin_token))
    print(f"ingest benchmark ({DURATION}s per run, wrk -c32 -t1, one worker process)")
    show("bare uvicorn endpoint (ceiling)", ceiling)
    show("POST /v1/track (single event)", single)
    show("POST /v1/batch (100 events)", batch, 100)
    print(
        f"{'parked (no account yet), 100-event batches':44s} {parked:10,.0f} events/s\n"
        f"{'released after the group calls':44s} {released:10,.0f} events/s"
    )
    ratio = single.requests_per_second / ceiling.requests_per_second
    print(f"single-event throughput / ceiling: {ratio:.0%}")
    batch_ratio = batch.requests_per_second / ceiling.requests_per_second
    print(f"batch requests / ceiling requests: {batch_ratio:.2%}")


if __name__ == "__main__":
    main()
