"""Scoped tokens: signatures, scopes, expiry, key ids and rotation, revoked ids, header forms."""

from __future__ import annotations

import base64
import time

import jwt
import pytest
from fastapi import HTTPException
from pydantic import ValidationError

from shared.auth import (
    Authenticator,
    InvalidToken,
    TokenExpired,
    authorize,
    create_token,
    issue_token,
    key_id,
    keyring,
    parse_ttl,
    token_from_header,
    verify_token,
)
from shared.settings import BaseServiceSettings
from shared.tokenuse import UsageBuffer

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


# expiry by default, key ids, rotation, revoked ids, last uses -------------------------

OLD = "o" * 40
DAY = 86400


def test_default_expiry_per_scope() -> None:
    now = time.time()
    for scopes in (["read"], ["write"], ["admin"], ["ingest", "read"]):
        claims = issue_token(SECRET, scopes=scopes, now=now).claims
        assert claims.expires_at == int(now) + 90 * DAY, scopes
    assert issue_token(SECRET, scopes=["ingest"]).claims.expires_at is None
    assert issue_token(SECRET, scopes=["read"], ttl_seconds=None).claims.expires_at is None
    assert issue_token(SECRET, scopes=["ingest"], ttl_seconds=3600, now=now).claims.expires_at == (
        int(now) + 3600
    )


def test_parse_ttl() -> None:
    assert parse_ttl("90d") == 90 * DAY
    assert parse_ttl("12h") == 12 * 3600
    assert parse_ttl("2w") == 14 * DAY
    assert parse_ttl("never") is None
    for bad in ("", "90", "d", "-1d", "0d", "99999d", "1y"):
        with pytest.raises(ValueError, match="ttl"):
            parse_ttl(bad)


def test_expired_token_detail_names_the_expiry() -> None:
    issued_at = 1_772_236_800 - 3600  # expires 2026-02-28T00:00:00Z
    tok = create_token_at(issued_at, ttl=3600)
    with pytest.raises(TokenExpired) as err:
        verify_token(SECRET, tok)
    assert err.value.detail == "token expired at 2026-02-28T00:00:00Z"
    with pytest.raises(HTTPException) as http:
        authorize(SECRET, tok, "read")
    assert (http.value.status_code, http.value.detail) == (401, err.value.detail)


def create_token_at(issued_at: float, *, ttl: int) -> str:
    return issue_token(SECRET, scopes=["read"], ttl_seconds=ttl, now=issued_at).token


def test_token_carries_a_key_id_not_the_secret() -> None:
    tok = create_token(SECRET, scopes=["read"])
    header = jwt.get_unverified_header(tok)
    assert header["kid"] == key_id(SECRET) != key_id(OLD)
    assert SECRET not in tok and SECRET not in header["kid"]
    assert len(header["kid"]) == 12


def test_previous_secret_is_accepted_only_while_set() -> None:
    old = create_token(OLD, scopes=["read"])
    legacy = jwt.encode({"sub": "x", "scopes": ["read"], "jti": "j1"}, OLD, algorithm="HS256")
    during = Authenticator(keyring(SECRET, OLD))
    assert during.verify(old).allows("read")
    assert during.verify(legacy).token_id == "j1"  # no kid: each accepted secret is tried
    after = Authenticator(keyring(SECRET))
    with pytest.raises(InvalidToken, match="no longer accepted"):
        after.verify(old)
    with pytest.raises(InvalidToken):
        after.verify(legacy)
    # New tokens are signed with the current secret, whatever the previous one is.
    new = create_token(SECRET, scopes=["read"])
    assert jwt.get_unverified_header(new)["kid"] == key_id(SECRET)


def test_a_forged_kid_does_not_skip_the_signature() -> None:
    tok = jwt.encode(
        {"sub": "x", "scopes": ["admin"], "jti": "j"},
        "f" * 40,
        algorithm="HS256",
        headers={"kid": key_id(SECRET)},
    )
    with pytest.raises(InvalidToken, match="Signature"):
        Authenticator(keyring(SECRET)).verify(tok)


def test_revoked_id_is_refused_even_when_cached() -> None:
    auth = Authenticator(keyring(SECRET))
    tok = create_token(SECRET, scopes=["read"])
    claims = auth.verify(tok)
    auth.revoked.add(claims.token_id)
    with pytest.raises(HTTPException) as err:
        auth.authorize(tok, "read")
    assert (err.value.status_code, err.value.detail) == (401, "token revoked")


def test_usage_is_noted_at_most_once_a_minute_per_token() -> None:
    buffer = UsageBuffer(interval=60)
    a = issue_token(SECRET, scopes=["read"]).claims
    b = issue_token(SECRET, scopes=["read"]).claims
    buffer.note(a, 1000.0)
    buffer.note(a, 1030.0)
    buffer.note(b, 1031.0)
    assert sorted((u.claims.token_id, u.used_at) for u in buffer.drain()) == sorted(
        [(a.token_id, 1000.0), (b.token_id, 1031.0)]
    )
    buffer.note(a, 1059.0)
    assert buffer.drain() == []
    buffer.note(a, 1061.0)
    [use] = buffer.drain()
    assert use.used_at == 1061.0
    buffer.put_back([use])  # a failed flush keeps it for the next one
    assert [u.used_at for u in buffer.drain()] == [1061.0]


def test_settings_previous_secret() -> None:
    settings = BaseServiceSettings(_env_file=None, UPTAKE_SECRET=SECRET, UPTAKE_SECRET_PREVIOUS="")
    assert settings.secret_previous is None
    with pytest.raises(ValidationError, match="UPTAKE_SECRET_PREVIOUS"):
        BaseServiceSettings(_env_file=None, UPTAKE_SECRET=SECRET, UPTAKE_SECRET_PREVIOUS="short")
    assert "o" * 40 not in repr(
        BaseServiceSettings(_env_file=None, UPTAKE_SECRET=SECRET, UPTAKE_SECRET_PREVIOUS=OLD)
    )
