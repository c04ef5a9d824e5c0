"""What a request keeps in ingest's database, in one transaction, before it answers.

Links and memberships from group calls, aliases, contacts merged from identifies, and
parked events. The caller publishes what this returns only after the commit, so an
answer of 200 means every event is either on the broker or in this database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncSession

from services.ingest import repository as repo
from services.ingest.contacts import contact_message, merge_traits
from services.ingest.models import Contact
from services.ingest.tracking import Identify, Outcome, envelope_bytes
from shared import topics


@dataclass(slots=True)
class Kept:
    messages: list[tuple[str, bytes, bytes]] = field(default_factory=list)  # contact upserts
    over_limit: list[int] = field(default_factory=list)  # indices refused with 429
    release: set[str] = field(default_factory=set)  # user keys that may free parked events
    parked_keys: set[str] = field(default_factory=set)
    links: dict[str, str] = field(default_factory=dict)  # links written
    stale: set[str] = field(default_factory=set)  # links that lost to a newer group call


async def keep(session: AsyncSession, outcome: Outcome, *, max_pending: int, trace_id: str) -> Kept:
    now = outcome.received_at
    kept = Kept()
    new_members: set[tuple[str, str]] = set()
    if outcome.links:
        written = await repo.store_links(session, outcome.links, now)
        kept.links = {k: outcome.links[k][0] for k in written}
        kept.stale = set(outcome.links) - written
        pairs = [(k, account) for k, (account, _) in outcome.links.items()]
        new_members = await repo.add_memberships(session, pairs, now)
        kept.release |= {k for k, _ in new_members}
    if outcome.aliases:
        kept.release |= await repo.store_aliases(session, outcome.aliases, now)
    if outcome.identifies or new_members:
        kept.messages = await _contacts(session, outcome, new_members, trace_id)
    if outcome.parked:
        kept.over_limit = await _park(session, outcome, max_pending, trace_id)
        refused = set(kept.over_limit)
        kept.parked_keys = {p.key for p in outcome.parked if p.index not in refused}
    return kept


def _merge(contact: Contact, call: Identify, now: datetime) -> None:
    contact.traits, contact.stamps = merge_traits(
        contact.traits, contact.stamps, call.traits, call.at
    )
    contact.user_id = call.user_id
    contact.message_id = call.message_id
    contact.updated_at = now


async def _contacts(
    session: AsyncSession,
    outcome: Outcome,
    new_members: set[tuple[str, str]],
    trace_id: str,
) -> list[tuple[str, bytes, bytes]]:
    """Merge identifies into contacts; the merged contact goes to each account the user
    belongs to (or the identify's own ``groupId``), and to each account joined now."""
    now = outcome.received_at
    seeds = {call.key: call.user_id for call in outcome.identifies}
    contacts = await repo.lock_contacts(session, seeds, now)
    for call in outcome.identifies:
        _merge(contacts[call.key], call, now)
    joined = {k for k, _ in new_members} - contacts.keys()
    contacts.update(await repo.contacts_of(session, joined))
    members = await repo.memberships_of(session, seeds.keys()) if seeds else {}
    targets: set[tuple[str, str]] = set()
    for call in outcome.identifies:
        accounts = {call.account_hint} if call.account_hint else members.get(call.key, set())
        targets |= {(account, call.key) for account in accounts}
    targets |= {(a, k) for k, a in new_members if k in contacts and contacts[k].message_id}
    messages = []
    for account, key in sorted(targets):
        contact = contacts[key]
        stamps = [datetime.fromisoformat(s) for s in contact.stamps.values()]
        value = envelope_bytes(
            type="contact.upserted",
            account_id=account,
            data=contact_message(
                user_id=contact.user_id, traits=contact.traits, message_id=contact.message_id
            ),
            occurred_at=max(stamps, default=now),
            produced_at=now,
            trace_id=trace_id,
        )
        messages.append((topics.ACCOUNTS, account.encode(), value))
    return messages


def _json(data: dict[str, Any]) -> dict[str, Any]:
    """Plain JSON (datetimes as ISO strings) for the JSON column."""
    value: dict[str, Any] = orjson.loads(orjson.dumps(data))
    return value


async def _park(session: AsyncSession, outcome: Outcome, limit: int, trace_id: str) -> list[int]:
    """Park the events; a user past ``limit`` parked events has the new ones refused
    (returned by index: the request answers 429 and the SDK retries them)."""
    rows = [
        {
            "user_key": p.key,
            "message_id": p.data["message_id"],
            "kind": p.kind,
            "data": _json(p.data),
            "occurred_at": p.occurred_at,
            "parked_at": outcome.received_at,
            "trace_id": trace_id,
        }
        for p in outcome.parked
    ]
    inserted = await repo.park(session, rows)
    if not inserted:
        return []
    mine: dict[str, list[int]] = {}
    for pid, i in inserted.items():
        mine.setdefault(rows[i]["user_key"], []).append(pid)
    refused: list[int] = []
    for key, count in (await repo.pending_counts(session, mine)).items():
        if count <= limit:
            continue
        drop = sorted(mine[key], reverse=True)[: count - limit]
        await repo.delete_pending(session, drop)
        refused += [outcome.parked[inserted[pid]].index for pid in drop]
    return sorted(refused)
