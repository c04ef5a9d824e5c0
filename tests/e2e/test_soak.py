"""A short soak (the long one, at a share of the measured capacity, is ``bench/soak.py``):
mixed load at a fixed rate, no error, every collapse flow delivered, stable memory.

The rate is fixed rather than half of a capacity measured here: in the suite the cores are
shared with other tests, so "half of capacity" saturated them for the whole soak and
starved the tests beside it."""

from __future__ import annotations

import os

import pytest

from tests.e2e.flows import eventually
from tests.e2e.harness import Running
from tests.e2e.load import flows_delivered, soak, steady_load

SECONDS = float(os.environ.get("SOAK_SECONDS", "20"))
RATE = float(os.environ.get("SOAK_RATE", "300"))  # events/s


@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_short_soak_mixed_load_no_errors_stable_memory(running: Running) -> None:
    await steady_load(running.url("ingest"), accounts=40, rate=500, seconds=3, prefix="warm")
    rate = RATE
    result = await soak(running, seconds=SECONDS, rate=rate, flow_every=6, mark_every=10)

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
