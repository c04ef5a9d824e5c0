"""From Segment calls to envelopes: validation, account resolution, the Kafka messages.

Pure apart from the account directory lookup; the route owns the HTTP side.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, get_args

import orjson
from pydantic import TypeAdapter, ValidationError

from services.ingest.accounts import AccountDirectory, Resolution, user_key
from services.ingest.schemas import EventType, SegmentMessage
from shared import topics
from shared.envelope import ENVELOPE_VERSION, new_id
from shared.http import IsoDate, IsoDatetime

SOURCE = "ingest"
KNOWN_TYPES = frozenset({None, *get_args(EventType)})
ACCOUNT_FIELDS = ("name", "plan", "mrr", "owner", "stage", "segment", "renewal_date")
CONTACT_FIELDS = ("email", "name", "role")
_DATE: TypeAdapter[date] = TypeAdapter(IsoDate)
_DATETIME: TypeAdapter[datetime] = TypeAdapter(IsoDatetime)


@dataclass(slots=True)
class Identify:
    """An identify call: its traits are merged into the contact of ``key``."""

    index: int
    key: str
    user_id: str
    traits: dict[str, Any]
    at: datetime
    message_id: str
    account_hint: str | None


@dataclass(slots=True)
class Parked:
    """A usage event with no account yet: kept in ingest's database until its user is."""

    index: int
    key: str
    kind: str
    data: dict[str, Any]
    occurred_at: datetime


@dataclass(slots=True)
class Outcome:
    """What one request produced: Kafka messages to publish, what to keep in ingest's
    database, and refused events by index."""

    messages: list[tuple[str, bytes, bytes]] = field(default_factory=list)  # topic, key, value
    rejected: list[tuple[int, str]] = field(default_factory=list)
    links: dict[str, tuple[str, datetime]] = field(default_factory=dict)  # key -> account, at
    aliases: dict[str, str] = field(default_factory=dict)  # alias key -> user key
    identifies: list[Identify] = field(default_factory=list)
    parked: list[Parked] = field(default_factory=list)
    alias_calls: int = 0
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def kept(self) -> int:
        """Events accepted: published, parked, merged into a contact or an alias."""
        return len(self.messages) + len(self.parked) + len(self.identifies) + self.alias_calls

    @property
    def needs_database(self) -> bool:
        return bool(self.links or self.aliases or self.identifies or self.parked)


def describe(error: ValidationError) -> str:
    """'field: message' for each problem, so the client sees which field is wrong."""
    parts = []
    for err in error.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"]) or "event"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)[:1000]


def validate(raw: Any, forced_type: str | None) -> SegmentMessage | str:
    if not isinstance(raw, dict):
        return "event must be a JSON object"
    if forced_type is not None:
        given = raw.get("type")
        if not (given is None or (isinstance(given, str) and given in KNOWN_TYPES)):
            # the path decides the type; a bad value in the body is still refused
            return f"type: must be one of {sorted(t for t in KNOWN_TYPES if t)} when given"
        raw = {**raw, "type": forced_type}
    elif raw.get("type") is None:
        return "type: field required (track, identify, group, page, screen or alias)"
    try:
        return SegmentMessage.model_validate(raw)
    except ValidationError as exc:
        return describe(exc)


def _clean_float(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"traits.{name} must be a number")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"traits.{name} must be a number") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"traits.{name} must be a non-negative number")
    return number


def _no_nul(value: Any, where: str) -> None:
    """PostgreSQL text (and what health/playbooks store from traits) cannot hold NUL."""
    stack: list[tuple[Any, str]] = [(value, where)]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str):
            if "\x00" in node:
                raise ValueError(f"{path} must not contain NUL characters")
        elif type(node) is dict:
            for key, child in node.items():
                if "\x00" in key:
                    raise ValueError(f"{path}: a key must not contain NUL characters")
                stack.append((child, f"{path}.{key}"))
        elif type(node) is list:
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(node))


def _clean_str(value: Any, name: str, limit: int = 255) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ValueError(f"traits.{name} must be a string")
    return str(value)[:limit]


def _renewal_date(value: Any) -> str | None:
    """A real date: ``YYYY-MM-DD``, or an ISO 8601 date-time (its UTC date is kept)."""
    if value is None:
        return None
    try:
        return _DATE.validate_python(value).isoformat()
    except ValidationError:
        pass
    try:
        return _DATETIME.validate_python(value).astimezone(UTC).date().isoformat()
    except ValidationError:
        raise ValueError(
            "traits.renewal_date must be a date (YYYY-MM-DD) between 1900 and 2999"
        ) from None


def account_data(msg: SegmentMessage, message_id: str) -> dict[str, Any]:
    traits = msg.traits
    _no_nul(traits, "traits")
    owner = _clean_str(traits.get("owner"), "owner")
    if owner is not None and "@" not in owner:
        raise ValueError("traits.owner must be the CSM's email address")
    return {
        "message_id": message_id,
        "name": _clean_str(traits.get("name"), "name"),
        "plan": _clean_str(traits.get("plan"), "plan"),
        "mrr": _clean_float(traits.get("mrr"), "mrr"),
        "owner": owner.lower() if owner else None,
        "stage": _clean_str(traits.get("stage"), "stage"),
        "segment": _clean_str(traits.get("segment"), "segment"),
        "renewal_date": _renewal_date(traits.get("renewal_date")),
        "traits": {k: v for k, v in traits.items() if k not in ACCOUNT_FIELDS},
    }


def contact_data(msg: SegmentMessage, message_id: str) -> dict[str, Any]:
    traits = msg.traits
    _no_nul(traits, "traits")
    return {
        "message_id": message_id,
        "user_id": msg.userId or f"anonymous:{msg.anonymousId}",
        "email": _clean_str(traits.get("email"), "email", 320),
        "name": _clean_str(traits.get("name"), "name"),
        "role": _clean_str(traits.get("role"), "role"),
        "traits": {k: v for k, v in traits.items() if k not in CONTACT_FIELDS},
    }


def usage_data(msg: SegmentMessage, message_id: str, occurred_at: datetime) -> dict[str, Any]:
    kind = msg.type or "track"
    if kind == "track":
        event = msg.event or ""
    else:  # page / screen: Segment's "Loaded a Page" convention, named when we can
        event = f"{kind}:{msg.name}" if msg.name else kind
    return {
        "message_id": message_id,
        "kind": kind,
        "event": event,
        "user_id": msg.userId,
        "anonymous_id": msg.anonymousId,
        "timestamp": occurred_at,
        "properties": msg.properties,
        "context": msg.context,
    }


def envelope_bytes(
    *,
    type: str,
    account_id: str,
    data: dict[str, Any],
    occurred_at: datetime,
    produced_at: datetime,
    trace_id: str,
) -> bytes:
    """The shared envelope (``shared.envelope.Envelope``), serialised without a model."""
    return orjson.dumps(
        {
            "id": new_id(),
            "type": type,
            "version": ENVELOPE_VERSION,
            "occurred_at": occurred_at,
            "produced_at": produced_at,
            "source": SOURCE,
            "account_id": account_id,
            "data": data,
            "trace_id": trace_id,
        }
    )


@dataclass(slots=True)
class _Ready:
    """An event that passed every check; only its account is still to be found."""

    index: int
    msg: SegmentMessage
    topic: str
    kind: str
    data: dict[str, Any]
    occurred_at: datetime


def prepare(msg: SegmentMessage, received_at: datetime) -> _Ready | str:
    """The message an event makes, or the reason (naming the field) it is refused."""
    message_id = msg.messageId or new_id()
    try:
        occurred_at = msg.occurred_at(received_at)
        if msg.type == "group":
            topic, kind, data = topics.ACCOUNTS, "account.upserted", account_data(msg, message_id)
        elif msg.type == "identify":
            topic, kind, data = topics.ACCOUNTS, "contact.upserted", contact_data(msg, message_id)
        elif msg.type == "alias":
            topic, kind, data = "", "alias", {"message_id": message_id}
        else:
            topic, kind = topics.USAGE_EVENTS, "usage.track"
            data = usage_data(msg, message_id, occurred_at)
    except ValueError as exc:
        return str(exc)
    return _Ready(0, msg, topic, kind, data, occurred_at)


def _aliases_of(msg: SegmentMessage) -> dict[str, str]:
    """The ids this call ties to its user: an identify's anonymousId, an alias's previousId."""
    if msg.userId is None:
        return {}
    user = f"u:{msg.userId}"
    if msg.type == "alias" and msg.previousId and msg.previousId != msg.userId:
        return {f"a:{msg.previousId}": user, f"u:{msg.previousId}": user}
    if msg.type == "identify" and msg.anonymousId is not None:
        return {f"a:{msg.anonymousId}": user}
    return {}


def _validated(
    events: list[Any],
    out: Outcome,
    *,
    forced_type: str | None,
    max_event_bytes: int,
    sizes: list[int] | None,
    sent_at: datetime | None,
) -> list[_Ready]:
    """Every event that passes its checks; the others go to ``out.rejected``."""
    ready: list[_Ready] = []
    for index, raw in enumerate(events):
        size = sizes[index] if sizes is not None else len(orjson.dumps(raw))
        if size > max_event_bytes:
            out.rejected.append((index, f"event is larger than {max_event_bytes} bytes"))
            continue
        result = validate(raw, forced_type)
        if isinstance(result, str):
            out.rejected.append((index, result))
            continue
        if result.sentAt is None and sent_at is not None:
            result.sentAt = sent_at
        item = prepare(result, out.received_at)
        if isinstance(item, str):
            out.rejected.append((index, item))
            continue
        item.index = index
        ready.append(item)
    return ready


async def process(
    events: list[Any],
    *,
    forced_type: str | None,
    directory: AccountDirectory,
    trace_id: str,
    max_event_bytes: int,
    sizes: list[int] | None = None,
    sent_at: datetime | None = None,
) -> Outcome:
    """Validate, resolve accounts and build the messages for a list of raw events.

    ``sent_at`` is the batch's ``sentAt``, already validated (``schemas.SENT_AT``).
    Only calls that pass every check tie users to accounts or ids to users, in the batch
    or later. Events whose user has no account yet are parked, identifies become
    contact merges; both are kept by the caller (:mod:`services.ingest.keeping`).
    """
    out = Outcome()
    ready = _validated(
        events,
        out,
        forced_type=forced_type,
        max_event_bytes=max_event_bytes,
        sizes=sizes,
        sent_at=sent_at,
    )
    for item in ready:
        msg = item.msg
        if msg.type == "group" and msg.groupId:
            key = user_key(msg.userId, msg.anonymousId)
            earlier = out.links.get(key)
            if earlier is None or earlier[1] <= item.occurred_at:
                out.links[key] = (msg.groupId, item.occurred_at)
        out.aliases.update(_aliases_of(msg))

    usage = [r for r in ready if r.topic == topics.USAGE_EVENTS and r.msg.account_hint() is None]
    unresolved = {user_key(r.msg.userId, r.msg.anonymousId) for r in usage} - out.links.keys()
    unresolved |= {out.aliases[k] for k in unresolved if k in out.aliases} - out.links.keys()
    known = await directory.resolve(unresolved) if unresolved else Resolution()

    def account_of(key: str) -> str | None:
        direct = out.links.get(key)
        if direct is not None:
            return direct[0]
        account = known.accounts.get(key)
        if account is None:
            alias = out.aliases.get(key) or known.aliases.get(key)
            if alias is not None:
                linked = out.links.get(alias)
                account = linked[0] if linked is not None else known.accounts.get(alias)
        return account

    for item in ready:
        _place(item, out, account_of, trace_id)
    out.rejected.sort()
    return out


def _place(
    item: _Ready, out: Outcome, account_of: Callable[[str], str | None], trace_id: str
) -> None:
    """Route one checked event: published, parked, merged into a contact, or an alias."""
    msg = item.msg
    if msg.type == "alias":
        out.alias_calls += 1
        return
    if msg.type == "identify":
        out.identifies.append(
            Identify(
                item.index,
                user_key(msg.userId, msg.anonymousId),
                item.data["user_id"],
                msg.traits,
                item.occurred_at,
                item.data["message_id"],
                msg.account_hint(),
            )
        )
        return
    account_id = msg.account_hint()
    if account_id is None:
        key = user_key(msg.userId, msg.anonymousId)
        account_id = account_of(key)
        if account_id is None:
            out.parked.append(Parked(item.index, key, item.kind, item.data, item.occurred_at))
            return
    value = envelope_bytes(
        type=item.kind,
        account_id=account_id,
        data=item.data,
        occurred_at=item.occurred_at,
        produced_at=out.received_at,
        trace_id=trace_id,
    )
    out.messages.append((item.topic, account_id.encode(), value))
