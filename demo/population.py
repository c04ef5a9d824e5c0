"""A simulated customer base: pure, seeded, no I/O.

Each account follows one persona, the mix CS teams meet: steady users, slow decliners,
sudden drops, onboardings that never take off, growers, owner changes and accounts
that go silent. :func:`daily_events` says what each account's users did on a given day.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

PERSONAS = {
    "steady": 0.45,
    "slow_decline": 0.12,
    "sudden_drop": 0.10,
    "stalled_onboarding": 0.08,
    "grower": 0.12,
    "owner_change": 0.06,
    "silent": 0.07,
}
CSMS = [
    ("Maya Chen", "maya@uptake.example"),
    ("Omar Haddad", "omar@uptake.example"),
    ("Lena Fischer", "lena@uptake.example"),
    ("Diego Alvarez", "diego@uptake.example"),
    ("Priya Nair", "priya@uptake.example"),
]
SEGMENTS = {"smb": (99, 990), "mid-market": (1000, 5000), "enterprise": (5000, 40000)}
PLANS = {"smb": "starter", "mid-market": "pro", "enterprise": "enterprise"}
ROLES = ["admin", "champion", "user", "user", "user", "executive"]
# must-use actions after login, with their relative frequency per active user-day
ACTIONS = [
    ("Logged In", 1.0),
    ("Report Created", 0.6),
    ("Dashboard Viewed", 0.9),
    ("Data Exported", 0.2),
    ("Invite Sent", 0.05),
]
MILESTONE = "Milestone Reached"
WORDS = [
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Stark",
    "Wayne",
    "Hooli",
    "Vandelay",
    "Soylent",
    "Tyrell",
    "Cyberdyne",
    "Wonka",
    "Oscorp",
    "Gringotts",
    "Monarch",
    "Pied",
]
SUFFIXES = ["Labs", "Systems", "Foods", "Logistics", "Health", "Capital", "Media", "Works"]


@dataclass
class User:
    user_id: str
    email: str
    name: str
    role: str


@dataclass
class Account:
    account_id: str
    name: str
    segment: str
    plan: str
    mrr: float
    owner: tuple[str, str]
    persona: str
    stage: str
    renewal: date
    users: list[User] = field(default_factory=list)
    change_day: int = 0  # the day a decline, drop or owner change happens
    new_owner: tuple[str, str] | None = None


def make_population(n_accounts: int, *, seed: int = 7, today: date | None = None) -> list[Account]:
    rng = random.Random(seed)
    today = today or date.today()
    personas = list(PERSONAS)
    weights = list(PERSONAS.values())
    accounts = []
    for i in range(n_accounts):
        segment = rng.choices(list(SEGMENTS), weights=[0.6, 0.3, 0.1])[0]
        low, high = SEGMENTS[segment]
        persona = rng.choices(personas, weights=weights)[0]
        name = f"{rng.choice(WORDS)} {rng.choice(SUFFIXES)} {i:03d}"
        acct = Account(
            account_id=f"acct-{i:04d}",
            name=name,
            segment=segment,
            plan=PLANS[segment],
            mrr=round(rng.uniform(low, high), 2),
            owner=rng.choice(CSMS),
            persona=persona,
            stage="onboarding" if persona == "stalled_onboarding" else "adopted",
            renewal=today + timedelta(days=rng.randint(10, 360)),
            change_day=rng.randint(55, 80),
        )
        if persona == "owner_change":
            acct.new_owner = rng.choice([c for c in CSMS if c != acct.owner])
        domain = name.split()[0].lower() + f"{i}.example"
        for u in range(rng.randint(3, 12) if segment != "smb" else rng.randint(2, 6)):
            first = rng.choice(["Ann", "Ben", "Cara", "Dev", "Eli", "Fay", "Gus", "Hana", "Ivo"])
            acct.users.append(
                User(
                    f"{acct.account_id}-u{u}",
                    f"{first.lower()}.{u}@{domain}",
                    f"{first} {chr(65 + u)}.",
                    ROLES[u % len(ROLES)],
                )
            )
        accounts.append(acct)
    return accounts


def activity(acct: Account, day: int, days: int) -> float:
    """Share of the account's users active on ``day`` (0 = first simulated day)."""
    base = 0.55
    p, t = acct.persona, day
    if p == "slow_decline" and t >= days - 35:
        return base * max(0.08, 1 - (t - (days - 35)) / 35 * 0.85)
    if p == "sudden_drop" and t >= days - 6:
        return base * 0.1
    if p == "silent" and t >= days - 16:
        return 0.0
    if p == "grower":
        return float(min(0.95, base * 0.4 * 1.12 ** (t / 7)))
    if p == "stalled_onboarding":
        return 0.0 if t < days - 30 else 0.06
    return base


def daily_events(
    acct: Account, day: int, days: int, when: date, rng: random.Random
) -> list[dict[str, Any]]:
    """Segment ``track`` calls for one account and day."""
    if acct.persona == "stalled_onboarding" and day < days - 30:
        return []  # the account signed up 30 days ago
    share = activity(acct, day, days)
    events: list[dict[str, Any]] = []
    weekend = when.weekday() >= 5
    for user in acct.users:
        if rng.random() > share * (0.35 if weekend else 1.0):
            continue
        for action, rate in ACTIONS:
            count = int(rate * rng.uniform(0.5, 2.5))
            for _ in range(count):
                events.append(_track(acct, user, action, when, rng))
    if acct.persona != "stalled_onboarding" and day == 3 and acct.users:
        events.append(_track(acct, acct.users[0], MILESTONE, when, rng))
    return events


def _track(
    acct: Account, user: User, action: str, when: date, rng: random.Random
) -> dict[str, Any]:
    second = rng.randint(8 * 3600, 19 * 3600)
    return {
        "type": "track",
        "userId": user.user_id,
        "event": action,
        "context": {"groupId": acct.account_id},
        "timestamp": f"{when.isoformat()}T{second // 3600:02d}:{second // 60 % 60:02d}:"
        f"{second % 60:02d}Z",
        "messageId": f"{acct.account_id}-{when.isoformat()}-{rng.getrandbits(48):012x}",
        "properties": {"plan": acct.plan},
    }


def group_call(acct: Account, owner: tuple[str, str], when: date) -> dict[str, Any]:
    return {
        "type": "group",
        "userId": acct.users[0].user_id,
        "groupId": acct.account_id,
        "timestamp": f"{when.isoformat()}T07:00:00Z",
        "messageId": f"{acct.account_id}-group-{when.isoformat()}-{owner[1]}",
        "traits": {
            "name": acct.name,
            "plan": acct.plan,
            "mrr": acct.mrr,
            "owner": owner[1],
            "stage": acct.stage,
            "segment": acct.segment,
            "renewal_date": acct.renewal.isoformat(),
        },
    }


def identify_calls(acct: Account, when: date) -> list[dict[str, Any]]:
    return [
        {
            "type": "identify",
            "userId": u.user_id,
            "context": {"groupId": acct.account_id},
            "timestamp": f"{when.isoformat()}T07:00:00Z",
            "messageId": f"{u.user_id}-identify",
            "traits": {"email": u.email, "name": u.name, "role": u.role},
        }
        for u in acct.users
    ]
