"""The playbooks app: REST routes, the Kafka consumer, the step scheduler, the library."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import structlog
from fastapi import FastAPI

from services.playbooks import repository
from services.playbooks.consumer import TOPICS, PlaybooksConsumer
from services.playbooks.flows import TeamDefaults
from services.playbooks.library import builtin_templates
from services.playbooks.routes import accounts, csms, playbooks, stats, task_groups, tasks
from services.playbooks.scheduler import SchedulerConfig, StepScheduler
from services.playbooks.settings import PlaybooksSettings
from shared.kafka import ConsumerRunner
from shared.service import Component, ServiceRuntime, create_service_app

log = structlog.get_logger(__name__)

DESCRIPTION = """Playbook templates, task groups started by alerts and lifecycle changes,
tasks assigned to the CS team, and the scheduler that sends automated steps through notify.
Send `Authorization: Bearer <token>`: `read` for GET, `write` for changes, `admin` for
playbook templates."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def scheduler_config(settings: PlaybooksSettings) -> SchedulerConfig:
    return SchedulerConfig(
        batch_size=settings.scheduler_batch_size,
        interval_seconds=settings.scheduler_interval_seconds,
        default_slack_channel=settings.default_slack_channel,
        no_recipient_retry=timedelta(minutes=settings.no_recipient_retry_minutes),
        no_recipient_give_up=timedelta(days=settings.no_recipient_give_up_days),
    )


def create_app(
    settings: PlaybooksSettings | None = None, *, clock: Callable[[], datetime] | None = None
) -> FastAPI:
    """``clock`` is the service's "now" (tests move it on to make steps due)."""
    settings = settings or PlaybooksSettings()
    now = clock or utcnow
    defaults = TeamDefaults(
        team=settings.default_team,
        capacity=settings.default_capacity,
        review_minutes=settings.review_minutes,
    )

    async def on_start(runtime: ServiceRuntime) -> Sequence[Component]:
        if settings.load_library:
            async with runtime.sessions() as session, session.begin():
                loaded = await repository.seed_library(session, builtin_templates(), now=now())
            if loaded:
                log.info("playbooks.library_loaded", playbooks=loaded)
        components: list[Component] = []
        scheduler = StepScheduler(
            runtime.sessions, runtime.publisher, config=scheduler_config(settings), clock=now
        )
        app.state.scheduler = scheduler
        if settings.consumer_enabled:
            # Stored groups wake the scheduler only when it runs here: a test (or a tool)
            # driving run_once itself never races a background pass.
            wake = scheduler.wake if settings.scheduler_enabled else None
            handler = PlaybooksConsumer(
                runtime.sessions, defaults=defaults, clock=now, on_stored=wake
            )
            app.state.consumer = handler
            components.append(
                ConsumerRunner(
                    bootstrap_servers=settings.kafka_bootstrap_servers,
                    group_id=settings.consumer_group,
                    topics=TOPICS,
                    handler=handler.handle,
                    publisher=runtime.publisher,
                    stall_seconds=settings.consumer_stall_seconds,
                )
            )
        if settings.scheduler_enabled:
            components.append(scheduler)
            # draining (``uptake run``): due steps wait for the next start, so no request
            # reaches notify after it has stopped sending
            runtime.drain_hooks.append(scheduler.stop)
        return components

    app = create_service_app(
        name="playbooks",
        title="Uptake playbooks",
        description=DESCRIPTION,
        settings=settings,
        database_url=settings.database_url("playbooks"),
        routers=[
            playbooks.router,
            task_groups.router,
            tasks.router,
            csms.router,
            accounts.router,
            stats.router,
        ],
        on_start=on_start,
        auto_migrate=settings.auto_migrate,
    )
    playbooks.document_template_schema(app)
    app.state.clock = now
    app.state.team_defaults = defaults
    return app
