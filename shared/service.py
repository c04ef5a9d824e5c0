"""What every service app has: settings, database, publisher, ops routes, graceful stop.

A service calls :func:`create_service_app` with its routers and the components
(consumers, schedulers) to start once the database and the broker are up.

Two ways to stop. SIGTERM (Kubernetes, and ``uptake run`` last): uvicorn stops accepting
and finishes the requests in hand, then each component stops (a consumer finishes and
commits its batch). SIGUSR1 (``uptake run``, first): the service *drains* -- it stops
taking new work from outside (its drain hooks: ingest refuses tracking calls and flushes
what it accepted), ``/readyz`` answers 503 ``draining``, and everything else (consumers)
runs on until the SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from aiokafka.errors import KafkaError
from fastapi import APIRouter, FastAPI, Request
from fastapi.routing import APIRoute
from fastapi.telemetry import TelemetryConfig
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.types import ASGIApp

from shared.audit import AuditMiddleware, AuditPruner
from shared.audit_api import audit_router
from shared.auth import Authenticator, guarded
from shared.background import cancel_and_wait
from shared.db import create_engine, create_sessionmaker, ping
from shared.http import ErrorOut, install_error_handlers, iter_routes
from shared.kafka import ConsumerRunner, Publisher, wait_for_broker
from shared.logging import configure_logging
from shared.metrics import MetricsMiddleware, metrics_response
from shared.migrations import upgrade_async
from shared.ratelimit import SAFE_METHODS, RateLimiter
from shared.responses import JSONBytes
from shared.revocations import RevocationWatcher
from shared.settings import BaseServiceSettings
from shared.tokenuse import UsageBuffer, UsageReporter

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
    auth: Authenticator
    components: list[Component] = field(default_factory=list)
    drain_hooks: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    draining: bool = False  # no new work from outside: a stop is coming
    drained: bool = False  # ...and the drain hooks are done
    _ready_cache: tuple[float, dict[str, str]] | None = None
    _drain_task: asyncio.Task[None] | None = None

    def start_draining(self) -> None:
        """Stop taking new work and flush what was accepted (the drain hooks, in order);
        the process runs on until SIGTERM."""
        if self.draining:
            return
        self.draining = True
        log.info("service.draining")
        self._drain_task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        for hook in self.drain_hooks:
            try:
                await hook()
            except Exception as exc:
                log.error("service.drain_hook_failed", error=repr(exc)[:500])
        self.drained = True
        log.info("service.drained")

    async def readiness(self) -> dict[str, str]:
        """db and broker reachability and every consumer's progress (``consumer:<group>``:
        a stalled one fails it), cached for a second so probes stay cheap."""
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
        for runner in self.consumers():
            progress = runner.progress()
            checks[f"consumer:{progress.group}"] = progress.describe()
        self._ready_cache = (now, checks)
        return checks

    def consumers(self) -> list[ConsumerRunner]:
        """The started components that are consumer runners, whichever service made them."""
        return [c for c in self.components if isinstance(c, ConsumerRunner)]


StartHook = Callable[[ServiceRuntime], Awaitable[Sequence[Component]]]


def ops_router() -> APIRouter:
    router = APIRouter(tags=["ops"])

    @router.get("/healthz", summary="The process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        summary="Database and broker are reachable, no consumer has stalled",
        responses={
            503: {
                "description": "a dependency is unreachable, a consumer stalled, or the service "
                "is draining before a stop (`drained`: what it had accepted is flushed)"
            }
        },
    )
    async def readyz(request: Request) -> JSONBytes:
        runtime: ServiceRuntime | None = getattr(request.app.state, "runtime", None)
        if runtime is None:
            return JSONBytes({"status": "starting"}, status_code=503)
        if runtime.draining:
            return JSONBytes({"status": "draining", "drained": runtime.drained}, status_code=503)
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
            auth=auth,
        )
        app.state.runtime = runtime
        loop = asyncio.get_running_loop()
        drain_signal = getattr(app.state, "drain_signal", None)
        try:
            # First in, last out: no request is served before the revoked ids are known.
            watcher = RevocationWatcher(
                settings.kafka_bootstrap_servers, auth.revoked, client_id=name
            )
            await watcher.start()
            runtime.components.append(watcher)
            if auth.usage is None:  # not the registry's own service: send it our uses
                auth.usage = UsageBuffer()
                reporter = UsageReporter(
                    publisher,
                    auth.usage,
                    service=name,
                    interval=settings.token_usage_report_interval,
                )
                await reporter.start()
                runtime.components.append(reporter)
            started = list(await on_start(runtime)) if on_start is not None else []
            pruner = AuditPruner(runtime.sessions, retention_days=settings.audit_retention_days)
            for component in [*started, pruner]:
                await component.start()
                runtime.components.append(component)
            if drain_signal is not None:
                loop.add_signal_handler(drain_signal, runtime.start_draining)
            log.info("service.started", database=engine.url.get_backend_name())
            yield
        finally:
            log.info("service.stopping")
            if drain_signal is not None:
                loop.remove_signal_handler(drain_signal)
            if runtime._drain_task is not None and not runtime._drain_task.done():
                await cancel_and_wait(runtime._drain_task)
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
    # Made here, not in the lifespan: the fast lanes and dependencies read it per request.
    app.state.auth = auth = Authenticator.from_settings(settings)
    app.state.write_limiter = RateLimiter(
        rate=settings.api_write_rate, burst=settings.api_write_burst
    )
    install_error_handlers(app)
    # Innermost: a service's own middleware (ingest's tracking fast lane) answers first.
    app.add_middleware(AuditMiddleware)
    for mw in middleware:
        app.add_middleware(mw)
    app.add_middleware(MetricsMiddleware)  # outermost: it sees every request
    app.include_router(ops_router())
    for router in [*routers, audit_router()]:
        app.include_router(router)
    document_write_limit(app)
    return app


def document_write_limit(app: FastAPI) -> None:
    """The 429 every guarded write may answer (:func:`shared.ratelimit.limit_writes`)."""
    for route in iter_routes(app.router.routes):
        if (
            isinstance(route, APIRoute)
            and (route.methods or set()) - SAFE_METHODS
            and guarded(route.dependant)
        ):
            route.responses.setdefault(
                429,
                {
                    "model": ErrorOut,
                    "description": "this token's write rate limit is used up; see Retry-After",
                    "headers": {
                        "Retry-After": {
                            "description": "seconds to wait (an integer, at least 1)",
                            "schema": {"type": "integer", "minimum": 1},
                        }
                    },
                },
            )


def runtime_of(request: Request) -> ServiceRuntime:
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime


GRACEFUL_SHUTDOWN_SECONDS = 20  # requests in hand at SIGTERM; deploy/k8s grace covers it
# How long an idle HTTP connection stays open. uvicorn's 5 s default equals httpx's own
# pool expiry: a client sending on its connection as the server closed it got "Server
# disconnected without sending a response" (the demo's settle loop, the console's API
# calls; measured, 3 in 120 requests 5 s apart). A server must keep idle connections
# longer than its clients and load balancers do (60 s on a cloud load balancer's idle
# timeout, 5 s in httpx): then the client always closes first.
KEEP_ALIVE_SECONDS = 75


def serve(app: Any, *, host: str, port: int) -> None:
    """Run one service under uvicorn (uvloop + httptools). SIGUSR1 drains (see the module
    docstring); SIGTERM finishes the requests and batches in hand, then stops."""
    import uvicorn

    app.state.drain_signal = signal.SIGUSR1
    uvicorn.run(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        proxy_headers=False,
    )
