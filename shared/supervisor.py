"""``uptake run``: the embedded broker (when no Kafka is configured) and every service.

Each service runs as its own process, as in production; Ctrl-C or SIGTERM stops the
services first (each drains and commits), then the broker.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import structlog

from shared import topics
from shared.broker import EmbeddedBroker
from shared.kafka import ensure_topics
from shared.migrations import upgrade_async
from shared.services import ServiceInfo, available_services
from shared.settings import BaseServiceSettings

log = structlog.get_logger(__name__)


@dataclass
class System:
    settings: BaseServiceSettings
    broker: EmbeddedBroker | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    def url(self, service: str) -> str:
        return f"http://{self.settings.host}:{self.settings.port(service)}"


async def start_system(settings: BaseServiceSettings, services: list[ServiceInfo]) -> System:
    system = System(settings=settings, env=dict(os.environ))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if "KAFKA_BOOTSTRAP_SERVERS" not in os.environ:
        host, _, port = settings.kafka_bootstrap_servers.rpartition(":")
        system.broker = EmbeddedBroker(
            host=host, port=int(port), log_path=settings.data_dir / "tansu.log"
        )
        await system.broker.start(partitions=settings.kafka_partitions)
        system.env["KAFKA_BOOTSTRAP_SERVERS"] = system.broker.bootstrap_servers
    else:
        await ensure_topics(
            settings.kafka_bootstrap_servers,
            topics.all_with_dlq(),
            partitions=settings.kafka_partitions,
        )
    try:
        for svc in services:
            await upgrade_async(svc.name, settings.database_url(svc.name))
        for svc in services:
            system.processes[svc.name] = subprocess.Popen(  # noqa: S603
                [sys.executable, "-m", svc.module], env=system.env
            )
        await wait_ready(system, timeout=90)
    except BaseException:
        stop_system(system)
        raise
    return system


async def wait_ready(system: System, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        for name, proc in system.processes.items():
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode} while starting")
                try:
                    if (await client.get(f"{system.url(name)}/readyz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} not ready after {timeout}s")
                await asyncio.sleep(0.2)


def stop_system(system: System, *, grace: float = 25.0) -> None:
    for proc in system.processes.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in system.processes.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if system.broker is not None:
        system.broker.stop()


async def run_until_stopped(
    settings: BaseServiceSettings,
    *,
    after_start: Callable[[System], Awaitable[None]] | None = None,
) -> int:
    """Start everything, run ``after_start`` (the demo), then wait for a signal or a crash."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    system = await start_system(settings, available_services())
    code = 0
    try:
        for name in system.processes:
            print(f"{name:10s} {system.url(name)}/docs")
        if after_start is not None:
            await after_start(system)
        print("Running. Ctrl-C stops everything.")
        while not stop.is_set():
            crashed = [n for n, p in system.processes.items() if p.poll() is not None]
            if crashed:
                log.error("supervisor.service_exited", services=crashed)
                code = 1
                break
            try:
                await asyncio.wait_for(stop.wait(), timeout=1)
            except TimeoutError:
                pass
    finally:
        stop_system(system)
    return code
