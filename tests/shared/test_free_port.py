"""``free_port()``: the ports tests and benchmarks start servers on later."""

from __future__ import annotations

import itertools
import socket

import pytest

from shared.broker import free_port
from tests.conftest import _worker_ports


def test_never_the_same_port_twice_and_within_the_given_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("UPTAKE_FREE_PORTS", "20100-20140")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 20120))
        taken.listen()
        picked = [free_port() for _ in range(30)]
    assert len(set(picked)) == 30  # none handed out twice, though none was bound meanwhile
    assert all(20100 <= p < 20140 for p in picked)
    assert 20120 not in picked  # in use


def test_parallel_workers_get_ranges_apart_below_the_ephemeral_ones() -> None:
    ranges = [_worker_ports(w) for w in ("", *(f"gw{i}" for i in range(11)))]
    bounds = [tuple(map(int, r.split("-"))) for r in ranges]
    assert len(set(bounds)) == 12
    for (low, high), (next_low, _) in itertools.pairwise(bounds):
        assert high <= next_low and high - low == 1000
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        assert bounds[-1][1] <= int(f.read().split()[0])
