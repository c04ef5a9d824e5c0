"""Pure parts: signed links, rendering, retry policy, frequency cap, MIME, settings."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.notify.compose import EmailHeaders, compose_email, message_id_for
from services.notify.library import builtin_templates
from services.notify.links import InvalidLink, LinkBuilder, LinkClaims, sign, verify
from services.notify.policy import next_allowed, recipient_key
from services.notify.rendering import (
    RenderedEmail,
    RenderError,
    TemplateSpec,
    add_tracking,
    build_context,
    recipient_context,
    render_email,
    render_slack,
    validate,
)
from services.notify.retry import (
    RetryPolicy,
    SendResult,
    classify_http,
    classify_slack_api,
    classify_smtp_code,
)
from services.notify.settings import NotifySettings, webhook_allowed
from shared.messages import Recipient
from tests.support import TEST_SECRET

T0 = datetime(2026, 11, 23, 12, tzinfo=UTC)

# links -----------------------------------------------------------------------------------


def test_link_round_trip_and_kinds() -> None:
    claims = LinkClaims("click", "d1", email="a@b.c", url="https://x.example/p?q=1")
    token = sign(TEST_SECRET, claims)
    assert verify(TEST_SECRET, token, "click") == claims
    with pytest.raises(InvalidLink):
        verify(TEST_SECRET, token, "open")  # a click token is not an open token
    with pytest.raises(InvalidLink):
        verify("another-secret-0123456789abcdef-012345", token, "click")
    # during a secret rotation, links already sent verify against the previous secret
    new = "the-next-secret-0123456789abcdef-0123"
    assert verify(new, token, "click", previous=TEST_SECRET) == claims
    with pytest.raises(InvalidLink):
        verify(new, token, "click", previous="another-secret-0123456789abcdef-012345")
    with pytest.raises(ValueError):
        sign(TEST_SECRET, LinkClaims("click", "d1", url="javascript:alert(1)"))
    for junk in ["", ".", "a.b.c", "abc", "%%%.%%%", "x" * 5000]:
        with pytest.raises(InvalidLink):
            verify(TEST_SECRET, junk, "unsubscribe")


@settings(max_examples=200, deadline=None)
@given(position=st.integers(min_value=0), char=st.sampled_from("ABCabc012-_"))
def test_any_tampered_character_is_refused(position: int, char: str) -> None:
    token = sign(TEST_SECRET, LinkClaims("unsubscribe", "delivery-1", email="ada@x.test"))
    i = position % len(token)
    if token[i] in (char, "."):
        return
    tampered = token[:i] + char + token[i + 1 :]
    try:
        claims = verify(TEST_SECRET, tampered, "unsubscribe")
    except InvalidLink:
        return
    # base64 padding bits can change without changing the decoded bytes: same claims only.
    assert claims == LinkClaims("unsubscribe", "delivery-1", email="ada@x.test")


def test_link_builder_urls() -> None:
    links = LinkBuilder(TEST_SECRET, "https://n.example/")
    assert links.unsubscribe("d", "a@b.c").startswith("https://n.example/v1/unsubscribe?token=")
    assert links.open_pixel("d").startswith("https://n.example/t/o/")
    mailto = links.unsubscribe_mailto("unsub@acme.test", "d", "a@b.c")
    assert mailto.startswith("mailto:unsub@acme.test?subject=unsubscribe%20")


# rendering -------------------------------------------------------------------------------


def email_spec(**parts: str) -> TemplateSpec:
    return TemplateSpec(id="t", name="t", channel="email", **parts)  # type: ignore[arg-type]


def test_html_is_autoescaped_text_is_not_and_subject_has_no_newlines() -> None:
    spec = email_spec(subject="Hi {{ n }}\nBcc: x@y", html="<p>{{ n }}</p>", text="{{ n }}")
    out = render_email(spec, {"n": "<b>&"})
    assert out.html == "<p>&lt;b&gt;&amp;</p>" and out.text == "<b>&"
    assert out.subject == "Hi <b>& Bcc: x@y"


def test_missing_keys_render_with_defaults_or_empty() -> None:
    ada = recipient_context(name="Ada Lovelace", email="ada@x.test", role=None)
    ctx = build_context({"account_name": None, "score": 0}, recipient=ada)
    spec = email_spec(subject="{{ account_name }}/{{ contact_name }}/{{ score }}/{{ nope.deep }}!")
    assert render_email(spec, ctx).subject == "your team/Ada/0/!"
    assert render_email(spec, build_context({})).subject == "your team/there//!"


def test_the_recipient_wins_over_a_shared_request_context() -> None:
    """A request's context is one for all its recipients: a name in it never greets."""
    shared = {"contact_name": "Bob", "contact": {"name": "Bob Smith"}, "account_name": "Acme"}
    spec = email_spec(
        subject="{{ recipient.first_name }}|{{ contact_name }}|{{ contact.name }}|"
        "{{ recipient.role }}",
        text="x",
    )
    cy = recipient_context(name="  Cy   Young ", email="cy@x.test", role="billing")
    assert render_email(spec, build_context(shared, recipient=cy)).subject == "Cy|Cy||billing"
    nobody = build_context(shared)
    assert render_email(spec, nobody).subject == "|there||"


@pytest.mark.parametrize(
    ("field", "source", "name"),
    [
        ("subject", "Hello {{ contact_name }}", "contact_name"),
        ("html", "<p>Dear {{ contact.name }}</p>", "contact"),
        ("text", "{% for c in contacts %}{{ c }}{% endfor %}", "contacts"),
        ("text", "Hi {{ first_name }}", "first_name"),
    ],
)
def test_a_template_naming_a_request_person_is_refused(field: str, source: str, name: str) -> None:
    parts = {"subject": "ok", "text": "ok", field: source}
    with pytest.raises(RenderError) as err:
        validate(email_spec(**parts))
    assert err.value.field == field and f"'{name}'" in str(err.value)
    # A local variable of the same name is the template's own, and recipient.* is allowed.
    validate(email_spec(subject="ok", text="{% set name = recipient.first_name %}Hi {{ name }}"))


def test_sandbox_refuses_unsafe_access_and_validate_names_the_field() -> None:
    with pytest.raises(RenderError) as err:
        validate(email_spec(subject="ok", html="{{ ''.__class__.__mro__[1].__subclasses__() }}"))
    assert err.value.field == "html"
    with pytest.raises(RenderError) as err:
        validate(email_spec(subject="{% if %}", text="x"))
    assert err.value.field == "subject"
    with pytest.raises(RenderError):
        validate(
            TemplateSpec(id="s", name="s", channel="slack", text="x", blocks=[{"t": "{{ 1/0 }}"}])
        )


@pytest.mark.parametrize(
    ("source", "says"),
    [
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "recursion too deep"),
        ("{{ 9 ** 999999 }}", "too big a number"),
        ("{{ (10 ** 1000) * (10 ** 1000) }}", "too big a number"),
        ("{{ 'ab' * 100000000 }}", "too long"),
        ("{{ [0] * 10 ** 7 }}", "too long"),
        ("{% set x = 'a' * 99999 %}{{ x + x }}", "too long"),
        ("{% for i in range(10 ** 6) %}{% endfor %}", "at most 10000"),
        ("{% for i in range(9000) %}{% for j in range(9000) %}{% endfor %}{% endfor %}", "total"),
        ("{% for i in range(9000) %}{{ 'x' * 1000 }}{% endfor %}", "more than 1000000"),
        ("{{ 2.0 ** 100000 }}", "OverflowError"),
    ],
)
def test_resource_exhaustion_is_a_render_error_naming_the_field(source: str, says: str) -> None:
    with pytest.raises(RenderError) as err:
        validate(email_spec(subject="ok", text=source))
    assert err.value.field == "text" and says in err.value.message


def test_modest_arithmetic_and_loops_still_render() -> None:
    spec = email_spec(
        subject="{{ 2 ** 10 }} {{ 1 ** 10 ** 8 }} {{ 'ab' * 3 }} {{ [1] + [2] }}",
        text="{% for i in range(3) %}{{ i }}{% endfor %}",
    )
    out = render_email(spec, {})
    assert out.subject == "1024 1 ababab [1, 2]" and out.text == "012"


def test_slack_blocks_must_be_block_kit_shaped() -> None:
    def slack(blocks: list[object]) -> TemplateSpec:
        return TemplateSpec(id="s", name="s", channel="slack", text="x", blocks=blocks)  # type: ignore[arg-type]

    validate(slack([{"type": "section", "text": {"type": "mrkdwn", "text": "{{ reason }}"}}]))
    for blocks, where in [
        ([{"text": "no type"}], "blocks[0].type"),
        ([{"type": "section"}, {"type": 3}], "blocks[1].type"),
        ([{"type": "divider"}, "just text"], "blocks[1]"),
        ([{"type": "{{ '' }}"}], "blocks[0].type"),
    ]:
        with pytest.raises(RenderError) as err:
            validate(slack(blocks))
        assert err.value.field == where


def test_every_builtin_renders_with_an_empty_context() -> None:
    for spec in builtin_templates().values():
        if spec.channel == "email":
            out = render_email(spec, build_context({}))
            assert out.subject and "there" in out.text and "<html" in out.html
        else:
            slack = render_slack(spec, build_context({}))
            assert slack.text and slack.blocks


def test_every_template_the_playbook_library_names_is_built_in_for_its_channel() -> None:
    """Read playbooks' library as data (no import of playbooks code): each automated step's
    ``template_id`` must be one of notify's built-ins, on the step's channel."""
    library = Path(__file__).resolve().parents[2] / "services" / "playbooks" / "library"
    files = sorted(library.glob("*.yaml"))
    assert len(files) >= 5
    builtins = builtin_templates()
    named: list[tuple[str, str, str]] = []
    for path in files:
        playbook = yaml.safe_load(path.read_text())
        for step in playbook.get("steps") or []:
            if step.get("template_id"):
                named.append((path.name, step["template_id"], step.get("type", "")))
    assert len(named) >= 10
    wrong = [
        (file, template_id, channel)
        for file, template_id, channel in named
        if template_id not in builtins or builtins[template_id].channel != channel
    ]
    assert wrong == []


def test_slack_values_are_escaped_but_markup_kept() -> None:
    spec = TemplateSpec(id="s", name="s", channel="slack", text="*{{ v }}* <https://x|x>")
    assert (
        render_slack(spec, {"v": "<!channel> & co"}).text
        == "*&lt;!channel&gt; &amp; co* <https://x|x>"
    )


def test_add_tracking_rewrites_web_links_and_adds_pixel() -> None:
    html = (
        "<body><a href='https://a.example/x?y=1&amp;z=2'>a</a> <a href=\"mailto:x@y\">m</a></body>"
    )
    out = add_tracking(html, click_url=lambda u: f"https://t/c?{u}", pixel_url="https://t/o")
    assert 'href="https://t/c?https://a.example/x?y=1&amp;z=2"' in out
    assert 'href="mailto:x@y"' in out
    assert out.endswith(
        '<img src="https://t/o" width="1" height="1" alt="" style="display:none"></body>'
    )


# retry policy ----------------------------------------------------------------------------


def test_backoff_grows_exponentially_within_jitter_and_caps() -> None:
    policy = RetryPolicy(max_attempts=10, base_seconds=1, max_seconds=20, jitter=0.25)
    rng = random.Random(1)
    for attempt, step in [(1, 1), (2, 2), (3, 4), (4, 8)]:
        delays = [policy.backoff(attempt, rng) for _ in range(200)]
        assert min(delays) >= step * 0.75 and max(delays) <= step * 1.25
        assert max(delays) - min(delays) > step * 0.2  # there is jitter
    assert policy.backoff(9, rng) <= 20


def test_next_delay_honours_retry_after_and_stops() -> None:
    policy = RetryPolicy(max_attempts=3, base_seconds=0.1, max_seconds=60)
    limited = SendResult.temporary("429", retry_after=5)
    assert 5 <= policy.next_delay(1, limited) <= 5.5  # type: ignore[operator]
    assert policy.next_delay(1, SendResult.permanent("550")) is None
    assert policy.next_delay(3, SendResult.temporary("451")) is None  # that was the last try
    assert policy.next_delay(2, SendResult.temporary("451")) is not None


def test_classification() -> None:
    assert classify_http(429, retry_after="7", body="").retry_after == 7
    assert classify_http(429, retry_after=None, body="").outcome == "temporary"
    assert classify_http(503, retry_after=None, body="").outcome == "temporary"
    assert classify_http(404, retry_after=None, body="").outcome == "permanent"
    assert classify_http(200, retry_after=None, body="ok").outcome == "sent"
    assert classify_slack_api({"ok": False, "error": "ratelimited"}).outcome == "temporary"
    assert classify_slack_api({"ok": False, "error": "channel_not_found"}).outcome == "permanent"
    assert classify_slack_api({"ok": True, "ts": "1"}).outcome == "sent"
    assert classify_smtp_code(451, "later").outcome == "temporary"
    assert classify_smtp_code(550, "no").outcome == "permanent"


# frequency cap ---------------------------------------------------------------------------


def test_cap_defers_to_when_the_oldest_send_leaves_the_window() -> None:
    day = timedelta(hours=24)
    assert next_allowed([], now=T0, cap=1, window=day) is None
    sent = T0 - timedelta(hours=3)
    assert next_allowed([sent], now=T0, cap=1, window=day) == sent + day
    assert next_allowed([T0 - timedelta(hours=25)], now=T0, cap=1, window=day) is None
    assert next_allowed([sent], now=T0, cap=2, window=day) is None
    assert next_allowed([sent, sent], now=T0, cap=0, window=day) is None


@settings(max_examples=200, deadline=None)
@given(
    gaps=st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=30),
    cap=st.integers(min_value=1, max_value=4),
)
def test_cap_never_allows_more_than_cap_in_any_window(gaps: list[int], cap: int) -> None:
    """Simulate requests at the given times; sends follow the cap's answers."""
    window = timedelta(hours=24)
    sent: list[datetime] = []
    now = T0
    for gap in gaps:
        now += timedelta(hours=gap)
        when = next_allowed(sent, now=now, cap=cap, window=window) or now
        assert when >= now
        sent.append(when)
        sent.sort()
    for t in sent:
        assert sum(1 for s in sent if t <= s < t + window) <= cap


def test_recipient_key() -> None:
    assert recipient_key("email", Recipient(email=" Ada@X.test "), "#d") == "ada@x.test"
    assert recipient_key("email", Recipient(contact_id="c1"), "#d") == "contact:c1"
    assert recipient_key("slack", Recipient(), "#d") == "slack:#d"


# MIME ------------------------------------------------------------------------------------


def test_compose_email_headers_and_parts() -> None:
    rendered = RenderedEmail(subject="S", html="<p>H</p>", text="T")
    msg = compose_email(
        rendered,
        EmailHeaders(
            from_address="cs@acme.test",
            from_name="Grace\r\nBcc: evil@x",
            to_address="ada@x.test",
            to_name="Ada",
            message_id=message_id_for("d1", "cs@acme.test"),
            date=T0,
            unsubscribe_url="https://n/v1/unsubscribe?token=t",
            unsubscribe_mailto="mailto:u@acme.test?subject=x",
        ),
    )
    assert msg["Message-ID"] == "<d1@acme.test>"
    assert msg["From"] == '"Grace Bcc: evil@x" <cs@acme.test>' and msg["Bcc"] is None
    assert (
        msg["List-Unsubscribe"]
        == "<https://n/v1/unsubscribe?token=t>, <mailto:u@acme.test?subject=x>"
    )
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
    plain_http = compose_email(
        rendered,
        EmailHeaders(
            from_address="cs@acme.test",
            from_name=None,
            to_address="ada@x.test",
            to_name=None,
            message_id="<d2@acme.test>",
            date=T0,
            unsubscribe_url="http://n/v1/unsubscribe?token=t",
        ),
    )
    assert plain_http["List-Unsubscribe"] == "<http://n/v1/unsubscribe?token=t>"
    assert plain_http["List-Unsubscribe-Post"] is None  # RFC 8058: https links only


# settings --------------------------------------------------------------------------------


def test_webhook_must_be_slack_or_the_api_base() -> None:
    base = "https://slack.com/api"
    assert webhook_allowed("https://hooks.slack.com/services/T/B/X", base)
    assert not webhook_allowed("http://hooks.slack.com/services/T/B/X", base)
    assert not webhook_allowed("https://hooks.slack.com.evil.example/x", base)
    assert not webhook_allowed("https://evil.example/?https://hooks.slack.com", base)
    assert not webhook_allowed("https://slack.com/api/../../evil", base)
    assert webhook_allowed("http://127.0.0.1:9/webhook/x", "http://127.0.0.1:9")
    with pytest.raises(ValidationError, match="SLACK_WEBHOOK_URL"):
        NotifySettings(SLACK_WEBHOOK_URL="https://evil.example/hook")  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="EMAIL_FROM"):
        NotifySettings(EMAIL_FROM="nobody")  # type: ignore[call-arg]


def test_requests_and_recipients_the_log_cannot_take_are_named() -> None:
    from services.notify.consumer import MAX_RECIPIENTS, invalid_field, recipient_problem
    from shared.messages import NotifyRequested

    def req(**to: str) -> NotifyRequested:
        return NotifyRequested(
            idempotency_key="k", channel="email", template_id="welcome", to=[Recipient(**to)]
        )

    def problem(**to: str) -> str | None:
        return recipient_problem(0, Recipient(**to))

    assert invalid_field(req(email="ada@x.test", name="Ada")) is None
    assert invalid_field(req(email="n/a")) is None  # judged per recipient, not per request
    assert problem(email="ada@x.test", name="Ada") is None
    assert problem(email="ada@x.test\r\nBcc: e@x") == "to[0].email contains a line break"
    assert problem(email="not-an-address") == "to[0].email is not an email address"
    assert problem(email="a" * 400 + "@x.test") == "to[0].email is longer than 320 characters"
    assert problem(name="Ada\nLovelace", email="a@x.test") == "to[0].name contains a line break"
    crowd = NotifyRequested(
        idempotency_key="k",
        channel="email",
        template_id="welcome",
        to=[Recipient(email=f"u{i}@x.test") for i in range(MAX_RECIPIENTS + 1)],
    )
    assert invalid_field(crowd) == "to has 1001 recipients, more than 1000"
