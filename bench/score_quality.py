"""Does the score predict churn? AUC of "churns within the next 31 days", side by side.

``.venv/bin/python -m bench.score_quality [accounts]`` simulates a labelled history
(:mod:`bench.churn_sim`), scores it as of every month start with the health service's own
pure functions (the rollup arrays recompute builds), and prints, per churn mechanism and
overall: the previous default (all events + active users), the default (per-event balanced,
breadth, friction, users), a recent-event-count baseline (last 28 days), a plain logistic
regression on per-event counts and the fitted model (:mod:`services.health.model_fit`).
The last two are out of time: fit on the earlier month starts, scored on the last three
(every column is shown on those held-out months; the first two also over all months).
Then it times a fit of 10,000 accounts x 12 monthly observations x 50 metrics.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from bench.churn_sim import MECHANISMS, Simulation, labels, simulate
from services.health.config import ScoringParams
from services.health.model_fit import fit, raw_features, score_with
from services.health.quality import risk_auc
from services.health.scoring import default_score, score_accounts

FloatArray = np.ndarray
HORIZON = 31
HELD_OUT = 3
PARAMS = ScoringParams(event_parts=True)


def metric_cube(sim: Simulation) -> tuple[FloatArray, list[str]]:
    """``[a, m, d]``: every per-event count and user metric plus the two old defaults."""
    names = (
        ["events", "active_users"]
        + [f"event:{n}" for n in sim.event_names]
        + [f"users:{n}" for n in sim.event_names]
    )
    cube = np.concatenate(
        [sim.total_events[:, None, :], sim.active[:, None, :], sim.counts, sim.users], axis=1
    )
    return cube, names


def ages_at(sim: Simulation, day: int) -> np.ndarray:
    active_days = np.cumsum(sim.total_events[:, :day] > 0, axis=1)
    first = np.where(active_days[:, -1] > 0, np.argmax(active_days > 0, axis=1), day)
    return np.maximum(day - first, 0).astype(np.int64)


def segment_codes(sim: Simulation) -> np.ndarray:
    table = {s: i for i, s in enumerate(sorted(set(sim.segments)))}
    return np.array([table[s] for s in sim.segments], dtype=np.int64)


def observe(sim: Simulation) -> dict[str, np.ndarray]:
    """One row per (eligible account, month start): every score, features and labels."""
    negative = np.array(PARAMS.negative(sim.event_names))
    segments = segment_codes(sim)
    cube, names = metric_cube(sim)
    rows: dict[str, list[np.ndarray]] = {
        k: [] for k in ("old", "default", "count", "label", "obs", "mech", "raw", "counts")
    }
    mech = np.array(sim.mechanism)
    for i, day in enumerate(sim.observations):
        eligible, churned = labels(sim, day, HORIZON)
        ages = ages_at(sim, day)
        eligible &= ages > 0
        old = score_accounts(
            cube[:, :2], end=day, ages=ages, segments=segments, weights=np.ones(2), params=PARAMS
        )
        score = default_score(
            cube[:, :2],
            sim.counts,
            negative,
            sim.event_names,
            end=day,
            ages=ages,
            segments=segments,
            weights=np.array([0.0, 1.0]),
            users=np.array([False, True]),
            params=PARAMS,
        ).score
        raw, _ = raw_features(cube, day, names)
        per_event = np.log1p(
            np.concatenate(
                [
                    sim.counts[:, :, day - 28 : day].sum(axis=2),
                    sim.active[:, None, day - 28 : day].sum(axis=2),
                ],
                axis=1,
            )
        )
        e = eligible
        rows["old"].append(old.score[e])
        rows["default"].append(score[e])
        rows["count"].append(sim.total_events[e, day - 28 : day].sum(axis=1))
        rows["label"].append(churned[e])
        rows["obs"].append(np.full(int(e.sum()), i))
        rows["mech"].append(np.where(churned[e] > 0, mech[e], ""))
        rows["raw"].append(raw[e])
        rows["counts"].append(per_event[e])
    return {k: np.concatenate(v) for k, v in rows.items()}


def by_mechanism(safety: np.ndarray, label: np.ndarray, mech: np.ndarray) -> dict[str, float]:
    out = {"overall": risk_auc(safety, label)}
    for m in MECHANISMS:
        keep = (label == 0) | (mech == m)
        out[m] = risk_auc(safety[keep], label[keep])
    return out


def evaluate(sim: Simulation) -> dict[str, dict[str, dict[str, float]]]:
    """AUC per column and mechanism: ``{"all": {...}, "held_out": {...}}``."""
    # here, not at the top: the test suite imports this module on every worker (a second
    # of CPU each for scikit-learn) and only one test evaluates
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rows = observe(sim)
    label, mech, obs = rows["label"], rows["mech"], rows["obs"]
    test = obs >= obs.max() - HELD_OUT + 1
    train = ~test
    model = fit(rows["raw"][train], label[train], [str(i) for i in range(rows["raw"].shape[1])])
    fitted = score_with(model, rows["raw"][test]).score
    scaler = StandardScaler().fit(rows["counts"][train])
    plain = LogisticRegression(max_iter=500).fit(
        scaler.transform(rows["counts"][train]), label[train]
    )
    plain_p = plain.predict_proba(scaler.transform(rows["counts"][test]))[:, 1]
    result = {
        "all": {
            "previous default": by_mechanism(rows["old"], label, mech),
            "default": by_mechanism(rows["default"], label, mech),
            "event count (28 d)": by_mechanism(rows["count"], label, mech),
        },
        "held_out": {
            "previous default": by_mechanism(rows["old"][test], label[test], mech[test]),
            "default": by_mechanism(rows["default"][test], label[test], mech[test]),
            "event count (28 d)": by_mechanism(rows["count"][test], label[test], mech[test]),
            "regression on counts": by_mechanism(-plain_p, label[test], mech[test]),
            "fitted model": by_mechanism(fitted, label[test], mech[test]),
        },
    }
    return result


def print_table(title: str, table: dict[str, dict[str, float]]) -> None:
    cols = ["overall", *MECHANISMS]
    print(f"\n{title}")
    print(f"{'':24}" + "".join(f"{c:>12}" for c in cols))
    for name, aucs in table.items():
        print(f"{name:24}" + "".join(f"{aucs[c]:12.3f}" for c in cols))


def time_fit(accounts: int = 10_000, months: int = 12, metrics: int = 50) -> float:
    """Seconds to fit ``accounts x months`` observations of ``metrics`` metrics (features
    from a 28-day window per observation, as the endpoint builds them)."""
    rng = np.random.default_rng(3)
    values = rng.poisson(
        rng.lognormal(0, 1, size=(accounts, metrics, 1)), size=(accounts, metrics, 28 + 7 * months)
    ).astype(np.float64)
    names = [f"m{i}" for i in range(metrics)]
    started = time.perf_counter()
    raws = [raw_features(values, 28 + 7 * k, names)[0] for k in range(months)]
    raw = np.concatenate(raws)
    label = (rng.random(raw.shape[0]) < 0.05 + 0.1 * (raw[:, metrics] < 0)).astype(np.float64)
    fit(raw, label, [f"{n}:level" for n in names] + [f"{n}:trend" for n in names])
    return time.perf_counter() - started


def main() -> None:
    accounts = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    started = time.perf_counter()
    sim = simulate(accounts)
    churners = int((sim.churn_day >= 0).sum())
    print(
        f"simulated {accounts} accounts x {sim.days} days, {churners} churners, "
        f"{len(sim.observations)} month starts ({time.perf_counter() - started:.1f} s)"
    )
    result = evaluate(sim)
    print_table("AUC, every month start", result["all"])
    print_table(
        f"AUC, the last {HELD_OUT} month starts (models fit on the earlier ones)",
        result["held_out"],
    )
    seconds = time_fit()
    print(f"\nfit 10,000 accounts x 12 monthly observations x 50 metrics: {seconds:.1f} s")


if __name__ == "__main__":
    main()
