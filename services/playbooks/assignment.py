"""Who gets a task group: pure functions over the team's current load, no I/O.

Rules (DESIGN.md, Playbooks): the account owner; round-robin or least-loaded within a
team, respecting each CSM's capacity (open tasks); otherwise the unassigned queue.
A CSM takes a group only if all its open tasks fit: ``load + needed <= capacity``.
The caller keeps a :class:`Team` for a whole consumer batch so loads add up in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Rule = Literal["owner", "round_robin", "least_loaded", "unassigned"]
Fallback = Literal["round_robin", "least_loaded", "unassigned"]


@dataclass(slots=True)
class Member:
    email: str
    team: str
    capacity: int
    active: bool = True
    load: int = 0  # open tasks right now

    def fits(self, needed: int) -> bool:
        return self.active and self.load + needed <= self.capacity


@dataclass(frozen=True, slots=True)
class Assignment:
    email: str | None  # None = the unassigned queue
    rule: str  # the rule that decided: owner, round_robin, least_loaded, unassigned


@dataclass(slots=True)
class Team:
    """Every CSM by email, plus the round-robin cursor (last email picked) per team."""

    members: dict[str, Member] = field(default_factory=dict)
    cursors: dict[str, str] = field(default_factory=dict)

    def in_team(self, team: str | None) -> list[Member]:
        chosen = [m for m in self.members.values() if team is None or m.team == team]
        return sorted(chosen, key=lambda m: m.email)


def pick_round_robin(team: Team, team_name: str | None, needed: int) -> Member | None:
    """The next member after the team's cursor (in email order) with room for ``needed``."""
    members = team.in_team(team_name)
    if not members:
        return None
    cursor = team.cursors.get(team_name or "*")
    # The first member after the cursor in email order (also right when the cursor left).
    start = next((i for i, m in enumerate(members) if cursor is None or m.email > cursor), 0)
    for offset in range(len(members)):
        member = members[(start + offset) % len(members)]
        if member.fits(needed):
            team.cursors[team_name or "*"] = member.email
            return member
    return None


def pick_least_loaded(team: Team, team_name: str | None, needed: int) -> Member | None:
    """The member with the fewest open tasks (ties by email) that has room for ``needed``."""
    fitting = [m for m in team.in_team(team_name) if m.fits(needed)]
    if not fitting:
        return None
    return min(fitting, key=lambda m: (m.load, m.email))


def assign(
    team: Team,
    *,
    rule: Rule,
    owner: str | None,
    team_name: str | None,
    fallback: Fallback,
    needed: int,
) -> Assignment:
    """Decide the assignee and add ``needed`` to their load (in ``team``)."""
    chosen: Member | None = None
    used: str = rule
    if rule == "owner":
        member = team.members.get(owner) if owner else None
        if member is not None and member.active:
            chosen = member  # the owner owns the account, whatever their load
        else:
            used = fallback
    if chosen is None and used == "round_robin":
        chosen = pick_round_robin(team, team_name, needed)
    elif chosen is None and used == "least_loaded":
        chosen = pick_least_loaded(team, team_name, needed)
    if chosen is None:
        return Assignment(email=None, rule="unassigned")
    chosen.load += needed
    return Assignment(email=chosen.email, rule=used)
