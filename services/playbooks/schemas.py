"""Request and response models of the playbooks API (templates: :mod:`templates`)."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
)

from services.playbooks.templates import PlaybookTemplate, Problem
from shared.http import IsoDatetime

TaskStatus = Literal["open", "done", "skipped", "cancelled"]
GroupStatus = Literal["open", "completed", "exited", "cancelled"]
T = TypeVar("T")


def _with_offset(value: Any) -> Any:
    """A date-time in a body must say its UTC offset (a naive one is ambiguous)."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value  # IsoDatetime says what is wrong with it
        if parsed.tzinfo is None:
            raise ValueError("must have a UTC offset (2030-01-31T09:00:00+00:00)")
    return value


# An ISO 8601 date-time with its offset, years 1900-2999 (shared.http; near year 1 the
# conversion to UTC overflowed into a 500). Before-validators run last-listed first.
AwareIsoDatetime = Annotated[IsoDatetime, BeforeValidator(_with_offset)]
EmailStr = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$"),
    AfterValidator(str.lower),
]


class ContactOut(BaseModel):
    user_id: str
    email: str | None
    name: str | None
    role: str | None
    primary: bool = Field(description="trait primary: true (a primary-audience contact)")
    last_seen_at: datetime | None


class AccountOut(BaseModel):
    account_id: str
    name: str | None
    plan: str | None
    mrr: float | None
    owner: str | None
    stage: str | None
    segment: str | None
    renewal_date: date | None
    updated_at: datetime
    contacts: list[ContactOut]


class PlaybookOut(PlaybookTemplate):
    model_config = ConfigDict(extra="ignore")

    builtin: bool
    version: int
    created_at: datetime
    updated_at: datetime


class InvalidPlaybookOut(BaseModel):
    """A stored template that no longer validates (saved before a rule tightened): it
    starts no groups until a PUT replaces it. ``definition`` is what is stored."""

    id: str
    name: str
    phase: str
    enabled: bool
    builtin: bool
    version: int
    created_at: datetime
    updated_at: datetime
    invalid: Literal[True] = Field(
        default=True,
        description="only here: a valid playbook (which a GET can PUT back) has no such key",
    )
    errors: list[Problem]
    definition: dict[str, Any]


StoredPlaybookOut = PlaybookOut | InvalidPlaybookOut


class Delivery(BaseModel):
    status: str | None
    detail: str | None
    attempts: int
    updated_at: datetime | None


class CommentOut(BaseModel):
    id: int
    author: str
    body: str
    created_at: datetime


class TaskOut(BaseModel):
    id: str
    task_group_id: str
    account_id: str
    step_key: str
    position: int
    type: str
    automated: bool
    title: str
    description: str
    status: str
    assignee: str | None
    due_at: datetime
    overdue: bool
    completed_at: datetime | None
    detail: str | None
    template_id: str | None
    send_after: datetime | None = Field(description="when an email/slack step is sent")
    review_until: datetime | None = Field(
        description="end of the step's review window: skip it before then to not send it"
    )
    pending_send: bool = Field(
        description="an email/slack step not sent yet (POST /v1/tasks/{id}/skip cancels it)"
    )
    sent_at: datetime | None
    delivery: Delivery | None
    comments: list[CommentOut] | None = None


class TaskGroupOut(BaseModel):
    id: str
    account_id: str
    playbook_id: str
    playbook_name: str
    phase: str
    status: str
    assignee: str | None
    assignment_rule: str
    trigger_kind: str
    trigger_key: str
    triggers: int
    context: dict[str, Any]
    started_at: datetime
    closed_at: datetime | None
    closed_reason: str | None
    progress: float = Field(description="share of steps finished (done, skipped, cancelled)")
    steps_total: int
    steps_open: int
    overdue: int
    tasks: list[TaskOut] | None = None


class TaskGroupStart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    account_id: str = Field(min_length=1, max_length=255)
    playbook_id: str = Field(min_length=1, max_length=100)
    assignee: EmailStr | None = Field(default=None, description="else the playbook's rule")
    request_id: str | None = Field(
        default=None, max_length=200, description="retrying with the same id starts nothing new"
    )


class TaskGroupStarted(BaseModel):
    created: bool
    task_group: TaskGroupOut


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class TaskNote(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=5000)
    author: str | None = Field(default=None, max_length=320)


class Reassign(BaseModel):
    model_config = ConfigDict(extra="forbid")

    assignee: EmailStr | None = Field(description="a CSM's email; null = unassigned queue")


class CommentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    body: str = Field(min_length=1, max_length=10_000)
    author: str = Field(min_length=1, max_length=320)


class TaskPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    due_at: AwareIsoDatetime | None = Field(default=None, description="with a UTC offset")
    title: str | None = Field(default=None, min_length=1, max_length=300)
    description: str | None = Field(default=None, max_length=5000)


class CsmIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: EmailStr
    name: str = Field(min_length=1, max_length=200)
    slack_id: str | None = Field(default=None, max_length=100)
    team: str = Field(default="default", min_length=1, max_length=100)
    capacity: StrictInt = Field(default=25, ge=0, le=100_000, description="most open tasks")
    active: StrictBool = True


class CsmPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    slack_id: str | None = Field(default=None, max_length=100)
    team: str | None = Field(default=None, min_length=1, max_length=100)
    capacity: StrictInt | None = Field(default=None, ge=0, le=100_000)
    active: StrictBool | None = None


class CsmOut(BaseModel):
    email: str
    name: str
    slack_id: str | None
    team: str
    capacity: int
    active: bool
    auto_added: bool
    open_tasks: int
    created_at: datetime
    updated_at: datetime


class CsmStats(BaseModel):
    email: str
    name: str
    team: str
    capacity: int
    open: int
    overdue: int
    done_this_week: int


class PlaybookStats(BaseModel):
    playbook_id: str
    playbook_name: str
    started: int
    open: int
    completed: int
    exited: int
    completion_rate: float | None
    median_days_to_complete: float | None


class Stats(BaseModel):
    generated_at: datetime
    week_started_at: datetime
    unassigned_open: int
    csms: list[CsmStats]
    playbooks: list[PlaybookStats]
