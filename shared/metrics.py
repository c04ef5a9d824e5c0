"""Prometheus metrics shared by every service, and the HTTP middleware that records them."""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_REQUESTS = Counter(
    "uptake_http_requests_total", "HTTP requests answered", ["method", "route", "status"]
)
HTTP_SECONDS = Histogram(
    "uptake_http_request_seconds",
    "HTTP request duration",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
KAFKA_PUBLISHED = Counter("uptake_kafka_published_total", "Messages acknowledged by the broker")
KAFKA_PUBLISH_ERRORS = Counter("uptake_kafka_publish_errors_total", "Publishes that failed")
KAFKA_CONSUMED = Counter(
    "uptake_kafka_consumed_total", "Messages consumed and committed", ["group"]
)
KAFKA_HANDLER_SECONDS = Histogram(
    "uptake_kafka_handler_seconds", "Time to store the effect of one batch", ["group"]
)
KAFKA_HANDLER_RETRIES = Counter(
    "uptake_kafka_handler_retries_total", "Handler attempts that failed", ["group"]
)
KAFKA_DEAD_LETTERED = Counter(
    "uptake_kafka_dead_lettered_total", "Messages sent to a dead-letter topic", ["topic"]
)

KAFKA_CONSUMER_LAG = Gauge(
    "uptake_kafka_consumer_lag",
    "Messages waiting for the group on this consumer's partitions (end offset minus the"
    " committed position; a batch stuck in the handler counts)",
    ["group", "topic"],
)
KAFKA_CONSUMER_STALLED = Gauge(
    "uptake_kafka_consumer_stalled",
    "1 while the group has lag and committed nothing for CONSUMER_STALL_SECONDS, else 0",
    ["group"],
)
KAFKA_CONSUMER_SINCE_PROGRESS = Gauge(
    "uptake_kafka_consumer_seconds_since_progress",
    "Seconds since the group last committed a batch or was caught up",
    ["group"],
)


def metrics_response(_: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


class MetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): counts and times requests by route template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            method = scope["method"]
            HTTP_REQUESTS.labels(method, path, str(status)).inc()
            HTTP_SECONDS.labels(method, path).observe(time.perf_counter() - started)
