"""``/v1/track``, ``/identify``, ``/group``, ``/page``, ``/screen``, ``/alias``, ``/batch``.

The body is read raw (gzip, size caps, JSON errors named) rather than through FastAPI's
body parsing, so that one bad event in a batch refuses that event, not the request.
The OpenAPI spec still documents each body's schema.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from services.ingest import tracking
from services.ingest.accounts import AccountDirectory, DirectoryError
from services.ingest.body import BodyError, read_json_object
from services.ingest.intake import Intake
from services.ingest.keeping import Kept, keep
from services.ingest.pending import PendingReleaser
from services.ingest.schemas import (
    SENT_AT,
    BatchRequest,
    BatchResponse,
    ErrorResponse,
    SegmentMessage,
    TrackResponse,
)
from services.ingest.settings import IngestSettings
from shared.auth import Authenticator, token_from_header
from shared.envelope import new_id
from shared.kafka import Publisher, PublishError
from shared.logging import bind_trace_id
from shared.ratelimit import RateLimiter, retry_after
from shared.responses import JSONBytes

router = APIRouter(prefix="/v1", tags=["tracking"])

SUCCESS = b'{"success":true}'
RETRY_AFTER_SECONDS = "5"
PENDING_RETRY_AFTER_SECONDS = "60"
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "invalid event(s); the reason names the field"},
    401: {"model": ErrorResponse, "description": "missing or invalid write key"},
    403: {"model": ErrorResponse, "description": "the key lacks the 'ingest' scope"},
    413: {"model": ErrorResponse, "description": "body or event too large"},
    415: {"model": ErrorResponse, "description": "unsupported Content-Encoding"},
    429: {
        "model": ErrorResponse,
        "description": "rate limited, or too many events parked for a user; see Retry-After",
    },
    503: {
        "model": ErrorResponse,
        "description": "broker or account database unavailable, or ingest is stopping "
        "(draining); see Retry-After",
    },
}
DATABASE_DOWN = "account database unavailable; retry later"
DRAINING = "ingest is stopping (draining); retry later"
DRAINING_RETRY_AFTER_SECONDS = "10"  # about what a restart of `uptake run` takes


def _body_schema(model: type[Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    return JSONBytes({"success": False, "detail": detail}, status_code=status, headers=headers)


def _unavailable(detail: str) -> Response:
    return _error(503, detail, {"Retry-After": RETRY_AFTER_SECONDS})


def _trace_id(request: Request) -> str:
    """W3C ``traceparent`` when the caller sent one, else a fresh id."""
    parent = request.headers.get("traceparent", "")
    parts = parent.split("-")
    if len(parts) == 4 and len(parts[1]) == 32:
        return parts[1]
    return new_id()


async def ingest(request: Request, *, forced_type: str | None) -> Response:
    """One tracking call; refused (503) once ingest drains before a stop."""
    intake: Intake = request.app.state.intake
    if not intake.open:
        return _error(503, DRAINING, {"Retry-After": DRAINING_RETRY_AFTER_SECONDS})
    with intake.hold():
        return await _ingest(request, forced_type=forced_type)


async def _ingest(request: Request, *, forced_type: str | None) -> Response:
    app_state = request.app.state
    settings: IngestSettings = app_state.settings
    limit = settings.max_batch_bytes if forced_type is None else settings.max_event_bytes
    # A token in the header is checked before the body is read, inflated and parsed;
    # only a body ``writeKey`` needs the body first. (A cached signature check, an expiry
    # compare and one revoked-set lookup.)
    auth: Authenticator = app_state.auth
    token = token_from_header(request.headers.get("authorization"))
    claims = auth.authorize(token, "ingest") if token is not None else None
    try:
        body, size = await read_json_object(request, limit=limit)
    except BodyError as exc:
        return _error(exc.status, exc.detail)
    if claims is None:
        write_key = body.get("writeKey")
        claims = auth.authorize(write_key if isinstance(write_key, str) else None, "ingest")

    sent_at: datetime | None = None
    if forced_type is None:
        events = body.get("batch")
        if not isinstance(events, list):
            return _error(400, "batch: field required (a list of events)")
        if len(events) > settings.max_batch_events:
            return _error(400, f"batch: more than {settings.max_batch_events} events")
        if body.get("sentAt") is not None:
            try:
                sent_at = SENT_AT.validate_python(body["sentAt"])
            except ValidationError as exc:
                reason = exc.errors(include_url=False)[0]["msg"]
                return _error(400, f"sentAt: {reason}")
        sizes = None
    else:
        events, sizes = [body], [size]
    if not events:
        return _error(400, "batch: empty; send at least one event")

    limiter: RateLimiter = app_state.rate_limiter
    wait = limiter.take(claims.token_id, len(events))
    if wait:
        return _error(
            429, "rate limit exceeded for this write key", {"Retry-After": retry_after(wait)}
        )

    trace_id = _trace_id(request)
    bind_trace_id(trace_id)
    directory: AccountDirectory = app_state.directory
    try:
        outcome = await tracking.process(
            events,
            forced_type=forced_type,
            directory=directory,
            trace_id=trace_id,
            max_event_bytes=settings.max_event_bytes,
            sizes=sizes,
            sent_at=sent_at,
        )
    except DirectoryError:
        return _unavailable(DATABASE_DOWN)
    if not outcome.kept:
        reasons = "; ".join(f"[{i}] {r}" for i, r in outcome.rejected[:20])
        if forced_type is not None:
            reasons = outcome.rejected[0][1]
        status = 413 if "larger than" in reasons and len(outcome.rejected) == 1 else 400
        return _refused(status, reasons, outcome.rejected)
    releaser: PendingReleaser = app_state.releaser
    kept = Kept()
    try:
        if outcome.needs_database:
            kept = await directory.write(
                lambda session: keep(
                    session,
                    outcome,
                    max_pending=settings.pending_max_events,
                    trace_id=trace_id,
                ),
                "storing links, contacts and parked events",
            )
            directory.learned(links=kept.links, stale=kept.stale, aliases=outcome.aliases)
        publisher: Publisher = app_state.runtime.publisher
        await publisher.publish_keyed(
            [*outcome.messages, *kept.messages], headers=[("trace_id", trace_id.encode())]
        )
    except DirectoryError:
        return _unavailable(DATABASE_DOWN)
    except PublishError:
        return _unavailable("event broker unavailable; retry later")
    finally:
        # a user linked meanwhile (by another request) finds its events parked: ask too
        late = {k for k in kept.parked_keys if directory.cached(k) is not None}
        releaser.request(kept.release | late)
    if kept.over_limit:
        refused = set(kept.over_limit)
        reason = (
            f"more than {settings.pending_max_events} events are parked for this user, "
            "waiting for a group call; retry later"
        )
        rejected = sorted([*outcome.rejected, *((i, reason) for i in refused)])
        return _refused(429, reason, rejected, {"Retry-After": PENDING_RETRY_AFTER_SECONDS})
    if not outcome.rejected:
        return Response(SUCCESS, media_type="application/json")
    return Response(
        orjson.dumps(
            {
                "success": True,
                "accepted": outcome.kept,
                "rejected": [{"index": i, "reason": r} for i, r in outcome.rejected],
            }
        ),
        media_type="application/json",
    )


def _refused(
    status: int,
    detail: str,
    rejected: list[tuple[int, str]],
    headers: dict[str, str] | None = None,
) -> Response:
    return JSONBytes(
        {
            "success": False,
            "detail": detail,
            "rejected": [{"index": i, "reason": r} for i, r in rejected],
        },
        status_code=status,
        headers=headers,
    )


def _single(kind: str, summary: str) -> None:
    async def endpoint(request: Request) -> Response:
        return await ingest(request, forced_type=kind)

    endpoint.__name__ = kind
    router.add_api_route(
        f"/{kind}",
        endpoint,
        methods=["POST"],
        summary=summary,
        response_model=TrackResponse,
        responses=ERRORS,
        openapi_extra=_body_schema(SegmentMessage),
    )


CALLS: dict[str, str | None] = {
    "track": "track",
    "identify": "identify",
    "group": "group",
    "page": "page",
    "screen": "screen",
    "alias": "alias",
    "batch": None,
    "import": None,
}
"""Tracking call path -> the type it forces (``None``: each event says its own)."""

_single("track", "Record an action a user performed")
_single("identify", "Tie a user to their traits (email, name, role): makes a contact")
_single("group", "Tie a user to an account and record its traits: makes an account")
_single("page", "Record a page view")
_single("screen", "Record a mobile screen view")
_single("alias", "Tie a previous id (previousId) to a user (userId)")


@router.post(
    "/batch",
    summary="Send many calls at once (what Segment's SDKs send)",
    response_model=BatchResponse,
    responses=ERRORS,
    openapi_extra=_body_schema(BatchRequest),
)
async def batch(request: Request) -> Response:
    return await ingest(request, forced_type=None)


# RudderStack's SDKs post batches to /v1/import as well.
router.add_api_route("/import", batch, methods=["POST"], include_in_schema=False)
