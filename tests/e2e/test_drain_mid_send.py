"""``uptake run``'s drain while notify is still sending: nothing is left on the broker.

playbooks and notify feed each other (step requests one way, delivery results back), so
one of them stops first. Before notify's worker held its queued sends at the start of the
drain, its last results were published after playbooks had stopped: left on the embedded
broker, gone at the restart (a suite run saw 24 left behind)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from shared.drain import drain_system
from tests.e2e.flows import collapse_history, eventually, get_json, make_csm, post_calls
from tests.e2e.harness import SmtpSink, system_in

ACCOUNTS = 6
SEND_SECONDS = 6.0  # longer than the drain takes to reach notify's stop


class SlowSmtp(SmtpSink):
    """Each message takes a while to be taken: sends are still in flight when playbooks
    has stopped, as on a slow mail server."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(SEND_SECONDS)
        return await super().handle_DATA(server, session, envelope)


async def test_a_drain_while_emails_are_going_out_leaves_nothing_behind(tmp_path: Path) -> None:
    async with system_in(tmp_path, smtp=SlowSmtp()) as running:
        run = uuid.uuid4().hex[:6]
        accounts = [f"drain-{run}-{i}" for i in range(ACCOUNTS)]
        calls: list[dict[str, Any]] = []
        for account in accounts:
            owner = f"owner@{account}.test"
            await make_csm(running.url("playbooks"), owner, f"U-{account}")
            calls += collapse_history(account, owner=owner, contact=f"casey@{account}.test")
        await post_calls(running.url("ingest"), calls, batch=100)
        sending = f"{running.url('notify')}/v1/deliveries"

        async def in_flight() -> list[Any]:
            return (await get_json(sending, status="sending"))["items"]  # type: ignore[no-any-return]

        await eventually(in_flight, timeout=120, what="an email being sent")

        said: list[str] = []
        drained = await drain_system(running.system, timeout=60, say=said.append)
        assert drained, said
        assert "draining: due steps and queued sends wait for the next start" in said
        assert any(line.startswith("drained in") for line in said), said
