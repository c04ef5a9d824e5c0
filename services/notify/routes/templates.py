"""``/v1/templates``: built-in and custom templates; a template that does not render is 422."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path, Response

from services.notify import repository
from services.notify.library import builtin_templates
from services.notify.rendering import (
    RenderedEmail,
    RenderError,
    TemplateSpec,
    render_preview,
    validate,
)
from services.notify.routes.deps import AUTH_ERRORS, STRICT_QUERY, SessionsDep
from services.notify.schemas import (
    TEMPLATE_ID_PATTERN,
    PreviewIn,
    PreviewOut,
    TemplateCreate,
    TemplateIn,
    TemplateOut,
)
from shared.auth import require_scope

router = APIRouter(
    prefix="/v1/templates", tags=["templates"], responses=AUTH_ERRORS, dependencies=STRICT_QUERY
)
TemplateId = Path(pattern=TEMPLATE_ID_PATTERN, description="lowercase letters, digits, . _ -")
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "no such template"}}


def _out(spec: TemplateSpec) -> TemplateOut:
    return TemplateOut(
        id=spec.id,
        name=spec.name,
        channel=spec.channel,
        description=spec.description,
        subject=spec.subject,
        html=spec.html,
        text=spec.text,
        blocks=spec.blocks,
        sample_context=spec.sample_context,
        builtin=spec.builtin,
        overrides_builtin=not spec.builtin and spec.id in builtin_templates(),
    )


def _unprocessable(exc: RenderError) -> HTTPException:
    return HTTPException(
        422,
        detail=[
            {
                "loc": ["body", exc.field.split(".")[0].split("[")[0]],
                "msg": f"template does not render: {exc}",
                "type": "template_error",
            }
        ],
    )


def _checked(template_id: str, body: TemplateIn) -> TemplateSpec:
    spec = TemplateSpec(id=template_id, **body.model_dump())
    try:
        validate(spec)
    except RenderError as exc:
        raise _unprocessable(exc) from exc
    return spec


def _row(template_id: str, body: TemplateIn) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {"id": template_id, **body.model_dump(), "created_at": now, "updated_at": now}


@router.get("", response_model=list[TemplateOut], dependencies=[Depends(require_scope("read"))])
async def list_templates(sessions: SessionsDep) -> list[TemplateOut]:
    async with sessions() as session:
        return [_out(s) for s in await repository.list_templates(session)]


@router.get(
    "/{template_id}",
    response_model=TemplateOut,
    dependencies=[Depends(require_scope("read"))],
    responses=NOT_FOUND,
)
async def get_template(sessions: SessionsDep, template_id: str = TemplateId) -> TemplateOut:
    async with sessions() as session:
        spec = await repository.get_template(session, template_id)
    if spec is None:
        raise HTTPException(404, detail=f"no template '{template_id}'")
    return _out(spec)


@router.post(
    "",
    response_model=TemplateOut,
    status_code=201,
    dependencies=[Depends(require_scope("admin"))],
    responses={409: {"description": "the id is taken (PUT replaces)"}},
)
async def create_template(body: TemplateCreate, sessions: SessionsDep) -> TemplateOut:
    fields = TemplateIn.model_validate(body.model_dump(exclude={"id"}))
    spec = _checked(body.id, fields)
    taken = HTTPException(409, detail=f"template '{body.id}' exists; PUT replaces it")
    if body.id in builtin_templates():
        raise taken
    async with sessions() as session, session.begin():
        if not await repository.insert_template(session, _row(body.id, fields)):
            raise taken
    return _out(spec)


@router.put(
    "/{template_id}",
    response_model=TemplateOut,
    dependencies=[Depends(require_scope("admin"))],
    responses={201: {"description": "created"}},
)
async def put_template(
    body: TemplateIn, sessions: SessionsDep, response: Response, template_id: str = TemplateId
) -> TemplateOut:
    spec = _checked(template_id, body)
    async with sessions() as session, session.begin():
        created = await repository.put_template(session, _row(template_id, body))
    response.status_code = 201 if created and template_id not in builtin_templates() else 200
    return _out(spec)


@router.delete(
    "/{template_id}",
    status_code=204,
    dependencies=[Depends(require_scope("admin"))],
    responses={**NOT_FOUND, 409: {"description": "built-in templates cannot be deleted"}},
)
async def delete_template(sessions: SessionsDep, template_id: str = TemplateId) -> Response:
    async with sessions() as session, session.begin():
        removed = await repository.delete_template(session, template_id)
    if not removed:
        if template_id in builtin_templates():
            raise HTTPException(409, detail=f"'{template_id}' is built in and cannot be deleted")
        raise HTTPException(404, detail=f"no template '{template_id}'")
    return Response(status_code=204)


@router.post(
    "/{template_id}/preview",
    response_model=PreviewOut,
    dependencies=[Depends(require_scope("read"))],
    responses={**NOT_FOUND, 422: {"description": "does not render with this context"}},
)
async def preview_template(
    body: PreviewIn, sessions: SessionsDep, template_id: str = TemplateId
) -> PreviewOut:
    async with sessions() as session:
        spec = await repository.get_template(session, template_id)
    if spec is None:
        raise HTTPException(404, detail=f"no template '{template_id}'")
    try:
        rendered = render_preview(spec, body.context)
    except RenderError as exc:
        raise _unprocessable(exc) from exc
    if isinstance(rendered, RenderedEmail):
        return PreviewOut(
            channel="email", subject=rendered.subject, html=rendered.html, text=rendered.text
        )
    return PreviewOut(channel="slack", text=rendered.text, blocks=rendered.blocks)
