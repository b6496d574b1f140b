"""KafkaChatMessageHistory against a real Kafka 4 broker: seed layout, shared topics, SASL/SCRAM.

Every claim is checked on the broker: topic configs through the AdminClient, the partition a record
landed in, consumer-group offsets. Each test uses its own topics (``cm.sdk.<uuid>``), deleted after.
New SCRAM users and ACLs reach the broker asynchronously, so the first allowed operation of a new
user is retried briefly; denials are checked only after the same user has succeeded.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from chatmemory.contract import Binding
from chatmemory.errors import BackendError
from chatmemory.histories.kafka import CLEAR_HEADER, KafkaChatMessageHistory, KafkaConnector, partition_for
from chatmemory_operator.backends.base import DeletionPolicy, MemoryPlan, StoreConnection
from chatmemory_operator.backends.kafka import KafkaBackend
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType  # type: ignore[attr-defined]
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, ToolMessage

from tests.integration.operator.conftest import kafka_plan, kafka_store
from tests.integration.sdk.conftest import check_runnable_keeps_two_turns, run_threads
from tests.support.platform import Platform

PROPAGATION = 30.0  # seconds allowed for a new SCRAM user / ACL to reach the broker
T = TypeVar("T")


def uid() -> str:
    return uuid.uuid4().hex[:10]


def retry(fn: Callable[[], T], timeout: float = PROPAGATION) -> T:
    """Call until it stops raising BackendError (a new user's credentials and ACLs propagating)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except BackendError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.fixture
def bootstrap(platform: Platform) -> str:
    return platform["KAFKA_BOOTSTRAP"]


@pytest.fixture
def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


@pytest.fixture
def topics(admin: AdminClient) -> Iterator[list[str]]:
    """Topics to delete after the test (the seed layout creates one per session)."""
    made: list[str] = []
    yield made
    if made:
        for fut in admin.delete_topics(made, operation_timeout=30).values():
            with contextlib.suppress(KafkaException):  # already gone (a clear() deleted it)
                fut.result(timeout=35)


@pytest.fixture
def shared_topic(admin: AdminClient, topics: list[str]) -> str:
    name = f"cm.sdk.{uid()}"
    admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])[name].result(timeout=30)
    topics.append(name)
    return name


@pytest.fixture
def histories() -> Iterator[list[KafkaChatMessageHistory]]:
    made: list[KafkaChatMessageHistory] = []
    yield made
    for h in made:
        h.close()


@pytest.fixture
def make(
    bootstrap: str, shared_topic: str, histories: list[KafkaChatMessageHistory]
) -> Callable[..., KafkaChatMessageHistory]:
    """Histories on the test's shared topic (``topic=None`` for the seed layout)."""

    def build(session_id: str | None = None, **kwargs: Any) -> KafkaChatMessageHistory:
        kwargs.setdefault("topic", shared_topic)
        h = KafkaChatMessageHistory(session_id or f"s-{uid()}", bootstrap, **kwargs)
        histories.append(h)
        return h

    return build


@pytest.fixture
def seed(
    bootstrap: str, topics: list[str], histories: list[KafkaChatMessageHistory]
) -> Callable[..., KafkaChatMessageHistory]:
    """Seed-layout histories (the topic is the session id), their topics deleted after the test."""

    def build(session_id: str | None = None, **kwargs: Any) -> KafkaChatMessageHistory:
        sid = session_id or f"cm.sdk.seed.{uid()}"
        topics.append(sid)
        h = KafkaChatMessageHistory(sid, bootstrap, **kwargs)
        histories.append(h)
        return h

    return build


def topic_gone(admin: AdminClient, topic: str) -> bool:
    """Whether the broker's metadata has dropped a deleted topic (it follows the controller shortly)."""
    deadline = time.monotonic() + 30
    while topic in admin.list_topics(timeout=10).topics:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def contents(messages: list[BaseMessage]) -> list[str]:
    return [str(m.content) for m in messages]


def rich_turn() -> list[BaseMessage]:
    """A tool-calling exchange with ids, names and metadata: everything must come back."""
    return [
        HumanMessage("What's the weather in Paris?", id="h1", name="alice"),
        AIMessage(
            "",
            id="a1",
            tool_calls=[{"name": "weather", "args": {"city": "Paris"}, "id": "call_1", "type": "tool_call"}],
            response_metadata={"model_name": "fake", "finish_reason": "tool_calls"},
            usage_metadata={"input_tokens": 10, "output_tokens": 5, "total_tokens": 15},
        ),
        ToolMessage("18°C, sunny", tool_call_id="call_1", name="weather", id="t1", status="success"),
        AIMessage("It is 18°C and sunny in Paris. ☀", id="a2"),
    ]


def topic_config(admin: AdminClient, topic: str) -> dict[str, str]:
    res = ConfigResource(ResourceType.TOPIC, topic)
    return {k: str(v.value) for k, v in admin.describe_configs([res])[res].result(timeout=30).items()}


def raw_records(bootstrap: str, topic: str) -> list[Any]:
    """Every record of a topic (all partitions) with a plain consumer."""
    c = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"cm.sdk.check.{uid()}", "enable.partition.eof": True}
    )
    try:
        md = c.list_topics(topic, timeout=10)
        parts = list(md.topics[topic].partitions)
        out: list[Any] = []
        ends = {}
        for p in parts:
            low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
        c.assign([TopicPartition(topic, p, 0) for p in ends])
        while ends:
            m = c.poll(5)
            assert m is not None, "no record within 5 s"
            if m.error():
                continue
            out.append(m)
            if m.offset() >= ends[m.partition()] - 1:
                del ends[m.partition()]
        return out
    finally:
        c.close()


# -- the seed's documented flows (seed layout: the topic is the session id) -------------------------


def test_seed_flow_add_and_read_returns_the_whole_session_in_order(
    seed: Callable[..., KafkaChatMessageHistory],
) -> None:
    history = seed()
    history.add_user_message("hi")
    history.add_ai_message("hello")
    history.add_messages([HumanMessage(f"q{i}") for i in range(10)])
    expected = ["hi", "hello"] + [f"q{i}" for i in range(10)]
    # the seed returned at most 5 here, and [] on the next call; we return everything, every time
    assert contents(history.messages) == expected
    assert contents(history.messages) == expected


def test_seed_layout_creates_its_topic_with_partitions_and_retention(
    admin: AdminClient, seed: Callable[..., KafkaChatMessageHistory]
) -> None:
    history = seed(ttl_ms=3_600_000, partition=2)
    history.add_user_message("x")
    assert topic_config(admin, history.topic)["retention.ms"] == "3600000"
    md = admin.list_topics(history.topic, timeout=10)
    assert len(md.topics[history.topic].partitions) == 2


def test_messages_from_beginning_and_last_consumed_keep_the_seeds_cursor_meaning(
    make: Callable[..., KafkaChatMessageHistory],
) -> None:
    history = make()
    history.add_messages([HumanMessage(f"m{i}") for i in range(7)])
    assert contents(history.messages_from_beginning()) == [f"m{i}" for i in range(5)]
    assert contents(history.messages_from_last_consumed()) == ["m5", "m6"]
    assert history.messages_from_last_consumed(max_time_sec=1) == []
    history.add_messages([AIMessage("m7")])
    assert contents(history.messages_from_last_consumed()) == ["m7"]
    everything = history.messages_from_beginning(max_message_count=None, max_time_sec=10)
    assert contents(everything) == [f"m{i}" for i in range(8)]


def test_messages_from_latest_returns_only_what_is_written_after_the_call(
    make: Callable[..., KafkaChatMessageHistory],
) -> None:
    history = make()
    history.add_messages([HumanMessage("before")])
    result: list[list[BaseMessage]] = []
    reader = threading.Thread(
        target=lambda: result.append(history.messages_from_latest(max_message_count=1, max_time_sec=60))
    )
    reader.start()
    n = 0
    while reader.is_alive():  # keep writing until the reader has seen one new message
        history.add_messages([AIMessage(f"after-{n}")])
        n += 1
        reader.join(0.2)
    [got] = result
    assert len(got) == 1 and str(got[0].content).startswith("after-")
    assert contents(history.messages_from_latest(max_time_sec=0.5)) == []


def test_tool_calls_ids_names_and_metadata_round_trip(make: Callable[..., KafkaChatMessageHistory]) -> None:
    history = make()
    history.add_messages(rich_turn())
    assert history.messages == rich_turn()
    history.add_message(AIMessageChunk("streamed ", id="c1") + AIMessageChunk("reply"))
    last = history.messages[-1]
    assert type(last) is AIMessage and last.content == "streamed reply"


# -- shared topic: keys, partitions, isolation, clear markers ---------------------------------------


def test_sessions_share_a_topic_in_the_java_clients_partition_and_stay_isolated(
    bootstrap: str, shared_topic: str, make: Callable[..., KafkaChatMessageHistory]
) -> None:
    sessions = [f"user-{i}" for i in range(6)]  # fixed names: a fixed spread over partitions
    for s in sessions:
        make(s).add_messages([HumanMessage(f"{s} says hi"), AIMessage(f"hello {s}")])
    for s in sessions:
        assert contents(make(s).messages) == [f"{s} says hi", f"hello {s}"]
    for m in raw_records(bootstrap, shared_topic):
        assert m.partition() == partition_for(m.key(), 3)
    # librdkafka's murmur2_random (the Java mapping) puts an unpinned record in the same partition
    p = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random"})
    landed: dict[bytes, int] = {}
    for s in sessions:
        p.produce(
            shared_topic,
            value=None,
            key=s.encode(),
            on_delivery=lambda _e, m: landed.update({m.key(): m.partition()}),
        )
    assert p.flush(10) == 0
    assert landed == {s.encode(): partition_for(s.encode(), 3) for s in sessions}
    assert len(set(landed.values())) > 1  # the sessions really spread over the partitions


def test_clear_on_a_shared_topic_forgets_one_session_and_keeps_the_topic(
    admin: AdminClient, bootstrap: str, shared_topic: str, make: Callable[..., KafkaChatMessageHistory]
) -> None:
    alice, bob = make("alice"), make("bob")
    alice.add_messages([HumanMessage("a1"), AIMessage("a2")])
    bob.add_messages([HumanMessage("b1")])
    alice.clear()
    assert alice.messages == []
    assert contents(bob.messages) == ["b1"]
    assert shared_topic in admin.list_topics(timeout=10).topics
    alice.add_messages([HumanMessage("a3")])
    assert contents(alice.messages) == ["a3"]
    markers = [m for m in raw_records(bootstrap, shared_topic) if (m.headers() or [])]
    assert [(m.key(), m.value(), m.headers()[0][0]) for m in markers] == [(b"alice", None, CLEAR_HEADER)]


def test_clear_in_the_seed_layout_deletes_the_topic_and_the_next_write_recreates_it(
    admin: AdminClient, seed: Callable[..., KafkaChatMessageHistory]
) -> None:
    history = seed(ttl_ms=7_200_000)
    history.add_messages([HumanMessage("old")])
    history.clear()
    assert topic_gone(admin, history.topic)
    history.add_messages([HumanMessage("new")])
    assert contents(history.messages) == ["new"]
    # recreated by us with the retention, not auto-created with the broker's defaults
    assert topic_config(admin, history.topic)["retention.ms"] == "7200000"


def test_the_seed_layout_also_reads_unkeyed_records_written_by_the_seed_class(
    bootstrap: str, seed: Callable[..., KafkaChatMessageHistory]
) -> None:
    history = seed()
    history.add_messages([HumanMessage("ours")])
    p = Producer({"bootstrap.servers": bootstrap})
    p.produce(history.topic, value=b'{"type":"ai","data":{"content":"seed wrote this","type":"ai"}}')
    assert p.flush(10) == 0
    assert sorted(contents(history.messages)) == ["ours", "seed wrote this"]


# -- volume and concurrency -----------------------------------------------------------------------


def test_ten_thousand_messages_come_back_complete_and_in_order(
    make: Callable[..., KafkaChatMessageHistory],
) -> None:
    history = make()
    neighbour = make()
    for start in range(0, 10_000, 1_000):
        history.add_messages(
            [
                HumanMessage(f"m{i}") if i % 2 == 0 else AIMessage(f"m{i}")
                for i in range(start, start + 1_000)
            ],
            flush_timeout_seconds=60,
        )
        neighbour.add_messages([HumanMessage(f"n{start}")])
    assert contents(history.messages) == [f"m{i}" for i in range(10_000)]


def test_eight_concurrent_writers_lose_nothing_and_keep_their_order(
    make: Callable[..., KafkaChatMessageHistory],
) -> None:
    session = f"s-{uid()}"
    writers = [make(session) for _ in range(8)]
    start = threading.Barrier(8)

    def write(w: int) -> None:
        start.wait()
        for j in range(25):
            writers[w].add_messages([HumanMessage(f"w{w}-{j}-q"), AIMessage(f"w{w}-{j}-a")])

    run_threads(8, write)
    got = contents(writers[0].messages)
    assert len(got) == 8 * 25 * 2
    for w in range(8):
        assert [c for c in got if c.startswith(f"w{w}-")] == [
            f"w{w}-{j}-{s}" for j in range(25) for s in "qa"
        ]


def test_one_connector_serves_many_sessions_from_many_threads(bootstrap: str, shared_topic: str) -> None:
    binding = Binding.model_validate(
        {"backend": "kafka", "provider": "kafka", "bootstrap_servers": bootstrap, "topic": shared_topic}
    )
    connector = KafkaConnector.from_binding(binding)
    try:

        def session(i: int) -> None:
            h = connector.history(f"t{i}")
            for j in range(10):
                h.add_messages([HumanMessage(f"t{i}-{j}")])
                assert contents(h.messages) == [f"t{i}-{k}" for k in range(j + 1)]

        run_threads(8, session)
    finally:
        connector.close()


# -- failures raise --------------------------------------------------------------------------------


def test_an_unreachable_cluster_raises_instead_of_logging(bootstrap: str) -> None:
    from tests.integration.operator.conftest import closed_port

    history = KafkaChatMessageHistory("s", f"127.0.0.1:{closed_port()}", topic="t")
    try:
        with pytest.raises(BackendError, match=r"kafka 127\.0\.0\.1"):
            history.add_messages([HumanMessage("lost?")], flush_timeout_seconds=1)
    finally:
        history.close()


def test_a_binding_topic_that_does_not_exist_is_an_error_not_a_new_topic(
    admin: AdminClient, bootstrap: str
) -> None:
    missing = f"cm.sdk.missing.{uid()}"
    binding = Binding.model_validate(
        {"backend": "kafka", "provider": "kafka", "bootstrap_servers": bootstrap, "topic": missing}
    )
    connector = KafkaConnector.from_binding(binding)
    try:
        with pytest.raises(BackendError, match="does not exist"):
            connector.history("s").add_user_message("x")
        with pytest.raises(BackendError, match="does not exist"):
            _ = connector.history("s").messages
    finally:
        connector.close()
    assert missing not in admin.list_topics(timeout=10).topics


# -- SASL/SCRAM: a memory provisioned exactly as the operator does ----------------------------------


@pytest.fixture
def sasl_memory(platform: Platform) -> Iterator[tuple[StoreConnection, MemoryPlan, Binding]]:
    backend = KafkaBackend()
    store = kafka_store(platform, sasl=True)
    p = kafka_plan(partitions=3, ttl_seconds=86400, max_messages=None)
    binding = backend.ensure(store, p, f"pw-{uid()}")
    yield store, p, binding
    backend.delete(store, p, DeletionPolicy.DELETE)
    backend.close()


def test_a_sasl_binding_works_on_its_topic_and_is_denied_elsewhere(
    sasl_memory: tuple[StoreConnection, MemoryPlan, Binding], shared_topic: str
) -> None:
    _store, p, binding = sasl_memory
    assert binding.security_protocol == "SASL_PLAINTEXT" and binding.username
    connector = KafkaConnector.from_binding(binding)
    try:
        h = connector.history("alice")
        retry(lambda: h.add_messages(rich_turn()))
        assert h.messages == rich_turn()
        # the cursor methods' group is inside the memory's ACL'd prefix, so commits are allowed
        assert h.consumer_group.startswith(p.consumer_group_prefix)
        assert retry(lambda: h.messages_from_beginning(max_message_count=2)) == rich_turn()[:2]
        assert h.messages_from_last_consumed(max_message_count=None) == rich_turn()[2:]
        h.clear()
        assert h.messages == []
    finally:
        connector.close()
    # the same credentials on a topic outside the memory: denied, and said so
    elsewhere = KafkaConnector.from_binding(binding.model_copy(update={"topic": shared_topic}))
    try:
        with pytest.raises(BackendError, match=r"(?i)authoriz"):
            elsewhere.history("alice").add_user_message("x")
        with pytest.raises(BackendError, match=r"(?i)authoriz"):
            _ = elsewhere.history("alice").messages
    finally:
        elsewhere.close()


def test_a_wrong_sasl_password_is_a_clear_backend_error(
    sasl_memory: tuple[StoreConnection, MemoryPlan, Binding],
) -> None:
    _store, _p, binding = sasl_memory
    connector = KafkaConnector.from_binding(binding)
    try:
        retry(lambda: connector.history("alice").messages)  # the right password works
    finally:
        connector.close()
    bad = KafkaConnector.from_binding(binding.model_copy(update={"password": "not-the-password"}))
    try:
        with pytest.raises(BackendError, match=r"(?i)authentication") as info:
            _ = bad.history("alice").messages
        assert "not-the-password" not in str(info.value)
    finally:
        bad.close()


def test_sasl_settings_can_be_passed_to_a_directly_built_history(
    platform: Platform, sasl_memory: tuple[StoreConnection, MemoryPlan, Binding]
) -> None:
    _store, p, binding = sasl_memory
    history = KafkaChatMessageHistory(
        "bob",
        platform["KAFKA_SASL_BOOTSTRAP"],
        topic=p.topic,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=binding.sasl_mechanism,
        sasl_username=binding.username,
        sasl_password=binding.password,
        consumer_group_prefix=p.consumer_group_prefix,
    )
    try:
        retry(lambda: history.add_messages([HumanMessage("over SASL")]))
        assert contents(history.messages) == ["over SASL"]
    finally:
        history.close()


# -- max_messages, LangChain integration, async ---------------------------------------------------


def test_max_messages_from_the_binding_bounds_what_messages_returns(
    bootstrap: str, shared_topic: str
) -> None:
    binding = Binding.model_validate(
        {
            "backend": "kafka",
            "provider": "kafka",
            "bootstrap_servers": bootstrap,
            "topic": shared_topic,
            "max_messages": 4,
        }
    )
    connector = KafkaConnector.from_binding(binding)
    try:
        h = connector.history("alice")
        h.add_messages([HumanMessage(f"m{i}") for i in range(10)])
        assert contents(h.messages) == ["m6", "m7", "m8", "m9"]
    finally:
        connector.close()


@pytest.mark.filterwarnings("ignore:RunnableWithMessageHistory is deprecated")
def test_runnable_with_message_history_keeps_two_turns(make: Callable[..., KafkaChatMessageHistory]) -> None:
    check_runnable_keeps_two_turns(make)


async def test_async_methods_add_read_and_clear(make: Callable[..., KafkaChatMessageHistory]) -> None:
    history = make()
    await history.aadd_messages(rich_turn())
    other = make(history.session_id)
    results = await asyncio.gather(history.aget_messages(), other.aget_messages())
    assert results[0] == results[1] == rich_turn()
    await asyncio.gather(*(history.aadd_messages([HumanMessage(f"c{i}")]) for i in range(5)))
    assert sorted(contents(await history.aget_messages())[4:]) == [f"c{i}" for i in range(5)]
    await history.aclear()
    assert await history.aget_messages() == []


async def test_async_seed_layout_clear_deletes_the_topic(
    admin: AdminClient, seed: Callable[..., KafkaChatMessageHistory]
) -> None:
    history = seed()
    await history.aadd_messages([HumanMessage("x")])
    await history.aclear()
    assert topic_gone(admin, history.topic)


def test_a_url_binding_connector_with_create_makes_the_topic_with_the_bindings_ttl(
    admin: AdminClient, bootstrap: str, topics: list[str]
) -> None:
    topic = f"cm.sdk.url.{uid()}"
    topics.append(topic)
    binding = Binding.model_validate(
        {
            "backend": "kafka",
            "provider": "kafka",
            "bootstrap_servers": bootstrap,
            "topic": topic,
            "ttl_seconds": 600,
        }
    )
    connector = KafkaConnector.from_binding(binding, create=True, partitions=2)
    try:
        connector.history("alice").add_user_message("hi")
        assert contents(connector.history("alice").messages) == ["hi"]
    finally:
        connector.close()
    assert topic_config(admin, topic)["retention.ms"] == "600000"
    assert len(admin.list_topics(topic, timeout=10).topics[topic].partitions) == 2


# -- a connector's read cache never hides what another client wrote or what the broker dropped -------


def memory_binding(bootstrap: str, topic: str) -> Binding:
    return Binding.model_validate(
        {"backend": "kafka", "provider": "kafka", "bootstrap_servers": bootstrap, "topic": topic}
    )


def test_reads_see_writes_and_clears_made_by_another_connector(bootstrap: str, shared_topic: str) -> None:
    pod_a = KafkaConnector.from_binding(memory_binding(bootstrap, shared_topic))
    pod_b = KafkaConnector.from_binding(memory_binding(bootstrap, shared_topic))
    try:
        a, b = pod_a.history("alice"), pod_b.history("alice")
        a.add_messages([HumanMessage("from a")])
        assert contents(a.messages) == ["from a"]
        b.add_messages([AIMessage("from b")])
        assert contents(a.messages) == ["from a", "from b"]
        b.clear()
        assert a.messages == []
        b.add_messages([HumanMessage("after clear")])
        assert contents(a.messages) == ["after clear"]
    finally:
        pod_a.close()
        pod_b.close()


def test_records_the_broker_deleted_disappear_from_a_cached_session(
    admin: AdminClient, bootstrap: str, shared_topic: str
) -> None:
    connector = KafkaConnector.from_binding(memory_binding(bootstrap, shared_topic))
    try:
        h = connector.history("alice")
        h.add_messages([HumanMessage(f"m{i}") for i in range(5)])
        assert contents(h.messages) == [f"m{i}" for i in range(5)]  # now cached
        partition = partition_for(b"alice", 3)
        # retention's effect, made now: the partition's start moves past m0..m2
        done = admin.delete_records([TopicPartition(shared_topic, partition, 3)])
        for fut in done.values():
            fut.result(timeout=30)
        assert contents(h.messages) == ["m3", "m4"]
        h.add_messages([AIMessage("m5")])
        assert contents(h.messages) == ["m3", "m4", "m5"]
    finally:
        connector.close()
