"""Request and response bodies of the health API."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, field_validator

from services.health.registry import MAX_MRR
from services.health.routes import IsoDate, IsoDatetime

Band = Literal["green", "yellow", "red"]
Number = Annotated[float, Strict()]  # JSON numbers only: true/false or "3" are refused
Int = Annotated[int, Strict()]
Bool = Annotated[bool, Strict()]


def _utc(value: datetime) -> datetime:
    """SQLite hands datetimes back naive; they were stored as UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


class Component(BaseModel):
    metric: str
    weight: float
    level: float = Field(description="-1..1: recent level vs the segment median (log scale)")
    trend: float = Field(description="-1..1: recent level vs the account's own baseline")
    points: float = Field(description="this metric's contribution to score - neutral")
    recent: float | None = None
    baseline: float | None = None
    segment_median: float | None = None
    reason: str


class ScoreOut(BaseModel):
    score: float
    band: Band
    change: float = Field(description="score minus the score as of a week before")
    as_of: date
    computed_at: UtcDatetime
    components: list[Component]


class ContactOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    user_id: str
    email: str | None
    name: str | None
    role: str | None
    traits: dict[str, Any]


class AccountOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    account_id: str
    name: str | None
    plan: str | None
    mrr: float | None
    owner: str | None
    stage: str | None
    segment: str | None
    renewal_date: date | None
    traits: dict[str, Any]
    first_seen: date | None
    last_active: date | None
    previous_owner: str | None
    owner_changed_at: UtcDatetime | None
    stage_changed_at: UtcDatetime | None = Field(
        default=None, description="when the current stage began; none = since first seen"
    )
    status: Literal["active", "churned"] = "active"
    churned_at: date | None = None
    churn_reason: str | None = None
    health: ScoreOut | None = None
    contacts: list[ContactOut] | None = Field(default=None, description="single-account GET")

    @field_validator("status", mode="before")
    @classmethod
    def _status(cls, value: str | None) -> str:
        return value or "active"


class AccountList(BaseModel):
    total: int
    items: list[AccountOut]


class AccountUpdate(BaseModel):
    """Fields a CS tool may set; omitted fields stay as they are."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, max_length=300)
    plan: str | None = Field(default=None, max_length=300)
    mrr: Number | None = Field(default=None, ge=0, le=MAX_MRR, allow_inf_nan=False)
    owner: str | None = Field(default=None, max_length=320, description="the CSM's email")
    stage: str | None = Field(default=None, max_length=300)
    segment: str | None = Field(default=None, max_length=300)
    renewal_date: IsoDate | None = None

    @field_validator("owner")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and "@" not in value:
            raise ValueError("owner must be the CSM's email address")
        return value.lower() if value else value


class ScorePoint(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    day: date
    score: float
    band: Band
    components: list[Component]
    computed_at: UtcDatetime


class MetricSeries(BaseModel):
    metric: str
    name: str
    kind: str
    days: list[date]
    values: list[float]


class MetricsOut(BaseModel):
    account_id: str
    start: date
    end: date
    metrics: list[MetricSeries]


class AlertBudget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    daily_budget_per_csm: Int = Field(ge=0, le=100_000)


class RuleIn(BaseModel):
    """A rule to create or replace; ``params`` are checked against the rule ``type``."""

    model_config = ConfigDict(extra="forbid")

    type: str
    name: str = Field(min_length=1, max_length=200)
    enabled: Bool = True
    severity: Int = Field(default=3, ge=1, le=5)
    cooldown_days: Int = Field(default=7, ge=0, le=365)
    params: dict[str, Any] = Field(default_factory=dict)


class RuleCreate(RuleIn):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,99}$")


class RuleOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    type: str
    name: str
    enabled: bool
    severity: int
    cooldown_days: int
    params: dict[str, Any]
    created_at: UtcDatetime
    updated_at: UtcDatetime


class BacktestIn(BaseModel):
    """Try other parameters before saving them; omitted = the rule's stored ones."""

    model_config = ConfigDict(extra="forbid")

    params: dict[str, Any] | None = None
    cooldown_days: Int | None = Field(default=None, ge=0, le=365)


class AlertOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    account_id: str
    rule_id: str
    rule_type: str
    status: str
    severity: int
    priority: float
    owner: str | None
    title: str
    reason: str
    details: dict[str, Any]
    opened_at: UtcDatetime
    updated_at: UtcDatetime
    acknowledged_at: UtcDatetime | None
    snoozed_until: UtcDatetime | None
    resolved_at: UtcDatetime | None
    resolved_by: str | None
    deferred_day: date | None


class AlertList(BaseModel):
    total: int
    items: list[AlertOut]


class SnoozeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    until: IsoDatetime | None = None
    days: Number | None = Field(default=None, gt=0, le=365)


class DigestOut(BaseModel):
    day: date
    owners: dict[str, list[AlertOut]]


class RecomputeOut(BaseModel):
    as_of: date
    accounts: int
    scores_changed: int
    alerts: dict[str, int]


class OutcomeIn(BaseModel):
    """An outcome to record; the same (type, at) twice is one outcome."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["churned", "renewed", "downgraded", "upgraded", "reactivated", "active"] = Field(
        description="'active' is the same as 'reactivated': the account is back"
    )
    at: IsoDate = Field(description="the day it happened (YYYY-MM-DD)")
    reason: str | None = Field(default=None, max_length=500)


class OutcomeOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    account_id: str
    type: str
    at: date
    reason: str | None
    source: str
    mrr: float | None = Field(description="the account's MRR when it was recorded")
    plan: str | None
    segment: str | None
    recorded_at: UtcDatetime


class OutcomeList(BaseModel):
    account_id: str
    status: Literal["active", "churned"]
    churned_at: date | None
    items: list[OutcomeOut]


class ChurnGroup(BaseModel):
    accounts: int
    mrr_lost: float
    reason: str | None = None
    segment: str | None = None
    plan: str | None = None


class OutcomeSummary(BaseModel):
    since: date
    until: date
    churned: int = Field(description="churns in the window not followed by a reactivation")
    won_back: int = Field(description="churns in the window the account came back from")
    mrr_lost: float = Field(description="the churned accounts' MRR when they churned")
    by_reason: list[ChurnGroup]
    by_segment: list[ChurnGroup]
    by_plan: list[ChurnGroup]
    counts: dict[str, int] = Field(description="outcomes in the window, per type")


class CatalogMetric(BaseModel):
    name: str = Field(description="the event name ('(other)': names beyond the cap)")
    slug: str
    count_metric: str = Field(description="rollup key of its events per day")
    users_metric: str = Field(description="rollup key of its distinct users per day")
    events_30d: float
    events_90d: float
    accounts_30d: int
    share_of_accounts: float = Field(description="accounts_30d / active_accounts_30d")


class Catalog(BaseModel):
    as_of: date
    cap: int = Field(description="HEALTH_MAX_EVENT_METRICS")
    registered: int
    active_accounts_30d: int
    metrics: list[CatalogMetric]
