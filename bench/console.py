"""Console: how long the portfolio page takes to render with 10,000 accounts.

Health and playbooks run as their own processes (embedded broker, SQLite); the accounts
come in through health's own API; the console runs as ``uptake run`` starts it. Prints
figures only (nothing asserted).

    .venv/bin/python -m bench.console [--accounts 10000] [--rounds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import httpx

from bench.support import BENCH_SECRET, embedded_broker, service
from shared.auth import create_token
from shared.broker import free_port

SEGMENTS = ("smb", "mid-market", "enterprise")
OWNERS = [f"csm{i}@bench.example" for i in range(20)]


async def seed(health: str, admin: str, accounts: int) -> float:
    """Accounts through ``PUT /v1/accounts/{id}``, 32 at a time; then one rescoring."""
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {admin}"}
    async with httpx.AsyncClient(base_url=health, headers=headers, timeout=60) as client:
        queue = iter(range(accounts))

        async def worker() -> None:
            for i in queue:
                body = {
                    "name": f"Account {i:05d}",
                    "mrr": float(100 + (i * 7919) % 20_000),
                    "owner": OWNERS[i % len(OWNERS)],
                    "segment": SEGMENTS[i % 3],
                    "stage": "adopted" if i % 5 else "onboarding",
                    "renewal_date": f"2027-{1 + i % 12:02d}-{1 + i % 28:02d}",
                }
                (await client.put(f"/v1/accounts/b{i:05d}", json=body)).raise_for_status()

        await asyncio.gather(*(worker() for _ in range(32)))
        (await client.post("/v1/recompute")).raise_for_status()
    return time.monotonic() - started


@contextlib.contextmanager
def console(health: str, playbooks: str) -> Iterator[str]:
    port = free_port()
    env = {
        "UPTAKE_SECRET": BENCH_SECRET,
        "CONSOLE_PORT": str(port),
        "HEALTH_URL": health,
        "PLAYBOOKS_URL": playbooks,
        "LOG_LEVEL": "WARNING",
        "UPTAKE_DATA_DIR": tempfile.mkdtemp(prefix="bench-console-"),
    }
    url = f"http://127.0.0.1:{port}"
    # Not /readyz: that wants all four APIs, and this bench runs only health and playbooks.
    proc = subprocess.Popen([sys.executable, "-m", "services.console"], env={**os.environ, **env})
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the console did not start")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _sign_in(client: httpx.Client, token: str) -> None:
    page = client.get("/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf
    r = client.post("/login", data={"token": token, "csrf": csrf[1]})
    assert r.status_code == 303, r.text


def measure(url: str, token: str, rounds: int) -> list[tuple[str, float, float]]:
    cases = {
        "everyone, by score": {"owner": "all", "sort": "score"},
        "everyone, by MRR, page 100": {"owner": "all", "sort": "-mrr", "page": "100"},
        "everyone, by open alerts": {"owner": "all", "sort": "-alerts"},
        "one CSM's (500), red only": {"owner": OWNERS[3], "band": "red"},
        "one CSM's, by renewal": {"owner": OWNERS[3], "sort": "renewal_date"},
    }
    rows = []
    with httpx.Client(base_url=url, timeout=60, follow_redirects=False) as client:
        _sign_in(client, token)
        for label, params in cases.items():
            times = []
            for _ in range(rounds):
                started = time.perf_counter()
                r = client.get("/portfolio", params=params)
                times.append((time.perf_counter() - started) * 1000)
                assert r.status_code == 200, r.text[-300:]
            times.sort()
            rows.append((label, statistics.median(times), times[int(len(times) * 0.95) - 1]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(sys.argv[1:] if __name__ == "__main__" else [])
    admin = create_token(BENCH_SECRET, scopes=["admin"], subject="bench")
    writer = create_token(BENCH_SECRET, scopes=["write"], subject=OWNERS[3])
    with embedded_broker() as broker:
        env = {"KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers}
        with service("health", env) as health, service("playbooks", env) as playbooks:
            took = asyncio.run(seed(health, admin, args.accounts))
            print(f"seeded {args.accounts:,} accounts through health's API in {took:.1f}s")
            with console(health, playbooks) as url:
                rows = measure(url, writer, args.rounds)
    print(f"portfolio page (50 rows, sparklines, {args.rounds} renders each):")
    for label, median, p95 in rows:
        print(f"  {label:30s} median {median:7.1f} ms   p95 {p95:7.1f} ms")


if __name__ == "__main__":
    main()
