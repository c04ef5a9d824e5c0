"""The ``uptake`` command: run, demo, migrate, token create|list|revoke.

Heavy modules (FastAPI, SQLAlchemy, Alembic) are imported inside the commands: ``uptake
run`` checks its ports before paying for them, so a second instance is refused at once.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import typer

from shared.logging import configure_logging
from shared.ports import PortTaken, ensure_ports_free, needed_ports
from shared.services import available_services, database_services
from shared.settings import BaseServiceSettings

app = typer.Typer(help="Uptake: customer-success backend.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")


@app.command()
def run() -> None:
    """Start the embedded broker (unless KAFKA_BOOTSTRAP_SERVERS is set) and every service."""
    settings = BaseServiceSettings()
    configure_logging(service="uptake", level=settings.log_level, json=False)

    def main() -> Coroutine[Any, Any, int]:
        from demo.show import resume_interrupted_demo
        from shared.supervisor import run_until_stopped

        return run_until_stopped(settings, after_start=resume_interrupted_demo)

    raise typer.Exit(_run_system(settings, main))


@app.command()
def demo(
    accounts: Annotated[int, typer.Option(help="Simulated accounts")] = 300,
    days: Annotated[int, typer.Option(help="Days of usage history to replay")] = 90,
    exit_after: Annotated[bool, typer.Option(help="Stop once the summary is printed")] = False,
) -> None:
    """`uptake run`, then replay simulated usage through the ingest API (every alert rule
    on: alerts judge settled data only) and show the outcome."""
    os.environ.setdefault("LOG_LEVEL", "WARNING")  # the services' logs: the summary speaks
    settings = BaseServiceSettings()
    if settings.environment == "development":  # the summary ends with a sign-in link
        os.environ.setdefault("CONSOLE_DEV_LOGIN", "true")
    configure_logging(service="uptake", level="WARNING", json=False)

    def main() -> Coroutine[Any, Any, int]:
        from demo.show import run_demo
        from shared.supervisor import System, run_until_stopped

        async def after_start(system: System) -> None:
            await run_demo(system, accounts=accounts, days=days)

        return run_until_stopped(settings, after_start=after_start, exit_after=exit_after)

    raise typer.Exit(_run_system(settings, main))


def _run_system(settings: BaseServiceSettings, main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    """Refuse a taken port (exit 2, one line naming it) before anything starts; then run."""
    embedded = "KAFKA_BOOTSTRAP_SERVERS" not in os.environ
    try:
        ensure_ports_free(
            settings.host,
            needed_ports(settings, available_services(), embedded_broker=embedded),
        )
        return asyncio.run(main())
    except PortTaken as exc:
        typer.echo(f"uptake: {exc}", err=True)
        return 2


@app.command()
def migrate() -> None:
    """Upgrade every service database to the latest schema."""
    from shared.migrations import upgrade

    settings = BaseServiceSettings()
    for svc in database_services():
        upgrade(svc.name, settings.database_url(svc.name))
        typer.echo(f"{svc.name}: migrated")


@token_app.command("create")
def token_create(
    scope: Annotated[list[str], typer.Option("--scope", "-s", help="ingest, read, write or admin")],
    subject: Annotated[str, typer.Option(help="Who or what the token is for")] = "uptake",
    ttl: Annotated[
        str | None,
        typer.Option(
            help="Until it expires: 90d, 12h, 2w... or 'never'. Default: 90d, but never for "
            "an ingest-only write key"
        ),
    ] = None,
) -> None:
    """Make a token, record it in the registry (ingest's database) and print it (once)."""
    from services.ingest.token_cli import create_in_registry
    from shared.auth import SCOPES, Ttl, parse_ttl

    unknown = sorted(set(scope) - set(SCOPES))
    if unknown or not scope:
        raise typer.BadParameter(
            f"unknown scopes {unknown}; choose from {list(SCOPES)}", param_hint="--scope"
        )
    try:
        ttl_seconds: Ttl = "default" if ttl is None else parse_ttl(ttl)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--ttl") from exc
    settings = BaseServiceSettings()
    token, summary = create_in_registry(
        settings, scopes=scope, subject=subject, ttl_seconds=ttl_seconds
    )
    typer.echo(summary, err=True)
    typer.echo(token)


@token_app.command("list")
def token_list(
    active: Annotated[bool, typer.Option(help="Only tokens neither revoked nor expired")] = False,
    plain: Annotated[bool, typer.Option(help="Tab-separated, no table")] = False,
) -> None:
    """Every token of the registry: scopes, created, expires, revoked, last used."""
    from services.ingest.token_cli import list_registry, print_tokens

    settings = BaseServiceSettings()
    print_tokens(list_registry(settings, active_only=active), plain=plain)


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (`uptake token list`)")],
) -> None:
    """Revoke a token: recorded in the registry, announced on auth.revocations.v1; every
    service refuses it within seconds."""
    from services.ingest.token_cli import RevokeFailed, revoke_in_registry

    settings = BaseServiceSettings()
    try:
        message = revoke_in_registry(settings, token_id=token_id)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="TOKEN_ID") from exc
    except RevokeFailed as exc:
        typer.echo(f"uptake: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(message)


if __name__ == "__main__":
    app()
