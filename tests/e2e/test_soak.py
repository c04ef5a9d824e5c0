"""A short soak (the long one is ``bench/soak.py``): mixed load at half of the capacity
measured here, no error, every collapse flow delivered, stable memory."""

from __future__ import annotations

import os

import pytest

from tests.e2e.flows import eventually
from tests.e2e.harness import Running
from tests.e2e.load import capacity, flows_delivered, soak, steady_load

SECONDS = float(os.environ.get("SOAK_SECONDS", "30"))


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_short_soak_mixed_load_no_errors_stable_memory(running: Running) -> None:
    await steady_load(running.url("ingest"), accounts=40, rate=500, seconds=3, prefix="warm")
    rate = await capacity(running.url("ingest"), seconds=5) / 2
    result = await soak(running, seconds=SECONDS, rate=rate, flow_every=8, mark_every=10)

    assert result.load.errors == {}
    assert result.load.events >= rate * SECONDS * 0.8, (result.load.events, rate)
    assert result.read_errors == 0 and result.reads > 0
    assert len(result.flows_started) >= 3
    await eventually(
        lambda: len(flows_delivered(running, result.flows_started)) == len(result.flows_started),
        timeout=120,
        what="every collapse flow's email and Slack message",
    )
    for name, growth in result.growth().items():
        assert growth < 80 * 2**20, f"{name} grew {growth / 2**20:.0f} MiB in {SECONDS:.0f}s"
    assert all(p.poll() is None for p in running.system.processes.values())
