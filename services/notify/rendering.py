"""Template rendering: Jinja2 in a sandbox, HTML autoescaped, Slack text escaped. Pure.

Missing context keys never break a send: :data:`DEFAULT_CONTEXT` fills the well-known
ones and any other unknown name renders as empty (``ChainableUndefined``). A template
that cannot compile, or fails on its sample context, is refused by :func:`validate`.

Each delivery renders with its own recipient: ``recipient.name``, ``recipient.first_name``,
``recipient.email``, ``recipient.role`` are the person the message goes to, and
``contact_name`` is that person's first name. A request's context is shared by all of its
recipients, so person-naming keys in it (:data:`PERSON_VARIABLES`) are dropped before
rendering and refused in templates on save: nobody is greeted by another person's name.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

from jinja2 import ChainableUndefined, Template, TemplateError, meta
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment

Channel = Literal["email", "slack"]

DEFAULT_CONTEXT: dict[str, Any] = {
    "account_name": "your team",
    "account_id": "",
    "contact_name": "there",
    "csm_name": "Your Customer Success team",
    "csm_email": "",
    "reason": "",
    "score": "",
    "band": "",
    "alert_title": "",
    "task_group_id": "",
    "playbook_name": "",
}
# Request-context names that would carry one person's name (or address) to every
# recipient of a request. Dropped from a request's context before rendering; a template
# that reads one of them is refused on save. ``contact_name`` is among them: a template
# stored before this rule still renders it, as the recipient's first name. People are
# named through ``recipient.*`` (who receives it) and ``csm_name`` / ``csm.*`` (who sends).
PERSON_VARIABLES = frozenset(
    {
        "contact",
        "contact_name",
        "contact_email",
        "contacts",
        "first_name",
        "last_name",
        "full_name",
        "name",
        "user",
        "user_name",
        "to",
    }
)
SAMPLE_RECIPIENT: dict[str, Any] = {
    "name": "Ada Lovelace",
    "first_name": "Ada",
    "email": "ada@example.com",
    "role": "admin",
}
SAMPLE_CONTEXT: dict[str, Any] = {
    "account_name": "Acme Corp",
    "account_id": "acct-123",
    "contact_name": "Ada",
    "csm_name": "Grace Hopper",
    "csm_email": "grace@example.com",
    "reason": "reports_created -45% vs 4-week baseline",
    "score": 42,
    "band": "yellow",
    "alert_title": "Usage dropped",
    "task_group_id": "tg-1",
    "playbook_name": "Adoption risk",
    "recipient": SAMPLE_RECIPIENT,
}


class RenderError(ValueError):
    """The template does not compile or does not render; ``field`` names which part."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class TemplateSpec:
    id: str
    name: str
    channel: Channel
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    blocks: list[Any] | None = None
    description: str | None = None
    sample_context: dict[str, Any] = field(default_factory=dict)
    builtin: bool = False


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str


@dataclass(frozen=True)
class RenderedSlack:
    text: str
    blocks: list[Any]


def _slack_escape(value: Any) -> Any:
    """Slack's mrkdwn control characters in values (a template's own markup is kept)."""
    if isinstance(value, str):
        return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "" if value is None else value


# Resource bounds: a template is code an admin wrote, and it renders for every delivery.
MAX_OUTPUT = 1_000_000  # characters one part (subject, html, text, a block string) renders
MAX_SEQUENCE = 100_000  # items (characters) in a string or list built by ``*`` or ``+``
MAX_INT_BITS = 4096  # an integer built by ``**`` or ``*`` (a 1,233-digit number)
MAX_RANGE = 10_000  # items in one ``range()``
MAX_RANGE_TOTAL = 100_000  # items of every ``range()`` of one render (nested loops)
_range_budget: ContextVar[list[int] | None] = ContextVar("notify_range_budget", default=None)


def _sized(value: Any) -> int | None:
    return len(value) if isinstance(value, str | list | tuple) else None


def _bits(value: Any) -> int:
    return abs(value).bit_length() if isinstance(value, int) else 0


def _bounded_range(*args: int) -> range:
    """``range`` with a cap per call and per render, so nested loops cannot run for hours."""
    items = range(*args)
    if len(items) > MAX_RANGE:
        raise SecurityError(f"range() of {len(items)} items; at most {MAX_RANGE}")
    budget = _range_budget.get()
    if budget is not None:
        budget[0] -= len(items)
        if budget[0] < 0:
            raise SecurityError(f"range() items total more than {MAX_RANGE_TOTAL} in one render")
    return items


def too_big(operator: str, left: Any, right: Any) -> str | None:
    """Why ``left <operator> right`` would be too big a result, checked before computing it."""
    both_ints = isinstance(left, int) and isinstance(right, int)
    if operator == "**" and both_ints and _bits(left) > 1 and _bits(left) * right > MAX_INT_BITS:
        return f"{left} ** {right} is too big a number"
    if operator == "*" and both_ints and _bits(left) + _bits(right) > MAX_INT_BITS:
        return "too big a number"
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            n = _sized(seq)
            if n is not None and isinstance(times, int) and n * times > MAX_SEQUENCE:
                return f"repeating {n} items {times} times is too long"
    a, b = _sized(left), _sized(right)
    if operator == "+" and a is not None and b is not None and a + b > MAX_SEQUENCE:
        return f"adding {a} and {b} items is too long"
    return None


class BoundedSandbox(SandboxedEnvironment):
    """Jinja's sandbox (no unsafe attributes), and no result big enough to exhaust memory:
    ``**``, ``*`` and ``+`` refuse huge numbers, strings and lists; ``range`` is capped."""

    intercepted_binops = frozenset({"**", "*", "+"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals["range"] = _bounded_range

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        problem = too_big(operator, left, right)
        if problem:
            raise SecurityError(problem)
        return super().call_binop(context, operator, left, right)


_HTML_ENV = BoundedSandbox(autoescape=True, undefined=ChainableUndefined)
_TEXT_ENV = BoundedSandbox(autoescape=False, undefined=ChainableUndefined)
_SLACK_ENV = BoundedSandbox(autoescape=False, undefined=ChainableUndefined, finalize=_slack_escape)
_ENVS = {"html": _HTML_ENV, "text": _TEXT_ENV, "slack": _SLACK_ENV}


@lru_cache(maxsize=1024)
def _compile(kind: str, source: str) -> Template:
    return _ENVS[kind].from_string(source)


def _render(kind: str, field_name: str, source: str, context: Mapping[str, Any]) -> str:
    budget = _range_budget.set([MAX_RANGE_TOTAL])
    try:
        return _generate(field_name, _compile(kind, source), context)
    except RenderError:
        raise
    except TemplateError as exc:
        raise RenderError(field_name, str(exc)) from exc
    except RecursionError as exc:
        raise RenderError(field_name, "recursion too deep (a macro that calls itself?)") from exc
    except MemoryError as exc:
        raise RenderError(field_name, "renders too much (out of memory)") from exc
    except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError) as exc:
        raise RenderError(field_name, f"{type(exc).__name__}: {exc}") from exc
    finally:
        _range_budget.reset(budget)


def _generate(field_name: str, template: Template, context: Mapping[str, Any]) -> str:
    """Render piece by piece, stopping as soon as the output passes :data:`MAX_OUTPUT`."""
    parts: list[str] = []
    size = 0
    for chunk in template.generate(dict(context)):
        size += len(chunk)
        if size > MAX_OUTPUT:
            raise RenderError(field_name, f"renders more than {MAX_OUTPUT} characters")
        parts.append(chunk)
    return "".join(parts)


def first_name(name: str | None) -> str | None:
    """The first word of a name ("Ada Lovelace" -> "Ada"); None for no name."""
    words = (name or "").split()
    return words[0] if words else None


def recipient_context(*, name: str | None, email: str | None, role: str | None) -> dict[str, Any]:
    """``recipient.*`` of one delivery: the person this copy goes to ("" for what is not
    known, so ``{{ recipient.first_name or 'there' }}`` reads naturally)."""
    clean = " ".join((name or "").split())
    return {
        "name": clean,
        "first_name": first_name(clean) or "",
        "email": email or "",
        "role": role or "",
    }


def build_context(
    context: Mapping[str, Any], *, recipient: Mapping[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """Defaults, then facts the request left out (``extra``, e.g. ``csm_name``), then what
    the request gave without its person-naming keys, then this delivery's recipient.

    ``recipient`` always wins: ``contact_name`` is the recipient's first name (else
    "there") whatever the request said, so a shared context cannot greet the wrong person.
    """
    merged = dict(DEFAULT_CONTEXT)
    for key, value in extra.items():
        if value not in (None, ""):
            merged[key] = value
    merged.update({k: v for k, v in context.items() if v is not None and k not in PERSON_VARIABLES})
    person = dict(recipient or recipient_context(name=None, email=None, role=None))
    merged["recipient"] = person
    merged["contact_name"] = person.get("first_name") or DEFAULT_CONTEXT["contact_name"]
    return merged


def _parts(spec: TemplateSpec) -> list[tuple[str, str, str]]:
    """(field, environment kind, source) of every part of a template."""
    if spec.channel == "email":
        found = [("subject", "text", spec.subject or "")]
        found += [("html", "html", spec.html)] if spec.html else []
        found += [("text", "text", spec.text)] if spec.text else []
        return found
    found = [("text", "slack", spec.text or "")]

    def walk(value: Any, path: str) -> None:
        if isinstance(value, str):
            found.append((path, "slack", value))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{path}[{i}]")
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{path}.{k}")

    walk(spec.blocks or [], "blocks")
    return found


def person_references(spec: TemplateSpec) -> list[tuple[str, str]]:
    """(field, variable) for each part that reads a person-naming request variable.

    Only free (undeclared) names count: ``{% set name = recipient.name %}`` is fine."""
    found: list[tuple[str, str]] = []
    for field_name, kind, source in _parts(spec):
        try:
            names = meta.find_undeclared_variables(_ENVS[kind].parse(source))
        except (TemplateError, RecursionError, MemoryError):
            continue  # the compile check reports it (nesting too deep too)
        found += [(field_name, n) for n in sorted(names & PERSON_VARIABLES)]
    return found


_TAG = re.compile(r"<[^>]+>")
_HEAD = re.compile(r"<(head|style|script)\b.*?</\1>", re.IGNORECASE | re.DOTALL)
_LINK = re.compile(r"""<a\s[^>]*href=(["'])([^"']+)\1[^>]*>(.*?)</a>""", re.IGNORECASE | re.DOTALL)
_BLOCK_END = re.compile(r"</(p|div|h[1-6]|li|tr)>|<br\s*/?>", re.IGNORECASE)


def html_to_text(html: str) -> str:
    """A readable plain part for templates that only give HTML."""
    text = _HEAD.sub("", html)
    text = _LINK.sub(lambda m: f"{m.group(3)} ({m.group(2)})", text)
    text = _BLOCK_END.sub("\n", text)
    text = html_lib.unescape(_TAG.sub("", text))
    lines = [line.strip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def render_email(spec: TemplateSpec, context: Mapping[str, Any]) -> RenderedEmail:
    if spec.channel != "email":
        raise RenderError("channel", f"template '{spec.id}' is for {spec.channel}, not email")
    subject = _render("text", "subject", spec.subject or "", context)
    subject = " ".join(subject.split())  # no header injection through a newline
    html = _render("html", "html", spec.html, context) if spec.html else ""
    text = _render("text", "text", spec.text, context) if spec.text else html_to_text(html)
    if not subject:
        raise RenderError("subject", "renders empty")
    return RenderedEmail(subject=subject, html=html, text=text)


def _render_blocks(value: Any, path: str, context: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        return _render("slack", path, value, context)
    if isinstance(value, list):
        return [_render_blocks(v, f"{path}[{i}]", context) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _render_blocks(v, f"{path}.{k}", context) for k, v in value.items()}
    return value


def render_slack(spec: TemplateSpec, context: Mapping[str, Any]) -> RenderedSlack:
    if spec.channel != "slack":
        raise RenderError("channel", f"template '{spec.id}' is for {spec.channel}, not slack")
    text = _render("slack", "text", spec.text or "", context).strip()
    blocks = _render_blocks(spec.blocks or [], "blocks", context)
    if not text:
        raise RenderError("text", "renders empty")
    return RenderedSlack(text=text, blocks=blocks)


def _preview_text(person: Mapping[str, Any], key: str) -> str | None:
    """A preview's ``recipient.<key>``: text (a number reads as text), else a 422."""
    value = person.get(key)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise RenderError(f"context.recipient.{key}", "must be a string")


def render_preview(spec: TemplateSpec, context: Mapping[str, Any]) -> RenderedEmail | RenderedSlack:
    given = {**SAMPLE_CONTEXT, **spec.sample_context, **context}
    person = given.get("recipient")
    recipient = (
        recipient_context(
            name=_preview_text(person, "name") or _preview_text(person, "first_name"),
            email=_preview_text(person, "email"),
            role=_preview_text(person, "role"),
        )
        if isinstance(person, Mapping)
        else None
    )
    merged = build_context(given, recipient=recipient)
    return render_email(spec, merged) if spec.channel == "email" else render_slack(spec, merged)


def validate(spec: TemplateSpec) -> None:
    """Raise :class:`RenderError` unless every part compiles and renders on sample context."""
    if spec.channel == "email":
        if not spec.subject:
            raise RenderError("subject", "an email template needs a subject")
        if not (spec.html or spec.text):
            raise RenderError("html", "an email template needs html or text")
    elif not spec.text:
        raise RenderError("text", "a slack template needs text (the notification fallback)")
    for field_name, name in person_references(spec):
        raise RenderError(
            field_name,
            f"'{name}' would name a person from the request's context, the same for every "
            "recipient; name the person the message goes to with recipient.name, "
            "recipient.first_name, recipient.email or recipient.role",
        )
    rendered = render_preview(spec, {})
    if isinstance(rendered, RenderedSlack):
        check_blocks(rendered.blocks)


def check_blocks(blocks: Any) -> None:
    """Block Kit's shape, as far as it is ours to know: a list of objects with a ``type``."""
    if not isinstance(blocks, list):
        raise RenderError("blocks", "must be a list of Block Kit blocks")
    for i, block in enumerate(blocks):
        if not isinstance(block, dict):
            raise RenderError(f"blocks[{i}]", "a block must be an object")
        if not isinstance(block.get("type"), str) or not block["type"].strip():
            raise RenderError(f"blocks[{i}].type", "a block needs a string type (section...)")


_HREF = re.compile(r"""href=(["'])(https?://[^"']+)\1""", re.IGNORECASE)


def add_tracking(
    html: str, *, click_url: Callable[[str], str] | None, pixel_url: str | None
) -> str:
    """Route http(s) links through the click redirect and add the open pixel."""
    if click_url is not None:

        def _swap(match: re.Match[str]) -> str:
            target = html_lib.unescape(match.group(2))
            return f'href="{html_lib.escape(click_url(target), quote=True)}"'

        html = _HREF.sub(_swap, html)
    if pixel_url is not None:
        pixel = (
            f'<img src="{html_lib.escape(pixel_url, quote=True)}" width="1" height="1" '
            'alt="" style="display:none">'
        )
        idx = html.lower().rfind("</body>")
        html = html[:idx] + pixel + html[idx:] if idx >= 0 else html + pixel
    return html
