"""A contact's identify traits merged across calls: pure functions, no I/O.

Each trait keeps the time of the identify that set it; a trait from an older identify
never overwrites a newer one, so identifies that arrive out of order still end with
the latest value of each trait. Health stores a contact as sent, so ingest always
publishes the whole merged contact.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

CONTACT_FIELDS = ("email", "name", "role")


def merge_traits(
    traits: dict[str, Any], stamps: dict[str, str], new: dict[str, Any], at: datetime
) -> tuple[dict[str, Any], dict[str, str]]:
    """``traits`` with ``new`` applied where ``at`` is not older than the trait's stamp."""
    stamp = at.isoformat()
    merged, merged_stamps = dict(traits), dict(stamps)
    for name, value in new.items():
        known = merged_stamps.get(name)
        if known is None or datetime.fromisoformat(known) <= at:
            merged[name] = value
            merged_stamps[name] = stamp
    return merged, merged_stamps


def _text(value: Any, limit: int) -> str | None:
    if value is None or isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    return str(value)[:limit]


def contact_message(*, user_id: str, traits: dict[str, Any], message_id: str) -> dict[str, Any]:
    """``shared.messages.ContactUpserted`` data for a merged contact."""
    return {
        "message_id": message_id,
        "user_id": user_id,
        "email": _text(traits.get("email"), 320),
        "name": _text(traits.get("name"), 255),
        "role": _text(traits.get("role"), 255),
        "traits": {k: v for k, v in traits.items() if k not in CONTACT_FIELDS},
    }
