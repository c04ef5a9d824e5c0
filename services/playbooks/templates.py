"""The playbook template: what a YAML file (or a JSON body) may say, and its validation.

Pure: no I/O. A template is validated whole on save, and every problem names its field
(``steps.2.template_id``) so an admin editing YAML by hand sees where it went wrong.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    model_validator,
)

Phase = Literal["onboarding", "adoption", "expansion", "renewal", "risk"]
StepType = Literal["task", "email", "slack"]
AssigneeRuleName = Literal["owner", "round_robin", "least_loaded", "unassigned"]
LifecycleEvent = Literal["stage_entered", "owner_changed"]
ConditionField = Literal["stage", "plan", "segment", "mrr", "severity", "rule_type"]
ConditionOp = Literal["eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte"]

SLUG = r"^[a-z0-9][a-z0-9_-]{0,99}$"
_SLUG = re.compile(SLUG)
NUMERIC_FIELDS = frozenset({"mrr", "severity"})
ORDER_OPS = frozenset({"gt", "gte", "lt", "lte"})
LIST_OPS = frozenset({"in", "not_in"})

# Every string that ends up in a column is bounded by that column (models.py), so a
# template that saves is one whose groups can be stored on PostgreSQL too.
RuleName = Annotated[str, StringConstraints(min_length=1, max_length=200)]
RuleId = Annotated[str, StringConstraints(min_length=1, max_length=255)]
StageName = Annotated[str, StringConstraints(min_length=1, max_length=100)]  # accounts.stage
EventName = Annotated[str, StringConstraints(min_length=1, max_length=200)]  # exit events
RoleName = Annotated[str, StringConstraints(min_length=1, max_length=100)]  # contacts.role
MAX_VALUE_TEXT = 100  # stage, plan, segment and rule_type are 100-char columns or less
MAX_VALUE_ITEMS = 100


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, strict=True)


class Trigger(Strict):
    """What starts a group. ``alert``: a health alert of one of ``rule_types`` (or
    ``rule_ids``) at ``min_severity`` or above; ``lifecycle``: the account entering one of
    ``stages``, or its owner changing; ``manual``: only by hand (any playbook can be)."""

    kind: Literal["alert", "lifecycle", "manual"]
    rule_types: list[RuleName] = Field(default_factory=list, max_length=50)
    rule_ids: list[RuleId] = Field(default_factory=list, max_length=200)
    min_severity: int = Field(default=1, ge=1, le=5)
    event: LifecycleEvent | None = None
    stages: list[StageName] = Field(default_factory=list, max_length=20)

    @model_validator(mode="after")
    def _complete(self) -> Trigger:
        if self.kind == "alert" and not (self.rule_types or self.rule_ids):
            raise ValueError("an alert trigger needs rule_types or rule_ids")
        if self.kind == "lifecycle" and self.event is None:
            raise ValueError("a lifecycle trigger needs event (stage_entered or owner_changed)")
        if self.event == "stage_entered" and not self.stages:
            raise ValueError("event stage_entered needs stages")
        return self


class Assignee(Strict):
    """Who gets the tasks: ``owner`` (falls back to ``fallback`` when the account has no
    active owner), ``round_robin`` / ``least_loaded`` within ``team``, or ``unassigned``."""

    rule: AssigneeRuleName = "owner"
    team: str | None = Field(default=None, min_length=1, max_length=100)
    fallback: Literal["round_robin", "least_loaded", "unassigned"] = "least_loaded"


class Recipients(Strict):
    """Who an automated step goes to: the account's contacts (optionally only some
    ``roles``), the owner CSM, or a fixed Slack ``channel``."""

    kind: Literal["contacts", "owner", "channel"] = "contacts"
    roles: list[RoleName] = Field(default_factory=list, max_length=20)
    channel: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _channel(self) -> Recipients:
        if self.kind == "channel" and not self.channel:
            raise ValueError("kind channel needs channel")
        return self


AudienceKind = Literal["primary", "all", "roles"]
ADMIN_ROLES = ("admin", "owner")  # a contact with one of these roles is a primary contact
PRIMARY_FALLBACK = 3  # without primary contacts: this many most recently seen ones


class Audience(Strict):
    """Which of the account's contacts an email step reaches. ``primary``: contacts with
    the trait ``primary: true`` or an admin/owner role, else the 3 most recently seen;
    ``roles``: contacts with one of ``roles``; ``all``: every contact (only when asked).

    YAML may say ``audience: primary``, ``audience: all`` or ``audience: {roles: [...]}``.
    """

    kind: AudienceKind = "primary"
    roles: list[RoleName] = Field(default_factory=list, max_length=20)

    @model_validator(mode="before")
    @classmethod
    def _short_forms(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"kind": data}
        if isinstance(data, dict) and "roles" in data and "kind" not in data:
            return {**data, "kind": "roles"}
        return data

    @model_validator(mode="after")
    def _roles_fit_kind(self) -> Audience:
        if self.kind == "roles" and not self.roles:
            raise ValueError("audience roles needs at least one role")
        if self.kind != "roles" and self.roles:
            raise ValueError(f"audience {self.kind} takes no roles (use {{roles: [...]}})")
        return self


class Condition(Strict):
    """The account (or the alert) must match, checked at group start. ``when_missing`` is
    the answer when the account does not have the field (mrr unknown...)."""

    field: ConditionField
    op: ConditionOp = "eq"
    value: Any = Field(
        default=None,
        description="a number for mrr/severity, a string otherwise; a list of them for "
        "in/not_in; checked on save (see condition_problems)",
    )
    when_missing: bool = False


class Step(Strict):
    key: str = Field(pattern=SLUG, description="unique within the playbook; part of the key")
    type: StepType = "task"
    title: str = Field(min_length=1, max_length=300)
    description: str = Field(default="", max_length=5000)
    due_days: float = Field(
        default=0,
        ge=0,
        le=3650,
        description="due (task) or send (email, slack) this many days after the start",
    )
    assignee: Assignee | None = None
    template_id: str | None = Field(default=None, min_length=1, max_length=200)
    to: Recipients | None = None
    audience: Audience | None = Field(
        default=None,
        description="email steps to contacts: primary (the default), all, or {roles: [...]}",
    )
    delay_minutes: float | None = Field(
        default=None,
        ge=0,
        le=10080,
        description="email/slack: a review window after the due time, in which the CSM "
        "sees the pending send and can skip it; unset = PLAYBOOKS_REVIEW_MINUTES for a "
        "day-0 email to contacts of an alert-started group, else none",
    )
    from_owner: bool = Field(default=False, description="send as the CSM (from_name)")
    conditions: list[Condition] = Field(default_factory=list, max_length=20)
    context: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _delay_alias(cls, data: Any) -> Any:
        if isinstance(data, dict) and "delay_days" in data and "due_days" not in data:
            data = {**data, "due_days": data["delay_days"]}
            del data["delay_days"]
        return data

    @property
    def automated(self) -> bool:
        return self.type != "task"

    @property
    def to_contacts(self) -> bool:
        """An email to the account's contacts (the customer), not to the CSM."""
        return self.type == "email" and (self.to is None or self.to.kind == "contacts")

    def effective_audience(self) -> Audience:
        """The step's audience; a legacy ``to: {roles: [...]}`` reads as those roles."""
        if self.audience is not None:
            return self.audience
        if self.to is not None and self.to.roles:
            return Audience(kind="roles", roles=list(self.to.roles))
        return Audience()


class ExitCondition(Strict):
    """Ends a group early and cancels what is left: the triggering alert(s) resolved, a
    named product event seen on the account, or the account leaving/entering a stage."""

    kind: Literal["alert_resolved", "event_seen", "stage_changed"]
    events: list[EventName] = Field(default_factory=list, max_length=50)
    stages: list[StageName] = Field(default_factory=list, max_length=20)

    @model_validator(mode="after")
    def _complete(self) -> ExitCondition:
        if self.kind == "event_seen" and not self.events:
            raise ValueError("event_seen needs events")
        return self


class PlaybookTemplate(Strict):
    id: str = Field(pattern=SLUG)
    name: str = Field(min_length=1, max_length=200)
    description: str = Field(default="", max_length=5000)
    phase: Phase
    enabled: bool = True
    triggers: list[Trigger] = Field(min_length=1, max_length=10)
    conditions: list[Condition] = Field(default_factory=list, max_length=20)
    assignee: Assignee = Field(default_factory=Assignee)
    steps: list[Step] = Field(min_length=1, max_length=100)
    exit: list[ExitCondition] = Field(default_factory=list, max_length=10)

    @model_validator(mode="before")
    @classmethod
    def _single_trigger(cls, data: Any) -> Any:
        """``trigger: {...}`` in YAML reads as a one-item ``triggers`` list."""
        if isinstance(data, dict) and "trigger" in data and "triggers" not in data:
            data = {**data, "triggers": [data["trigger"]]}
            del data["trigger"]
        if isinstance(data, dict) and isinstance(data.get("exit"), dict):
            data = {**data, "exit": [data["exit"]]}
        return data


class Problem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str = "value_error"


class TemplateError(ValueError):
    """The template is invalid; ``problems`` name each bad field."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, p.loc))}: {p.msg}" for p in problems))
        self.problems = problems


Loc = list[str | int]


def _fits_field(value: Any, numeric: bool) -> bool:
    if numeric:
        return (
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        )
    return isinstance(value, str) and len(value) <= MAX_VALUE_TEXT


def condition_problems(condition: Condition, loc: Loc) -> list[Problem]:
    """The value must be one the field can equal or be compared with, or the condition
    would never match (``mrr gte "lots"``): numbers for mrr/severity, strings of at most
    100 characters otherwise, a list of them for in/not_in; gt/gte/lt/lte only on numbers."""
    numeric = condition.field in NUMERIC_FIELDS
    what = "a number" if numeric else f"a string of at most {MAX_VALUE_TEXT} characters"
    value = condition.value
    if condition.op in ORDER_OPS and not numeric:
        msg = f"{condition.op} compares numbers; {condition.field} is text (use eq, ne, in)"
        return [Problem(loc=[*loc, "op"], msg=msg)]
    if condition.op in LIST_OPS:
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_VALUE_ITEMS:
            msg = f"{condition.op} needs a list of 1 to {MAX_VALUE_ITEMS} values, each {what}"
            return [Problem(loc=[*loc, "value"], msg=msg)]
        return [
            Problem(loc=[*loc, "value", i], msg=f"{condition.field} values are {what}")
            for i, item in enumerate(value)
            if not _fits_field(item, numeric)
        ]
    if not _fits_field(value, numeric):
        return [
            Problem(loc=[*loc, "value"], msg=f"{condition.op} on {condition.field} needs {what}")
        ]
    return []


def _not_for(kind: str, loc: Loc, name: str) -> Problem:
    return Problem(loc=[*loc, name], msg=f"a {kind} trigger takes no {name}")


def trigger_problems(trigger: Trigger, loc: Loc) -> list[Problem]:
    """Fields the trigger's kind ignores are refused, so nobody relies on them."""
    problems: list[Problem] = []
    given = {
        "rule_types": bool(trigger.rule_types),
        "rule_ids": bool(trigger.rule_ids),
        "min_severity": trigger.min_severity != 1,
        "event": trigger.event is not None,
        "stages": bool(trigger.stages),
    }
    allowed = {
        "alert": {"rule_types", "rule_ids", "min_severity"},
        "lifecycle": {"event", "stages"} if trigger.event != "owner_changed" else {"event"},
        "manual": set(),
    }[trigger.kind]
    for name, present in given.items():
        if present and name not in allowed:
            kind = trigger.event if name == "stages" and trigger.kind == "lifecycle" else None
            problems.append(_not_for(kind or trigger.kind, loc, name))
    return problems


def exit_problems(template: PlaybookTemplate) -> list[Problem]:
    problems: list[Problem] = []
    by_alert = any(t.kind == "alert" for t in template.triggers)
    for i, cond in enumerate(template.exit):
        if cond.kind == "alert_resolved" and not by_alert:
            msg = "no alert starts this playbook (it has no alert trigger)"
            problems.append(Problem(loc=["exit", i, "kind"], msg=msg))
        for name in ("events", "stages"):
            wanted = {"events": "event_seen", "stages": "stage_changed"}[name]
            if getattr(cond, name) and cond.kind != wanted:
                msg = f"only a {wanted} exit takes {name}"
                problems.append(Problem(loc=["exit", i, name], msg=msg))
    return problems


def _rule_problems(template: PlaybookTemplate) -> list[Problem]:
    """Triggers, conditions and exits that would save fine but never do what they say."""
    problems: list[Problem] = []
    for i, trigger in enumerate(template.triggers):
        problems += trigger_problems(trigger, ["triggers", i])
    for i, condition in enumerate(template.conditions):
        problems += condition_problems(condition, ["conditions", i])
    for i, step in enumerate(template.steps):
        for j, condition in enumerate(step.conditions):
            problems += condition_problems(condition, ["steps", i, "conditions", j])
    return problems + exit_problems(template)


def _semantic_problems(template: PlaybookTemplate) -> list[Problem]:
    """What a field validator cannot see: duplicates and step fields that go together."""
    problems: list[Problem] = _rule_problems(template)
    seen: set[str] = set()
    for i, step in enumerate(template.steps):
        if step.key in seen:
            problems.append(Problem(loc=["steps", i, "key"], msg=f"duplicate key {step.key!r}"))
        seen.add(step.key)
        if step.automated and not step.template_id:
            problems.append(
                Problem(loc=["steps", i, "template_id"], msg=f"a {step.type} step needs one")
            )
        if step.type == "email" and step.to is not None and step.to.kind == "channel":
            problems.append(
                Problem(loc=["steps", i, "to", "kind"], msg="email cannot go to a channel")
            )
        if step.type == "slack" and step.to is not None and step.to.kind == "contacts":
            problems.append(
                Problem(loc=["steps", i, "to", "kind"], msg="slack goes to the owner or a channel")
            )
        if step.audience is not None and not step.to_contacts:
            msg = "only an email step to contacts has an audience"
            problems.append(Problem(loc=["steps", i, "audience"], msg=msg))
        if step.audience is not None and step.to is not None and step.to.roles:
            msg = "give the roles in audience: {roles: [...]}, not in to"
            problems.append(Problem(loc=["steps", i, "to", "roles"], msg=msg))
        if step.delay_minutes is not None and not step.automated:
            msg = "only email and slack steps wait for a review window"
            problems.append(Problem(loc=["steps", i, "delay_minutes"], msg=msg))
        if step.type == "task" and (step.to is not None or step.template_id):
            loc: list[str | int] = ["steps", i, "to" if step.to is not None else "template_id"]
            problems.append(Problem(loc=loc, msg="only email and slack steps are sent"))
    return problems


def parse_template(data: Any) -> PlaybookTemplate:
    """Validate a decoded YAML/JSON object; raise :class:`TemplateError` naming the fields."""
    if not isinstance(data, dict):
        raise TemplateError([Problem(loc=[], msg="a playbook is an object (mapping)")])
    try:
        template = PlaybookTemplate.model_validate(data)
    except ValidationError as exc:
        raise TemplateError(
            [
                Problem(loc=list(e["loc"]), msg=e["msg"], type=e["type"])
                for e in exc.errors(include_url=False, include_input=False)
            ]
        ) from exc
    problems = _semantic_problems(template)
    if problems:
        raise TemplateError(problems)
    return template


class _NoAliasLoader(yaml.SafeLoader):
    """safe_load without anchors' aliases: ``*a`` repeated in a few lines expands to
    billions of nodes (an alias bomb in a step's context or a condition's value)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not allowed", mark)
        return super().compose_node(parent, index)


def load_yaml(text: str | bytes) -> Any:
    """Decode a YAML document (raises ``yaml.YAMLError``), refusing aliases."""
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader


def parse_yaml(text: str | bytes) -> PlaybookTemplate:
    try:
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise TemplateError([Problem(loc=[], msg=f"not valid YAML: {exc}", type="yaml")]) from exc
    return parse_template(data)


def to_yaml(template: PlaybookTemplate) -> str:
    data = template.model_dump(mode="json", exclude_defaults=True)
    data.setdefault("phase", template.phase)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def is_slug(value: str) -> bool:
    return bool(_SLUG.match(value))


# Matching -------------------------------------------------------------------------------


def matches_alert(
    template: PlaybookTemplate, *, rule_type: str, rule_id: str, severity: int
) -> bool:
    """Does an alert of this rule start this playbook?"""
    if not template.enabled:
        return False
    for trigger in template.triggers:
        if trigger.kind != "alert" or severity < trigger.min_severity:
            continue
        if rule_type in trigger.rule_types or rule_id in trigger.rule_ids:
            return True
    return False


def matches_lifecycle(
    template: PlaybookTemplate, *, event: LifecycleEvent, stage: str | None
) -> bool:
    """Does a lifecycle change (``stage_entered`` a stage, ``owner_changed``) start it?"""
    if not template.enabled:
        return False
    for trigger in template.triggers:
        if trigger.kind != "lifecycle" or trigger.event != event:
            continue
        if event == "owner_changed" or (stage is not None and stage in trigger.stages):
            return True
    return False


def exit_events(template: PlaybookTemplate) -> list[str]:
    return sorted({e for c in template.exit if c.kind == "event_seen" for e in c.events})
