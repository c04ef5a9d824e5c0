"""Scoped tokens: signatures, scopes, expiry, header forms."""

from __future__ import annotations

import base64
import time

import pytest
from fastapi import HTTPException

from shared.auth import (
    InvalidToken,
    authorize,
    create_token,
    token_from_header,
    verify_token,
)

SECRET = "s" * 40


def test_scopes_and_implications() -> None:
    admin = verify_token(SECRET, create_token(SECRET, scopes=["admin"]))
    assert {"ingest", "read", "write", "admin"} <= admin.scopes
    write = verify_token(SECRET, create_token(SECRET, scopes=["write"]))
    assert write.allows("read") and not write.allows("admin") and not write.allows("ingest")
    ingest = verify_token(SECRET, create_token(SECRET, scopes=["ingest"]))
    assert ingest.scopes == {"ingest"}


def test_unknown_scope_refused() -> None:
    with pytest.raises(ValueError, match="unknown scopes"):
        create_token(SECRET, scopes=["root"])


def test_wrong_secret_and_tampering_refused() -> None:
    tok = create_token(SECRET, scopes=["read"])
    with pytest.raises(InvalidToken):
        verify_token("x" * 40, tok)
    head, _body, sig = tok.split(".")
    forged = base64.urlsafe_b64encode(b'{"sub":"x","scopes":["admin"]}').decode().rstrip("=")
    with pytest.raises(InvalidToken):
        verify_token(SECRET, f"{head}.{forged}.{sig}")


def test_expired_token_refused_even_when_cached() -> None:
    tok = create_token(SECRET, scopes=["read"], ttl_seconds=1)
    assert verify_token(SECRET, tok).allows("read")
    time.sleep(1.1)
    with pytest.raises(InvalidToken, match="expired"):
        verify_token(SECRET, tok)


def test_header_forms() -> None:
    assert token_from_header("Bearer abc") == "abc"
    basic = base64.b64encode(b"key123:").decode()
    assert token_from_header(f"Basic {basic}") == "key123"
    assert token_from_header("Basic !!!") is None
    assert token_from_header("Digest x") is None
    assert token_from_header(None) is None


def test_authorize_status_codes() -> None:
    with pytest.raises(HTTPException) as missing:
        authorize(SECRET, None, "read")
    assert missing.value.status_code == 401
    with pytest.raises(HTTPException) as forbidden:
        authorize(SECRET, create_token(SECRET, scopes=["ingest"]), "read")
    assert forbidden.value.status_code == 403
    assert authorize(SECRET, create_token(SECRET, scopes=["read"]), "read").subject == "uptake"
