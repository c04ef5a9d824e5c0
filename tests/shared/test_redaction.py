"""What an audit summary keeps of a body: field names and plain values; never a secret."""

from __future__ import annotations

import orjson

from shared.auth import create_token
from shared.ratelimit import RateLimiter, retry_after
from shared.redaction import MAX_STRING, REDACTED, redact, summarize
from tests.support import TEST_SECRET


def test_secret_keys_and_secret_looking_values_are_withheld() -> None:
    jwt = create_token(TEST_SECRET, scopes=["admin"])
    body = {
        "name": "Weekly digest",
        "SLACK_BOT_TOKEN": "anything at all",
        "smtpPassword": "hunter2",
        "api_key": "k",
        "webhookUrl": "https://example.com/in",
        "headers": {"Authorization": "Basic dXNlcjpwYXNz"},
        "note": f"use {jwt}",
        "link": "https://bob:pa55word@db.example.com/x",
        "channel": "#cs-alerts",
        "bot": "xoxb-123-456-abc",
        "hook": "https://hooks.slack.com/services/T/B/X",
        "empty_token": None,
        "count": 3,
        "flags": [True, None, 1.5],
    }
    out = redact(body)
    assert out == {
        "name": "Weekly digest",
        "SLACK_BOT_TOKEN": REDACTED,
        "smtpPassword": REDACTED,
        "api_key": REDACTED,
        "webhookUrl": REDACTED,
        "headers": {"Authorization": REDACTED},
        "note": REDACTED,
        "link": REDACTED,
        "channel": "#cs-alerts",
        "bot": REDACTED,
        "hook": REDACTED,
        "empty_token": None,
        "count": 3,
        "flags": [True, None, 1.5],
    }
    assert redact({"x": "mine: abc123"}, known=("abc123",)) == {"x": REDACTED}


def test_long_and_deep_bodies_are_cut_short() -> None:
    deep = {"b": {"c": {"d": {"e": 1}}}}
    out = redact({"html": "x" * 5000, "items": list(range(100)), "a": deep})
    assert out["html"].startswith("x" * MAX_STRING) and out["html"].endswith("(5000 chars)")
    assert len(out["items"]) == 21 and out["items"][-1] == "... 80 more items"
    assert out["a"] == {"b": {"c": {"d": "..."}}}
    huge = {f"k{i}": {f"j{j}": "v" for j in range(20)} for i in range(20)}
    assert len(orjson.dumps(redact(huge))) < 8000


def test_summary_of_json_yaml_and_other_bodies() -> None:
    body = b'{"email": "a@b.co", "password": "p"}'
    assert summarize(body, content_type="application/json", body_size=len(body), query=[]) == {
        "body": {"email": "a@b.co", "password": REDACTED}
    }
    yml = b"id: qbr\nsteps: [{key: a}]\n"
    assert summarize(yml, content_type="application/yaml", body_size=len(yml), query=[]) == {
        "body": {"id": "qbr", "steps": [{"key": "a"}]}
    }
    bomb = b"a: &x [1]\nb: *x\n"
    cut = summarize(bomb, content_type="application/yaml", body_size=len(bomb), query=[])
    assert cut == {"body": f"{len(bomb)} bytes of application/yaml (not recorded)"}
    text = b"password=hunter2"
    out = summarize(text, content_type="text/plain", body_size=16, query=[("token", "t")])
    assert out == {"query": {"token": REDACTED}, "body": "16 bytes of text/plain (not recorded)"}
    partial = summarize(b'{"a": 1', content_type="application/json", body_size=99, query=[])
    assert partial == {"body": "99 bytes of application/json (not recorded)"}
    assert summarize(b"", content_type="", body_size=0, query=[]) == {}


def test_retry_after_is_whole_seconds_and_at_least_one() -> None:
    limiter = RateLimiter(rate=2, burst=2)
    assert limiter.take("t", now=0) == 0 and limiter.take("t", now=0) == 0
    wait = limiter.take("t", now=0)
    assert wait == 0.5 and retry_after(wait) == "1"
    assert retry_after(2.01) == "3"
    assert limiter.take("other", now=0) == 0  # per key


def test_more_secret_shapes_are_withheld() -> None:
    body = {
        "smtp_pass": "hunter2hunter2",
        "pass": "hunter2",
        "auth": "u:p",
        "signature": "v1,abcdef",
        "hmac": "0badc0de",
        "note": "key SG.abcdefghijklmnopqrstuv.abcdefghijklmnopqrstuvwxyz0123 pasted",
        "passage": "kept: a word that starts like pass",
        "author": "kept too",
    }
    out = redact(body)
    for key in ("smtp_pass", "pass", "auth", "signature", "hmac", "note"):
        assert out[key] == REDACTED, key
    assert out["passage"] == body["passage"] and out["author"] == "kept too"
