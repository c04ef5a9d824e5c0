"""Reading a request body safely: size caps before and after gzip, JSON parse errors named.

The cap applies to the decompressed size, so a small gzip bomb is refused as well.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request


class BodyError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


async def read_body(request: Request, *, limit: int) -> bytes:
    """The raw body, refused with 413 as soon as it is known to exceed ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared_size = int(declared)
        except ValueError:
            raise BodyError(400, "Content-Length is not a number") from None
        if declared_size > limit:
            raise BodyError(413, f"request body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyError(413, f"request body is larger than {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        # the caller went away mid-body (an SDK's timeout, Ctrl-C): nothing was accepted,
        # and nobody is there to read the answer -- not a server error with a traceback
        raise BodyError(400, "the client disconnected before the body was complete") from None
    return b"".join(chunks)


def decode(raw: bytes, encoding: str | None, *, limit: int) -> bytes:
    encoding = (encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise BodyError(415, f"Content-Encoding '{encoding}' is not supported; use gzip")
    wbits = zlib.MAX_WBITS | 16 if encoding != "deflate" else zlib.MAX_WBITS
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise BodyError(400, f"body is not valid {encoding}: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise BodyError(413, f"decompressed body is larger than {limit} bytes")
    if not inflater.eof:
        raise BodyError(400, f"{encoding} body is truncated")
    return out


def parse_object(data: bytes) -> dict[str, Any]:
    if not data:
        raise BodyError(400, "request body is empty; send a JSON object")
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise BodyError(400, f"malformed JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BodyError(400, "request body must be a JSON object")
    return value


async def read_json_object(request: Request, *, limit: int) -> tuple[dict[str, Any], int]:
    """The body as a JSON object, and its decompressed size."""
    raw = await read_body(request, limit=limit)
    data = decode(raw, request.headers.get("content-encoding"), limit=limit)
    return parse_object(data), len(data)
