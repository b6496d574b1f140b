"""The Kafka history's pure parts: Java-compatible partitioning, settings, clear markers, merging.

No sockets: building histories and connectors does no I/O until a history is used.
"""

from __future__ import annotations

import pytest
from chatmemory.contract import BackendKind, Binding
from chatmemory.errors import BindingError
from chatmemory.histories._kafka_clients import Record, client_settings, fold, merge_partitions
from chatmemory.histories.kafka import KafkaChatMessageHistory, KafkaConnector, murmur2, partition_for


# Vectors from Apache Kafka's UtilsTest.testMurmur2 (the Java client's partitioner hash).
@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"21", -973932308),
        (b"foobar", -790332482),
        (b"a-little-bit-long-string", -985981536),
        (b"a-little-bit-longer-string", -1486304829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
        (b"abc", 479470107),
    ],
)
def test_murmur2_matches_the_java_clients_hash(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


def test_partition_is_the_positive_hash_modulo_the_partition_count() -> None:
    assert partition_for(b"foobar", 7) == (-790332482 & 0x7FFFFFFF) % 7
    assert {partition_for(f"user-{i}".encode(), 3) for i in range(100)} == {0, 1, 2}
    assert partition_for(b"anything", 1) == 0


def test_keyword_settings_become_librdkafka_names_and_callbacks_stay() -> None:
    def cb(_err: object) -> None:
        return None

    conf = client_settings(
        {"security_protocol": "SASL_SSL", "sasl_username": "u", "ssl.ca.location": "/ca", "stats_cb": cb}
    )
    assert conf == {
        "security.protocol": "SASL_SSL",
        "sasl.username": "u",
        "ssl.ca.location": "/ca",
        "stats_cb": cb,
    }


def rec(offset: int, value: bytes | None, *, clear: bool = False, partition: int = 0, ts: int = 0) -> Record:
    return Record(partition, offset, ts or offset, b"s", value, clear)


def test_reads_return_only_what_follows_the_last_clear_marker() -> None:
    records = [rec(0, b"a"), rec(1, b"b"), rec(2, None, clear=True), rec(3, b"c"), rec(4, b"d")]
    assert fold(records) == [b"c", b"d"]
    assert fold([*records, rec(5, None, clear=True)]) == []
    assert fold([rec(0, b"a"), rec(1, b"b")]) == [b"a", b"b"]


def test_merging_partitions_keeps_each_partitions_order() -> None:
    # partition 1 has an out-of-order timestamp; its own order must still hold
    p0 = [rec(0, b"a0", partition=0, ts=10), rec(1, b"a1", partition=0, ts=30)]
    p1 = [
        rec(0, b"b0", partition=1, ts=20),
        rec(1, b"b1", partition=1, ts=5),
        rec(2, b"b2", partition=1, ts=40),
    ]
    merged = [r.value for r in merge_partitions({0: p0, 1: p1})]
    assert merged.index(b"b0") < merged.index(b"b1") < merged.index(b"b2")
    assert merged.index(b"a0") < merged.index(b"a1")
    assert sorted(merged) == [b"a0", b"a1", b"b0", b"b1", b"b2"]


@pytest.mark.parametrize("session_id", ["has space", "a/b", "x" * 250, ".."])
def test_seed_layout_refuses_a_session_id_that_cannot_be_a_topic_name(session_id: str) -> None:
    with pytest.raises(ValueError, match="topic"):
        KafkaChatMessageHistory(session_id, "127.0.0.1:1")


def test_a_shared_topic_takes_any_session_id_as_the_record_key() -> None:
    h = KafkaChatMessageHistory("user 42/ünïcode", "127.0.0.1:1", topic="memories")
    try:
        assert (h.topic, h.shared_topic, h.session_id) == ("memories", True, "user 42/ünïcode")
    finally:
        h.close()


def test_empty_session_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        KafkaChatMessageHistory("", "127.0.0.1:1", topic="memories")


def kafka_binding(**overrides: object) -> Binding:
    fields: dict[str, object] = {
        "backend": BackendKind.KAFKA,
        "provider": "kafka",
        "bootstrap_servers": "127.0.0.1:1",
        "topic": "cm.ns.mem",
        "consumer_group_prefix": "cm.ns.mem.",
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "username": "u",
        "password": "p",
    }
    fields.update(overrides)
    return Binding.model_validate(fields)


def test_connector_histories_share_the_memorys_topic_and_prefix_their_consumer_groups() -> None:
    connector = KafkaConnector.from_binding(kafka_binding(max_messages=20))
    try:
        a, b = connector.history("alice"), connector.history("bob")
        assert a.topic == b.topic == "cm.ns.mem"
        assert a.shared_topic and b.shared_topic
        assert a.consumer_group == "cm.ns.mem.alice"
        assert a._clients is b._clients
        assert a.max_messages == 20
    finally:
        connector.close()


def test_connector_refuses_a_binding_of_another_backend() -> None:
    binding = Binding(backend=BackendKind.TIDB, provider="tidb", host="h", port=1, database="d", table="t")
    with pytest.raises(BindingError, match="cannot build a Kafka connector"):
        KafkaConnector.from_binding(binding)


class FakeError:
    def __init__(self, code: int) -> None:
        self._code = code

    def code(self) -> int:
        return self._code

    def str(self) -> str:
        return f"error {self._code}"


class FakeMessage:
    def __init__(self, partition: int, offset: int, key: bytes | None, err: FakeError | None = None) -> None:
        self._p, self._o, self._k, self._e = partition, offset, key, err

    def error(self) -> FakeError | None:
        return self._e

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes | None:
        return self._k

    def value(self) -> bytes:
        return f"{self._p}:{self._o}".encode()

    def timestamp(self) -> tuple[int, int]:
        return (1, self._o)

    def headers(self) -> None:
        return None


class FakeConsumer:
    """Hands out the assigned partitions' records, interleaved, in batches of at most ``per_call``."""

    def __init__(self, logs: dict[int, list[bytes | None]], *, per_call: int, eof: int | None) -> None:
        self.logs, self.per_call, self.eof = logs, per_call, eof
        self.queue: list[FakeMessage] = []

    def assign(self, tps: list[object]) -> None:
        streams = []
        for tp in tps:
            p, first = tp.partition, tp.offset  # type: ignore[attr-defined]
            stream = [FakeMessage(p, o, k) for o, k in enumerate(self.logs[p]) if o >= first]
            if self.eof is not None:
                stream.append(FakeMessage(p, len(self.logs[p]), None, FakeError(self.eof)))
            streams.append(stream)
        while any(streams):  # round-robin, each partition in order
            for s in streams:
                if s:
                    self.queue.append(s.pop(0))

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        n = min(num_messages, self.per_call)
        batch, self.queue = self.queue[:n], self.queue[n:]
        return batch

    def unassign(self) -> None:
        self.queue = []


@pytest.mark.parametrize("eof", [True, False])
@pytest.mark.parametrize("per_call", [1, 3, 10_000])
def test_one_fetch_loop_reads_a_session_or_every_partition_up_to_the_range_end(
    eof: bool, per_call: int
) -> None:
    from chatmemory.histories._kafka_clients import KafkaClients
    from confluent_kafka import KafkaError

    eof_code = KafkaError._PARTITION_EOF if eof else None
    clients = KafkaClients({"bootstrap.servers": "127.0.0.1:1"}, group_prefix="", may_create=False)
    logs: dict[int, list[bytes | None]] = {
        0: [b"s", b"o", b"s", None, b"o", b"s", b"s"],  # offset 6 is past the range end
        1: [None, b"o", b"s"],
        2: [b"o", b"o"],
    }
    try:
        c = FakeConsumer(logs, per_call=per_call, eof=eof_code)
        one = clients.fetch(c, "t", {0: (1, 6)}, b"s")
        assert [(r.partition, r.offset) for r in one[0]] == [(0, 2), (0, 5)]

        c = FakeConsumer(logs, per_call=per_call, eof=eof_code)
        every = clients.fetch(c, "t", {0: (0, 6), 1: (0, 3), 2: (0, 2)}, b"s", unkeyed=True)
        assert {p: [r.offset for r in rs] for p, rs in every.items()} == {0: [0, 2, 3, 5], 1: [0, 2], 2: []}
        assert all(r.key in (b"s", None) for rs in every.values() for r in rs)
    finally:
        clients.close()
