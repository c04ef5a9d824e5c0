"""The health decoder: runs in the shared runner, once per message."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from services.health.decode import Usage, decode
from shared.envelope import Envelope
from tests.health.conftest import day_at, new_account, usage


def test_a_usage_event_is_decoded_once_into_its_facts() -> None:
    account = new_account()
    env = usage(account, day_at(3), user=None, message_id="m-1", properties={"rows": 4})
    raw = env.model_copy(update={"data": {**env.data, "anonymous_id": "x9"}}).to_bytes()
    decoded, payload = decode(raw)
    assert decoded.id == env.id and decoded.account_id == account
    assert isinstance(payload, Usage) and payload.message_id == "m-1"
    facts = payload.facts
    assert (facts.account_id, facts.event, facts.user_key) == (account, "Report Created", "anon:x9")
    assert facts.timestamp == day_at(3) and facts.properties == {"rows": 4}


def test_own_and_registry_messages_carry_no_usage_payload() -> None:
    account = new_account()
    own = usage(account, day_at(1)).model_copy(update={"source": "health", "data": {}})
    assert decode(own.to_bytes())[1] is None  # skipped by the handler: not validated
    upsert = Envelope(
        type="account.upserted",
        occurred_at=day_at(1),
        source="ingest",
        account_id=account,
        data={"message_id": "x", "name": "Acme"},
    )
    env, payload = decode(upsert.to_bytes())
    assert env.type == "account.upserted" and payload is None


@pytest.mark.parametrize(
    "data",
    [
        {"event": "x"},  # no message_id, no timestamp
        {"message_id": "m", "event": "x", "timestamp": "2026-13-01T00:00:00Z"},
        {"message_id": "m", "event": 7, "timestamp": "2026-11-01T00:00:00Z"},
        {"message_id": "m", "event": "x", "timestamp": "2026-11-01T00:00:00Z", "kind": "click"},
    ],
)
def test_a_malformed_usage_event_is_refused_at_decode(data: dict[str, Any]) -> None:
    """Refused here, the runner dead-letters it alone (no retries, no batch split)."""
    raw = usage(new_account(), day_at(1)).model_copy(update={"data": data}).to_bytes()
    with pytest.raises(ValidationError):
        decode(raw)


def test_bytes_that_are_no_envelope_are_refused() -> None:
    with pytest.raises(ValueError):
        decode(b"not json")
    with pytest.raises(ValueError):
        decode(orjson.dumps([1, 2]))
