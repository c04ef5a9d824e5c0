"""HTTP routes of the health service, one router per resource, and what they share."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException
from fastapi.encoders import jsonable_encoder
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


__all__ = [
    "CONFLICT",
    "ERRORS",
    "NOT_FOUND",
    "IsoDate",
    "IsoDatetime",
    "invalid",
    "strict_request",
    "unprocessable",
]
