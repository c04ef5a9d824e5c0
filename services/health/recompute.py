"""Recompute scores and alerts for some or all accounts, in one transaction.

Loads the days the formula and the rules look at into one array (accounts x metrics x
days), scores them all at once (:mod:`scoring`), stores scores and today's history
row, publishes changed scores, then evaluates every enabled rule (:mod:`rules`) and
reconciles the alerts (:mod:`alerts`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.health import repository as repo
from services.health import settle
from services.health.alerts import reconcile
from services.health.config import MetricsConfig
from services.health.configstore import ConfigStore
from services.health.eventnames import COUNT_PREFIX
from services.health.model_store import active_model
from services.health.models import Account, AlertRule
from services.health.outbox import enqueue_many
from services.health.outcomes import churned_as_of, resolve_churned
from services.health.rules import Hit, evaluate
from services.health.scoring import BAND_NAMES, FloatArray, IntArray, Scores, finite, reason
from services.health.snapshot import NEVER, ActiveModel, Cube, score_at, snapshot_at
from shared import topics
from shared.envelope import Envelope, wrap
from shared.messages import HealthScored, ScoreComponent


@dataclass
class RecomputeResult:
    as_of: date
    accounts: int
    scores_changed: int
    alerts: dict[str, int]
    held: set[str] = field(default_factory=set)  # alerting waits for their data to settle
    settles_at: datetime | None = None  # when the first of them settles


def lookback_days(config: MetricsConfig, rules: list[AlertRule]) -> int:
    """How many days before ``as_of`` the scores (now and a week ago) and rules read."""
    s = config.scoring
    days = s.recent_days + s.baseline_days + 7
    for rule in rules:
        if rule.type == "expansion":
            days = max(days, 7 * (int(rule.params.get("weeks", 4)) + 1), rule.params.get("days", 0))
    return int(days)


def _segment_codes(segments: list[str | None], table: dict[str, int]) -> IntArray:
    return np.array([table.setdefault(s or "", len(table)) for s in segments], dtype=np.int64)


def _day(ts: datetime | None) -> date | None:
    """The UTC day of a stored time (SQLite hands them back naive, as UTC)."""
    if ts is None:
        return None
    return ts.date() if ts.tzinfo is None else ts.astimezone(UTC).date()


def _stage_since(a: Account, day_index: Callable[[date | None, float], float], days: int) -> float:
    """The day the current stage began, no earlier than the rules' evidence starts."""
    since = day_index(_day(a.stage_changed_at) or a.first_seen, days)
    return max(since, day_index(settle.evidence_start(a), days))


def build_cube(
    accounts: list[Account],
    config: MetricsConfig,
    series: list[repo.Series],
    *,
    first_day: date,
    days: int,
    owner_changes: list[tuple[str, datetime]],
    segment_table: dict[str, int],
    events: list[tuple[str, str]] | None = None,
    model: ActiveModel | None = None,
) -> Cube:
    """The arrays of ``accounts``: configured metrics, and each of ``events`` ((rollup
    key, name): every event name's own rollups) when the formula or the model reads them."""
    events = events or []
    ids = [a.account_id for a in accounts]
    a_index = {a: i for i, a in enumerate(ids)}
    m_index: dict[str, list[int]] = {}  # rollup key -> the metrics reading it
    for j, key in enumerate(config.storage_keys):
        m_index.setdefault(key, []).append(j)
    values = np.zeros((len(ids), len(config.metrics), days))
    e_index = {key: x for x, (key, _) in enumerate(events)}
    event_values = np.zeros((len(ids), len(events), days)) if events else None
    for account_id, metric, offsets, vals in series:
        a = a_index.get(account_id)
        if a is not None:
            for m in m_index.get(metric, ()):
                values[a, m, offsets] = vals
            x = e_index.get(metric)
            if x is not None and event_values is not None:
                event_values[a, x, offsets] = vals
    values = finite(values)

    def day_index(d: date | None, default: float) -> float:
        return float((d - first_day).days) if d is not None else default

    return Cube(
        account_ids=ids,
        metric_keys=config.keys,
        metric_names=[m.name for m in config.metrics],
        weights=np.array([m.weight for m in config.metrics], dtype=np.float64),
        values=values,
        first_day=first_day,
        first_seen=np.array(
            [day_index(settle.evidence_start(a), days) for a in accounts], dtype=np.int64
        ),
        last_active=np.array([day_index(a.last_active, NEVER) for a in accounts], dtype=np.int64),
        segments=_segment_codes([a.segment for a in accounts], segment_table),
        stage=[a.stage for a in accounts],
        plan=[a.plan for a in accounts],
        renewal=np.array([day_index(a.renewal_date, np.nan) for a in accounts]),
        stage_since=np.array(
            [_stage_since(a, day_index, days) for a in accounts],
            dtype=np.int64,
        ),
        owner_changes=[
            (a_index[acc], (when.date() - first_day).days)
            for acc, when in owner_changes
            if acc in a_index
        ],
        storage_keys=config.storage_keys,
        user_metrics=[m.kind in ("distinct_users", "event_users") for m in config.metrics],
        event_keys=[k for k, _ in events],
        event_names=[n for _, n in events],
        event_values=None if event_values is None else finite(event_values),
        model=model,
    )


def _scored_events(
    events: list[tuple[str, str]], model: ActiveModel | None
) -> list[tuple[str, str]]:
    """The per-event keys a score reads: a fitted model's own; else the default's event
    parts, which read counts only (the ``users:`` keys would double the cube for nothing)."""
    if model is not None:
        wanted = set(model.metrics)
        return [(k, n) for k, n in events if k in wanted]
    return [(k, n) for k, n in events if k.startswith(COUNT_PREFIX)]


def components_of(scores: Scores, a: int, config: MetricsConfig) -> list[dict[str, Any]]:
    out = []
    parts = scores.part_points, scores.part_reason, scores.part_values, scores.part_weights
    points, why, values, weights = parts
    if points is not None and why is not None and values is not None and weights is not None:
        for k, part in enumerate(scores.parts):
            value = round(float(values[a, k]), 4)
            out.append(
                {
                    "metric": part,
                    "weight": round(float(weights[a, k]), 4),
                    "level": value,
                    "trend": value,
                    "points": round(float(points[a, k]), 2),
                    "reason": why(a, k),
                }
            )
    if scores.only_parts:  # a fitted model: its groups are the components
        return out
    for m, metric in enumerate(config.metrics):
        if metric.weight <= 0:
            continue
        out.append(
            {
                "metric": metric.key,
                "weight": metric.weight,
                "level": round(float(scores.level[a, m]), 4),
                "trend": round(float(scores.trend[a, m]), 4),
                "points": round(float(scores.points[a, m]), 2),
                "recent": round(float(scores.recent[a, m]), 4),
                "baseline": None
                if np.isnan(scores.baseline[a, m])
                else round(float(scores.baseline[a, m]), 4),
                "segment_median": round(float(scores.median[a, m]), 4),
                "reason": reason(metric.name, scores, a, m, config.scoring.baseline_days),
            }
        )
    return out


class Recomputer:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        store: ConfigStore,
        *,
        today: Callable[[], date],
        on_committed: Callable[[], None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._store = store
        self._today = today
        self._on_committed = on_committed
        self._lock = asyncio.Lock()

    async def recompute(
        self, account_ids: list[str] | None = None, *, as_of: date | None = None
    ) -> RecomputeResult:
        """Score ``account_ids`` (all when None) as of ``as_of`` (default: today).

        Today's run stores the current scores, publishes changes and reconciles alerts. A
        past ``as_of`` only (re)writes that day's score history: the current scores,
        alerts and dirty marks stay as they are. A future one is refused (ValueError).
        """
        today = self._today()
        as_of = as_of or today
        if as_of > today:
            raise ValueError(f"as_of {as_of} is after today ({today})")
        config = await self._store.metrics()
        budget = await self._store.alert_budget()
        async with self._lock, self._sessions() as session, session.begin():
            await repo.take_write_lock(session)
            if as_of < today:
                return await self._history_only(session, account_ids, as_of, config)
            marks = await repo.dirty_marks(session, account_ids)
            result = await self._run(session, account_ids, as_of, config, budget)
            # held accounts stay (or become) marked: rescored and judged once settled
            await repo.clear_dirty(
                session, {a: d for a, d in marks.items() if a not in result.held}
            )
            unmarked = sorted(result.held - marks.keys())
            if unmarked:
                await repo.mark_dirty(session, unmarked, datetime.now(UTC))
        if self._on_committed is not None:
            self._on_committed()
        return result

    async def _history_only(
        self,
        session: AsyncSession,
        account_ids: list[str] | None,
        as_of: date,
        config: MetricsConfig,
    ) -> RecomputeResult:
        """Score a past day into ``score_history``; nothing current changes, nothing is sent."""
        rules = await repo.list_rules(session, enabled_only=True)
        cube, peers = await self.load(session, account_ids, as_of, config, rules)
        scores = score_at(cube, cube.index_of(as_of), config.scoring, peers[0])
        now = datetime.now(UTC)
        history = [
            {
                "account_id": account_id,
                "score": float(scores.score[a]),
                "band": BAND_NAMES[scores.band[a]],
                "components": components_of(scores, a, config),
                "day": as_of,
                "computed_at": now,
            }
            for a, account_id in enumerate(cube.account_ids)
        ]
        await repo.store_history(session, history)
        return RecomputeResult(as_of, len(cube.account_ids), 0, {})

    async def _run(
        self,
        session: AsyncSession,
        account_ids: list[str] | None,
        as_of: date,
        config: MetricsConfig,
        budget: int,
    ) -> RecomputeResult:
        rules = await repo.list_rules(session, enabled_only=True)
        cube, peers = await self.load(session, account_ids, as_of, config, rules)
        end = cube.index_of(as_of)
        snap = snapshot_at(cube, end, config.scoring, *peers)
        now = datetime.now(UTC)
        # churned by today (a churn dated ahead takes effect on its day): alerts resolve
        await resolve_churned(session, await repo.churned_with_alerts(session, as_of), now)
        changed = await self._store_scores(
            session, cube, snap.now, snap.week_ago, as_of, now, config
        )
        accounts = await repo.get_accounts(session, cube.account_ids)
        holds = await settle.holds(
            session, accounts, now=now, recent_days=config.scoring.recent_days
        )
        hits: dict[str, list[Hit]] = {}
        for r in rules:
            found = evaluate(r.type, r.params, snap)
            if r.type in settle.USAGE_RULES and holds.new:
                found = [h for h in found if cube.account_ids[h.index] not in holds.new]
            hits[r.id] = found
        counts = await reconcile(
            session,
            rules=rules,
            hits=hits,
            account_ids=cube.account_ids,
            accounts=accounts,
            now=now,
            budget=budget,
            held=holds.settling,
        )
        return RecomputeResult(
            as_of, len(cube.account_ids), changed, counts, holds.settling, holds.settles_at
        )

    async def load(
        self,
        session: AsyncSession,
        account_ids: list[str] | None,
        as_of: date,
        config: MetricsConfig,
        rules: list[AlertRule],
        *,
        extra_days: int = 0,
        with_events: bool = False,
    ) -> tuple[Cube, tuple[tuple[FloatArray, IntArray] | None, tuple[FloatArray, IntArray] | None]]:
        """The cube for the accounts, and (for a subset) every account's levels as peers.

        Accounts churned as of ``as_of`` are left out of both: not scored, not alerted,
        not in their segment's medians."""
        days = lookback_days(config, rules) + extra_days
        first_day = as_of - timedelta(days=days)
        churned = churned_as_of(await repo.status_outcomes(session), as_of)
        if account_ids is None:
            accounts = await repo.all_accounts(session)
        else:
            found = await repo.get_accounts(session, account_ids)
            accounts = [found[a] for a in sorted(found)]
        accounts = [a for a in accounts if a.account_id not in churned]
        ids = [a.account_id for a in accounts]
        model = await active_model(session)
        events = await repo.event_keys(session) if with_events else []
        if not with_events and (model is not None or config.scoring.event_parts):
            events = _scored_events(await repo.event_keys(session), model)
        keys = config.storage_keys + [k for k, _ in events]
        series = await repo.load_series(
            session, first_day, as_of, None if account_ids is None else ids, keys
        )
        changes = await repo.owner_changes(session, None if account_ids is None else ids)
        table: dict[str, int] = {}
        cube = build_cube(
            accounts,
            config,
            series,
            first_day=first_day,
            days=days,
            owner_changes=[(c.account_id, c.changed_at) for c in changes],
            segment_table=table,
            events=events,
            model=model,
        )
        if account_ids is None:
            return cube, (None, None)
        recent = config.scoring.recent_days
        now_peers = await self._peers(session, as_of, recent, cube, table, churned)
        week_peers = await self._peers(
            session, as_of - timedelta(days=7), recent, cube, table, churned
        )
        return cube, (now_peers, week_peers)

    async def _peers(
        self,
        session: AsyncSession,
        end: date,
        days: int,
        cube: Cube,
        table: dict[str, int],
        churned: set[str],
    ) -> tuple[FloatArray, IntArray]:
        """Every (not churned) account's mean per day over the window before ``end`` (the
        cube's metrics, then its per-event keys), and its segment code."""
        segments = [s for s in await repo.account_segments(session) if s[0] not in churned]
        index = {a: i for i, (a, _) in enumerate(segments)}
        keys = cube.storage_keys + cube.event_keys
        m_index: dict[str, list[int]] = {}
        for j, key in enumerate(keys):
            m_index.setdefault(key, []).append(j)
        levels = np.zeros((len(segments), len(keys)))
        start = end - timedelta(days=days)
        for a, m, total in await repo.window_totals(session, start, end, keys):
            if a in index:
                for j in m_index.get(m, ()):
                    levels[index[a], j] = total / days
        return levels, _segment_codes([s for _, s in segments], table)

    async def _store_scores(
        self,
        session: AsyncSession,
        cube: Cube,
        now_scores: Scores,
        week_ago: Scores,
        as_of: date,
        now: datetime,
        config: MetricsConfig,
    ) -> int:
        previous = await repo.current_scores(
            session, cube.account_ids if len(cube.account_ids) < 5000 else None
        )
        current, history, announce = [], [], []
        changed = 0
        for a, account_id in enumerate(cube.account_ids):
            score = float(now_scores.score[a])
            band = BAND_NAMES[now_scores.band[a]]
            components = components_of(now_scores, a, config)
            row = {"account_id": account_id, "score": score, "band": band, "components": components}
            before = previous.get(account_id)
            current.append(
                {
                    **row,
                    "change": round(score - float(week_ago.score[a]), 2),
                    "as_of": as_of,
                    "computed_at": now,
                }
            )
            history.append({**row, "day": as_of, "computed_at": now})
            if before is None or before[1] != band or round(before[0], 1) != round(score, 1):
                changed += 1
                announce.append(_scored(account_id, score, band, before, components, now))
        await enqueue_many(session, topics.HEALTH_SCORES, announce)
        await repo.store_scores(session, current)
        await repo.store_history(session, history)
        return changed


def _scored(
    account_id: str,
    score: float,
    band: str,
    before: tuple[float, str] | None,
    components: list[dict[str, Any]],
    now: datetime,
) -> Envelope:
    message = HealthScored(
        score=score,
        band=band,
        previous_score=before[0] if before else None,
        previous_band=before[1] if before else None,
        components=[ScoreComponent.model_validate(c) for c in components],
        computed_at=now,
    )
    return wrap(message, type="health.scored", account_id=account_id, source="health")
