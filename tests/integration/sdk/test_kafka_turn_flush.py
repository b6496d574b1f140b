"""A turn leaves at once: add_messages never waits out linger.ms (the writer's flush sends it).

With ``linger.ms`` set to a full second, a turn written alone, from eight threads at once, or
awaited in asyncio still returns in a fraction of it, acknowledged and in order. The latency and
Produce-request figures are measured by ``measure_kafka_turn.py`` next to this file.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
from chatmemory.histories.kafka import KafkaChatMessageHistory
from langchain_core.messages import AIMessage, HumanMessage

from tests.integration.sdk.conftest import three_partition_topic

LINGER_MS = 1000
FAST = 0.5  # seconds: half the linger


@pytest.fixture
def topic(bootstrap: str) -> Iterator[str]:
    yield from three_partition_topic(bootstrap, "flush")


def turn(i: int) -> list[HumanMessage | AIMessage]:
    return [HumanMessage(f"q{i}"), AIMessage(f"a{i}")]


def test_a_turn_does_not_wait_out_the_linger(bootstrap: str, topic: str) -> None:
    history = KafkaChatMessageHistory("alice", bootstrap, topic=topic, linger_ms=LINGER_MS)
    try:
        history.add_messages(turn(0))  # metadata, connection
        took = []
        for i in range(1, 6):
            start = time.monotonic()
            history.add_messages(turn(i))
            took.append(time.monotonic() - start)
        assert max(took) < FAST, took
        assert [m.content for m in history.messages] == [c for i in range(6) for c in (f"q{i}", f"a{i}")]
    finally:
        history.close()


def test_concurrent_and_async_turns_do_not_wait_out_the_linger(bootstrap: str, topic: str) -> None:
    base = KafkaChatMessageHistory("w-0", bootstrap, topic=topic, linger_ms=LINGER_MS)
    writers = [KafkaChatMessageHistory._shared(f"w-{w}", base._clients, topic, None) for w in range(8)]
    try:
        base.add_messages(turn(0))
        base.clear()
        slowest: list[float] = []

        def write(h: KafkaChatMessageHistory) -> None:
            for i in range(5):
                start = time.monotonic()
                h.add_messages(turn(i))
                slowest.append(time.monotonic() - start)

        threads = [threading.Thread(target=write, args=(h,)) for h in writers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert max(slowest) < FAST, sorted(slowest)[-3:]

        async def awrite() -> float:
            start = time.monotonic()
            await asyncio.gather(*(h.aadd_messages(turn(5)) for h in writers))
            return time.monotonic() - start

        assert asyncio.run(awrite()) < FAST
        expected = [c for i in range(6) for c in (f"q{i}", f"a{i}")]
        for h in writers:
            assert [m.content for m in h.messages] == expected, h.session_id
    finally:
        base.close()
