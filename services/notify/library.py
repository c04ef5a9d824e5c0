"""The built-in template library (templates/builtin.yaml), loaded once per process."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

from services.notify.rendering import TemplateSpec

TEMPLATES_DIR = Path(__file__).parent / "templates"
TEXT_FOOTER = (
    "{% if unsubscribe_url %}\n\n--\nUnsubscribe from these emails: {{ unsubscribe_url }}"
    "{% endif %}\n"
)


def _spec(template_id: str, raw: dict[str, Any], layout: str) -> TemplateSpec:
    html = raw.get("html")
    text = raw.get("text")
    if raw["channel"] == "email":
        html = layout.replace("@@BODY@@", html) if html else None
        text = (text.rstrip("\n") + TEXT_FOOTER) if text else None
    return TemplateSpec(
        id=template_id,
        name=raw.get("name", template_id),
        channel=raw["channel"],
        subject=raw.get("subject"),
        html=html,
        text=text,
        blocks=raw.get("blocks"),
        description=raw.get("description"),
        builtin=True,
    )


@cache
def builtin_templates() -> dict[str, TemplateSpec]:
    layout = (TEMPLATES_DIR / "layout.html").read_text()
    raw: dict[str, dict[str, Any]] = yaml.safe_load((TEMPLATES_DIR / "builtin.yaml").read_text())
    return {tid: _spec(tid, spec, layout) for tid, spec in raw.items()}
