"""HTTP routes of the health service, one router per resource, and what they share."""

from __future__ import annotations

import math
from typing import Any

from fastapi import HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import ValidationError

from shared.http import CONFLICT as CONFLICT
from shared.http import ERRORS as ERRORS
from shared.http import NOT_FOUND as NOT_FOUND
from shared.http import IsoDate as IsoDate
from shared.http import IsoDatetime as IsoDatetime
from shared.http import field_error as unprocessable
from shared.http import strict_request as strict_request


def invalid(exc: ValidationError | ValueError, *, prefix: str) -> HTTPException:
    """A 422 whose detail names the offending field under ``prefix``."""
    if isinstance(exc, ValidationError):
        errors: list[dict[str, Any]] = [
            {"loc": ["body", prefix, *e["loc"]], "msg": e["msg"], "type": e["type"]}
            for e in exc.errors(include_url=False, include_context=False)
        ]
    else:
        errors = [{"loc": ["body", prefix], "msg": str(exc), "type": "value_error"}]
    return HTTPException(422, detail=jsonable_encoder(errors))


def _json_safe(value: Any) -> Any:
    """inf/nan (``1e400`` in a JSON body parses as inf) as text: JSON cannot hold them."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


async def validation_error(request: Request, exc: Exception) -> Response:
    """FastAPI's 422, but one that echoes ``input: inf`` is still a 422, not a 500."""
    assert isinstance(exc, RequestValidationError)
    safe = RequestValidationError(_json_safe(list(exc.errors())), body=_json_safe(exc.body))
    return await request_validation_exception_handler(request, safe)


__all__ = [
    "CONFLICT",
    "ERRORS",
    "NOT_FOUND",
    "IsoDate",
    "IsoDatetime",
    "invalid",
    "strict_request",
    "unprocessable",
    "validation_error",
]
