"""A memory connected from a mounted Secret follows it: a rotated password needs no restart.

The directory is laid out the way the kubelet lays out a Secret volume (a timestamped directory, the
``..data`` link to it, and a link per key), and updated the way the kubelet does it: a new
timestamped directory, then ``..data`` swapped at once. The server's password is changed, the
memory's open connections are killed (a network blip), and the next write must go through with the
new password, read from the directory.

Kafka SASL memories are provisioned and rotated by the operator's own ``KafkaBackend`` (a rotation
with a grace period switches the user, ``<user>`` to ``<user>_b``; the grace period's end removes the
previous user's ACLs and SCRAM credential). Kafka has no command that closes a client's
connections, so the blip is this process's own connections to the broker shut down. Besides the
memory that reads its Secret every 2 s, a connector whose source is read only on a refusal proves
each way back from a refusal: a turn refused whole and sent again, a refused read, and a turn that
waits in the producer while it reconnects as the removed user (delivered once, by that producer).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
import redis
from chatmemory import connect
from chatmemory._connect import kafka_config
from chatmemory.contract import BackendKind, Binding
from chatmemory.histories import _kafka_clients
from chatmemory.histories.kafka import KafkaConnector
from chatmemory.loaders import RELOAD_INTERVAL, BindingSource, read_directory
from chatmemory_operator.backends.base import DeletionPolicy, Prior
from chatmemory_operator.backends.kafka import KafkaBackend
from chatmemory_operator.backends.redis import acl_rules
from chatmemory_operator.backends.tidb import TiDBBackend
from langchain_core.messages import AIMessage, HumanMessage

from tests.integration.operator.conftest import kafka_plan, kafka_store, sql_plan, sql_store
from tests.integration.sdk.conftest import admin_client, delete_prefix, redis_binding
from tests.support.platform import Platform


def uid() -> str:
    return uuid.uuid4().hex[:10]


class MountedSecret:
    """A Secret volume the way the kubelet writes and updates it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()
        self.version = 0

    def write(self, binding: Binding) -> None:
        self.version += 1
        snapshot = self.root / f"..2026_12_03_00_00_{self.version:02d}"
        snapshot.mkdir()
        for key, value in binding.to_secret_data().items():
            (snapshot / key).write_text(value)
        link = self.root / "..data_tmp"
        link.symlink_to(snapshot.name)
        os.replace(link, self.root / "..data")  # the atomic swap
        for key in binding.to_secret_data():
            if not (self.root / key).is_symlink():
                (self.root / key).symlink_to(f"..data/{key}")


def test_a_read_never_mixes_two_versions_of_the_secret(tmp_path: Path) -> None:
    mounted = MountedSecret(tmp_path / "mnt")
    first = Binding(
        backend=BackendKind.REDIS, provider="redis", host="h", port=1, username="u", password="p1"
    )
    mounted.write(first)
    assert read_directory(mounted.root)["password"] == "p1"
    mounted.write(first.model_copy(update={"password": "p2"}))
    data = read_directory(mounted.root)
    assert (data["username"], data["password"]) == ("u", "p2")


@pytest.fixture
def redis_user(platform: Platform) -> Iterator[tuple[redis.Redis, str, str]]:
    admin: Any = admin_client(platform, "REDIS_URL")
    user, prefix = f"cmfollow-{uid()}", f"cmfollow:{uid()}:"
    yield admin, user, prefix
    admin.acl_deluser(user)
    delete_prefix(admin, prefix)
    admin.close()


def test_a_redis_memory_follows_its_mounted_secret_through_a_rotation_and_a_blip(
    platform: Platform, tmp_path: Path, redis_user: tuple[redis.Redis, str, str]
) -> None:
    admin, user, prefix = redis_user
    admin.execute_command("ACL", "SETUSER", user, *acl_rules(prefix, "first-password", cluster=False))
    binding = redis_binding(platform, "REDIS_URL", prefix, username=user, password="first-password")
    mounted = MountedSecret(tmp_path / "binding")
    mounted.write(binding)
    with connect(path=mounted.root) as memory:
        history = memory.history("s")
        history.add_message(HumanMessage("before"))
        admin.execute_command("ACL", "SETUSER", user, *acl_rules(prefix, "second-password", cluster=False))
        mounted.write(binding.model_copy(update={"password": "second-password"}))
        admin.execute_command("CLIENT", "KILL", "USER", user)  # the blip: every connection of the app
        time.sleep(RELOAD_INTERVAL + 0.2)
        history.add_message(HumanMessage("after"))
        assert [m.content for m in history.messages] == ["before", "after"]


def test_a_tidb_memory_follows_its_mounted_secret_through_a_rotation_and_a_blip(
    platform: Platform, tmp_path: Path
) -> None:
    params = platform.mysql_params("TIDB_URL")
    admin = pymysql.connect(**{**params, "autocommit": True})  # type: ignore[arg-type]
    user, database = f"cmfollow_{uid()}", f"cmfollow_{uid()}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{database}`")
        cur.execute("CREATE USER %s@'%%' IDENTIFIED BY 'first-password'", (user,))
        cur.execute(f"GRANT SELECT, INSERT, DELETE, CREATE ON `{database}`.* TO %s@'%%'", (user,))
    binding = Binding(
        backend=BackendKind.TIDB,
        provider="tidb",
        host=str(params["host"]),
        port=int(str(params["port"])),
        username=user,
        password="first-password",
        database=database,
        table="messages",
    )
    mounted = MountedSecret(tmp_path / "binding")
    mounted.write(binding)
    try:
        with connect(path=mounted.root) as memory:
            from chatmemory.histories.tidb import TiDBConnector

            TiDBConnector(binding, create=True).close()  # the table, as the operator would make it
            history = memory.history("s")
            history.add_message(HumanMessage("before"))
            with admin.cursor() as cur:
                cur.execute("ALTER USER %s@'%%' IDENTIFIED BY 'second-password'", (user,))
                mounted.write(binding.model_copy(update={"password": "second-password"}))
                cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (user,))
                for (conn_id,) in cur.fetchall():
                    cur.execute(f"KILL {int(conn_id)}")  # the blip
            time.sleep(RELOAD_INTERVAL + 0.2)
            history.add_message(HumanMessage("after"))
            assert [m.content for m in history.messages] == ["before", "after"]
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{database}`")
            cur.execute("DROP USER IF EXISTS %s@'%%'", (user,))
        admin.close()


# -- Kafka SASL: the operator's rotation switches the user (<user> and <user>_b in turn) --------------


def drop_connections(port: int) -> int:
    """Shut down every established TCP connection of this process to ``port`` (a network blip for
    the app's clients: librdkafka sees the connection closed and opens a new one). Returns how
    many. Linux: the sockets are found through ``/proc``."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[2].rpartition(":")[2], 16) == port and fields[3] == "01":  # ESTABLISHED
                inodes.add(fields[9])
    dropped = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{fd}").removeprefix("socket:[").rstrip("]") in inodes:
                with socket.socket(fileno=os.dup(int(fd))) as sock:
                    sock.shutdown(socket.SHUT_RDWR)  # the socket librdkafka holds ends too
                dropped += 1
    return dropped


def kafka_allows(binding: Binding) -> bool:
    """Whether the broker lets the binding's user see its topic (a user or ACL change has landed)."""
    from confluent_kafka import Consumer, KafkaException

    conf = {
        **kafka_config(binding),
        "group.id": "probe",
        "socket.timeout.ms": 3000,
        "reconnect.backoff.max.ms": 200,
    }
    consumer = Consumer(conf)
    try:
        topic = consumer.list_topics(binding.topic, timeout=3).topics.get(binding.topic)
        return topic is not None and topic.error is None
    except KafkaException:
        return False
    finally:
        consumer.close()


def until(check: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.2)


class KafkaRotation:
    """A Kafka SASL memory provisioned and rotated by the operator's own backend: ``rotate()`` is a
    rotation with a grace period (the next user gets the new password, the previous one keeps
    working), ``end_grace()`` removes the previous user (its ACLs and its SCRAM credential)."""

    def __init__(self, platform: Platform) -> None:
        self.backend = KafkaBackend()
        self.store = kafka_store(platform, sasl=True)
        self.plan = kafka_plan()
        self.port = int(self.store.bootstrap_servers.rpartition(":")[2])
        self.binding = self.backend.ensure(self.store, self.plan, "first-password")
        until(lambda: kafka_allows(self.binding), "the memory's first user")

    def rotate(self, password: str) -> tuple[Binding, Binding]:
        """(previous, next) bindings once the next user may use the topic."""
        previous = self.binding
        prior = Prior(
            binding=previous, previous_password_sha256=hashlib.sha256(previous.password.encode()).hexdigest()
        )
        self.binding = self.backend.ensure(self.store, self.plan, password, prior)
        assert self.binding.username != previous.username  # Kafka rotates the user, not only the password
        until(lambda: kafka_allows(self.binding), "the next user")
        return previous, self.binding

    def end_grace(self, previous: Binding) -> None:
        self.backend.ensure(self.store, self.plan, self.binding.password, Prior(binding=self.binding))
        until(lambda: not kafka_allows(previous), "the previous user to be refused")

    def close(self) -> None:
        self.backend.delete(self.store, self.plan, DeletionPolicy.DELETE)
        self.backend.close()


@pytest.fixture
def kafka_rotation(platform: Platform) -> Iterator[KafkaRotation]:
    rotation = KafkaRotation(platform)
    yield rotation
    rotation.close()


def read_only_on_refusal(mounted: MountedSecret, first: Binding) -> Binding:
    """``first`` following ``mounted``, read again only when the server refused it (never on a
    timer), so a test knows the clients still hold the previous user when the server refuses it."""
    source = BindingSource(lambda: Binding.from_mapping(read_directory(mounted.root), source="dir"), first)
    source.interval = float("inf")
    return first.with_source(source)


def contents(history: Any) -> list[str]:
    return [str(m.content) for m in history.messages]


def test_a_kafka_memory_follows_its_mounted_secret_through_a_rotation_and_a_blip(
    tmp_path: Path, kafka_rotation: KafkaRotation
) -> None:
    mounted = MountedSecret(tmp_path / "binding")
    mounted.write(kafka_rotation.binding)
    with connect(path=mounted.root) as memory:
        history = memory.history("s")
        history.add_message(HumanMessage("before"))
        previous, _ = kafka_rotation.rotate("second-password")
        mounted.write(kafka_rotation.binding)
        time.sleep(RELOAD_INTERVAL + 0.2)
        history.add_message(HumanMessage("during"))  # the next user's producer from here on
        kafka_rotation.end_grace(previous)
        assert drop_connections(kafka_rotation.port) > 0
        history.add_message(HumanMessage("after"))
        assert contents(history) == ["before", "during", "after"]


def test_a_kafka_turn_refused_with_the_previous_user_is_sent_once_more_as_the_next_one(
    tmp_path: Path, kafka_rotation: KafkaRotation
) -> None:
    mounted = MountedSecret(tmp_path / "binding")
    mounted.write(kafka_rotation.binding)
    with contextlib.closing(
        KafkaConnector(read_only_on_refusal(mounted, kafka_rotation.binding))
    ) as connector:
        history = connector.history("s")
        history.add_message(HumanMessage("before"))
        assert contents(history) == ["before"]
        previous, _ = kafka_rotation.rotate("second-password")
        mounted.write(kafka_rotation.binding)
        kafka_rotation.end_grace(previous)  # the producer's connection is still the previous user's
        history.add_messages([HumanMessage("after"), AIMessage("reply")])
        assert contents(history) == ["before", "after", "reply"]


def test_an_async_kafka_turn_refused_with_the_previous_user_is_sent_once_more_as_the_next_one(
    tmp_path: Path, kafka_rotation: KafkaRotation
) -> None:
    mounted = MountedSecret(tmp_path / "binding")
    mounted.write(kafka_rotation.binding)
    with contextlib.closing(
        KafkaConnector(read_only_on_refusal(mounted, kafka_rotation.binding))
    ) as connector:
        history = connector.history("s")
        asyncio.run(history.aadd_messages([HumanMessage("before")]))
        previous, _ = kafka_rotation.rotate("second-password")
        mounted.write(kafka_rotation.binding)
        kafka_rotation.end_grace(previous)
        asyncio.run(history.aadd_messages([HumanMessage("after"), AIMessage("reply")]))
        assert contents(history) == ["before", "after", "reply"]


def test_a_kafka_read_refused_with_the_previous_user_is_read_again_as_the_next_one(
    tmp_path: Path, kafka_rotation: KafkaRotation
) -> None:
    mounted = MountedSecret(tmp_path / "binding")
    mounted.write(kafka_rotation.binding)
    with contextlib.closing(
        KafkaConnector(read_only_on_refusal(mounted, kafka_rotation.binding))
    ) as connector:
        history = connector.history("s")
        history.add_message(HumanMessage("before"))
        assert contents(history) == ["before"]  # a pooled reader, connected as the first user
        previous, _ = kafka_rotation.rotate("second-password")
        mounted.write(kafka_rotation.binding)
        kafka_rotation.end_grace(previous)
        assert contents(connector.history("s")) == ["before"]


def test_a_kafka_turn_queued_when_its_user_is_refused_is_delivered_once_by_the_same_producer(
    tmp_path: Path, kafka_rotation: KafkaRotation, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_kafka_clients, "PARTITIONS_MAX_AGE", 600.0)  # no metadata read before the turn
    mounted = MountedSecret(tmp_path / "binding")
    mounted.write(kafka_rotation.binding)
    with contextlib.closing(
        KafkaConnector(read_only_on_refusal(mounted, kafka_rotation.binding))
    ) as connector:
        history = connector.history("s")
        history.add_message(HumanMessage("before"))
        previous, _ = kafka_rotation.rotate("second-password")
        mounted.write(kafka_rotation.binding)
        history.add_message(HumanMessage("during"))  # the previous user, in its grace period
        kafka_rotation.end_grace(previous)
        assert drop_connections(kafka_rotation.port) > 0
        # queued at once (the producer knows the topic), it waits while the producer reconnects as
        # the removed user, until the Secret is read again and the producer logs in as the next one
        history.add_message(HumanMessage("after"))
        assert contents(history) == ["before", "during", "after"]


# -- checkpointers: a pooled connection outlives the previous user of a rotation -----------------------


def test_a_tidb_checkpointer_runs_an_agent_on_after_the_previous_user_of_a_rotation_is_dropped(
    platform: Platform, tmp_path: Path
) -> None:
    from tests.integration.checkpoint.agent_support import build_agent

    backend, store, plan = TiDBBackend(), sql_store(platform, "TIDB_URL"), sql_plan()
    first = backend.ensure(store, plan, "first-password")
    mounted = MountedSecret(tmp_path / "binding")
    mounted.write(first)
    config: Any = {"configurable": {"thread_id": "t"}}
    try:
        with connect(path=mounted.root) as memory:
            saver = memory.checkpointer()
            agent = build_agent(saver)
            agent.invoke({"messages": [HumanMessage("where is order 1")]}, config)
            digest = hashlib.sha256(b"first-password").hexdigest()
            second = backend.ensure(
                store, plan, "second-password", Prior(binding=first, previous_password_sha256=digest)
            )
            mounted.write(second)
            backend.ensure(store, plan, "second-password", Prior(binding=second))  # the grace period ends
            agent.invoke({"messages": [HumanMessage("where is order 2")]}, config)  # pooled: the first user's
            messages = agent.get_state(config).values["messages"]
            saver.close()
        assert [m.content for m in messages if isinstance(m, HumanMessage)] == [
            "where is order 1",
            "where is order 2",
        ]
        assert len(messages) == 8
    finally:
        backend.delete(store, plan, DeletionPolicy.DELETE)
        backend.close()
