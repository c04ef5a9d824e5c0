"""Pure parts: assignment rules (with Hypothesis), template validation, matching, conditions,
recipients. No I/O."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.playbooks.assignment import Member, Team, assign
from services.playbooks.flows import review_delay
from services.playbooks.library import builtin_templates
from services.playbooks.outbound import (
    ContactFacts,
    CsmFacts,
    DueStep,
    audience_of,
    build_request,
)
from services.playbooks.planning import AccountFacts, TriggerFacts, conditions_hold, plan_steps
from services.playbooks.templates import (
    TemplateError,
    matches_alert,
    matches_lifecycle,
    parse_template,
    parse_yaml,
    to_yaml,
)


def _team(*members: tuple[str, int, int]) -> Team:
    return Team(members={e: Member(e, "t", cap, True, load) for e, cap, load in members})


def test_round_robin_takes_turns_in_email_order() -> None:
    team = _team(("a@x", 100, 0), ("b@x", 100, 0), ("c@x", 100, 0))
    picks = [
        assign(team, rule="round_robin", owner=None, team_name="t", fallback="unassigned", needed=1)
        for _ in range(7)
    ]
    assert [p.email for p in picks] == ["a@x", "b@x", "c@x", "a@x", "b@x", "c@x", "a@x"]


def test_least_loaded_picks_fewest_open_tasks() -> None:
    team = _team(("a@x", 100, 5), ("b@x", 100, 1), ("c@x", 100, 3))
    picks = [
        assign(
            team, rule="least_loaded", owner=None, team_name="t", fallback="unassigned", needed=2
        ).email
        for _ in range(4)
    ]
    assert picks == ["b@x", "b@x", "c@x", "a@x"]  # b 1->3->5, c 3->5, then a (5, first by email)


def test_owner_first_then_fallback_then_unassigned() -> None:
    team = _team(("own@x", 1, 10), ("b@x", 2, 0))
    kw: dict[str, Any] = {"team_name": "t", "needed": 2}
    # The owner owns the account whatever their load.
    assert assign(team, rule="owner", owner="own@x", fallback="least_loaded", **kw).email == "own@x"
    got = assign(team, rule="owner", owner=None, fallback="least_loaded", **kw)
    assert (got.email, got.rule) == ("b@x", "least_loaded")
    got = assign(team, rule="owner", owner="gone@x", fallback="round_robin", **kw)
    assert (got.email, got.rule) == (None, "unassigned")  # b is full now
    team.members["own@x"].active = False
    assert assign(team, rule="owner", owner="own@x", fallback="unassigned", **kw).email is None


@settings(max_examples=200, deadline=None)
@given(
    capacities=st.lists(st.integers(min_value=0, max_value=12), min_size=1, max_size=6),
    loads=st.lists(st.integers(min_value=0, max_value=6), min_size=6, max_size=6),
    needs=st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=40),
    rule=st.sampled_from(["round_robin", "least_loaded"]),
)
def test_capacity_is_never_exceeded(
    capacities: list[int], loads: list[int], needs: list[int], rule: Any
) -> None:
    members = [(f"m{i}@x", cap, min(loads[i], cap)) for i, cap in enumerate(capacities)]
    team = _team(*members)
    for needed in needs:
        before = {e: m.load for e, m in team.members.items()}
        got = assign(
            team, rule=rule, owner=None, team_name="t", fallback="unassigned", needed=needed
        )
        if got.email is None:  # unassigned only when nobody had room
            assert all(before[e] + needed > m.capacity for e, m in team.members.items())
        else:
            assert team.members[got.email].load == before[got.email] + needed
    assert all(m.load <= m.capacity for m in team.members.values())


@settings(max_examples=100, deadline=None)
@given(n=st.integers(min_value=1, max_value=8), rounds=st.integers(min_value=1, max_value=5))
def test_round_robin_spreads_evenly_with_room(n: int, rounds: int) -> None:
    team = _team(*[(f"m{i}@x", 1000, 0) for i in range(n)])
    picks = Counter(
        assign(
            team, rule="round_robin", owner=None, team_name="t", fallback="unassigned", needed=1
        ).email
        for _ in range(n * rounds)
    )
    assert set(picks.values()) == {rounds}


# Templates -----------------------------------------------------------------------------


def test_builtin_library_is_complete_and_round_trips_through_yaml() -> None:
    library = {t.id: t for t in builtin_templates()}
    assert set(library) == {
        "onboarding-1-kickoff",
        "onboarding-2-setup",
        "onboarding-3-first-cycle",
        "tech-touch-onboarding",
        "adoption-risk",
        "inactivity-reengagement",
        "expansion",
        "renewal-preparation",
        "owner-handoff",
    }
    assert library["onboarding-3-first-cycle"].steps[-1].key == "executive-alignment"
    tech = library["tech-touch-onboarding"]
    assert [s.due_days for s in tech.steps] == [0, 3, 7, 14]
    assert all(s.type == "email" for s in tech.steps)
    checkin = next(s for s in library["adoption-risk"].steps if s.type == "email")
    assert (checkin.template_id, checkin.due_days) == ("adoption-checkin", 0)
    call = next(s for s in library["adoption-risk"].steps if s.key == "call")
    assert call.due_days <= 3
    for template in library.values():
        assert parse_yaml(to_yaml(template)) == template


def _base(**over: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "p1",
        "name": "P",
        "phase": "risk",
        "trigger": {"kind": "alert", "rule_types": ["x"]},
        "steps": [{"key": "a", "title": "A"}],
    }
    data.update(over)
    return data


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        (_base(phase="later"), ["phase"]),
        (
            _base(steps=[{"key": "a", "title": "A"}, {"key": "b", "type": "email", "title": "B"}]),
            ["steps", 1, "template_id"],
        ),
        (
            _base(steps=[{"key": "a", "title": "A"}, {"key": "a", "title": "B"}]),
            ["steps", 1, "key"],
        ),
        (_base(steps=[{"key": "a", "title": "A", "due_days": -1}]), ["steps", 0, "due_days"]),
        (_base(steps=[{"key": "a", "title": "A", "colour": "red"}]), ["steps", 0, "colour"]),
        (_base(trigger={"kind": "alert"}), ["triggers", 0]),
        (
            _base(
                steps=[
                    {
                        "key": "s",
                        "type": "slack",
                        "title": "S",
                        "template_id": "t",
                        "to": {"kind": "contacts"},
                    }
                ]
            ),
            ["steps", 0, "to", "kind"],
        ),
        (_base(steps=[]), ["steps"]),
        (_base(id="Not A Slug"), ["id"]),
    ],
)
def test_invalid_templates_name_the_bad_field(data: dict[str, Any], loc: list[Any]) -> None:
    with pytest.raises(TemplateError) as err:
        parse_template(data)
    assert loc in [p.loc for p in err.value.problems], err.value.problems


def test_matching_and_conditions() -> None:
    library = {t.id: t for t in builtin_templates()}
    assert matches_alert(library["adoption-risk"], rule_type="band_drop", rule_id="r", severity=2)
    assert not matches_alert(library["expansion"], rule_type="band_drop", rule_id="r", severity=2)
    onboarding = [
        t.id
        for t in library.values()
        if matches_lifecycle(t, event="stage_entered", stage="onboarding")
    ]
    assert sorted(onboarding) == [
        "onboarding-1-kickoff",
        "onboarding-2-setup",
        "onboarding-3-first-cycle",
        "tech-touch-onboarding",
    ]
    high, tech = library["onboarding-1-kickoff"], library["tech-touch-onboarding"]
    trigger = TriggerFacts(kind="lifecycle")
    for mrr, expect_high in ((5000.0, True), (200.0, False), (None, False)):
        facts = AccountFacts("a", mrr=mrr)
        assert conditions_hold(high.conditions, facts, trigger) is expect_high
        assert conditions_hold(tech.conditions, facts, trigger) is not expect_high


def test_plan_steps_due_dates_and_skipped_conditions() -> None:
    template = parse_template(
        _base(
            steps=[
                {"key": "a", "title": "A", "due_days": 2},
                {
                    "key": "b",
                    "title": "B",
                    "conditions": [{"field": "severity", "op": "gte", "value": 4}],
                },
            ]
        )
    )
    start = datetime(2026, 1, 1, tzinfo=UTC)
    plans = plan_steps(template, AccountFacts("a"), TriggerFacts("alert", "x", 2), started_at=start)
    assert [(p.status, p.due_at - start) for p in plans] == [
        ("open", timedelta(days=2)),
        ("skipped", timedelta(0)),
    ]
    assert plans[1].detail == "condition not met: severity gte 4"


def _step(**over: Any) -> DueStep:
    values: dict[str, Any] = {
        "task_group_id": "g1",
        "step_key": "s1",
        "type": "email",
        "title": "T",
        "template_id": "welcome",
        "recipients": {"kind": "contacts", "roles": ["admin"]},
        "from_owner": True,
        "step_context": {"extra": 1},
        "group_context": {},
        "playbook_id": "p",
        "playbook_name": "P",
    }
    values.update(over)
    return DueStep(**values)


def test_recipients_and_context() -> None:
    contacts = [
        ContactFacts("u2", "b@c.test", "Bea", "Admin"),
        ContactFacts("u1", "a@c.test", "Al", "user"),
        ContactFacts("u3", None, "No Mail", "admin"),
    ]
    csm = CsmFacts("csm@x.test", "Cam", None)
    account = AccountFacts("acct", name="Acme")
    req = build_request(_step(), account, contacts, csm, default_slack_channel=None)
    assert req is not None
    assert [r.email for r in req.to] == ["b@c.test"]
    assert (req.idempotency_key, req.from_name, req.reply_to) == ("g1:s1", "Cam", "csm@x.test")
    assert [(r.name, r.role, r.contact_id) for r in req.to] == [("Bea", "Admin", "u2")]
    assert "contact_name" not in req.context and "contact" not in req.context
    assert req.context["extra"] == 1
    slack = _step(type="slack", recipients={"kind": "owner"}, from_owner=False)
    assert build_request(slack, account, [], csm, default_slack_channel=None) is None
    req = build_request(slack, account, [], csm, default_slack_channel="#cs")
    assert req is not None and req.to[0].slack_channel == "#cs" and req.from_name is None


def _cond(**c: Any) -> dict[str, Any]:
    return _base(conditions=[c])


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        # Every string that lands in a column fits it (PostgreSQL refused longer ones: a 500).
        (_base(exit=[{"kind": "event_seen", "events": ["e" * 201]}]), ["exit", 0, "events", 0]),
        (_base(exit=[{"kind": "stage_changed", "stages": ["s" * 101]}]), ["exit", 0, "stages", 0]),
        (_base(trigger={"kind": "alert", "rule_types": [""]}), ["triggers", 0, "rule_types", 0]),
        (
            _base(trigger={"kind": "lifecycle", "event": "stage_entered", "stages": ["x" * 101]}),
            ["triggers", 0, "stages", 0],
        ),
        (
            _base(
                steps=[
                    {
                        "key": "e",
                        "type": "email",
                        "title": "E",
                        "template_id": "t",
                        "to": {"kind": "contacts", "roles": ["r" * 101]},
                    }
                ]
            ),
            ["steps", 0, "to", "roles", 0],
        ),
        # A condition's value must fit its field and op, or it would never match.
        (_cond(field="mrr", op="gte", value="lots"), ["conditions", 0, "value"]),
        (_cond(field="mrr", op="eq", value=True), ["conditions", 0, "value"]),
        (_cond(field="severity", op="in", value=3), ["conditions", 0, "value"]),
        (_cond(field="severity", op="in", value=[3, "high"]), ["conditions", 0, "value", 1]),
        (_cond(field="stage", op="gt", value="b"), ["conditions", 0, "op"]),
        (_cond(field="plan", op="eq", value=5), ["conditions", 0, "value"]),
        (_cond(field="plan", op="eq"), ["conditions", 0, "value"]),
        (_cond(field="plan", op="not_in", value=[]), ["conditions", 0, "value"]),
        (_cond(field="plan", op="eq", value="p" * 101), ["conditions", 0, "value"]),
        (
            _base(
                steps=[{"key": "a", "title": "A", "conditions": [{"field": "mrr", "value": "x"}]}]
            ),
            ["steps", 0, "conditions", 0, "value"],
        ),
        # Trigger fields the trigger's kind would ignore.
        (
            _base(trigger={"kind": "alert", "rule_types": ["x"], "event": "owner_changed"}),
            ["triggers", 0, "event"],
        ),
        (
            _base(trigger={"kind": "alert", "rule_types": ["x"], "stages": ["onboarding"]}),
            ["triggers", 0, "stages"],
        ),
        (
            _base(trigger={"kind": "lifecycle", "event": "owner_changed", "rule_types": ["x"]}),
            ["triggers", 0, "rule_types"],
        ),
        (
            _base(trigger={"kind": "lifecycle", "event": "owner_changed", "stages": ["active"]}),
            ["triggers", 0, "stages"],
        ),
        (_base(trigger={"kind": "manual", "min_severity": 3}), ["triggers", 0, "min_severity"]),
        # An alert_resolved exit on a playbook no alert starts could never happen.
        (
            _base(trigger={"kind": "manual"}, exit=[{"kind": "alert_resolved"}]),
            ["exit", 0, "kind"],
        ),
        (_base(exit=[{"kind": "alert_resolved", "events": ["x"]}]), ["exit", 0, "events"]),
    ],
)
def test_templates_that_would_never_work_are_refused(data: dict[str, Any], loc: list[Any]) -> None:
    with pytest.raises(TemplateError) as err:
        parse_template(data)
    assert loc in [p.loc for p in err.value.problems], err.value.problems


def test_sound_conditions_and_limits_are_accepted() -> None:
    data = _base(
        conditions=[
            {"field": "mrr", "op": "gte", "value": 1000},
            {"field": "severity", "op": "in", "value": [3, 4.5]},
            {"field": "plan", "op": "not_in", "value": ["free", "p" * 100]},
            {"field": "stage", "op": "ne", "value": "churned"},
        ],
        exit=[
            {"kind": "alert_resolved"},
            {"kind": "event_seen", "events": ["e" * 200]},
        ],
    )
    template = parse_template(data)
    # What the API hands back (every field, defaults included) saves again as it is.
    assert parse_template(template.model_dump(mode="json")) == template


def test_skipped_step_detail_fits_its_column() -> None:
    values = [f"{i:03d}" + "v" * 97 for i in range(100)]  # repr ~ 10 KB
    template = parse_template(
        _base(
            steps=[
                {
                    "key": "a",
                    "title": "A",
                    "conditions": [{"field": "plan", "op": "in", "value": values}],
                }
            ]
        )
    )
    now = datetime.now(UTC)
    facts, trigger = AccountFacts("a", plan="pro"), TriggerFacts("manual")
    [plan] = plan_steps(template, facts, trigger, started_at=now)
    assert plan.status == "skipped" and plan.detail is not None
    assert plan.detail.startswith("condition not met: plan in ") and len(plan.detail) == 1000


def test_yaml_aliases_are_refused() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
    with pytest.raises(TemplateError) as err:
        parse_yaml(bomb + "c: [*b, *b, *b, *b, *b, *b, *b, *b, *b]\n")
    [problem] = err.value.problems
    assert problem.loc == [] and "aliases" in problem.msg


def test_audiences_primary_roles_all_and_the_recent_fallback() -> None:
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    people = [
        ContactFacts("a", "a@x.test", "A", "Billing", last_seen_at=t0),
        ContactFacts("b", "b@x.test", "B", None, last_seen_at=t0 + timedelta(hours=3)),
        ContactFacts("c", "c@x.test", "C", "user", last_seen_at=t0 + timedelta(hours=2)),
        ContactFacts("d", "d@x.test", "D", "user", last_seen_at=None),
        ContactFacts("e", None, "E", "OWNER", primary=True, last_seen_at=t0 + timedelta(days=1)),
    ]

    def ids(spec: dict[str, Any], contacts: list[ContactFacts] = people) -> list[str]:
        return [c.user_id for c in audience_of(spec, contacts)]

    assert ids({"kind": "contacts"}) == ["a", "b", "c"]  # no primary: the 3 seen last
    assert ids({"audience": {"kind": "all"}}) == ["a", "b", "c", "d"]  # never one without email
    assert ids({"audience": {"kind": "roles", "roles": ["billing"]}}) == ["a"]
    assert ids({"kind": "contacts", "roles": ["user"]}) == ["c", "d"]  # a legacy roles spec
    owner = [*people, ContactFacts("f", "f@x.test", "F", "Owner")]
    flagged = [*people, ContactFacts("g", "g@x.test", "G", "user", primary=True)]
    assert ids({"audience": {"kind": "primary"}}, owner) == ["f"]
    assert ids({"audience": {"kind": "primary"}}, flagged) == ["g"]


def test_the_review_window_applies_to_alert_started_day_0_customer_emails() -> None:
    by_key = {s.key: s for t in builtin_templates() for s in t.steps if t.id == "adoption-risk"}
    fifteen = timedelta(minutes=15)
    assert (
        review_delay(by_key["checkin-email"], trigger_kind="alert", default_minutes=15) == fifteen
    )
    assert review_delay(by_key["checkin-email"], trigger_kind="manual", default_minutes=15) == (
        timedelta(0)
    )
    assert review_delay(by_key["owner-slack"], trigger_kind="alert", default_minutes=15) == (
        timedelta(0)
    )
    assert review_delay(by_key["call"], trigger_kind="alert", default_minutes=15) == timedelta(0)
