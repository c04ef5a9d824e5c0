"""The ``uptake`` command: run, demo, migrate, token.

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
from shared.services import available_services
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
    for svc in available_services():
        upgrade(svc.name, settings.database_url(svc.name))
        typer.echo(f"{svc.name}: migrated")


@token_app.command("create")
def token_create(
    scope: Annotated[list[str], typer.Option("--scope", "-s", help="ingest, read, write or admin")],
    subject: Annotated[str, typer.Option(help="Who or what the token is for")] = "uptake",
    ttl_days: Annotated[int, typer.Option(help="Days until it expires; 0 = never")] = 0,
) -> None:
    """Print a signed token carrying the given scopes."""
    from shared.auth import create_token

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
