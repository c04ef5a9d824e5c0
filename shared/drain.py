"""``uptake run``'s stop: drain, then stop, so that nothing ingest answered 200 is lost.

The embedded broker keeps its log in memory, so what the consumers have not committed
when it stops is gone (60,000 events posted, SIGTERM at once: health held 58,940 after the
restart). So a stop goes, within ``UPTAKE_DRAIN_TIMEOUT``:

1. ingest drains (SIGUSR1): tracking calls get 503 + ``Retry-After``, the calls in hand
   answer, linked users' parked events are released; its ``/readyz`` says when. Then the
   consumer services drain too: playbooks' scheduler holds due steps and notify's worker
   holds queued sends for the next start (their consumers go on). playbooks and notify
   feed each other (requests one way, delivery results back), so one of them always
   stops first: without this, notify's last results came after playbooks had stopped.
2. Services stop in pipeline order (ingest, health, playbooks, notify), each once every
   consumer group still running has committed the true end of its topics on consecutive
   checks -- so what the drain itself produces downstream (health -> alerts -> playbooks ->
   notify requests -> notify) is consumed too, and what a service publishes while it
   stops (its last outbox pass) is consumed by the ones after it.
3. The broker stops (the caller, :func:`shared.supervisor.stop_system`).

What is left behind (past the timeout, or published by the last services as they
stopped) is printed and logged per group and topic. The caller cancels the drain on a
second signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx
import structlog

from shared import topics
from shared.kafka.lag import Lag, LagProbe

if TYPE_CHECKING:
    from shared.supervisor import System

log = structlog.get_logger(__name__)

CHECK_INTERVAL = 0.1
QUIET_CHECKS = 2  # consecutive zero-lag checks before a stage counts as drained
SERVICE_STOP_GRACE = 30.0  # a service's own SIGTERM stop: uvicorn 20 s + the batch in hand
# a broker call of the lag probe may run this far past the drain's deadline; beyond it the
# probe is abandoned, so a broker that stops answering cannot hold a stop for long
PROBE_GRACE = 5.0

Print = Callable[[str], None]


def _say(message: str) -> None:
    print(message, flush=True)


def consumer_groups(system: System) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Service -> (its consumer group, the topics it reads), for the services started."""
    return {
        name: (system.env.get(f"{name.upper()}_CONSUMER_GROUP", name), consumed)
        for name, consumed in topics.CONSUMED_BY.items()
        if name in system.processes
    }


# The services whose drain holds work back for the next start (their drain hooks); the
# others have nothing to hold (and the console no drain: the signal would end it).
HOLD_WORK = ("playbooks", "notify")


async def drain_system(system: System, *, timeout: float, say: Print = _say) -> bool:
    """Drain and stop every service (not the broker). True when nothing was left behind."""
    started = time.monotonic()
    deadline = started + timeout
    say(f"stopping: draining first (up to {timeout:g} s; a second Ctrl-C stops at once)")
    await _drain_intake(system, deadline, say)
    groups = consumer_groups(system)
    probe = LagProbe(system.env["KAFKA_BOOTSTRAP_SERVERS"], dict(groups.values()))
    left: Lag | None = None
    try:
        await asyncio.wait_for(probe.start(), _probe_time(deadline))
        checked = False  # lag is zero and nothing was published since
        ingest_stopping = False
        for name in list(system.processes):
            running = [
                groups[n][0]
                for n, proc in system.processes.items()
                if n in groups and proc.poll() is None
            ]
            if running and not checked:
                if not await _caught_up(probe, running, deadline, say):
                    break  # out of time: the caller stops the rest at once
                checked = True
            if name == "ingest":
                # drained: its stop publishes nothing; it exits while the others go on
                if system.processes[name].poll() is None:
                    system.processes[name].send_signal(signal.SIGTERM)
                    ingest_stopping = True
                continue
            await stop_service(system, name)
            checked = False  # its last outbox pass or step run may have published
        if ingest_stopping:
            await wait_exit(system, "ingest")
        left = await asyncio.wait_for(probe.lag(), PROBE_GRACE)
    except TimeoutError:
        say("draining: the broker did not answer the lag probe in time")
        log.warning("supervisor.lag_probe_timeout")
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(probe.stop(), PROBE_GRACE)
    elapsed = time.monotonic() - started
    stopped = all(p.poll() is not None for p in system.processes.values())
    if left is not None and left.total == 0 and stopped:
        say(f"drained in {elapsed:.1f} s")
        log.info("supervisor.drained", seconds=round(elapsed, 2))
        return True
    _report_left(left, elapsed, say)
    return False


def _probe_time(deadline: float) -> float:
    """How long one probe call may take: what is left of the drain, plus the grace."""
    return max(deadline - time.monotonic(), 0.0) + PROBE_GRACE


async def _drain_intake(system: System, deadline: float, say: Print) -> None:
    """SIGUSR1 to ingest, then to the rest, each waited for until its ``/readyz`` says it
    is drained: ingest refuses new events and flushes what it accepted; playbooks holds
    its due steps and notify its queued sends for the next start. Without that, notify's
    last results reached playbooks after it had stopped (they were left on the broker)."""
    if _running(system, "ingest"):
        say("draining: ingest refuses new events (503), flushing what it accepted")
        if await _drained(system, ["ingest"], deadline):
            say("draining: ingest did not finish flushing in time")
            log.warning("supervisor.ingest_not_drained")
    others = [name for name in HOLD_WORK if _running(system, name)]
    if others:
        say("draining: due steps and queued sends wait for the next start")
        if late := await _drained(system, others, deadline):
            say(f"draining: {', '.join(late)} did not hold their work in time")
            log.warning("supervisor.services_not_drained", services=late)


def _running(system: System, name: str) -> bool:
    proc = system.processes.get(name)
    return proc is not None and proc.poll() is None


async def _drained(system: System, names: list[str], deadline: float) -> list[str]:
    """SIGUSR1 to these services, then poll their ``/readyz`` until each says it is
    drained; the ones that did not by the deadline."""
    for name in names:
        system.processes[name].send_signal(signal.SIGUSR1)
    waiting = list(names)
    async with httpx.AsyncClient(timeout=2) as client:
        while waiting and time.monotonic() < deadline:
            for name in list(waiting):
                if not _running(system, name):
                    waiting.remove(name)
                    continue
                try:
                    body = (await client.get(f"{system.url(name)}/readyz")).json()
                except (httpx.HTTPError, ValueError):
                    continue
                if body.get("drained"):
                    waiting.remove(name)
            if waiting:
                await asyncio.sleep(0.1)
    return [name for name in waiting if _running(system, name)]


async def _caught_up(probe: LagProbe, groups: list[str], deadline: float, say: Print) -> bool:
    """Until ``groups`` have no lag on consecutive checks (True), or the deadline (False)."""
    quiet = 0
    last_said = 0.0
    while True:
        lag = await asyncio.wait_for(probe.lag(groups), _probe_time(deadline))
        if lag.total == 0 and lag.settled:
            quiet += 1
            if quiet >= QUIET_CHECKS:
                return True
        else:
            quiet = 0
            now = time.monotonic()
            if lag.total and now - last_said >= 1.0:
                last_said = now
                say(_progress(lag))
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(CHECK_INTERVAL)


def _progress(lag: Lag) -> str:
    groups = lag.groups_behind
    plural = "s" if len(groups) != 1 else ""
    return f"draining: {lag.total:,} messages behind in {len(groups)} group{plural}"


def _report_left(left: Lag | None, elapsed: float, say: Print) -> None:
    if left is None:
        say(f"drain incomplete after {elapsed:.1f} s: what is left could not be measured")
        log.warning("supervisor.drain_incomplete", left="unknown", seconds=round(elapsed, 2))
        return
    undrained = left.nonzero()
    say(f"drain incomplete after {elapsed:.1f} s: {left.total:,} messages not consumed")
    for group, per_topic in undrained.items():
        for topic, count in per_topic.items():
            say(f"  not drained: group {group}, topic {topic}: {count:,} messages")
    log.warning("supervisor.drain_incomplete", left=undrained, seconds=round(elapsed, 2))


async def stop_service(system: System, name: str, *, grace: float = SERVICE_STOP_GRACE) -> None:
    """SIGTERM one service and wait for it to exit."""
    proc = system.processes[name]
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        await wait_exit(system, name, grace=grace)


async def wait_exit(system: System, name: str, *, grace: float = SERVICE_STOP_GRACE) -> None:
    """Wait for a service sent SIGTERM to exit, without blocking the loop (a second signal
    still gets through; a second SIGTERM to uvicorn would cut its stop short, so none is
    sent); SIGKILL past ``grace``."""
    proc = system.processes[name]
    started = time.monotonic()
    while proc.poll() is None:
        if time.monotonic() - started > grace:
            log.warning("supervisor.service_killed", service=name, grace=grace)
            proc.kill()
            break
        await asyncio.sleep(0.05)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    log.info(
        "supervisor.service_stopped",
        service=name,
        code=proc.returncode,
        seconds=round(time.monotonic() - started, 2),
    )
