"""``/v1/tokens`` (admin): make, list and revoke API tokens (the registry: ``tokens.py``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from services.ingest import tokens
from services.ingest.accounts import DATABASE_TROUBLE
from services.ingest.token_schemas import (
    TokenCreate,
    TokenCreated,
    TokenList,
    TokenOut,
    TokenRevokedOut,
)
from shared.auth import TokenClaims, parse_ttl, require_scope
from shared.http import ERRORS, strict_request
from shared.kafka import PublishError
from shared.responses import JSONBytes
from shared.service import runtime_of

UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"description": "the registry database or the broker did not answer; see Retry-After"}
}
router = APIRouter(
    prefix="/v1/tokens",
    tags=["tokens"],
    responses={**ERRORS, **UNAVAILABLE},
    dependencies=[Depends(strict_request)],
)
Admin = Annotated[TokenClaims, Depends(require_scope("admin"))]
TokenId = Annotated[
    str, Path(pattern=tokens.TOKEN_ID.pattern, description="The token's id (its jti)")
]


def _unavailable(detail: str) -> JSONBytes:
    return JSONBytes({"detail": detail}, status_code=503, headers={"Retry-After": "5"})


@router.post(
    "",
    status_code=201,
    response_model=TokenCreated,
    summary="Make a token (its string is in this answer only)",
)
async def create_token(request: Request, body: TokenCreate, creator: Admin) -> Any:
    for scope in body.scopes:
        if not creator.allows(scope):
            raise HTTPException(
                403, detail=f"cannot grant the '{scope}' scope: this token does not hold it"
            )
    runtime = runtime_of(request)
    try:
        created = await tokens.create(
            runtime.sessions,
            secret=runtime.settings.secret,
            scopes=list(body.scopes),
            subject=body.subject,
            ttl_seconds="default" if body.ttl is None else parse_ttl(body.ttl),
            origin="api",
            created_by=creator.subject,
        )
    except DATABASE_TROUBLE:
        return _unavailable("token registry unavailable; retry later")
    return TokenCreated(**TokenOut.of(created.row).model_dump(), token=created.token)


@router.get("", response_model=TokenList, summary="Every token of the registry")
async def list_tokens(
    request: Request,
    _: Admin,
    include_revoked: bool = Query(True, description="false: leave revoked tokens out"),
) -> Any:
    try:
        async with runtime_of(request).sessions() as session:
            rows = await tokens.list_tokens(session, include_revoked=include_revoked)
    except DATABASE_TROUBLE:
        return _unavailable("token registry unavailable; retry later")
    return TokenList(count=len(rows), items=[TokenOut.of(r) for r in rows])


@router.post(
    "/{token_id}/revoke",
    response_model=TokenRevokedOut,
    summary="Revoke a token: every service refuses it within seconds",
)
async def revoke_token(request: Request, token_id: TokenId, _: Admin) -> Any:
    runtime = runtime_of(request)
    try:
        row, known = await tokens.revoke(runtime.sessions, runtime.publisher, token_id=token_id)
    except DATABASE_TROUBLE:
        return _unavailable("token registry unavailable; retry later")
    except PublishError:
        return _unavailable(
            "revoked in the registry, but the broker did not acknowledge the announcement; "
            "retry (ingest also announces it again when it restarts)"
        )
    runtime.auth.revoked.add(row.id)  # this replica at once, the others from the topic
    return TokenRevokedOut(**TokenOut.of(row).model_dump(), known=known)
