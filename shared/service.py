"""What every service app has: settings, database, publisher, ops routes, graceful stop.

A service calls :func:`create_service_app` with its routers and the components
(consumers, schedulers) to start once the database and the broker are up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from aiokafka.errors import KafkaError
from fastapi import APIRouter, FastAPI, Request
from fastapi.telemetry import TelemetryConfig
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.types import ASGIApp

from shared.db import create_engine, create_sessionmaker, ping
from shared.http import install_error_handlers
from shared.kafka import Publisher, wait_for_broker
from shared.logging import configure_logging
from shared.metrics import MetricsMiddleware, metrics_response
from shared.migrations import upgrade_async
from shared.responses import JSONBytes
from shared.settings import BaseServiceSettings

log = structlog.get_logger(__name__)


OTEL_OFF: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
}


class Component(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


@dataclass
class ServiceRuntime:
    """The live parts of one service process, kept on ``app.state.runtime``."""

    name: str
    settings: BaseServiceSettings
    database_url: str
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    publisher: Publisher
    components: list[Component] = field(default_factory=list)
    _ready_cache: tuple[float, dict[str, str]] | None = None

    async def readiness(self) -> dict[str, str]:
        """db and broker reachability, cached for a second so probes stay cheap."""
        now = time.monotonic()
        if self._ready_cache and now - self._ready_cache[0] < 1.0:
            return self._ready_cache[1]
        checks: dict[str, str] = {}
        try:
            async with asyncio.timeout(2):
                await ping(self.engine)
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unreachable: {type(exc).__name__}"
        try:
            async with asyncio.timeout(2):
                await self.publisher.producer.client.fetch_all_metadata()
            checks["broker"] = "ok"
        except (KafkaError, TimeoutError, OSError) as exc:
            checks["broker"] = f"unreachable: {type(exc).__name__}"
        self._ready_cache = (now, checks)
        return checks


StartHook = Callable[[ServiceRuntime], Awaitable[Sequence[Component]]]


def ops_router() -> APIRouter:
    router = APIRouter(tags=["ops"])

    @router.get("/healthz", summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        summary="Database and broker are reachable",
        responses={503: {"description": "a dependency is unreachable"}},
    )
    async def readyz(request: Request) -> JSONBytes:
        runtime: ServiceRuntime | None = getattr(request.app.state, "runtime", None)
        if runtime is None:
            return JSONBytes({"status": "starting"}, status_code=503)
        checks = await runtime.readiness()
        ok = all(v == "ok" for v in checks.values())
        return JSONBytes(
            {"status": "ok" if ok else "unavailable", "checks": checks},
            status_code=200 if ok else 503,
        )

    router.add_api_route("/metrics", metrics_response, methods=["GET"], include_in_schema=False)
    return router


async def _start_publisher(settings: BaseServiceSettings, name: str, timeout: float) -> Publisher:
    await wait_for_broker(settings.kafka_bootstrap_servers, timeout=timeout)
    publisher = Publisher(settings.kafka_bootstrap_servers, client_id=name)
    await publisher.start()
    return publisher


def create_service_app(
    *,
    name: str,
    title: str,
    description: str,
    settings: BaseServiceSettings,
    database_url: str,
    routers: Sequence[APIRouter],
    on_start: StartHook | None = None,
    auto_migrate: bool = True,
    middleware: Sequence[Callable[[ASGIApp], ASGIApp]] = (),
    startup_timeout: float = 60.0,
    version: str = "0.1.0",
) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(service=name, level=settings.log_level, json=settings.log_json)
        if auto_migrate:
            await upgrade_async(name, database_url)
        engine = create_engine(database_url)
        publisher = await _start_publisher(settings, name, startup_timeout)
        runtime = ServiceRuntime(
            name=name,
            settings=settings,
            database_url=database_url,
            engine=engine,
            sessions=create_sessionmaker(engine),
            publisher=publisher,
        )
        app.state.runtime = runtime
        try:
            if on_start is not None:
                for component in await on_start(runtime):
                    await component.start()
                    runtime.components.append(component)
            log.info("service.started", database=engine.url.get_backend_name())
            yield
        finally:
            log.info("service.stopping")
            for component in reversed(runtime.components):
                try:
                    await component.stop()
                except Exception as exc:
                    log.error("service.component_stop_failed", error=repr(exc))
            await publisher.stop()
            await engine.dispose()
            log.info("service.stopped")

    app = FastAPI(
        title=title,
        description=description,
        version=version,
        lifespan=lifespan,
        # FastAPI's native OpenTelemetry costs a third of a small request's time even with
        # no provider configured; Prometheus /metrics and trace ids in logs are the default.
        telemetry=None if settings.opentelemetry else OTEL_OFF,
    )
    app.state.settings = settings
    install_error_handlers(app)
    for mw in middleware:
        app.add_middleware(mw)
    app.add_middleware(MetricsMiddleware)  # outermost: it sees every request
    app.include_router(ops_router())
    for router in routers:
        app.include_router(router)
    return app


def runtime_of(request: Request) -> ServiceRuntime:
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime


def serve(app: Any, *, host: str, port: int) -> None:
    """Run one service under uvicorn (uvloop + httptools); SIGTERM drains, then stops."""
    import uvicorn

    uvicorn.run(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=20,
        proxy_headers=False,
    )
