"""A Kafka memory's topic grows under running clients: no client loses a session's history.

A session's key maps to ``murmur2(key) % partitions``, so after the topic grows from 3 to 5
partitions a session's new records land in another partition than its old ones. Clients hold a
binding from before the growth (a running pod, or a new pod until the kubelet syncs the Secret),
from after it (``partition_history`` ``3,5``, what the operator writes), or are started after it.
The broker is the platform's Kafka; the AdminClient grows the topic as the operator does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from chatmemory.contract import Binding
from chatmemory.histories import _kafka_clients
from chatmemory.histories.kafka import KafkaConnector, partition_for
from confluent_kafka.admin import AdminClient, NewPartitions  # type: ignore[attr-defined]
from langchain_core.messages import AIMessage, HumanMessage

from tests.integration.sdk.conftest import three_partition_topic

#: A session whose partition under 3 partitions differs from its partition under 5.
SESSION = next(
    s
    for s in (f"user-{i}" for i in range(100))
    if partition_for(s.encode(), 3) != partition_for(s.encode(), 5)
)


@pytest.fixture
def topic(bootstrap: str) -> Iterator[str]:
    yield from three_partition_topic(bootstrap, "grow")


def binding(bootstrap: str, topic: str, partition_history: str = "") -> Binding:
    return Binding.model_validate(
        {
            "backend": "kafka",
            "provider": "kafka",
            "bootstrap_servers": bootstrap,
            "topic": topic,
            "partition_history": partition_history,
        }
    )


def grow(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_partitions([NewPartitions(topic, partitions)])[topic].result(timeout=30)
    deadline = time.monotonic() + 30
    while len(admin.list_topics(topic, timeout=10).topics[topic].partitions) != partitions:
        assert time.monotonic() < deadline, "the broker never showed the new partitions"
        time.sleep(0.1)


def test_old_new_and_fresh_clients_read_every_turn_in_order_after_the_topic_grows(
    bootstrap: str, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_kafka_clients, "PARTITIONS_MAX_AGE", 0.5, raising=False)  # notice the growth quickly
    turn = [[HumanMessage(f"q{i}"), AIMessage(f"a{i}")] for i in range(4)]
    expected = [m.content for t in turn for m in t]
    # the binding of a memory that never grew has no partition_history
    running = KafkaConnector.from_binding(binding(bootstrap, topic))
    connectors = [running]
    try:
        app = running.history(SESSION)
        app.add_messages(turn[0])
        assert [m.content for m in app.messages] == expected[:2]

        grow(bootstrap, topic, 5)
        time.sleep(0.6)
        # a client with the operator's new binding writes the next turn (to the 5-partition slot)
        new = KafkaConnector.from_binding(binding(bootstrap, topic, "3,5"))
        connectors.append(new)
        new.history(SESSION).add_messages(turn[1])
        # the running app, still on its old binding, reads both turns and writes where new clients do
        assert [m.content for m in app.messages] == expected[:4]
        app.add_messages(turn[2])
        new.history(SESSION).add_messages(turn[3])
        assert [m.content for m in app.messages] == expected

        for who, b in {
            "the new binding": binding(bootstrap, topic, "3,5"),
            "an old binding that names its count": binding(bootstrap, topic, "3"),
        }.items():
            fresh = KafkaConnector.from_binding(b)
            connectors.append(fresh)
            assert [m.content for m in fresh.history(SESSION).messages] == expected, who
        assert [m.content for m in new.history(SESSION).messages] == expected
        # every write after the growth went to the live count's partition
        new.history(SESSION).clear()
        assert app.messages == []
        assert new.history(SESSION).messages == []
    finally:
        for c in connectors:
            c.close()
