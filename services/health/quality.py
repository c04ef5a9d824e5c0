"""How well a score ranks churners: AUC, band catch rates, lift, per-metric AUC. Pure.

Inputs are one row per (account, observation date): the score (higher = safer), its
band, the label (1 = churned within the horizon) and optionally metric values. The
per-metric analysis is the metric-cohort view of "Fighting Churn with Data": a metric
whose AUC for "more of it = churn" is below 0.5 goes with staying.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
MIN_CHURNERS = 10


def risk_auc(safety: FloatArray, churned: FloatArray) -> float:
    """AUC of ranking by risk (low ``safety`` first) for the ``churned`` labels; 0.5 when
    only one class is present."""
    if churned.min(initial=0) == churned.max(initial=0):
        return 0.5
    from sklearn.metrics import roc_auc_score  # here: a second of import, used by fits only

    return float(roc_auc_score(churned, -np.nan_to_num(safety, nan=0.0)))


@dataclass(frozen=True)
class MetricQuality:
    metric: str
    auc: float  # of "more of this metric = more churn"
    direction: str  # "leaving" (more goes with churn) | "staying" | "neutral"
    churner_mean: float
    stayer_mean: float


@dataclass(frozen=True)
class Quality:
    observations: int
    churners: int
    churn_rate: float
    auc: float
    red_catch: float  # share of churners that were red
    red_yellow_catch: float
    red_share: float  # share of observations that were red
    red_lift: float  # churn rate among red / overall churn rate
    metrics: list[MetricQuality]


def metric_quality(name: str, values: FloatArray, churned: FloatArray) -> MetricQuality:
    auc = risk_auc(-values, churned)
    direction = "leaving" if auc >= 0.55 else "staying" if auc <= 0.45 else "neutral"
    pos = churned > 0
    return MetricQuality(
        metric=name,
        auc=round(auc, 4),
        direction=direction,
        churner_mean=round(float(values[pos].mean()) if pos.any() else 0.0, 4),
        stayer_mean=round(float(values[~pos].mean()) if (~pos).any() else 0.0, 4),
    )


def evaluate(
    score: FloatArray,
    band: list[str],
    churned: FloatArray,
    metrics: dict[str, FloatArray] | None = None,
) -> Quality:
    """The score's quality over the observations (``band`` names: red / yellow / green)."""
    bands = np.array(band)
    red = bands == "red"
    red_yellow = red | (bands == "yellow")
    pos = churned > 0
    n_pos = int(pos.sum())
    rate = n_pos / len(churned) if len(churned) else 0.0
    red_rate = float(churned[red].mean()) if red.any() else 0.0
    return Quality(
        observations=len(churned),
        churners=n_pos,
        churn_rate=round(rate, 4),
        auc=round(risk_auc(score, churned), 4),
        red_catch=round(float(red[pos].mean()) if n_pos else 0.0, 4),
        red_yellow_catch=round(float(red_yellow[pos].mean()) if n_pos else 0.0, 4),
        red_share=round(float(red.mean()) if len(red) else 0.0, 4),
        red_lift=round(red_rate / rate if rate > 0 else 0.0, 4),
        metrics=[metric_quality(k, v, churned) for k, v in sorted((metrics or {}).items())],
    )
