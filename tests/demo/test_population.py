"""The simulated customer base behaves as each persona says, and is reproducible."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import date

from demo.population import MILESTONE, activity, make_population
from demo.replay import history

TODAY = date(2026, 11, 23)


def test_population_is_seeded_and_mixed() -> None:
    a = make_population(200, today=TODAY)
    b = make_population(200, today=TODAY)
    assert [x.account_id for x in a] == [x.account_id for x in b]
    assert [x.persona for x in a] == [x.persona for x in b]
    personas = Counter(x.persona for x in a)
    assert set(personas) >= {
        "steady",
        "slow_decline",
        "sudden_drop",
        "stalled_onboarding",
        "grower",
        "owner_change",
        "silent",
    }
    assert all(x.users for x in a)
    assert all(x.new_owner and x.new_owner != x.owner for x in a if x.persona == "owner_change")


def test_personas_shape_activity() -> None:
    by = {x.persona: x for x in make_population(300, today=TODAY)}
    days = 90
    assert activity(by["steady"], 89, days) == activity(by["steady"], 10, days)
    assert activity(by["slow_decline"], 89, days) < activity(by["slow_decline"], 50, days) / 3
    assert activity(by["sudden_drop"], 88, days) < activity(by["sudden_drop"], 80, days) / 5
    assert activity(by["silent"], 89, days) == 0
    grower = [activity(by["grower"], d, days) for d in range(0, 90, 7)]
    assert all(later > earlier for earlier, later in itertools.pairwise(grower))


def test_history_is_valid_segment_calls_in_time_order() -> None:
    accounts = make_population(20, today=TODAY)
    seen_days = []
    kinds: Counter[str] = Counter()
    milestones = 0
    for day, calls in history(accounts, 30, TODAY):
        seen_days.append(day)
        for call in calls:
            kinds[call["type"]] += 1
            assert call["messageId"] and call["timestamp"].startswith("20")
            if call["type"] == "track":
                assert call["context"]["groupId"].startswith("acct-")
                milestones += call["event"] == MILESTONE
    assert seen_days == list(range(30))
    assert kinds["group"] >= 20 and kinds["identify"] >= 40 and kinds["track"] > 1000
    assert milestones > 0
