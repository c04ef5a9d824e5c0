"""The Kafka layer on aiokafka: a batching publisher, a commit-after-effect consumer runner."""

from shared.kafka.admin import ensure_topics, wait_for_broker
from shared.kafka.consumer import ConsumerRunner, Record, TransientError
from shared.kafka.producer import Publisher, PublishError

__all__ = [
    "ConsumerRunner",
    "PublishError",
    "Publisher",
    "Record",
    "TransientError",
    "ensure_topics",
    "wait_for_broker",
]
