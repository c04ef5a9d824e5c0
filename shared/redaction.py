"""What an audit row may say about a request: field names and non-secret values, short.

Pure functions, no I/O. A value is withheld when its key names a secret (token, secret,
password, webhook, api key, authorization, ...) or when it looks like one whatever its key
(a JWT, a Slack token or webhook URL, a Bearer/Basic credential, a URL with a password, the
caller's own token). Everything else is cut to a size an audit table can keep forever.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
import yaml

REDACTED = "[redacted]"
SECRET_KEY = re.compile(
    r"token|secret|passw|pwd|webhook|api[_-]?key|apikey|access[_-]?key|private[_-]?key|"
    r"signing[_-]?key|write[_-]?key|authori[sz]ation|credential|cookie|session|dsn|bearer|"
    r"signature|hmac|(?:^|[_-])pass$|^auth$",
    re.IGNORECASE,
)
SECRET_VALUE = re.compile(
    r"eyJ[\w-]{4,}\.[\w-]{4,}\.[\w-]*"  # a JWT (every Uptake token is one)
    r"|xox[a-z]-[\w-]+"  # Slack bot/user/app tokens
    r"|hooks\.slack\.com/"  # Slack incoming webhooks
    r"|\b(?:bearer|basic)\s+\S{8,}"  # an Authorization header value
    r"|://[^/\s:@]*:[^/\s@]+@"  # a URL with a password in it
    r"|\b(?:sk|pk|rk)_(?:live|test)_\w+"  # Stripe-style keys
    r"|\bgh[pousr]_\w{20,}"  # GitHub tokens
    r"|\bAKIA[0-9A-Z]{16}\b"  # AWS access key ids
    r"|\bSG\.[\w-]{16,}\.[\w-]{16,}",  # SendGrid API keys
    re.IGNORECASE,
)
MAX_STRING = 120
MAX_ITEMS = 20
MAX_DEPTH = 4
MAX_NODES = 200


class _NoAliases(yaml.SafeLoader):
    """YAML bodies (playbook templates) read as the service reads them: no aliases."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError("aliases are not read")
        return super().compose_node(parent, index)


def _parse(body: bytes, content_type: str) -> Any:
    """The body as JSON (or YAML, when it says so); None when it is neither."""
    try:
        if "yaml" in content_type.lower():
            return yaml.load(body, Loader=_NoAliases)  # noqa: S506 - a SafeLoader
        return orjson.loads(body)
    except (orjson.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError):
        return None


class _Budget:
    """How many more values one summary may hold, so no body makes a large row."""

    def __init__(self, nodes: int) -> None:
        self.nodes = nodes

    def spend(self) -> bool:
        self.nodes -= 1
        return self.nodes >= 0


def withhold(value: str, known: tuple[str, ...] = ()) -> str:
    """``value``, or :data:`REDACTED` if it holds something that looks like a secret."""
    if SECRET_VALUE.search(value) or any(k and k in value for k in known):
        return REDACTED
    return value


def _string(value: str, known: tuple[str, ...]) -> str:
    value = withhold(value, known)
    if len(value) > MAX_STRING:
        return f"{value[:MAX_STRING]}... ({len(value)} chars)"
    return value


def redact(value: Any, *, known: tuple[str, ...] = (), depth: int = 0, budget: Any = None) -> Any:
    """``value`` (parsed JSON) with secrets withheld and everything cut short.

    ``known`` are secrets to withhold wherever they appear (the caller's own token).
    """
    budget = budget or _Budget(MAX_NODES)
    if not budget.spend():
        return "..."
    if isinstance(value, str):
        return _string(value, known)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if depth >= MAX_DEPTH:
        return "..."
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for i, (key, item) in enumerate(value.items()):
            if i >= MAX_ITEMS:
                out["..."] = f"{len(value) - MAX_ITEMS} more fields"
                break
            name = _string(str(key), known)[:MAX_STRING]
            if SECRET_KEY.search(str(key)):
                out[name] = REDACTED if item not in (None, "") else item
            else:
                out[name] = redact(item, known=known, depth=depth + 1, budget=budget)
        return out
    if isinstance(value, list | tuple):
        items = [redact(v, known=known, depth=depth + 1, budget=budget) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append(f"... {len(value) - MAX_ITEMS} more items")
        return items
    return _string(str(value), known)


def summarize(
    body: bytes,
    *,
    content_type: str,
    body_size: int,
    query: list[tuple[str, str]],
    known: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The change a request asked for, as an audit row keeps it.

    ``body`` may be the first bytes only (``body_size`` is the whole size): a JSON body cut
    short, or one that is not JSON, is described by its size and type, never quoted.
    """
    summary: dict[str, Any] = {}
    if query:
        summary["query"] = redact(dict(query), known=known)
    if body_size:
        parsed = _parse(body, content_type) if len(body) == body_size else None
        if parsed is not None:
            summary["body"] = redact(parsed, known=known)
        else:
            kind = content_type.split(";")[0].strip() or "unknown type"
            summary["body"] = f"{body_size} bytes of {kind[:60]} (not recorded)"
    return summary
