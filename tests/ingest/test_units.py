"""Pure parts of ingest: body decoding, rate limiting, Segment message validation."""

from __future__ import annotations

import gzip
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from starlette.requests import Request

from services.ingest.body import BodyError, decode, parse_object, read_body
from services.ingest.contacts import contact_message, merge_traits
from services.ingest.schemas import SENT_AT, SegmentMessage, corrected_time
from services.ingest.tracking import validate
from shared.ratelimit import RateLimiter


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


_calls = st.lists(
    st.tuples(
        st.dictionaries(st.sampled_from(["email", "name", "role", "plan"]), st.integers(0, 9)),
        st.integers(0, 10_000),  # seconds: distinct times below keep the winner unambiguous
    ),
    min_size=1,
    max_size=8,
    unique_by=lambda c: c[1],
)


@given(_calls, st.randoms(use_true_random=False))
def test_merged_traits_end_with_each_traits_latest_value_in_any_order(
    calls: list[tuple[dict[str, int], int]], rng: Any
) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    expected: dict[str, int] = {}
    for traits, _at in sorted(calls, key=lambda c: c[1]):
        expected.update(traits)
    shuffled = list(calls)
    rng.shuffle(shuffled)
    merged: dict[str, Any] = {}
    stamps: dict[str, str] = {}
    for traits, at in shuffled:
        merged, stamps = merge_traits(merged, stamps, traits, start + timedelta(seconds=at))
    assert merged == expected


def test_contact_message_splits_the_known_fields_from_the_rest() -> None:
    data = contact_message(
        user_id="u1",
        traits={"email": "a@b.test", "name": "Ann", "role": "admin", "plan": "pro"},
        message_id="m1",
    )
    assert (data["email"], data["name"], data["role"]) == ("a@b.test", "Ann", "admin")
    assert data["traits"] == {"plan": "pro"} and data["message_id"] == "m1"


def test_rudderstack_identify_traits_come_from_context() -> None:
    msg = validate({"userId": "u", "context": {"traits": {"email": "r@s.test"}}}, "identify")
    assert isinstance(msg, SegmentMessage) and msg.traits == {"email": "r@s.test"}
    alias = validate({"previousId": "anon"}, "alias")
    assert isinstance(alias, str) and "userId" in alias


async def test_a_client_gone_mid_body_is_a_4xx_not_a_server_error() -> None:
    """An SDK that times out (or a Ctrl-C) mid-upload: nothing accepted, no traceback."""
    messages = [
        {"type": "http.request", "body": b'{"batch": [', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, object]:
        return messages.pop(0)

    scope = {"type": "http", "method": "POST", "path": "/v1/batch", "headers": []}
    request = Request(scope, receive)  # type: ignore[arg-type]
    with pytest.raises(BodyError) as refused:
        await read_body(request, limit=500_000)
    assert refused.value.status == 400 and "disconnected" in refused.value.detail
