"""Whether a consumer group still makes progress: lag above zero and no commit for too long.

aiokafka can stall with the process looking healthy: a consumer that stops fetching
after a rebalance, a handler stuck on a hung call. Neither raises, so the runner's own
loop cannot notice; a watch beside it can. Its rule: a consumer is *stalled* when
messages wait for it (lag > 0) and it has committed nothing for ``stall_seconds``.
A consumer with nothing to do (lag 0) is never stalled, however long it idles: each
reading of lag 0 restarts the clock, so a message arriving after an idle hour is not
taken for an hour-long stall.

This module keeps the rule and the gauges (pure, no I/O); the runner measures the lag.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Gauge

from shared.metrics import KAFKA_CONSUMER_LAG, KAFKA_CONSUMER_SINCE_PROGRESS, KAFKA_CONSUMER_STALLED
from shared.settings import DEFAULT_STALL_SECONDS


@dataclass(frozen=True, slots=True)
class Progress:
    """One reading of a group: what waits, and for how long nothing was committed."""

    group: str
    lag: int
    lag_by_topic: dict[str, int]
    seconds_since_progress: float
    stalled: bool

    def describe(self) -> str:
        """The readiness check's words: ``ok``, or what is stuck and how badly."""
        if not self.stalled:
            return "ok"
        return (
            f"stalled: consumer group {self.group} made no progress for "
            f"{self.seconds_since_progress:.0f} s with lag {self.lag}"
        )


class ProgressWatch:
    """The stall rule for one consumer group, and its Prometheus gauges."""

    def __init__(
        self,
        group: str,
        topics: list[str],
        *,
        stall_seconds: float = DEFAULT_STALL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.group = group
        self.topics = topics
        self.stall_seconds = stall_seconds
        self.clock = clock
        self._progress_at = clock()
        self._lag_by_topic: dict[str, int] = dict.fromkeys(topics, 0)

    @property
    def interval(self) -> float:
        """How often to read the lag: often enough that a stall shows within a quarter of
        the threshold, never more than every 5 s."""
        return min(5.0, max(0.05, self.stall_seconds / 4))

    def progressed(self) -> None:
        """The runner committed a batch."""
        self._progress_at = self.clock()

    def observe(self, lag_by_topic: dict[str, int]) -> Progress:
        """A fresh lag reading (messages waiting per topic on this consumer's partitions)."""
        self._lag_by_topic = {**dict.fromkeys(self.topics, 0), **lag_by_topic}
        if not any(self._lag_by_topic.values()):
            self._progress_at = self.clock()  # nothing to do is not a stall
        progress = self.snapshot()
        for topic, lag in progress.lag_by_topic.items():
            KAFKA_CONSUMER_LAG.labels(self.group, topic).set(lag)
        KAFKA_CONSUMER_STALLED.labels(self.group).set(1 if progress.stalled else 0)
        KAFKA_CONSUMER_SINCE_PROGRESS.labels(self.group).set(progress.seconds_since_progress)
        return progress

    def snapshot(self) -> Progress:
        """The last lag reading, judged now."""
        lag = sum(self._lag_by_topic.values())
        since = self.clock() - self._progress_at
        return Progress(
            group=self.group,
            lag=lag,
            lag_by_topic=dict(self._lag_by_topic),
            seconds_since_progress=since,
            stalled=lag > 0 and since >= self.stall_seconds,
        )

    def forget(self) -> None:
        """Drop this group's series (the runner stopped: no reading is better than a stale one)."""
        for topic in self._lag_by_topic:
            _remove(KAFKA_CONSUMER_LAG, self.group, topic)
        _remove(KAFKA_CONSUMER_STALLED, self.group)
        _remove(KAFKA_CONSUMER_SINCE_PROGRESS, self.group)


def _remove(gauge: Gauge, *labels: str) -> None:
    with contextlib.suppress(KeyError):  # never set
        gauge.remove(*labels)
