"""The default formula's event parts (pure): no single frequent event rules the score,
friction counts against, active users only where an account has several."""

from __future__ import annotations

import numpy as np

from services.health.config import ScoringParams
from services.health.scoring import default_score, score_accounts

PARAMS = ScoringParams(event_parts=True)
DAYS = 60
NAMES = ["Report Created", "Ad Viewed", "Dashboard Viewed", "Error Shown"]


def run(counts: np.ndarray, users: np.ndarray) -> np.ndarray:
    """Score accounts from per-event counts ``[a, e, d]`` and active users ``[a, d]``."""
    a = counts.shape[0]
    values = np.stack([counts.sum(axis=1), users], axis=1)  # events (weight 0), active users
    scored = default_score(
        values,
        counts,
        np.array(PARAMS.negative(NAMES)),
        NAMES,
        end=DAYS,
        ages=np.full(a, 365),
        segments=np.zeros(a, dtype=np.int64),
        weights=np.array([0.0, 1.0]),
        users=np.array([False, True]),
        params=PARAMS,
    )
    return scored.score


def steady(a: int = 2) -> np.ndarray:
    counts = np.zeros((a, len(NAMES), DAYS))
    counts[:, 0] = 5  # the key action
    counts[:, 1] = 200  # ad views: frequent, low value
    counts[:, 2] = 10
    counts[:, 3] = 1
    return counts


def test_a_fading_key_action_is_not_hidden_by_frequent_ad_views() -> None:
    counts = steady()
    counts[1, 0, -7:] = 0.5  # the key action fades; ad views even rise a little
    counts[1, 1, -7:] = 230
    total = counts.sum(axis=1)
    assert total[1, -7:].sum() > total[0, -7:].sum()  # the all-events count went up
    users = np.full((2, DAYS), 3.0)
    score = run(counts, users)
    assert score[1] < score[0] - 5
    # the previous default (all events + active users, same weight) saw nothing wrong
    old = score_accounts(
        np.stack([total, users], axis=1),
        end=DAYS,
        ages=np.full(2, 365),
        segments=np.zeros(2, dtype=np.int64),
        weights=np.ones(2),
        params=ScoringParams(),
    )
    assert old.score[1] >= old.score[0]


def test_a_growing_share_of_errors_lowers_the_score() -> None:
    counts = steady()
    counts[1, 3, -7:] = 12
    score = run(counts, np.full((2, DAYS), 3.0))
    assert score[1] < score[0]
    assert PARAMS.negative(NAMES) == [False, False, False, True]


def test_active_users_count_only_where_an_account_has_several() -> None:
    counts = steady(3)
    users = np.full((3, DAYS), 1.0)
    users[1, -7:] = 0.5  # a single-user account: its one user on fewer days (half of them)
    users[2] = 4.0
    users[2, -7:] = 1.0  # seats shrinking in a team account
    score = run(counts, users)
    assert score[1] == score[0]  # users carry no weight for a single-user account
    assert score[2] < score[0] - 10
