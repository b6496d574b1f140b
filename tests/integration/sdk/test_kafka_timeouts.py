"""A blackholed Kafka broker (it accepts TCP connections and never answers) raises, never hangs.

The listener is a plain socket in the test; the Kafka clients are real librdkafka clients. A
write and a cold read each raise ``BackendUnavailable`` within the history's timeout, naming the
cluster, what was being done and the timeout; the write says it was not applied.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from chatmemory.contract import BackendKind, Binding
from chatmemory.errors import BackendUnavailable
from chatmemory.histories.kafka import KafkaChatMessageHistory, KafkaConnector
from langchain_core.messages import HumanMessage

TIMEOUT = 1.5
SLACK = 1.0  # thread scheduling and librdkafka's poll slices


@pytest.fixture
def blackhole() -> Iterator[str]:
    """``host:port`` of a listener that accepts every connection and never sends a byte."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            held.append(conn)  # kept open, never read or answered

    threading.Thread(target=accept, daemon=True).start()
    yield f"127.0.0.1:{srv.getsockname()[1]}"
    stop.set()
    srv.close()
    for c in held:
        c.close()


def timed(fn: Callable[[], object]) -> tuple[BackendUnavailable, float]:
    start = time.monotonic()
    with pytest.raises(BackendUnavailable) as e:
        fn()
    return e.value, time.monotonic() - start


def test_a_write_and_a_cold_read_raise_within_the_timeout(blackhole: str) -> None:
    history = KafkaChatMessageHistory("s", blackhole, topic="t", timeout=TIMEOUT)
    try:
        err, took = timed(lambda: history.add_messages([HumanMessage("lost?")]))
        assert took < TIMEOUT + SLACK, took
        assert f"kafka {blackhole}" in str(err) and "no answer within 1.5 s" in str(err), err
        assert err.applied is False  # nothing was sent: the topic's metadata never came
        err, took = timed(lambda: history.messages)
        assert took < TIMEOUT + SLACK, took
        assert "reading topic 't' metadata" in str(err), err
    finally:
        history.close()


def test_a_connector_from_a_binding_raises_within_its_timeout_in_async_too(blackhole: str) -> None:
    binding = Binding(backend=BackendKind.KAFKA, provider="kafka", bootstrap_servers=blackhole, topic="t")
    connector = KafkaConnector.from_binding(binding, timeout=TIMEOUT)
    try:
        history = connector.history("alice")
        err, took = timed(lambda: asyncio.run(history.aadd_messages([HumanMessage("lost?")])))
        assert took < TIMEOUT + SLACK, took
        err, took = timed(lambda: asyncio.run(history.aget_messages()))
        assert took < TIMEOUT + SLACK, took
        assert f"kafka {blackhole}" in str(err), err
    finally:
        connector.close()
