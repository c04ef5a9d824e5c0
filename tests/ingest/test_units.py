"""Pure parts of ingest: body decoding, rate limiting, Segment message validation."""

from __future__ import annotations

import gzip
import zlib
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.ingest.body import BodyError, decode, parse_object
from services.ingest.ratelimit import RateLimiter
from services.ingest.schemas import SENT_AT, SegmentMessage, corrected_time
from services.ingest.tracking import validate


def test_gzip_bomb_is_refused_by_decompressed_size() -> None:
    bomb = gzip.compress(b"0" * 10_000_000)
    assert len(bomb) < 20_000
    with pytest.raises(BodyError) as err:
        decode(bomb, "gzip", limit=500_000)
    assert err.value.status == 413


def test_truncated_and_garbage_gzip() -> None:
    data = gzip.compress(b'{"a": 1}')
    with pytest.raises(BodyError, match="truncated"):
        decode(data[:-6], "gzip", limit=1000)
    with pytest.raises(BodyError, match="not valid gzip"):
        decode(b"plain text", "gzip", limit=1000)
    assert decode(zlib.compress(b"{}"), "deflate", limit=10) == b"{}"


def test_parse_object_names_problem() -> None:
    with pytest.raises(BodyError, match="malformed JSON"):
        parse_object(b'{"a":')
    with pytest.raises(BodyError, match="JSON object"):
        parse_object(b'"str"')


@given(st.binary(max_size=200))
def test_decode_never_raises_anything_but_body_error(data: bytes) -> None:
    try:
        parse_object(decode(data, "gzip", limit=1000))
    except BodyError as exc:
        assert 400 <= exc.status < 500


def test_rate_limiter_refills_and_says_how_long() -> None:
    limiter = RateLimiter(rate=10, burst=20)
    assert limiter.take("k", 20, now=0.0) == 0.0
    wait = limiter.take("k", 5, now=0.0)
    assert wait == pytest.approx(0.5)
    assert limiter.take("k", 5, now=0.5) == 0.0
    assert limiter.take("other", 1, now=0.5) == 0.0  # per key
    assert limiter.take("k", 100, now=10.0) == float("inf")  # never fits the burst


def test_segment_clock_skew_correction() -> None:
    received = datetime(2026, 11, 1, 12, 0, 10, tzinfo=UTC)
    msg = SegmentMessage.model_validate(
        {
            "type": "track",
            "userId": "u",
            "event": "E",
            "originalTimestamp": "2026-11-01T11:00:00Z",
            "sentAt": "2026-11-01T11:00:05Z",
        }
    )
    assert msg.occurred_at(received) == received - timedelta(seconds=5)


def test_validation_messages_name_fields() -> None:
    assert "event is required for track" in str(validate({"type": "track", "userId": "u"}, None))
    result = validate({"userId": "u", "event": "E", "messageId": "m" * 101}, "track")
    assert isinstance(result, str) and result.startswith("messageId")
    assert validate({"userId": 42, "event": "E"}, "track").userId == "42"  # type: ignore[union-attr]
    assert "type" in str(validate({"userId": "u"}, None))


def test_nul_in_ids_is_refused() -> None:
    for field in ("userId", "groupId", "messageId", "event"):
        result = validate({"userId": "u", "event": "E", field: "a\x00b"}, "track")
        assert isinstance(result, str) and result.startswith(field) and "NUL" in result
    result = validate({"userId": "u", "event": "E", "context": {"groupId": "a\x00"}}, "track")
    assert isinstance(result, str) and "context.groupId" in result


def test_skew_correction_never_overflows() -> None:
    now = datetime.now(UTC)
    lowest, highest = datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)
    for original, sent in ((lowest, highest), (highest, lowest)):
        with pytest.raises(ValueError, match=r"^originalTimestamp"):
            corrected_time(original, sent, now)
    assert corrected_time(now - timedelta(hours=1), now, now) == now - timedelta(hours=1)


def test_batch_sent_at_naive_is_utc_and_range_checked() -> None:
    assert SENT_AT.validate_python("2024-01-01T00:00:00") == datetime(2024, 1, 1, tzinfo=UTC)
    for bad in ("9999-01-01T00:00:00Z", "1999-12-31T23:59:59Z", "soon"):
        with pytest.raises(ValidationError):
            SENT_AT.validate_python(bad)
