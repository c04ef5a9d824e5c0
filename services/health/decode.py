"""Message bytes -> (envelope, rollup facts), once per message. Pure: no I/O.

The runner's decoder (``ConsumerRunner(decode=...)``): a usage event's ``data`` is
validated (``UsageEvent``) as the message is decoded, so a malformed event is refused
there and the runner dead-letters that message alone, without retrying and splitting
the batch; the handler gets the :class:`EventFacts` the rollup needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.health.registry import SOURCE
from services.health.rollups import EventFacts
from shared.envelope import Envelope
from shared.messages import UsageEvent
from shared.textfit import fit_key

USAGE_TYPES = frozenset({"usage.track", "usage.page", "usage.screen"})
KEY_MAX = 300  # message ids and user keys (models.py): a longer one is stored as its digest


@dataclass(frozen=True, slots=True)
class Usage:
    """A usage event as the rollup needs it: the dedupe key and the facts."""

    message_id: str
    facts: EventFacts


def decode(raw: bytes) -> tuple[Envelope, Usage | None]:
    """The envelope, and for a usage event (not our own) its facts. Raises ValueError
    (pydantic's ValidationError is one) on a message that is not a valid envelope or
    usage event."""
    env = Envelope.parse(raw)
    if env.type in USAGE_TYPES and env.source != SOURCE:
        return env, usage_of(env.account_id, env.payload(UsageEvent))
    return env, None


def usage_of(account_id: str, event: UsageEvent) -> Usage:
    user = event.user_id or (f"anon:{event.anonymous_id}" if event.anonymous_id else None)
    user = fit_key(user, KEY_MAX) if user is not None else None
    facts = EventFacts(account_id, event.event, user, event.timestamp, event.properties)
    return Usage(fit_key(event.message_id, KEY_MAX), facts)
