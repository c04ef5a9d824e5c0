"""Segment HTTP Tracking API messages, validated with the field names Segment uses.

Limits follow Segment's: ``messageId`` under 100 characters, ids under 255, event names
under 200, at most 8 levels of nesting in ``properties``/``traits``/``context``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    WithJsonSchema,
    field_validator,
    model_validator,
)

MAX_DEPTH = 8
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
FUTURE_SLACK = timedelta(days=1)

EventType = Literal["track", "identify", "group", "page", "screen", "alias"]


def _stringify_id(value: Any) -> Any:
    """Segment's SDKs send numeric ids as numbers at times; they are still ids."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _id_schema(max_length: int) -> WithJsonSchema:
    return WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "minLength": 1, "maxLength": max_length},
                {"type": "integer"},
            ]
        }
    )


Id = Annotated[
    str,
    BeforeValidator(_stringify_id),
    StringConstraints(min_length=1, max_length=255),
    _id_schema(255),
]
MessageId = Annotated[
    str,
    BeforeValidator(_stringify_id),
    StringConstraints(min_length=1, max_length=100),
    _id_schema(100),
]


def _too_deep(value: dict[str, Any]) -> bool:
    """Whether ``value`` nests deeper than MAX_DEPTH; iterative, flat dicts cost one pass."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, level = stack.pop()
        children = node.values() if type(node) is dict else node
        for child in children:
            if type(child) is dict or type(child) is list:
                if level >= MAX_DEPTH:
                    return True
                stack.append((child, level + 1))
    return False


def _check_time(value: datetime | None) -> datetime | None:
    """Naive means UTC; between 2000-01-01 and one day ahead."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if value < EARLIEST or value > datetime.now(UTC) + FUTURE_SLACK:
        raise ValueError("timestamp is out of range (2000-01-01 to one day ahead)")
    return value


Timestamp = Annotated[datetime, AfterValidator(_check_time)]
"""A Segment timestamp (``timestamp``, ``originalTimestamp``, ``sentAt``, batch ``sentAt``)."""
SENT_AT: TypeAdapter[datetime] = TypeAdapter(Timestamp)


def corrected_time(original: datetime, sent_at: datetime, received_at: datetime) -> datetime:
    """``originalTimestamp`` moved by the skew between the client's clock and ours."""
    try:
        corrected = received_at - (sent_at - original)
    except OverflowError:
        corrected = None
    if corrected is None or corrected < EARLIEST or corrected > received_at + FUTURE_SLACK:
        raise ValueError(
            "originalTimestamp: out of range once corrected by sentAt's clock skew "
            "(2000-01-01 to one day ahead)"
        )
    return corrected


class SegmentMessage(BaseModel):
    """One call of the tracking API. Unknown fields are kept out, not refused."""

    model_config = ConfigDict(extra="ignore", str_max_length=8192)

    type: EventType | None = None
    userId: Id | None = None
    anonymousId: Id | None = None
    messageId: MessageId | None = None
    event: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    name: Annotated[str, StringConstraints(max_length=200)] | None = None
    groupId: Id | None = None
    previousId: Id | None = None
    properties: dict[str, Any] = Field(default_factory=dict)
    traits: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    timestamp: Timestamp | None = None
    originalTimestamp: Timestamp | None = None
    sentAt: Timestamp | None = None
    writeKey: str | None = Field(default=None, max_length=2048)

    @field_validator("properties", "traits", "context")
    @classmethod
    def _not_too_deep(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value and _too_deep(value):
            raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
        return value

    @field_validator("userId", "anonymousId", "messageId", "groupId", "previousId", "event", "name")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        """Ids and names end up as keys in databases; PostgreSQL text cannot hold NUL."""
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value

    @model_validator(mode="after")
    def _fields_for_type(self) -> SegmentMessage:
        if self.userId is None and self.anonymousId is None:
            raise ValueError("userId or anonymousId is required")
        if self.type == "track" and not self.event:
            raise ValueError("event is required for track")
        if self.type == "group" and not self.groupId:
            raise ValueError("groupId is required for group")
        if self.type == "alias" and not (self.previousId and self.userId):
            raise ValueError("previousId and userId are required for alias")
        if self.type == "identify" and not self.traits:
            # RudderStack's SDKs send an identify's traits as context.traits only
            traits = self.context.get("traits")
            if isinstance(traits, dict):
                self.traits = traits
        if "\x00" in str(self.context.get("groupId", "")):
            raise ValueError("context.groupId must not contain NUL characters")
        return self

    def occurred_at(self, received_at: datetime) -> datetime:
        """Segment's rule: ``timestamp``, else ``originalTimestamp`` corrected by clock skew.

        Raises ``ValueError`` naming the field when the corrected time is out of range.
        """
        if self.timestamp is not None:
            return self.timestamp
        if self.originalTimestamp is not None:
            if self.sentAt is not None:
                return corrected_time(self.originalTimestamp, self.sentAt, received_at)
            return self.originalTimestamp
        return received_at

    def account_hint(self) -> str | None:
        """``groupId``, else ``context.groupId``."""
        if self.groupId:
            return self.groupId
        hint = self.context.get("groupId")
        if isinstance(hint, int | str) and not isinstance(hint, bool) and str(hint):
            return str(hint)[:255]
        return None


class BatchRequest(BaseModel):
    """``POST /v1/batch`` (also what Segment's SDKs send)."""

    model_config = ConfigDict(extra="ignore")

    batch: list[dict[str, Any]] = Field(max_length=2500)
    sentAt: Timestamp | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    writeKey: str | None = None


class TrackResponse(BaseModel):
    success: bool = True


class Rejection(BaseModel):
    index: int
    reason: str


class BatchResponse(BaseModel):
    success: bool = True
    accepted: int | None = None
    rejected: list[Rejection] | None = None


class ErrorResponse(BaseModel):
    success: bool = False
    detail: str
