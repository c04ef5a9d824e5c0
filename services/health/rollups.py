"""From a batch of new usage events to per-day rollup increments. Pure: no I/O.

The batch is aggregated in memory first so each (account, metric, day) is written once
per batch; the caller stores the increments together with the dedupe marks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from services.health.config import MetricDef

Key = tuple[str, str, date]  # account, metric, day
# Property values and daily rollups are clamped to +-MAX_VALUE: far beyond any real
# usage, and small enough that sums over years of days stay finite (float8 overflow is
# an error in PostgreSQL, inf/nan in numpy). Non-finite values are skipped.
MAX_VALUE = 1e15


def clamp(value: float) -> float:
    return min(max(value, -MAX_VALUE), MAX_VALUE)


@dataclass
class Increments:
    added: dict[Key, float] = field(default_factory=dict)  # count and sum metrics
    last: dict[Key, tuple[datetime, float]] = field(default_factory=dict)  # last-value metrics
    users: set[tuple[str, str, date, str]] = field(default_factory=set)  # distinct users
    days: dict[str, tuple[date, date]] = field(default_factory=dict)  # account -> first, last


@dataclass(frozen=True, slots=True)
class EventFacts:
    account_id: str
    event: str
    user_key: str | None
    timestamp: datetime
    properties: dict[str, Any]


def utc_day(ts: datetime) -> date:
    """An event's day, in UTC (a late event lands on its own day)."""
    if ts.tzinfo is None:
        return ts.date()
    return ts.astimezone(UTC).date()


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
    else:
        return None
    return clamp(number) if math.isfinite(number) else None


def aggregate(
    events: list[EventFacts],
    metrics: list[MetricDef],
    per_event: dict[str, tuple[str, str]] | None = None,
) -> Increments:
    """Increments of the configured metrics and, with ``per_event`` (event name -> its
    rollup keys: events per day, distinct users per day), of every event name's own."""
    out = Increments()
    metrics = [m for m in metrics if m.kind not in ("event_count", "event_users")]
    added, users = out.added, out.users
    for ev in events:
        day = utc_day(ev.timestamp)
        first, last = out.days.get(ev.account_id, (day, day))
        out.days[ev.account_id] = (min(first, day), max(last, day))
        if per_event is not None:
            count, distinct = per_event[ev.event]
            key = (ev.account_id, count, day)
            added[key] = added.get(key, 0.0) + 1.0
            if ev.user_key is not None:
                users.add((ev.account_id, distinct, day, ev.user_key))
        for metric in metrics:
            if not metric.matches(ev.event):
                continue
            key = (ev.account_id, metric.key, day)
            if metric.kind == "count":
                out.added[key] = out.added.get(key, 0.0) + 1.0
            elif metric.kind == "distinct_users":
                if ev.user_key is not None:
                    out.users.add((ev.account_id, metric.key, day, ev.user_key))
            else:
                number = _number(ev.properties.get(metric.property or ""))
                if number is None:
                    continue
                if metric.kind == "sum":
                    out.added[key] = clamp(out.added.get(key, 0.0) + number)
                else:
                    seen = out.last.get(key)
                    if seen is None or ev.timestamp >= seen[0]:
                        out.last[key] = (ev.timestamp, number)
    return out
