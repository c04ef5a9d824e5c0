"""The five pages, each read from the services' APIs with the signed-in person's token.

Calls a page needs are made together (``asyncio.gather``), and the portfolio reads a
page of accounts and their sparklines in two calls, whatever the page size.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from services.console.api import ApiError, seg
from services.console.charts import Marker, Threshold, line_chart, sparkline, week_bars
from services.console.web import console_of, render, signed_in

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50
SORTS = (
    "name", "score", "change", "mrr", "owner", "stage", "segment", "renewal_date", "alerts",
)  # fmt: skip
Sort = Literal[
    "name", "-name", "score", "-score", "change", "-change", "mrr", "-mrr", "owner", "-owner",
    "stage", "-stage", "segment", "-segment", "renewal_date", "-renewal_date", "alerts",
    "-alerts", "account_id", "-account_id",
]  # fmt: skip
Band = Literal["", "green", "yellow", "red"]


def _day(value: str | None) -> date | None:
    return date.fromisoformat(value[:10]) if value else None


async def _bands(request: Request, token: str) -> tuple[float, float]:
    config = await console_of(request).api.get(token, "health", "/v1/config/metrics")
    scoring = config.get("scoring") or {}
    return float(scoring.get("green", 70)), float(scoring.get("yellow", 40))


@router.get("/portfolio")
async def portfolio(
    request: Request,
    owner: Annotated[str, Query(max_length=320)] = "mine",
    band: Band = "",
    segment: Annotated[str, Query(max_length=300)] = "",
    stage: Annotated[str, Query(max_length=300)] = "",
    sort: Sort = "score",
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    session = signed_in(request)
    api, token = console_of(request).api, session.token or ""
    who = session.subject if owner == "mine" else None if owner == "all" else owner
    listing, csms, (green, yellow) = await asyncio.gather(
        api.get(
            token,
            "health",
            "/v1/accounts",
            owner=who,
            band=band,
            segment=segment,
            stage=stage,
            sort=sort,
            limit=PAGE_SIZE,
            offset=(page - 1) * PAGE_SIZE,
        ),
        api.get(token, "playbooks", "/v1/csms"),
        _bands(request, token),
    )
    accounts = listing["items"]
    sparks: dict[str, Any] = {}
    start = datetime.now(UTC).date() - timedelta(days=89)
    if accounts:
        ids = [a["account_id"] for a in accounts]
        lines = await api.post(token, "health", "/v1/sparklines", {"account_ids": ids})
        start = date.fromisoformat(lines["start"])
        sparks = {s["account_id"]: s for s in lines["items"]}
    rows = []
    for a in accounts:
        spark = sparks.get(a["account_id"], {"scores": [], "open_alerts": 0})
        rows.append(
            {
                **a,
                "spark": sparkline(
                    [date.fromisoformat(p["day"]) for p in spark["scores"]],
                    [p["score"] for p in spark["scores"]],
                    start=start,
                    green=green,
                    yellow=yellow,
                ),
                "open_alerts": spark["open_alerts"],
            }
        )
    filters = {"owner": owner, "band": band, "segment": segment, "stage": stage}

    def link(**changes: Any) -> str:
        query = {**filters, "sort": sort, "page": page, **changes}
        return "/portfolio?" + urlencode({k: v for k, v in query.items() if v not in ("", None)})

    def sort_link(column: str) -> str:
        descending = column in ("mrr", "alerts", "change")  # biggest first on the first click
        first = f"-{column}" if descending else column
        return link(
            sort=(column if sort == f"-{column}" else f"-{column}")
            if sort.lstrip("-") == column
            else first,
            page=1,
        )

    pages = max(1, -(-listing["total"] // PAGE_SIZE))
    return render(
        request,
        "portfolio.html",
        title="Portfolio",
        rows=rows,
        total=listing["total"],
        filters=filters,
        sort=sort,
        page=page,
        pages=pages,
        prev_link=link(page=page - 1) if page > 1 else None,
        next_link=link(page=page + 1) if page < pages else None,
        sort_link=sort_link,
        csms=csms,
    )


@router.get("/accounts/{account_id}")
async def account(request: Request, account_id: str) -> Response:
    session = signed_in(request)
    api, token = console_of(request).api, session.token or ""
    path = f"/v1/accounts/{seg(account_id)}"
    (
        acct,
        scores,
        metrics,
        alerts,
        outcomes,
        groups,
        tasks,
        deliveries,
        unsubscribes,
        (green, yellow),
        csms,
    ) = await asyncio.gather(
        api.get(token, "health", path),
        api.get(token, "health", f"{path}/scores", limit=90),
        api.get(token, "health", f"{path}/metrics", days=90),
        api.get(token, "health", "/v1/alerts", account_id=account_id, limit=200),
        api.get(token, "health", f"{path}/outcomes"),
        api.get(token, "playbooks", "/v1/task-groups", account_id=account_id, limit=100),
        api.get(token, "playbooks", "/v1/tasks", account_id=account_id, limit=500),
        api.get(token, "notify", "/v1/deliveries", account_id=account_id, limit=200),
        api.get(token, "notify", "/v1/suppressions", account_id=account_id, limit=200),
        _bands(request, token),
        api.get(token, "playbooks", "/v1/csms", active="true"),
    )
    end = date.fromisoformat(metrics["end"]) - timedelta(days=1)
    start = date.fromisoformat(metrics["start"])
    history = list(reversed(scores))
    markers = [
        Marker(_day(a["opened_at"]) or end, f"{a['title']} ({a['status']})", "alert")
        for a in alerts["items"]
    ]
    score_chart = line_chart(
        [date.fromisoformat(p["day"]) for p in history],
        [p["score"] for p in history],
        start=start,
        end=end,
        title="Health score, last 90 days",
        y_max=100,
        thresholds=[
            Threshold(green, f"green from {green:g}", "green"),
            Threshold(yellow, f"yellow from {yellow:g}", "yellow"),
        ],
        markers=markers,
    )
    metric_charts = [
        {
            "name": m["name"],
            "metric": m["metric"],
            "total": sum(m["values"]),
            "chart": line_chart(
                [date.fromisoformat(d) for d in m["days"]],
                m["values"],
                start=start,
                end=end,
                title=f"{m['name']} per day",
                width=400,
                height=130,
                css="metric",
            ),
        }
        for m in metrics["metrics"]
    ]
    by_group: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in sorted(tasks["items"], key=lambda t: t["position"]):
        by_group[t["task_group_id"]].append(t)
    open_alerts = [a for a in alerts["items"] if a["status"] != "resolved"]
    past_alerts = [a for a in alerts["items"] if a["status"] == "resolved"]
    return render(
        request,
        "account.html",
        title=acct.get("name") or account_id,
        account=acct,
        health=acct.get("health"),
        score_chart=score_chart,
        metric_charts=metric_charts,
        open_alerts=open_alerts,
        past_alerts=past_alerts,
        groups=[{**g, "tasks": by_group.get(g["id"], [])} for g in groups["items"]],
        timeline=timeline(deliveries["items"], unsubscribes),
        outcomes=outcomes,
        csms=csms,
    )


def timeline(
    deliveries: list[dict[str, Any]], suppressions: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """What happened to each message, newest first: queued or failed, sent, opened,
    clicked, and the contacts who unsubscribed (a CSM reads engagement, not statuses)."""
    entries: list[dict[str, Any]] = []
    for d in deliveries:
        what = d["template_id"]
        base = {"channel": d["channel"], "what": what, "to": d.get("recipient") or "-"}
        if d.get("sent_at"):
            entries.append({**base, "at": d["sent_at"], "event": "sent"})
        else:
            entries.append({**base, "at": d["updated_at"], "event": d["status"]})
        for event in ("opened", "clicked"):
            if d.get(f"{event}_at"):
                entries.append({**base, "at": d[f"{event}_at"], "event": event})
    for s in suppressions:
        event = "unsubscribed" if s["reason"] == "unsubscribed" else f"suppressed ({s['reason']})"
        entries.append(
            {"channel": "email", "what": s.get("note") or "", "to": s["email"],
             "at": s["created_at"], "event": event}
        )  # fmt: skip
    return sorted(entries, key=lambda e: e["at"], reverse=True)


def _bucket(task: dict[str, Any], today: date) -> str:
    due = _day(task["due_at"]) or today
    if task["overdue"]:
        return "overdue"
    if due <= today:
        return "today"
    if due < today + timedelta(days=7):
        return "week"
    return "later"


@router.get("/work")
async def my_work(request: Request) -> Response:
    session = signed_in(request)
    api, token, me = console_of(request).api, session.token or "", session.subject
    tasks, opened, acked, digest, csms = await asyncio.gather(
        api.get(token, "playbooks", "/v1/tasks", assignee=me, status="open", limit=500),
        api.get(token, "health", "/v1/alerts", owner=me, status="open", limit=200),
        api.get(token, "health", "/v1/alerts", owner=me, status="acknowledged", limit=200),
        api.get(token, "health", "/v1/alerts/digest"),
        api.get(token, "playbooks", "/v1/csms", active="true"),
    )
    today = datetime.now(UTC).date()
    buckets: dict[str, list[dict[str, Any]]] = {
        k: [] for k in ("overdue", "today", "week", "later")
    }
    # an automated step waiting for its send is the scheduler's work, not the CSM's: it is
    # listed apart (with its cancel), never as an overdue task
    sends = [t for t in tasks["items"] if t.get("automated")]
    for t in tasks["items"]:
        if not t.get("automated"):
            buckets[_bucket(t, today)].append(t)
    return render(
        request,
        "work.html",
        title="My work",
        buckets=buckets,
        sends=sends,
        total_tasks=tasks["total"] - len(sends),
        alerts=opened["items"] + acked["items"],
        digest=(digest.get("owners") or {}).get(me or "", []),
        digest_day=digest.get("day"),
        csms=csms,
    )


@router.get("/team")
async def team(request: Request) -> Response:
    session = signed_in(request)
    api, token = console_of(request).api, session.token or ""
    csms, stats, budget = await asyncio.gather(
        api.get(token, "playbooks", "/v1/csms"),
        api.get(token, "playbooks", "/v1/stats"),
        api.get(token, "health", "/v1/config/alerts"),
    )
    week_ago = (datetime.now(UTC) - timedelta(days=6)).date().isoformat()  # today + 6 before

    async def numbers(email: str) -> tuple[int, int]:
        owned, alerts = await asyncio.gather(
            api.get(token, "health", "/v1/accounts", owner=email, limit=1),
            api.get(token, "health", "/v1/alerts", owner=email, opened_since=week_ago, limit=1),
        )
        return owned["total"], alerts["total"]

    counts = await asyncio.gather(*(numbers(c["email"]) for c in csms))
    by_email = {s["email"]: s for s in stats["csms"]}
    weekly_budget = int(budget["daily_budget_per_csm"]) * 7
    rows = [
        {
            **c,
            "accounts": owned,
            "alerts_week": recent,
            "stats": by_email.get(c["email"], {}),
            "load": c["open_tasks"] / c["capacity"] if c["capacity"] else None,
        }
        for c, (owned, recent) in zip(csms, counts, strict=True)
    ]
    return render(
        request,
        "team.html",
        title="Team",
        rows=rows,
        weekly_budget=weekly_budget,
        daily_budget=budget["daily_budget_per_csm"],
        unassigned=stats["unassigned_open"],
        playbook_stats=stats["playbooks"],
    )


@router.get("/rules")
async def rules(request: Request) -> Response:
    session = signed_in(request)
    api, token = console_of(request).api, session.token or ""
    rule_list, playbooks = await asyncio.gather(
        api.get(token, "health", "/v1/alert-rules"),
        api.get(token, "playbooks", "/v1/playbooks"),
    )
    return render(request, "rules.html", title="Rules and playbooks", rules=rule_list,
                  playbooks=playbooks)  # fmt: skip


def _weeks(result: dict[str, Any]) -> dict[date, int]:
    return {date.fromisoformat(w["week_start"]): w["alerts"] for w in result["weeks"]}


async def rule_page(
    request: Request,
    rule_id: str,
    *,
    edited: dict[str, Any] | None = None,
    edited_text: str | None = None,
    cooldown: int | None = None,
    error: str | None = None,
) -> Response:
    """A rule, its backtest over 90 days, and (when given) the edited params' backtest."""
    session = signed_in(request)
    api, token = console_of(request).api, session.token or ""
    path = f"/v1/alert-rules/{seg(rule_id)}"
    rule, current = await asyncio.gather(
        api.get(token, "health", path), api.post(token, "health", f"{path}/backtest", {})
    )
    series = {"current": _weeks(current)}
    proposed = None
    if edited is not None and error is None:
        body: dict[str, Any] = {"params": edited}
        if cooldown is not None:
            body["cooldown_days"] = cooldown
        try:
            proposed = await api.post(token, "health", f"{path}/backtest", body)
        except ApiError as exc:  # a 422 naming the bad field: show it beside the form
            if exc.status in (401, 403):
                raise
            error = exc.detail
        else:
            series["edited"] = _weeks(proposed)
    end = datetime.now(UTC).date()
    chart = week_bars(
        series, start=end - timedelta(days=89), end=end, title="Alerts per week, last 90 days"
    )
    return render(
        request,
        "rule.html",
        title=rule["name"],
        rule=rule,
        current=current,
        proposed=proposed,
        chart=chart,
        params_text=edited_text or json.dumps(rule["params"], indent=2, sort_keys=True),
        cooldown=cooldown if cooldown is not None else rule["cooldown_days"],
        error=error,
        status=422 if error else 200,
    )


@router.get("/rules/{rule_id}")
async def rule(request: Request, rule_id: str) -> Response:
    return await rule_page(request, rule_id)
