"""Reading Kafka in tests: the next message of an assigned consumer.

Used by ``tests/integration/platform/test_kafka.py`` and ``tests/e2e/conftest.py``.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import Consumer, KafkaException


def poll_one(consumer: Consumer, seconds: float) -> Any | None:
    """The next message within ``seconds``, or None; an error the consumer reports is raised."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is None:
            continue
        if msg.error():
            raise KafkaException(msg.error())
        return msg
    return None
