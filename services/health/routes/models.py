"""``/v1/score-quality`` (does the score predict churn?) and ``/v1/score-models`` (fit a
model on the outcomes, make it the score, go back to the default)."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from services.health import model_store
from services.health import repository as repo
from services.health.context import health_of
from services.health.model_fit import fit, score_with
from services.health.models import ScoreModel
from services.health.observations import Month, features, model_metrics, months
from services.health.quality import MIN_CHURNERS, evaluate, risk_auc
from services.health.routes import (
    CONFLICT,
    ERRORS,
    NOT_FOUND,
    IsoDate,
    strict_request,
    unprocessable,
)
from services.health.snapshot import score_at
from shared.auth import require_scope

router = APIRouter(
    prefix="/v1",
    tags=["score models"],
    responses={**ERRORS, **NOT_FOUND, **CONFLICT},
    dependencies=[Depends(strict_request)],
)
READ = [Depends(require_scope("read"))]
ADMIN = [Depends(require_scope("admin"))]
HELD_OUT_MONTHS = 3


class FitIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    as_of: IsoDate
    horizon_days: int = Field(default=31, ge=1, le=365)
    red_share: float = Field(default=0.10, gt=0, lt=1)
    yellow_share: float = Field(default=0.20, ge=0, lt=1)


def _too_few(churners: int, months_used: int, as_of: Any, horizon: int) -> HTTPException:
    return HTTPException(
        409,
        detail=(
            f"too few outcomes: {churners} churners in {months_used} month-start observations "
            f"known by {as_of} with a {horizon}-day horizon; at least {MIN_CHURNERS} churners "
            "are needed (record churn with group traits status/churned_at or POST "
            "/v1/accounts/{id}/outcomes)"
        ),
    )


def _check_as_of(request: Request, as_of: Any) -> None:
    today = health_of(request).settings.today()
    if as_of > today:
        raise unprocessable(["query", "as_of"], f"must not be after today ({today})")


@router.get("/score-quality", dependencies=READ)
async def score_quality(
    request: Request,
    as_of: IsoDate | None = None,
    horizon_days: int = Query(31, ge=1, le=365),
) -> dict[str, Any]:
    """How well the stored scores (score history at past month starts) rank the accounts
    that churned within ``horizon_days`` after; per metric, which way it points."""
    ctx = health_of(request)
    as_of = as_of or ctx.settings.today()
    _check_as_of(request, as_of)
    config = await ctx.store.metrics()
    async with ctx.sessions() as session:
        found = await months(session, ctx.recomputer, config, as_of=as_of, horizon=horizon_days)
        history = {m.day: await repo.history_at(session, m.day) for m in found}
    metrics = model_metrics(config, found)
    scores: list[float] = []
    bands: list[str] = []
    labels: list[float] = []
    levels: list[np.ndarray] = []
    missing = []
    for month in found:
        rows = history[month.day]
        keep = [i for i, a in enumerate(month.cube.account_ids) if a in rows]
        if not keep:
            missing.append(month.day.isoformat())
            continue
        scores += [rows[month.cube.account_ids[i]][0] for i in keep]
        bands += [rows[month.cube.account_ids[i]][1] for i in keep]
        labels += [float(month.churned[i]) for i in keep]
        levels.append(features(month, metrics)[keep])
    churners = int(sum(labels))
    if churners < MIN_CHURNERS:
        raise _too_few(churners, len(found) - len(missing), as_of, horizon_days)
    level = np.concatenate(levels)
    n = len(metrics)
    per_metric = {m: np.expm1(level[:, j]) for j, m in enumerate(metrics)}  # 28-day totals
    per_metric |= {f"{m}:trend": level[:, n + j] for j, m in enumerate(metrics)}
    quality = evaluate(np.array(scores), bands, np.array(labels), per_metric)
    return {
        "as_of": as_of.isoformat(),
        "horizon_days": horizon_days,
        "months": [m.day.isoformat() for m in found if m.day.isoformat() not in missing],
        "months_without_history": missing,
        **asdict(quality),
    }


def _current_auc(months_: list[Month], config_params: Any) -> tuple[float, list[float]]:
    """The score as it is now (the active model or the default), on these months."""
    safety: list[float] = []
    labels: list[float] = []
    for month in months_:
        scored = score_at(month.cube, month.cube.index_of(month.day), config_params)
        safety += scored.score.tolist()
        labels += month.churned.tolist()
    return risk_auc(np.array(safety), np.array(labels)), labels


def _stack(months_: list[Month], metrics: list[str]) -> tuple[np.ndarray, np.ndarray]:
    raw = np.concatenate([features(m, metrics) for m in months_])
    return raw, np.concatenate([m.churned for m in months_])


@router.post("/score-models/fit", status_code=201, dependencies=ADMIN)
async def fit_model(request: Request, body: FitIn) -> dict[str, Any]:
    """Fit a regularised logistic regression on the month starts before ``as_of`` whose
    outcome is known by then. Answers the out-of-time AUC (fit on the earlier months,
    scored on the last 1-3) and the current score's AUC on the same observations; the
    stored model is then fit on every month."""
    ctx = health_of(request)
    if body.as_of > ctx.settings.today():
        raise unprocessable(["body", "as_of"], f"must not be after today ({ctx.settings.today()})")
    config = await ctx.store.metrics()
    async with ctx.sessions() as session:
        found = await months(
            session, ctx.recomputer, config, as_of=body.as_of, horizon=body.horizon_days
        )
    found = [m for m in found if m.day < body.as_of]
    churners = int(sum(m.churned.sum() for m in found))
    if churners < MIN_CHURNERS or len(found) < 2:
        raise _too_few(churners, len(found), body.as_of, body.horizon_days)
    held = min(HELD_OUT_MONTHS, max(1, len(found) // 3))
    train, test = found[:-held], found[-held:]
    metrics = model_metrics(config, found)
    names = [f"{m}:level" for m in metrics] + [f"{m}:trend" for m in metrics]
    x_train, y_train = _stack(train, metrics)
    x_test, y_test = _stack(test, metrics)
    if y_train.min() == y_train.max():
        raise _too_few(int(y_train.sum()), len(train), body.as_of, body.horizon_days)
    shares = {"red_share": body.red_share, "yellow_share": body.yellow_share}

    def work() -> tuple[float, Any]:
        early = fit(x_train, y_train, names, **shares)
        auc = risk_auc(score_with(early, x_test).score, y_test)
        x_all, y_all = np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])
        return auc, fit(x_all, y_all, names, **shares)

    auc, model = await asyncio.to_thread(work)
    baseline_auc, _ = _current_auc(test, config.scoring)
    evaluation = {
        "auc": round(auc, 4),
        "baseline_auc": round(baseline_auc, 4),
        "train_months": [m.day.isoformat() for m in train],
        "held_out_months": [m.day.isoformat() for m in test],
        "observations": int(len(y_train) + len(y_test)),
        "churners": churners,
        "red_share": body.red_share,
        "yellow_share": body.yellow_share,
    }
    now = datetime.now(UTC)
    async with ctx.sessions() as session, session.begin():
        row = ScoreModel(
            created_at=now,
            as_of=body.as_of,
            horizon_days=body.horizon_days,
            metrics=metrics,
            params=model.params(),
            evaluation=evaluation,
        )
        session.add(row)
        await session.flush()
        model_id = row.id
    return {"id": model_id, **evaluation, "features": len(names), "groups": len(model.groups)}


def _out(row: ScoreModel, active: int | None) -> dict[str, Any]:
    return {
        "id": row.id,
        "created_at": row.created_at.isoformat(),
        "as_of": row.as_of.isoformat(),
        "horizon_days": row.horizon_days,
        "active": row.id == active,
        "metrics": row.metrics,
        "evaluation": row.evaluation,
        "params": row.params,
    }


@router.get("/score-models", dependencies=READ)
async def list_models(request: Request) -> dict[str, Any]:
    async with health_of(request).sessions() as session:
        active = await model_store.active_id(session)
        rows = await model_store.list_models(session)
    return {"active": active, "items": [_out(r, active) for r in rows]}


async def _activate(request: Request, model_id: int | None) -> dict[str, Any]:
    ctx = health_of(request)
    async with ctx.sessions() as session, session.begin():
        if model_id is not None and await session.get(ScoreModel, model_id) is None:
            raise HTTPException(404, detail=f"score model {model_id} not found")
        await model_store.set_active(session, model_id)
    result = await ctx.recomputer.recompute(None)
    return {
        "active": model_id,
        "accounts": result.accounts,
        "scores_changed": result.scores_changed,
    }


@router.post("/score-models/default/activate", dependencies=ADMIN)
async def activate_default(request: Request) -> dict[str, Any]:
    """Back to the default formula (everyone is rescored now)."""
    return await _activate(request, None)


@router.post("/score-models/{model_id}/activate", dependencies=ADMIN)
async def activate(
    request: Request, model_id: Annotated[int, Path(ge=1, le=2**63 - 1)]
) -> dict[str, Any]:
    """Make the model the score: 100 x (1 - churn probability), bands by its thresholds;
    every recompute (also ``as_of``) uses it. Everyone is rescored now."""
    return await _activate(request, model_id)
