"""``uptake run``: the embedded broker (when no Kafka is configured) and every service.

Each service runs as its own process, as in production; Ctrl-C or SIGTERM stops the
services first (each drains and commits), then the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from shared.ports import ensure_ports_free, needed_ports
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


async def start_system(
    settings: BaseServiceSettings,
    services: list[ServiceInfo],
    *,
    env: dict[str, str] | None = None,
) -> System:
    """Broker (embedded unless ``KAFKA_BOOTSTRAP_SERVERS`` is in ``env``), migrations, services.

    ``env`` (default: this process's environment) is what the service processes get.
    """
    system = System(settings=settings, env=dict(os.environ if env is None else env))
    embedded = "KAFKA_BOOTSTRAP_SERVERS" not in system.env
    ensure_ports_free(settings.host, needed_ports(settings, services, embedded_broker=embedded))
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if embedded:
        system.broker = EmbeddedBroker(
            port=settings.embedded_broker_port, log_path=settings.data_dir / "tansu.log"
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
            start_service(system, svc.name)
        await wait_ready(system, timeout=90)
    except BaseException:
        stop_system(system)
        raise
    return system


def start_service(system: System, name: str) -> subprocess.Popen[bytes]:
    """Start (or restart) one service process: ``python -m services.<name>``."""
    proc = subprocess.Popen([sys.executable, "-m", f"services.{name}"], env=system.env)  # noqa: S603
    system.processes[name] = proc
    return proc


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


async def _until_done_or_stopped(work: Awaitable[None], stop: asyncio.Event) -> bool:
    """Run ``work`` unless a signal comes first (then cancel it). True if it finished."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False
    task.result()
    return True


async def run_until_stopped(
    settings: BaseServiceSettings,
    *,
    after_start: Callable[[System], Awaitable[None]] | None = None,
    exit_after: bool = False,
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
        if after_start is not None and not await _until_done_or_stopped(after_start(system), stop):
            return code
        if exit_after:
            return code
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
