"""Text from a topic, fitted to the columns it lands in.

Ingest bounds what SDKs send, but a topic also carries what other producers (imports,
older versions, tools) wrote. A 500-character plan must not fail its batch on
PostgreSQL and, after the retries, send the whole message to the dead-letter topic: a
label is cut, a key too long for its column is replaced by its digest (still unique, so
dedup and distinct counts hold), and an email too long to be one is no email at all
(cutting it would name somebody else).
"""

from __future__ import annotations

import hashlib

EMAIL_MAX = 320  # RFC 5321's path limit, and every email column's width


def clip(value: str | None, limit: int) -> str | None:
    """A label cut to ``limit`` characters."""
    return value[:limit] if isinstance(value, str) else value


def email_or_none(value: str | None) -> str | None:
    """The address stripped, or None when it is empty or too long to be an address."""
    value = value.strip() if isinstance(value, str) else None
    return value if value and len(value) <= EMAIL_MAX else None


def fit_key(value: str, limit: int) -> str:
    """A key as it is when it fits, else ``sha256:<hex>`` of it (71 characters)."""
    if len(value) <= limit:
        return value
    return "sha256:" + hashlib.sha256(value.encode()).hexdigest()
