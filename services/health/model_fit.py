"""A fitted health model: features from daily metric arrays, a regularised logistic
regression (scikit-learn), and what scoring with it needs. Pure: arrays in, results out.

Per metric two features, log-scaled: the level (``log1p`` of the last 28 days' total)
and the trend (``log`` of the last 7 days' rate over the last 28 days'). They are
standardised on the training observations, and features correlated above
``GROUP_CORRELATION`` are grouped the way "Fighting Churn with Data" does: the group's
value is the average of its members' standardised scores, so the regression sees one
column per behaviour instead of many near-copies. The model is stored as plain JSON
(:meth:`FittedModel.params`) and rebuilt from it on every replica.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
LEVEL_DAYS = 28
TREND_DAYS = 7
GROUP_CORRELATION = 0.5
STD_FLOOR = 1e-6


def raw_features(values: FloatArray, end: int, metrics: list[str]) -> tuple[FloatArray, list[str]]:
    """``[a, 2m]`` level and trend of every metric as of day index ``end`` (the days
    before it), and the feature names (``<metric>:level``, ``<metric>:trend``)."""
    if end < LEVEL_DAYS:
        values = np.pad(values, ((0, 0), (0, 0), (LEVEL_DAYS - end, 0)))
        end = LEVEL_DAYS
    window = np.clip(np.nan_to_num(values[:, :, end - LEVEL_DAYS : end]), 0, 1e15)
    total = window.sum(axis=2)
    recent = window[:, :, LEVEL_DAYS - TREND_DAYS :].sum(axis=2) * (LEVEL_DAYS / TREND_DAYS)
    level = np.log1p(total)
    trend = np.log((recent + 1.0) / (total + 1.0))
    features = np.concatenate([level, trend], axis=1)
    names = [f"{m}:level" for m in metrics] + [f"{m}:trend" for m in metrics]
    return features, names


def correlated_groups(z: FloatArray, threshold: float = GROUP_CORRELATION) -> list[list[int]]:
    """Greedy grouping: each feature not yet grouped takes every remaining feature whose
    correlation with it is above ``threshold`` (features in their given order)."""
    n = z.shape[1]
    if n == 0:
        return []
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.nan_to_num(np.corrcoef(z, rowvar=False)) if z.shape[0] > 1 else np.eye(n)
    corr = np.atleast_2d(corr)
    left = list(range(n))
    groups: list[list[int]] = []
    while left:
        head = left.pop(0)
        members = [head] + [j for j in left if corr[head, j] > threshold]
        left = [j for j in left if j not in members]
        groups.append(members)
    return groups


@dataclass(frozen=True)
class FittedModel:
    features: list[str]
    means: FloatArray
    stds: FloatArray
    groups: list[list[int]]
    coef: FloatArray  # [groups]
    intercept: float
    red: float  # probability at or above which an observation is red
    yellow: float
    medians: FloatArray  # [features] training medians of the raw features (for reasons)

    def grouped(self, raw: FloatArray) -> FloatArray:
        z = (np.nan_to_num(raw) - self.means[None, :]) / self.stds[None, :]
        cols = [z[:, g].mean(axis=1) for g in self.groups]
        return np.stack(cols, axis=1) if cols else np.zeros((raw.shape[0], 0))

    def probability(self, raw: FloatArray) -> FloatArray:
        logit = self.grouped(raw) @ self.coef + self.intercept
        p: FloatArray = 1.0 / (1.0 + np.exp(-np.clip(logit, -50, 50)))
        return p

    def params(self) -> dict[str, Any]:
        return {
            "features": self.features,
            "means": self.means.tolist(),
            "stds": self.stds.tolist(),
            "groups": [[self.features[i] for i in g] for g in self.groups],
            "coefficients": self.coef.tolist(),
            "intercept": self.intercept,
            "thresholds": {"red": self.red, "yellow": self.yellow},
            "medians": self.medians.tolist(),
        }

    @staticmethod
    def from_params(params: dict[str, Any]) -> FittedModel:
        features = list(params["features"])
        index = {f: i for i, f in enumerate(features)}
        return FittedModel(
            features=features,
            means=np.array(params["means"], dtype=np.float64),
            stds=np.array(params["stds"], dtype=np.float64),
            groups=[[index[f] for f in g] for g in params["groups"]],
            coef=np.array(params["coefficients"], dtype=np.float64),
            intercept=float(params["intercept"]),
            red=float(params["thresholds"]["red"]),
            yellow=float(params["thresholds"]["yellow"]),
            medians=np.array(params["medians"], dtype=np.float64),
        )


def fit(
    raw: FloatArray,
    churned: FloatArray,
    features: list[str],
    *,
    red_share: float = 0.10,
    yellow_share: float = 0.20,
    c: float = 1.0,
) -> FittedModel:
    """Fit on ``raw[obs, feature]`` with labels ``churned[obs]`` (both classes needed).

    Band thresholds come from the team's capacity: the riskiest ``red_share`` of the
    training observations are red, the next ``yellow_share`` yellow.
    """
    raw = np.nan_to_num(raw)
    means = raw.mean(axis=0)
    stds = np.maximum(raw.std(axis=0), STD_FLOOR)
    z = (raw - means[None, :]) / stds[None, :]
    groups = correlated_groups(z)
    x = np.stack([z[:, g].mean(axis=1) for g in groups], axis=1)
    # imported here: scikit-learn costs a second at every health start, fits are rare
    from sklearn.linear_model import LogisticRegression

    reg = LogisticRegression(C=c, max_iter=500)
    reg.fit(x, churned.astype(np.int64))
    model = FittedModel(
        features=features,
        means=means,
        stds=stds,
        groups=groups,
        coef=reg.coef_[0].astype(np.float64),
        intercept=float(reg.intercept_[0]),
        red=1.0,
        yellow=1.0,
        medians=np.median(raw, axis=0),
    )
    p = model.probability(raw)
    red = float(np.quantile(p, 1 - red_share)) if red_share > 0 else 1.0
    yellow = float(np.quantile(p, max(1 - red_share - yellow_share, 0.0)))
    return FittedModel(**{**model.__dict__, "red": red, "yellow": min(yellow, red)})


@dataclass(frozen=True)
class ModelScores:
    probability: FloatArray  # [a]
    score: FloatArray  # [a] 0..100, 100 = safest
    band: list[str]  # [a]
    points: FloatArray  # [a, groups] each group's share of the score's distance from 50


def score_with(model: FittedModel, raw: FloatArray) -> ModelScores:
    """Score = 100 * (1 - p), rounded to 0.01; bands by the fitted probability thresholds.

    A group's points are its part of the logit (relative to the average training
    observation), in score points: the logit's distance from even odds maps to
    ``score - 50``, shared in proportion (the intercept's share is not shown)."""
    p = model.probability(raw)
    score = np.round(100 * (1 - p), 2)
    band = ["red" if q >= model.red else "yellow" if q >= model.yellow else "green" for q in p]
    parts = model.grouped(raw) * model.coef[None, :]  # logit contributions (+ = riskier)
    logit = parts.sum(axis=1) + model.intercept
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(np.abs(logit) > 1e-9, (score - 50) / -logit, 0.0)
    points = np.nan_to_num(-parts * scale[:, None])
    return ModelScores(p, score, band, points)


def reason(model: FittedModel, raw: FloatArray, points: FloatArray, a: int, g: int) -> str:
    """The one line of group ``g`` for account ``a``, e.g. "event:Report Created 28-day
    level 0.3x median (+1 correlated): -12"."""
    members = model.groups[g]
    head = members[0]
    metric, kind = model.features[head].rsplit(":", 1)
    value, median = float(raw[a, head]), float(model.medians[head])
    if kind == "level":
        ratio = np.expm1(value) / max(float(np.expm1(median)), 1e-9)
        what = f"{metric} 28-day level {ratio:.1f}x median"
    else:
        what = f"{metric} last 7 days {np.exp(value):.1f}x its 28-day rate"
    more = f" (+{len(members) - 1} correlated)" if len(members) > 1 else ""
    return f"{what}{more}: {points[a, g]:+.0f}"
