"""Labelled month-start observations for score quality and model fitting (reads only).

An observation is (account, month start ``d``) with ``d + horizon <= as_of`` (its outcome
is known by ``as_of``); accounts already churned at ``d`` are left out (recompute's
``load`` does that); the label is a churn within ``(d, d + horizon]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from services.health import repository as repo
from services.health.config import MetricsConfig
from services.health.model_fit import raw_features
from services.health.recompute import Recomputer
from services.health.scoring import FloatArray
from services.health.snapshot import Cube, model_inputs

MAX_MONTHS = 24


@dataclass(frozen=True)
class Month:
    day: date
    cube: Cube
    churned: FloatArray  # [a] label per cube account


def month_starts(as_of: date, horizon: int, earliest: date | None) -> list[date]:
    """First days of months with ``d + horizon <= as_of``, from ``earliest`` on (at most
    :data:`MAX_MONTHS`), oldest first."""
    if earliest is None:
        return []
    out: list[date] = []
    d = date(as_of.year, as_of.month, 1)
    while len(out) < MAX_MONTHS and d >= earliest:
        if d + timedelta(days=horizon) <= as_of:
            out.append(d)
        d = date(d.year - (d.month == 1), 12 if d.month == 1 else d.month - 1, 1)
    return out[::-1]


def churn_dates(rows: list[tuple[str, str, date, int]]) -> dict[str, list[date]]:
    found: dict[str, list[date]] = {}
    for account_id, kind, at, _ in rows:
        if kind == "churned":
            found.setdefault(account_id, []).append(at)
    return found


async def months(
    session: AsyncSession,
    recomputer: Recomputer,
    config: MetricsConfig,
    *,
    as_of: date,
    horizon: int,
) -> list[Month]:
    """Every month start whose outcome is known by ``as_of``, with its cube and labels."""
    earliest = await repo.first_rollup_day(session)
    rules = await repo.list_rules(session, enabled_only=True)
    churns = churn_dates(await repo.status_outcomes(session))
    out = []
    for day in month_starts(as_of, horizon, earliest):
        cube, _ = await recomputer.load(session, None, day, config, rules, with_events=True)
        if not cube.account_ids:
            continue
        end = day + timedelta(days=horizon)
        label = np.array(
            [any(day < c <= end for c in churns.get(a, ())) for a in cube.account_ids],
            dtype=np.float64,
        )
        out.append(Month(day, cube, label))
    return out


def model_metrics(config: MetricsConfig, months: list[Month]) -> list[str]:
    """Rollup keys a model reads: the configured metrics, then every per-event key."""
    keys = list(dict.fromkeys(config.storage_keys))
    for month in months:
        keys += [k for k in month.cube.event_keys if k not in keys]
    return keys


def features(month: Month, metrics: list[str]) -> FloatArray:
    end = month.cube.index_of(month.day)
    raw, _ = raw_features(model_inputs(month.cube, metrics)[:, :, :end], end, metrics)
    return raw
