"""Helpers for the SDK's integration tests: a binding per Redis-family server, unique prefixes, cleanup,
and the checks every history passes alike (:func:`run_threads`, :func:`check_runnable_keeps_two_turns`).

Every test gets a fresh ``cmtest:<uuid>:`` key prefix and its keys are deleted afterwards (on every
primary of the cluster), so the tests can run against servers shared with other test suites.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from chatmemory import BackendKind, Binding, ChatMemory
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables.history import RunnableWithMessageHistory
from redis.cluster import ClusterNode, RedisCluster

from tests.support.platform import Platform

#: Every Redis-family server of the platform: Redis 7 (ACL), Valkey, Redis 8 (search), TLS, Cluster.
REDIS_TARGETS = ["REDIS_URL", "VALKEY_URL", "REDIS_SEARCH_URL", "REDIS_TLS_URL", "REDIS_CLUSTER_NODES"]


def uid() -> str:
    return uuid.uuid4().hex[:12]


def run_threads(n: int, work: Callable[[int], object]) -> None:
    """``work(0)`` ... ``work(n - 1)``, each in its own thread; fails if any of them raised."""
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            work(i)
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def check_runnable_keeps_two_turns(make: Callable[[str], BaseChatMessageHistory]) -> None:
    """RunnableWithMessageHistory over ``make(session_id)`` histories sees the first turn in the second,
    and a fresh history of the session holds both."""
    session = f"s-{uid()}"
    cache: dict[str, BaseChatMessageHistory] = {}

    def get_history(session_id: str) -> BaseChatMessageHistory:
        return cache.setdefault(session_id, make(session_id))

    model = FakeListChatModel(responses=["Hi Bob!", "You are Bob."])
    prompt = ChatPromptTemplate.from_messages([MessagesPlaceholder("history"), ("human", "{question}")])
    chain = RunnableWithMessageHistory(
        prompt | model, get_history, input_messages_key="question", history_messages_key="history"
    )
    config: Any = {"configurable": {"session_id": session}}
    assert chain.invoke({"question": "I am Bob"}, config=config).content == "Hi Bob!"
    assert chain.invoke({"question": "Who am I?"}, config=config).content == "You are Bob."
    assert [(m.type, m.content) for m in make(session).messages] == [
        ("human", "I am Bob"),
        ("ai", "Hi Bob!"),
        ("human", "Who am I?"),
        ("ai", "You are Bob."),
    ]


def redis_binding(platform: Platform, target: str, key_prefix: str, **changes: object) -> Binding:
    """A binding to ``target`` with the admin credentials (tests narrow them where it matters)."""
    if target == "REDIS_CLUSTER_NODES":
        host, _, port = platform[target].split(",")[0].partition(":")
        fields: dict[str, object] = {
            "host": host,
            "port": int(port),
            "username": platform["REDIS_ADMIN_USER"],
            "password": platform["REDIS_ADMIN_PASSWORD"],
            "cluster": True,
        }
    else:
        u = urlsplit(platform[target])
        fields = {
            "host": u.hostname or "",
            "port": u.port or 6379,
            "username": u.username or "",
            "password": u.password or "",
        }
        if u.scheme == "rediss":
            fields.update(tls=True, ca_cert=Path(platform["REDIS_TLS_CA_FILE"]).read_text())
    fields.update(backend=BackendKind.REDIS, provider="redis", key_prefix=key_prefix)
    fields.update(changes)
    return Binding.model_validate(fields)


def admin_client(platform: Platform, target: str) -> redis.Redis | RedisCluster:
    b = redis_binding(platform, target, "x:")
    kwargs: dict[str, object] = {"username": b.username or None, "password": b.password or None}
    if b.tls:
        kwargs.update(ssl=True, ssl_ca_data=b.ca_cert)
    if b.cluster:
        return RedisCluster(startup_nodes=[ClusterNode(b.host, b.port)], **kwargs)  # type: ignore[arg-type]
    return redis.Redis(host=b.host, port=b.port, **kwargs)  # type: ignore[arg-type]


def delete_prefix(client: redis.Redis | RedisCluster, prefix: str) -> None:
    pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"
    if isinstance(client, RedisCluster):
        for node in client.get_primaries():
            conn = client.get_redis_connection(node)
            for key in conn.scan_iter(match=pattern, count=1000):
                conn.delete(key)
    else:
        for key in client.scan_iter(match=pattern, count=1000):
            client.delete(key)


@pytest.fixture
def prefix() -> str:
    return f"cmtest:{uid()}:"


@pytest.fixture(params=REDIS_TARGETS)
def target(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def admin(platform: Platform, target: str, prefix: str) -> Iterator[redis.Redis | RedisCluster]:
    """The target's admin client; deletes the test's prefix afterwards."""
    client = admin_client(platform, target)
    yield client
    delete_prefix(client, prefix)
    client.close()


@pytest.fixture
def make_memory(
    platform: Platform, target: str, prefix: str, admin: redis.Redis | RedisCluster
) -> Iterator[Callable[..., ChatMemory]]:
    """``make_memory(**binding_changes)``: a ChatMemory on the target under the test's prefix."""
    made: list[ChatMemory] = []

    def make(**changes: object) -> ChatMemory:
        memory = ChatMemory(redis_binding(platform, target, prefix, **changes))
        made.append(memory)
        return memory

    yield make
    for m in made:
        m.close()


@pytest.fixture
def bootstrap(platform: Platform) -> str:
    return platform["KAFKA_BOOTSTRAP"]


def three_partition_topic(bootstrap: str, what: str) -> Iterator[str]:
    """A fresh 3-partition topic on the platform's Kafka (for a fixture), deleted afterwards."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    admin = AdminClient({"bootstrap.servers": bootstrap})
    name = f"cm.sdk.{what}.{uuid.uuid4().hex[:10]}"
    admin.create_topics([NewTopic(name, num_partitions=3, replication_factor=1)])[name].result(timeout=30)
    yield name
    with contextlib.suppress(KafkaException):
        admin.delete_topics([name], operation_timeout=30)[name].result(timeout=35)


def without_key(binding: Binding, key: str, directory: Path) -> Path:
    """The binding as mounted files, but for ``key`` (a Secret someone edited by hand)."""
    for name, value in binding.to_secret_data().items():
        if name != key:
            (directory / name).write_text(value)
    return directory
