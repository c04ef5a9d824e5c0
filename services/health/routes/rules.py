"""``/v1/alert-rules``: configure the rules (admin) and backtest them against history."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import ValidationError

from services.health import repository as repo
from services.health.config import MetricsConfig, RuleDef
from services.health.configstore import rule_row
from services.health.context import health_of
from services.health.models import AlertRule
from services.health.routes import (
    CONFLICT,
    ERRORS,
    NOT_FOUND,
    IsoDate,
    invalid,
    strict_request,
    unprocessable,
)
from services.health.rules import unknown_metrics, validate_params
from services.health.schemas import BacktestIn, RuleCreate, RuleIn, RuleOut
from services.health.snapshot import backtest
from shared.auth import require_scope

router = APIRouter(
    prefix="/v1/alert-rules",
    tags=["alert rules"],
    responses={**ERRORS, **NOT_FOUND, **CONFLICT},
    dependencies=[Depends(strict_request)],
)
READ = [Depends(require_scope("read"))]
ADMIN = [Depends(require_scope("admin"))]


def _checked(rule_type: str, params: dict[str, Any], config: MetricsConfig) -> dict[str, Any]:
    """Valid params for the type, naming only configured metrics (else 422 naming the field)."""
    try:
        checked = validate_params(rule_type, params)
    except ValidationError as exc:
        raise invalid(exc, prefix="params") from exc
    except ValueError as exc:
        raise invalid(exc, prefix="type") from exc
    unknown = unknown_metrics(rule_type, checked, config.keys)
    if unknown:
        errors = [
            {"loc": ["body", "params", *loc], "msg": msg, "type": "value_error"}
            for loc, msg in unknown
        ]
        raise HTTPException(422, detail=errors)
    return checked


@router.get("", response_model=list[RuleOut], dependencies=READ)
async def list_rules(request: Request) -> list[RuleOut]:
    async with health_of(request).sessions() as session:
        return [RuleOut.model_validate(r) for r in await repo.list_rules(session)]


@router.post("", response_model=RuleOut, status_code=201, dependencies=ADMIN)
async def create_rule(request: Request, body: RuleCreate) -> RuleOut:
    ctx = health_of(request)
    params = _checked(body.type, body.params, await ctx.store.metrics())
    async with ctx.sessions() as session, session.begin():
        if await session.get(AlertRule, body.id) is not None:
            raise HTTPException(409, detail=f"rule '{body.id}' exists; PUT to change it")
        rule = rule_row(RuleDef(**body.model_dump()), params, datetime.now(UTC))
        session.add(rule)
    return RuleOut.model_validate(rule)


@router.get("/{rule_id}", response_model=RuleOut, dependencies=READ)
async def get_rule(request: Request, rule_id: str) -> RuleOut:
    async with health_of(request).sessions() as session:
        rule = await session.get(AlertRule, rule_id)
        if rule is None:
            raise HTTPException(404, detail=f"rule '{rule_id}' not found")
        return RuleOut.model_validate(rule)


@router.put("/{rule_id}", response_model=RuleOut, dependencies=ADMIN)
async def replace_rule(request: Request, rule_id: str, body: RuleIn) -> RuleOut:
    ctx = health_of(request)
    params = _checked(body.type, body.params, await ctx.store.metrics())
    now = datetime.now(UTC)
    async with ctx.sessions() as session, session.begin():
        rule = await session.get(AlertRule, rule_id)
        if rule is None:
            try:
                rule = rule_row(RuleDef(id=rule_id, **body.model_dump()), params, now)
            except ValidationError as exc:
                raise invalid(exc, prefix="rule_id") from exc
            session.add(rule)
        else:
            for name, value in body.model_dump(exclude={"params"}).items():
                setattr(rule, name, value)
            rule.params, rule.updated_at = params, now
    return RuleOut.model_validate(rule)


@router.delete("/{rule_id}", status_code=204, dependencies=ADMIN)
async def delete_rule(request: Request, rule_id: str) -> None:
    async with health_of(request).sessions() as session, session.begin():
        if not await repo.delete_rule(session, rule_id):
            raise HTTPException(404, detail=f"rule '{rule_id}' not found")


@router.post("/{rule_id}/backtest", dependencies=READ)
async def backtest_rule(
    request: Request,
    rule_id: str,
    body: BacktestIn | None = None,
    days: int = Query(90, ge=7, le=365),
    as_of: IsoDate | None = None,
) -> dict[str, Any]:
    """How many alerts the rule (with these params) would have raised per week, and where."""
    ctx = health_of(request)
    body = body or BacktestIn()
    today = ctx.settings.today()
    if as_of is not None and as_of > today:
        raise unprocessable(["query", "as_of"], f"must not be after today ({today})")
    as_of = as_of or today
    config = await ctx.store.metrics()
    async with ctx.sessions() as session:
        rule = await session.get(AlertRule, rule_id)
        if rule is None:
            raise HTTPException(404, detail=f"rule '{rule_id}' not found")
        params = _checked(
            rule.type, body.params if body.params is not None else rule.params, config
        )
        probe = AlertRule(type=rule.type, params=params)
        cube, _ = await ctx.recomputer.load(session, None, as_of, config, [probe], extra_days=days)
    cooldown = body.cooldown_days if body.cooldown_days is not None else rule.cooldown_days
    return await asyncio.to_thread(
        backtest,
        cube,
        rule_type=rule.type,
        params=params,
        end=cube.index_of(as_of),
        days=days,
        cooldown_days=cooldown,
        scoring=config.scoring,
    )
