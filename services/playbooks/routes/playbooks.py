"""``/v1/playbooks``: the templates, as JSON or YAML. Reading needs ``read``, changing ``admin``."""

from __future__ import annotations

from typing import Any

import orjson
import yaml
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from pydantic import BaseModel
from sqlalchemy import select

from services.playbooks.models import Playbook
from services.playbooks.repository import stored_template
from services.playbooks.routes.deps import (
    ERRORS,
    Admin,
    ErrorOut,
    NowDep,
    Read,
    SessionDep,
    conflict,
    not_found,
    strict_request,
)
from services.playbooks.schemas import InvalidPlaybookOut, PlaybookOut, StoredPlaybookOut
from services.playbooks.templates import (
    PlaybookTemplate,
    Problem,
    TemplateError,
    load_yaml,
    parse_template,
    to_yaml,
)
from shared.responses import JSONBytes


class ProblemsOut(BaseModel):
    detail: list[Problem]


router = APIRouter(
    prefix="/v1/playbooks",
    tags=["playbooks"],
    dependencies=[Depends(strict_request)],
    responses={
        **ERRORS,
        413: {"model": ErrorOut, "description": "body over 512 KB"},
        422: {"model": ProblemsOut, "description": "invalid template; each loc names a field"},
    },
)


YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/PlaybookTemplate"}},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}
MAX_BODY = 512 * 1024


def document_template_schema(app: FastAPI) -> None:
    """The template bodies are read raw (JSON or YAML), so put their schema in the spec."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = generate()
        template = PlaybookTemplate.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        for name, definition in template.pop("$defs", {}).items():
            schemas.setdefault(name, definition)
        schemas["PlaybookTemplate"] = template
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def playbook_out(row: Playbook) -> PlaybookOut | InvalidPlaybookOut:
    """The template, or (stored before a rule tightened) what is stored and its errors."""
    template = stored_template(row)
    if isinstance(template, TemplateError):
        return InvalidPlaybookOut(
            id=row.id,
            name=row.name,
            phase=row.phase,
            enabled=row.enabled,
            builtin=row.builtin,
            version=row.version,
            created_at=row.created_at,
            updated_at=row.updated_at,
            errors=template.problems,
            definition=row.definition,
        )
    return PlaybookOut(
        **template.model_dump(),
        builtin=row.builtin,
        version=row.version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def playbook_yaml(row: Playbook) -> str:
    """An invalid stored template comes back as stored, ready to fix and PUT."""
    template = stored_template(row)
    if isinstance(template, TemplateError):
        return yaml.safe_dump(row.definition, sort_keys=False, allow_unicode=True)
    return to_yaml(template)


def _unprocessable(problems: list[dict[str, Any]]) -> JSONBytes:
    return JSONBytes({"detail": problems}, status_code=422)


async def _read_template(request: Request) -> PlaybookTemplate | JSONBytes:
    """JSON or YAML by Content-Type, validated whole; 422 names each bad field."""
    raw = await request.body()
    if len(raw) > MAX_BODY:
        return JSONBytes({"detail": "playbook body over 512 KB"}, status_code=413)
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip()
    try:
        data = load_yaml(raw) if ctype in YAML_TYPES else orjson.loads(raw or b"null")
    except (yaml.YAMLError, orjson.JSONDecodeError) as exc:
        kind = "yaml" if ctype in YAML_TYPES else "json"
        return _unprocessable([{"loc": ["body"], "msg": f"invalid {kind}: {exc}", "type": kind}])
    try:
        return parse_template(data)
    except TemplateError as exc:
        return _unprocessable(
            [{"loc": ["body", *p.loc], "msg": p.msg, "type": p.type} for p in exc.problems]
        )


@router.get(
    "",
    response_model=list[StoredPlaybookOut],
    summary="List playbook templates (invalid: stored before a rule tightened; fix by PUT)",
)
async def list_playbooks(
    session: SessionDep, _: Read, phase: str | None = None, enabled: bool | None = None
) -> list[PlaybookOut | InvalidPlaybookOut]:
    query = select(Playbook).order_by(Playbook.id)
    if phase:
        query = query.where(Playbook.phase == phase)
    if enabled is not None:
        query = query.where(Playbook.enabled.is_(enabled))
    return [playbook_out(r) for r in await session.scalars(query)]


@router.get(
    "/{playbook_id}",
    response_model=StoredPlaybookOut,
    summary="One playbook template (format=yaml for its YAML; invalid: fix it by PUT)",
    responses={200: {"content": {"application/yaml": {}}}},
)
async def get_playbook(
    playbook_id: str,
    session: SessionDep,
    _: Read,
    format: str = Query("json", pattern="^(json|yaml)$"),
) -> Any:
    row = await session.get(Playbook, playbook_id)
    if row is None:
        raise not_found("playbook", playbook_id)
    if format == "yaml":
        return Response(playbook_yaml(row), media_type="application/yaml")
    return playbook_out(row)


@router.post(
    "",
    status_code=201,
    response_model=PlaybookOut,
    summary="Create a playbook template (JSON or YAML body)",
    openapi_extra=BODY,
)
async def create_playbook(request: Request, session: SessionDep, now: NowDep, _: Admin) -> Any:
    template = await _read_template(request)
    if isinstance(template, JSONBytes):
        return template
    if await session.get(Playbook, template.id) is not None:
        raise conflict(f"playbook {template.id!r} exists; PUT /v1/playbooks/{template.id}")
    row = Playbook(
        id=template.id,
        name=template.name,
        phase=template.phase,
        enabled=template.enabled,
        builtin=False,
        definition=template.model_dump(mode="json"),
        version=1,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    await session.flush()
    return playbook_out(row)


@router.put(
    "/{playbook_id}",
    response_model=PlaybookOut,
    summary="Replace a playbook template (running groups keep the steps they started with)",
    openapi_extra=BODY,
)
async def replace_playbook(
    playbook_id: str, request: Request, session: SessionDep, now: NowDep, _: Admin
) -> Any:
    template = await _read_template(request)
    if isinstance(template, JSONBytes):
        return template
    if template.id != playbook_id:
        return _unprocessable(
            [{"loc": ["body", "id"], "msg": f"must be {playbook_id!r}", "type": "value_error"}]
        )
    row = await session.get(Playbook, playbook_id)
    if row is None:
        raise not_found("playbook", playbook_id)
    row.name, row.phase, row.enabled = template.name, template.phase, template.enabled
    row.definition = template.model_dump(mode="json")
    row.version += 1
    row.updated_at = now
    await session.flush()
    return playbook_out(row)


@router.delete("/{playbook_id}", status_code=204, summary="Delete a playbook template")
async def delete_playbook(playbook_id: str, session: SessionDep, _: Admin) -> Response:
    row = await session.get(Playbook, playbook_id)
    if row is None:
        raise not_found("playbook", playbook_id)
    await session.delete(row)
    return Response(status_code=204)
