"""Metric and scoring configuration: a YAML default, overridable at runtime over REST.

A metric says which events count and how they roll up per account and day:
``count`` (events), ``distinct_users`` (active users), ``sum`` or ``last`` (a numeric
property). ``event_count`` and ``event_users`` read the rollups every event name has of its
own (:mod:`eventnames`), so picking one scores on the history already kept. Metrics with
weight 0 are rolled up and shown but not scored.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator

from services.health.eventnames import count_key, slug_of, users_key

Number = Annotated[float, Strict()]  # over REST: JSON numbers only, not true/false or "3"
Int = Annotated[int, Strict()]
MetricKind = Literal["count", "distinct_users", "sum", "last", "event_count", "event_users"]
EVENT_KINDS = ("event_count", "event_users")
NEGATIVE_EVENTS = r"error|fail|crash|exception|ticket|complain|bug|timeout|reject"


class MetricDef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$", description="slug, e.g. reports_created")
    name: str = Field(default="", max_length=200)
    kind: MetricKind = "count"
    events: list[str] = Field(default_factory=list, description="event names; empty = all")
    property: str | None = Field(default=None, max_length=200)
    event: str | None = Field(
        default=None,
        min_length=1,
        max_length=1000,
        description="event_count / event_users: the event name, e.g. Report Created",
    )
    weight: Number = Field(default=1.0, ge=0, le=100)

    @model_validator(mode="after")
    def _property_needed(self) -> MetricDef:
        if self.kind in ("sum", "last") and not self.property:
            raise ValueError(f"metric '{self.key}': kind '{self.kind}' needs a 'property'")
        if self.kind in EVENT_KINDS and not self.event:
            raise ValueError(f"metric '{self.key}': kind '{self.kind}' needs an 'event'")
        if self.kind not in EVENT_KINDS and self.event is not None:
            raise ValueError(f"metric '{self.key}': 'event' is for event_count / event_users")
        if not self.name:
            self.name = self.key
        return self

    def matches(self, event: str) -> bool:
        """Whether ``event`` rolls up under this metric's own key (event kinds never do:
        they read the per-event rollups)."""
        return self.kind not in EVENT_KINDS and (not self.events or event in self.events)

    def stored_as(self) -> str:
        """The rollup key its daily values are stored under (a method: ``property`` is a
        field here)."""
        if self.kind == "event_count" and self.event:
            return count_key(slug_of(self.event))
        if self.kind == "event_users" and self.event:
            return users_key(slug_of(self.event))
        return self.key


class ScoringParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    recent_days: Int = Field(default=7, ge=1, le=60)
    baseline_days: Int = Field(default=28, ge=1, le=180)
    level_share: Number = Field(default=0.3, ge=0, le=1)
    level_span: Number = Field(default=3.0, gt=0, le=20)
    neutral: Number = Field(default=75.0, gt=0, lt=100)
    green: Number = Field(default=70.0, ge=0, le=100)
    yellow: Number = Field(default=40.0, ge=0, le=100)
    # the default formula: the configured metrics plus parts over every event name
    # (README "The score"); false: the configured metrics alone
    event_parts: Annotated[bool, Strict()] = False  # JSON true/false only
    negative_events: str = Field(
        default=NEGATIVE_EVENTS,
        max_length=500,
        description="regular expression (case-insensitive search) of friction event names",
    )

    @model_validator(mode="after")
    def _bands_ordered(self) -> ScoringParams:
        if self.yellow > self.green:
            raise ValueError("scoring.yellow must not be above scoring.green")
        try:
            re.compile(self.negative_events)
        except re.error as exc:
            raise ValueError(f"scoring.negative_events is not a regular expression: {exc}") from exc
        return self

    def negative(self, names: list[str]) -> list[bool]:
        pattern = re.compile(self.negative_events, re.IGNORECASE)
        return [pattern.search(n) is not None for n in names]


class MetricsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metrics: list[MetricDef] = Field(min_length=1, max_length=50)
    scoring: ScoringParams = Field(default_factory=ScoringParams)

    @model_validator(mode="after")
    def _unique_and_weighted(self) -> MetricsConfig:
        keys = [m.key for m in self.metrics]
        if len(set(keys)) != len(keys):
            raise ValueError("metrics: keys must be unique")
        if not any(m.weight > 0 for m in self.metrics):
            raise ValueError("metrics: at least one metric needs a weight above 0")
        return self

    @property
    def keys(self) -> list[str]:
        return [m.key for m in self.metrics]

    @property
    def storage_keys(self) -> list[str]:
        """The rollup keys the metrics read (per metric, in order)."""
        return [m.stored_as() for m in self.metrics]

    @property
    def event_names(self) -> set[str]:
        """Event names the metrics pick by name: registered whatever the cap."""
        return {m.event for m in self.metrics if m.event is not None}

    @property
    def rolled_up(self) -> list[MetricDef]:
        """Metrics rolled up under their own key (not the per-event ones)."""
        return [m for m in self.metrics if m.kind not in EVENT_KINDS]


def load_config_file(path: Path) -> MetricsConfig:
    raw = yaml.safe_load(path.read_text()) or {}
    return MetricsConfig.model_validate(
        {"metrics": raw.get("metrics", []), "scoring": raw.get("scoring", {})}
    )


class RuleDef(BaseModel):
    """An alert rule as configured (YAML seed, ``/v1/alert-rules``)."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,99}$")
    type: str
    name: str = Field(min_length=1, max_length=200)
    enabled: bool = True
    severity: int = Field(default=3, ge=1, le=5)
    cooldown_days: int = Field(default=7, ge=0, le=365)
    params: dict[str, Any] = Field(default_factory=dict)


def load_default_rules(path: Path) -> list[RuleDef]:
    raw = yaml.safe_load(path.read_text()) or {}
    return [RuleDef.model_validate(r) for r in raw.get("alert_rules", [])]
