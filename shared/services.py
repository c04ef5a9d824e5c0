"""The registry of Uptake's services (ports and databases: :mod:`shared.settings`)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceInfo:
    name: str
    # The console keeps no database of its own: it reads and acts through the others' APIs.
    has_database: bool = True

    @property
    def module(self) -> str:
        return f"services.{self.name}"

    @property
    def available(self) -> bool:
        """A service is runnable once its package has an app module."""
        return importlib.util.find_spec(f"{self.module}.app") is not None


SERVICES: tuple[ServiceInfo, ...] = (
    ServiceInfo("ingest"),
    ServiceInfo("health"),
    ServiceInfo("playbooks"),
    ServiceInfo("notify"),
    ServiceInfo("console", has_database=False),
)


def available_services() -> list[ServiceInfo]:
    return [s for s in SERVICES if s.available]


def database_services() -> list[ServiceInfo]:
    """The services with a database to migrate (``uptake migrate``, ``uptake run``)."""
    return [s for s in available_services() if s.has_database]
