"""Refuse to start on a taken port, naming who holds it.

A second ``uptake run`` (or ``make demo`` beside a running one) used to print "Running."
with the first instance's URLs while its own services failed to bind, and its consumers
joined the first instance's consumer groups. Checking every port before anything starts
makes that a clear, immediate error instead.
"""

from __future__ import annotations

import socket

import psutil

from shared.services import ServiceInfo
from shared.settings import BaseServiceSettings


class PortTaken(RuntimeError):
    """A port ``uptake run`` needs is already bound; the message names it and its holder."""


def port_holder(port: int) -> str | None:
    """Who listens on ``port``: ``"pid 4242: uptake run"``, where this process may see it.

    A broker or service started by ``uptake run`` is named with its parent, since that is
    the process to stop.
    """
    try:
        connections = psutil.net_connections(kind="inet")
    except (psutil.AccessDenied, OSError):
        return None
    pid = next(
        (
            c.pid
            for c in connections
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid
        ),
        None,
    )
    if pid is None:
        return None
    try:
        process = psutil.Process(pid)
        holder = f"pid {pid}: {_describe(process.cmdline())}"
        parent = process.parent()
        if parent is not None and _describe(parent.cmdline()).startswith("uptake "):
            holder += f", started by pid {parent.pid}: {_describe(parent.cmdline())}"
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return f"pid {pid}"
    return holder


def _describe(cmdline: list[str]) -> str:
    """A short name for a command line: ``uptake run`` rather than the interpreter's path."""
    words = [w.rsplit("/", 1)[-1] for w in cmdline]
    if len(words) >= 3 and words[0].startswith("python") and words[1] == "-m":
        words = words[2:]
    if words and words[0] in {"shared.cli", "uptake"}:
        words = ["uptake", *words[1:]]
    return " ".join(words[:2]) or "unknown"


def _is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Same option as uvicorn's: a port left in TIME_WAIT by a clean stop is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def ensure_ports_free(host: str, ports: dict[str, int]) -> None:
    """Raise :class:`PortTaken` for the first bound port in ``ports`` (setting -> port)."""
    for setting, port in ports.items():
        if _is_free(host, port):
            continue
        holder = port_holder(port)
        who = f" ({holder})" if holder else ""
        raise PortTaken(
            f"port {port} is in use{who}: is Uptake already running? "
            f"Stop it, or set {setting} to a free port."
        )


def needed_ports(
    settings: BaseServiceSettings, services: list[ServiceInfo], *, embedded_broker: bool
) -> dict[str, int]:
    """Every port ``uptake run`` binds, by the setting that moves it."""
    ports = {f"{svc.name.upper()}_PORT": settings.port(svc.name) for svc in services}
    if embedded_broker:
        ports = {"UPTAKE_BROKER_PORT": settings.embedded_broker_port, **ports}
    return ports
