"""From a template and an account to the steps of a new task group: pure, no I/O.

Due dates come from the template (``due_days`` after the start); a step whose conditions
do not hold for the account is created already ``skipped`` so the group shows why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from services.playbooks.templates import Condition, PlaybookTemplate, Step

DETAIL_MAX = 1000  # tasks.detail


@dataclass(frozen=True, slots=True)
class AccountFacts:
    account_id: str
    name: str | None = None
    plan: str | None = None
    mrr: float | None = None
    owner: str | None = None
    stage: str | None = None
    segment: str | None = None
    renewal_date: date | None = None


@dataclass(frozen=True, slots=True)
class TriggerFacts:
    """What started the group: the alert's rule and severity, when it was an alert."""

    kind: str  # alert, lifecycle, manual
    rule_type: str | None = None
    severity: int | None = None
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class StepPlan:
    step: Step
    position: int
    status: str  # open or skipped
    due_at: datetime
    detail: str | None = None

    @property
    def needs_person(self) -> bool:
        """Counts towards a CSM's load: an open task for a person."""
        return self.status == "open" and not self.step.automated


def _value(name: str, account: AccountFacts, trigger: TriggerFacts) -> Any:
    if name == "severity":
        return trigger.severity
    if name == "rule_type":
        return trigger.rule_type
    return getattr(account, name)


def condition_holds(condition: Condition, account: AccountFacts, trigger: TriggerFacts) -> bool:
    actual = _value(condition.field, account, trigger)
    if actual is None:
        return condition.when_missing
    expected = condition.value
    op = condition.op
    if op in ("eq", "ne"):
        return bool(actual == expected) == (op == "eq")
    if op in ("in", "not_in"):
        inside = actual in (expected if isinstance(expected, list) else [expected])
        return inside == (op == "in")
    try:
        number, bound = float(actual), float(expected)
    except (TypeError, ValueError):
        return False
    return {"gt": number > bound, "gte": number >= bound, "lt": number < bound}.get(
        op, number <= bound
    )


def conditions_hold(
    conditions: list[Condition], account: AccountFacts, trigger: TriggerFacts
) -> bool:
    return all(condition_holds(c, account, trigger) for c in conditions)


def plan_steps(
    template: PlaybookTemplate,
    account: AccountFacts,
    trigger: TriggerFacts,
    *,
    started_at: datetime,
) -> list[StepPlan]:
    plans: list[StepPlan] = []
    for position, step in enumerate(template.steps):
        due_at = started_at + timedelta(days=step.due_days)
        failed = [c for c in step.conditions if not condition_holds(c, account, trigger)]
        if failed:
            c = failed[0]
            detail = f"condition not met: {c.field} {c.op} {c.value!r}"[:DETAIL_MAX]
            plans.append(StepPlan(step, position, "skipped", due_at, detail))
        else:
            plans.append(StepPlan(step, position, "open", due_at))
    return plans


def progress(statuses: list[str]) -> float:
    """Share of the group's steps that are finished (done, skipped or cancelled)."""
    if not statuses:
        return 1.0
    return round(sum(1 for s in statuses if s != "open") / len(statuses), 4)
