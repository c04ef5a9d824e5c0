"""A labelled churn simulation: per-event daily usage of accounts, some of which churn for a
known reason. Shared by ``bench/score_quality.py`` and the tests' short form. Pure numpy.

Accounts differ in size (20 % single-user), segment and habits; every account sees
frequent low-value events (ad views) and a little noise. Churners follow one mechanism
from an onset day to their churn day:

- ``key_feature``: the must-use action fades while other activity (ad views) stays high;
- ``decline``: everything declines;
- ``negative``: errors, failed exports and support tickets grow, positive use dips;
- ``seats``: active users shrink (the remaining ones use a little more);
- ``mix``: two of the above at once;
- ``silent``: churns with no usage signal at all (noise no score can catch).

Healthy accounts have dips that pass (holidays, a slow month), so declines are not
proof of churn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

KEY_EVENT = "Report Created"
# name, per active user per day, positive use?
BASE_EVENTS: list[tuple[str, float, bool]] = [
    (KEY_EVENT, 0.8, True),
    ("Dashboard Viewed", 2.0, True),
    ("Export Succeeded", 0.3, True),
    ("Comment Added", 0.5, True),
    ("Invite Sent", 0.02, True),
    ("Ad Viewed", 12.0, True),  # frequent, low value: has nothing to do with churn
    ("Error Shown", 0.15, False),
    ("Export Failed", 0.03, False),
    ("Support Ticket", 0.01, False),
]
NEGATIVE = {"Error Shown", "Export Failed", "Support Ticket"}
MECHANISMS = ("key_feature", "decline", "negative", "seats", "mix", "silent")
SEGMENTS = ("smb", "mid", "enterprise")


@dataclass(frozen=True)
class Simulation:
    """``counts[a, e, d]`` events and ``users[a, e, d]`` distinct users per event and day,
    ``active[a, d]`` distinct active users; ``churn_day[a]`` (-1: never) and
    ``mechanism[a]`` ("" for accounts that do not churn)."""

    account_ids: list[str]
    event_names: list[str]
    counts: FloatArray
    users: FloatArray
    active: FloatArray
    segments: list[str]
    seats: IntArray
    churn_day: IntArray
    mechanism: list[str]
    days: int
    observations: list[int] = field(default_factory=list)  # month-start day indices

    @cached_property  # read per account in loops: summing the whole cube each time cost
    def total_events(self) -> FloatArray:  # a third of the score-model test's CPU
        total: FloatArray = self.counts.sum(axis=1)
        return total


def _ramp(days: int, onset: int, end: int, depth: float) -> FloatArray:
    """1 before ``onset``, falling linearly to ``depth`` at ``end``, ``depth`` after."""
    t = np.arange(days, dtype=np.float64)
    frac = np.clip((t - onset) / max(end - onset, 1), 0, 1)
    result: FloatArray = 1 - (1 - depth) * frac
    return result


def simulate(
    accounts: int = 2000,
    *,
    months: int = 13,
    churn_share: float = 0.35,
    filler_events: int = 0,
    seed: int = 7,
    mix: tuple[float, ...] = (0.2, 0.2, 0.17, 0.17, 0.16, 0.1),
) -> Simulation:
    """Simulate ``accounts`` over ``months`` of 30 days. ``filler_events`` adds neutral
    events (for timing the fit on many metrics); ``mix`` is the share of each of
    :data:`MECHANISMS` among churners."""
    rng = np.random.default_rng(seed)
    days = 30 * months
    events = list(BASE_EVENTS) + [
        (f"Feature {i} Used", float(rng.uniform(0.02, 1.0)), True) for i in range(filler_events)
    ]
    names = [e[0] for e in events]
    rates = np.array([e[1] for e in events])
    n_e = len(events)
    key = names.index(KEY_EVENT)
    neg = np.array([name in NEGATIVE for name in names])
    ad = names.index("Ad Viewed")

    seg_idx = rng.choice(3, size=accounts, p=[0.5, 0.35, 0.15])
    size_mu = np.array([0.8, 2.0, 3.2])[seg_idx]
    seats = np.maximum(1, np.round(np.exp(rng.normal(size_mu, 0.6)))).astype(np.int64)
    seats[rng.random(accounts) < 0.2] = 1
    # habits: each account uses each event at its own rate (some not at all)
    habit = rng.lognormal(0.0, 0.5, size=(accounts, n_e))
    habit *= rng.random((accounts, n_e)) > 0.15
    habit[:, key] = np.maximum(habit[:, key], 0.3)  # everyone uses the key action
    habit[:, ad] *= rng.lognormal(0.0, 0.8, size=accounts)  # ad exposure varies a lot

    churns = rng.random(accounts) < churn_share
    churn_day = np.where(churns, rng.integers(150, days - 5, size=accounts), -1)
    mechanism = [
        str(rng.choice(MECHANISMS, p=np.array(mix) / sum(mix))) if c else "" for c in churns
    ]
    start = rng.integers(0, 90, size=accounts) * (rng.random(accounts) < 0.3)  # late signups

    counts = np.zeros((accounts, n_e, days))
    users = np.zeros((accounts, n_e, days))
    active = np.zeros((accounts, days))
    week = 1.0 - 0.6 * (np.arange(days) % 7 >= 5)  # quieter weekends
    for a in range(accounts):
        per_event = np.ones((n_e, days))
        seat_curve = np.ones(days)
        cd = int(churn_day[a])
        if cd >= 0:
            onset = cd - int(rng.integers(30, 80))
            kinds = [mechanism[a]]
            if mechanism[a] == "mix":
                kinds = list(rng.choice(["key_feature", "decline", "negative", "seats"], 2, False))
            for kind in kinds:
                if kind == "key_feature":
                    per_event[key] *= _ramp(days, onset, cd, 0.12)
                    per_event[ad] *= _ramp(days, onset, cd, 1.3)
                elif kind == "decline":
                    per_event *= _ramp(days, onset, cd, 0.35)[None, :]
                elif kind == "negative":
                    per_event[neg] *= _ramp(days, onset, cd, 6.0)[None, :]
                    per_event[~neg] *= _ramp(days, onset, cd, 0.85)[None, :]
                elif kind == "seats":
                    seat_curve *= _ramp(days, onset, cd, 0.35)
                    per_event[~neg] *= _ramp(days, onset, cd, 1.4)[None, :]
        # healthy dips: a slow stretch that passes (everyone may have one)
        if rng.random() < 0.5:
            d0 = int(rng.integers(0, days - 40))
            length = int(rng.integers(7, 35))
            per_event[:, d0 : d0 + length] *= rng.uniform(0.3, 0.8)
        drift = np.exp(np.cumsum(rng.normal(0, 0.02, size=days)))  # slow random walk
        n_seats = np.maximum(1, np.round(seats[a] * seat_curve)).astype(np.int64)
        p_active = 0.55 + 0.35 * (seats[a] == 1)
        act = rng.binomial(n_seats, p_active * np.clip(week * drift, 0, 1))
        act = np.where(np.arange(days) < start[a], 0, act)
        if cd >= 0:
            act[cd:] = 0
        lam = rates[:, None] * habit[a][:, None] * per_event * drift[None, :] * act[None, :]
        c = rng.poisson(lam)
        counts[a] = c
        share = np.clip(habit[a] * rates / (1 + habit[a] * rates), 0.05, 0.95)
        users[a] = np.minimum(c, rng.binomial(act[None, :].repeat(n_e, 0), share[:, None]))
        users[a] = np.where(c > 0, np.maximum(users[a], 1), 0)
        active[a] = np.where(c.sum(axis=0) > 0, np.maximum(act, 1), 0)
    observations = list(range(120, days - 30 + 1, 30))
    return Simulation(
        account_ids=[f"sim-{a:05d}" for a in range(accounts)],
        event_names=names,
        counts=counts,
        users=users,
        active=active,
        segments=[SEGMENTS[s] for s in seg_idx],
        seats=seats,
        churn_day=churn_day.astype(np.int64),
        mechanism=mechanism,
        days=days,
        observations=observations,
    )


def labels(sim: Simulation, day: int, horizon: int) -> tuple[npt.NDArray[np.bool_], FloatArray]:
    """At observation ``day``: who is still a customer (``eligible``) and, of every account,
    1.0 if it churns within ``(day, day + horizon]``."""
    eligible = (sim.churn_day < 0) | (sim.churn_day > day)
    churns = (sim.churn_day > day) & (sim.churn_day <= day + horizon)
    return eligible, churns.astype(np.float64)
