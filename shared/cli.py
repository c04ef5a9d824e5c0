"""The ``uptake`` command: run, demo, migrate, token."""

from __future__ import annotations

import asyncio
import os
from typing import Annotated

import typer

from shared.auth import SCOPES, create_token
from shared.logging import configure_logging
from shared.migrations import upgrade
from shared.services import available_services
from shared.settings import BaseServiceSettings
from shared.supervisor import System

app = typer.Typer(help="Uptake: customer-success backend.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)
app.add_typer(token_app, name="token")


@app.command()
def run() -> None:
    """Start the embedded broker (unless KAFKA_BOOTSTRAP_SERVERS is set) and every service."""
    from demo.show import resume_interrupted_demo
    from shared.supervisor import run_until_stopped

    settings = BaseServiceSettings()
    configure_logging(service="uptake", level=settings.log_level, json=False)
    raise typer.Exit(asyncio.run(run_until_stopped(settings, after_start=resume_interrupted_demo)))


@app.command()
def demo(
    accounts: Annotated[int, typer.Option(help="Simulated accounts")] = 300,
    days: Annotated[int, typer.Option(help="Days of usage history to replay")] = 90,
    exit_after: Annotated[bool, typer.Option(help="Stop once the summary is printed")] = False,
) -> None:
    """`uptake run`, then replay simulated usage through the ingest API (every alert rule
    on: alerts judge settled data only) and show the outcome."""
    from demo.show import run_demo
    from shared.supervisor import run_until_stopped

    os.environ.setdefault("LOG_LEVEL", "WARNING")  # the services' logs: the summary speaks
    settings = BaseServiceSettings()
    configure_logging(service="uptake", level="WARNING", json=False)

    async def after_start(system: System) -> None:
        await run_demo(system, accounts=accounts, days=days)

    raise typer.Exit(
        asyncio.run(run_until_stopped(settings, after_start=after_start, exit_after=exit_after))
    )


@app.command()
def migrate() -> None:
    """Upgrade every service database to the latest schema."""
    settings = BaseServiceSettings()
    for svc in available_services():
        upgrade(svc.name, settings.database_url(svc.name))
        typer.echo(f"{svc.name}: migrated")


@token_app.command("create")
def token_create(
    scope: Annotated[list[str], typer.Option("--scope", "-s", help=f"One of {', '.join(SCOPES)}")],
    subject: Annotated[str, typer.Option(help="Who or what the token is for")] = "uptake",
    ttl_days: Annotated[int, typer.Option(help="Days until it expires; 0 = never")] = 0,
) -> None:
    """Print a signed token carrying the given scopes."""
    settings = BaseServiceSettings()
    try:
        token = create_token(
            settings.secret, scopes=scope, subject=subject, ttl_seconds=ttl_days * 86400 or None
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--scope") from exc
    typer.echo(token)


if __name__ == "__main__":
    app()
