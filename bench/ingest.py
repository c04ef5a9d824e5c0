"""Ingest throughput with wrk: single events and 100-event batches, next to a bare endpoint.

Run: ``python -m bench.ingest`` (or ``make bench``). One ingest worker process, the
embedded Tansu broker, SQLite; wrk on the same machine (it competes for the cores, and
does so equally for the bare endpoint, which is why the ratio is the figure to read).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import orjson

from bench.support import BENCH_SECRET, WrkResult, embedded_broker, process, service, wrk
from shared.auth import create_token
from shared.broker import free_port

DURATION = int(os.environ.get("BENCH_SECONDS", "10"))


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
    print(f"ingest benchmark ({DURATION}s per run, wrk -c32 -t1, one worker process)")
    show("bare uvicorn endpoint (ceiling)", ceiling)
    show("POST /v1/track (single event)", single)
    show("POST /v1/batch (100 events)", batch, 100)
    ratio = single.requests_per_second / ceiling.requests_per_second
    print(f"single-event throughput / ceiling: {ratio:.0%}")


if __name__ == "__main__":
    main()
