"""``uptake run``: the embedded broker (when no Kafka is configured) and every service.

Each service runs as its own process, as in production. Ctrl-C or SIGTERM drains first
(:mod:`shared.drain`: ingest stops accepting, the consumers reach the end of their topics),
then stops the services and the broker; a second Ctrl-C/SIGTERM stops at once.
Services run in their own process group, so a terminal's Ctrl-C reaches only this
supervisor, which decides the order.
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
from typing import Any

import httpx
import structlog

from shared import topics
from shared.background import cancel_and_wait, wait_for_event
from shared.broker import EmbeddedBroker
from shared.drain import drain_system
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
            if svc.has_database:
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
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", f"services.{name}"], env=system.env, process_group=0
    )
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


async def _until_done_or_stopped(
    work: Awaitable[Any], stop: asyncio.Event, *, result: bool = False
) -> bool:
    """Run ``work`` unless a signal comes first (then cancel it). True if it finished
    (with ``result``: if it finished and returned True)."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if not task.done():
        await cancel_and_wait(task)
        return False
    value = task.result()
    return bool(value) if result else True


HURRY_WARNING = (
    "uptake: second signal: stopping now without draining; events accepted but not yet "
    "consumed may be lost"
)


async def drain_unless_hurried(system: System, *, timeout: float, hurry: asyncio.Event) -> bool:
    """Drain and stop the services (:func:`shared.drain.drain_system`) unless ``hurry`` is
    set first; then stop what is left and the broker. True when fully drained."""
    drained = False
    try:
        if hurry.is_set():
            drained = False
        else:
            drained = await _until_done_or_stopped(
                drain_system(system, timeout=timeout), hurry, result=True
            )
    except Exception as exc:
        log.error("supervisor.drain_failed", error=repr(exc)[:500])
        drained = False
    finally:
        if hurry.is_set():
            print(HURRY_WARNING, file=sys.stderr, flush=True)
            log.warning("supervisor.drain_skipped")
        stop_system(system)
    return drained


async def run_until_stopped(
    settings: BaseServiceSettings,
    *,
    after_start: Callable[[System], Awaitable[None]] | None = None,
    exit_after: bool = False,
) -> int:
    """Start everything, run ``after_start`` (the demo), then wait for a signal or a crash;
    then drain and stop. Exit code 1 after a crash or a drain that left messages behind."""
    stop = asyncio.Event()
    hurry = asyncio.Event()  # a second signal: stop at once

    def on_signal() -> None:
        (hurry if stop.is_set() else stop).set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    system = await start_system(settings, available_services())
    try:
        code = await _run_system(system, after_start, exit_after, stop)
    finally:
        # also on a cancelled start or a crash of the supervisor itself
        drained = await drain_unless_hurried(system, timeout=settings.drain_timeout, hurry=hurry)
    return code if drained else 1


async def _run_system(
    system: System,
    after_start: Callable[[System], Awaitable[None]] | None,
    exit_after: bool,
    stop: asyncio.Event,
) -> int:
    """Until the demo is done (``exit_after``), a signal, or a crashed service (1)."""
    for name in system.processes:
        print(f"{name:10s} {system.url(name)}/docs")
    if after_start is not None and not await _until_done_or_stopped(after_start(system), stop):
        return 0  # stopped during the demo
    if exit_after:
        return 0
    print("Running. Ctrl-C stops everything.")
    while not stop.is_set():
        crashed = [n for n, p in system.processes.items() if p.poll() is not None]
        if crashed:
            log.error("supervisor.service_exited", services=crashed)
            return 1
        await wait_for_event(stop, 1)
    return 0
