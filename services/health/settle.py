"""Alerts open only on settled data.

History and late data fill rollups and score history at once, but an alert judged on
them could be transient: an account whose backfill is half imported looks inactive, a
consumer replaying a backlog sees yesterday without today, an account whose ``group``
call landed before its usage looks silent. So alerting is held:

- per account, until ``HEALTH_SETTLE_SECONDS`` after the last batch that brought it
  backdated data (an event older than the current day, a backdated ``group`` call) or
  data consumed from a backlog (``accounts.settled_at``, stored with the batch);
- for everyone, while any replica's consumer is behind the end of its topics (a
  database row, renewed by every backlog batch, so it holds across replicas), and for
  ``HEALTH_SETTLE_SECONDS`` after a replica starts: what producers queued meanwhile (SDK
  retries, an import resumed after a Ctrl-C) comes first, and a history half imported
  before the restart is not judged as it stands;
- for usage and score rules, for an account with no usage at all that health has known
  for less than the scoring's recent window: it is new, not declining. (Inactivity and
  onboarding windows of such an account count from when health first saw it: see
  :func:`evidence_start`.)

A held account's alerts neither open, change nor resolve; it keeps its dirty mark, and
the scheduler rescores it once it has settled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.health import repository as repo
from services.health.models import Account

BACKLOG_KEY = "settle.backlog"
# rules that judge usage or the score built on it (owner_changed reads the registry only)
USAGE_RULES = frozenset({"band_drop", "score_drop", "metric_decline", "renewal_risk", "expansion"})


def _utc(ts: datetime) -> datetime:
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def evidence_start(account: Account) -> date | None:
    """The first day the rules may read as "no activity": the first event day once the
    account has usage; before that, the day health first saw it (a backdated ``group``
    call says when the account began, not that it was silent since)."""
    if account.last_active is not None or account.first_seen is None:
        return account.first_seen
    return max(account.first_seen, _utc(account.created_at).date())


async def hold(
    session: AsyncSession, ids: set[str], *, now: datetime, seconds: float, backlog: bool
) -> None:
    """A batch brought backdated or backlog data for ``ids``: hold their alerts a while
    (and everyone's, when the consumer is behind)."""
    until = now + timedelta(seconds=seconds)
    if ids:
        await repo.set_settled_at(session, sorted(ids), until)
    if backlog:
        await repo.put_config(session, BACKLOG_KEY, {"until": until.isoformat()}, now)


async def hold_after_start(sessions: async_sessionmaker[AsyncSession], *, seconds: float) -> None:
    """A replica starts: everyone's alerts wait ``seconds`` (see the module's docstring)."""
    async with sessions() as session, session.begin():
        await hold(session, set(), now=datetime.now(UTC), seconds=seconds, backlog=True)


@dataclass
class Holds:
    settling: set[str] = field(default_factory=set)  # no alert of theirs changes
    new: set[str] = field(default_factory=set)  # no usage rule opens for them
    settles_at: datetime | None = None  # when the next held account settles


async def holds(
    session: AsyncSession,
    accounts: dict[str, Account],
    *,
    now: datetime,
    recent_days: int,
) -> Holds:
    stored = await repo.get_config(session, BACKLOG_KEY)
    backlog = _utc(datetime.fromisoformat(stored["until"])) if stored else None
    result = Holds()
    young = timedelta(days=recent_days)
    for account_id, account in accounts.items():
        until = _utc(account.settled_at) if account.settled_at is not None else None
        if backlog is not None and backlog > now and (until is None or backlog > until):
            until = backlog
        if until is not None and until > now:
            result.settling.add(account_id)
            if result.settles_at is None or until < result.settles_at:
                result.settles_at = until
        if account.last_active is None and now - _utc(account.created_at) < young:
            result.new.add(account_id)
    return result
