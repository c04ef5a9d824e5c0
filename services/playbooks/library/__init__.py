"""The built-in playbooks, one YAML file each; loaded into the database on first start."""

from __future__ import annotations

from pathlib import Path

from services.playbooks.templates import PlaybookTemplate, parse_yaml

LIBRARY_DIR = Path(__file__).resolve().parent


def builtin_templates() -> list[PlaybookTemplate]:
    return [parse_yaml(path.read_text()) for path in sorted(LIBRARY_DIR.glob("*.yaml"))]
