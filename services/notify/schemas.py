"""Request and response bodies of notify's REST API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

TEMPLATE_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,99}$"


class Body(BaseModel):
    """A request body: text fields must not hold NUL (PostgreSQL text cannot)."""

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if isinstance(value, str) and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value


class DeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    idempotency_key: str
    account_id: str
    channel: str
    template_id: str
    recipient: str | None
    recipient_name: str | None
    recipient_role: str | None
    contact_id: str | None
    task_group_id: str | None
    step_key: str | None
    automated: bool
    status: str
    attempts: int
    deferrals: int = Field(description="times a cap deferred it")
    next_attempt_at: datetime | None
    last_error: str | None
    provider_response: str | None
    message_id: str | None
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    opened_at: datetime | None
    clicked_at: datetime | None

    @field_validator("recipient")
    @classmethod
    def _hide_webhook(cls, value: str | None) -> str | None:
        if value and value.startswith(("http://", "https://")):
            return "webhook"
        return value


class DeliveryList(BaseModel):
    items: list[DeliveryOut]
    limit: int
    offset: int


class SuppressionIn(Body):
    email: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")
    reason: Literal["manual", "unsubscribed", "bounced", "complained"] = "manual"
    note: str | None = Field(default=None, max_length=2000)
    account_id: str | None = Field(default=None, max_length=255)


class SuppressionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    email: str
    reason: str
    note: str | None
    account_id: str | None
    delivery_id: str | None
    created_at: datetime


class TemplateIn(Body):
    """A template body. Email: subject + html and/or text. Slack: text (+ Block Kit blocks)."""

    name: str = Field(min_length=1, max_length=300)
    channel: Literal["email", "slack"]
    description: str | None = Field(default=None, max_length=2000)
    subject: str | None = Field(default=None, max_length=2000)
    html: str | None = Field(default=None, max_length=200_000)
    text: str | None = Field(default=None, max_length=100_000)
    blocks: list[dict[str, Any]] | None = Field(default=None, max_length=50)
    sample_context: dict[str, Any] = Field(default_factory=dict)


class TemplateCreate(TemplateIn):
    id: str = Field(pattern=TEMPLATE_ID_PATTERN)


class TemplateOut(TemplateIn):
    id: str
    builtin: bool
    overrides_builtin: bool = False


class PreviewIn(Body):
    context: dict[str, Any] = Field(default_factory=dict)


class PreviewOut(BaseModel):
    channel: Literal["email", "slack"]
    subject: str | None = None
    html: str | None = None
    text: str
    blocks: list[Any] | None = None
