"""The Kafka clients' timeouts: librdkafka settings from ``timeout=``, and what a timeout raises.

No broker: the settings are read from the clients' configuration, and an unanswered write is a
delivery whose reports never come.
"""

from __future__ import annotations

import pytest
from chatmemory._connect import Timeouts
from chatmemory.contract import BackendKind, Binding
from chatmemory.errors import BackendError, BackendUnavailable
from chatmemory.histories._kafka_clients import Delivery, timeout_settings
from chatmemory.histories.kafka import KafkaChatMessageHistory, KafkaConnector


def binding() -> Binding:
    return Binding(backend=BackendKind.KAFKA, provider="kafka", bootstrap_servers="127.0.0.1:1", topic="t")


def test_every_client_gets_connect_and_socket_timeouts_by_default() -> None:
    connector = KafkaConnector.from_binding(binding())
    try:
        conf = connector._clients._conf
        assert conf["socket.connection.setup.timeout.ms"] == 5000
        assert conf["api.version.request.timeout.ms"] == 5000
        assert conf["socket.timeout.ms"] == 10000
        assert conf["request.timeout.ms"] == 10000
        assert connector._clients.request_timeout == 10.0
    finally:
        connector.close()


def test_timeout_sets_both_or_each_and_a_users_librdkafka_setting_wins() -> None:
    assert timeout_settings(Timeouts(connect=2, operation=30)) == {
        "socket.connection.setup.timeout.ms": 2000,
        "api.version.request.timeout.ms": 2000,
        "socket.timeout.ms": 30000,
        "request.timeout.ms": 30000,
    }
    assert (
        timeout_settings(Timeouts(connect=0.2, operation=0.005))["socket.connection.setup.timeout.ms"] == 1000
    )
    history = KafkaChatMessageHistory("s", "127.0.0.1:1", topic="t", timeout=3, socket_timeout_ms=7000)
    try:
        conf = history._clients._conf
        assert conf["socket.connection.setup.timeout.ms"] == 3000
        assert conf["socket.timeout.ms"] == 7000
        assert history._clients.request_timeout == 3.0
    finally:
        history.close()
    with pytest.raises(ValueError, match="positive"):
        KafkaConnector.from_binding(binding(), timeout=0)


def test_a_write_not_acknowledged_in_time_is_unavailable_and_may_have_been_applied() -> None:
    connector = KafkaConnector.from_binding(binding())
    try:
        with pytest.raises(
            BackendUnavailable, match=r"not all messages were acknowledged within 0\.1 s"
        ) as e:
            connector._clients.check(Delivery(2), "t", 0.1)
        assert e.value.applied is None
        assert isinstance(e.value, BackendError)  # callers catching BackendError still catch it
    finally:
        connector.close()


def test_the_memorys_timeout_reaches_the_kafka_clients() -> None:
    import chatmemory

    memory = chatmemory.connect_url("kafka://127.0.0.1:1?connect_timeout=1", topic="t", timeout=3)
    try:
        clients = memory.connector._clients  # type: ignore[attr-defined]
        assert clients._conf["socket.connection.setup.timeout.ms"] == 1000
        assert clients._conf["socket.timeout.ms"] == 3000
        assert clients.request_timeout == 3.0
    finally:
        memory.close()
