"""The Kafka backend against a real Kafka 4 broker, on its PLAINTEXT and SASL/SCRAM listeners.

Every claim is checked on the broker: topic metadata and configs, the SCRAM credential and ACLs,
and the memory's own credentials producing (idempotent, acks=all, as the SDK does) and consuming,
with TOPIC/GROUP_AUTHORIZATION_FAILED where it may not. New users and ACLs reach the broker
asynchronously, so allowed operations are retried briefly; denials are checked only after the same
user has been seen to succeed.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from chatmemory.contract import Binding
from chatmemory_operator.backends.base import DeletionPolicy, MemoryPlan, StoreConnection
from chatmemory_operator.backends.kafka import KafkaBackend
from chatmemory_operator.errors import BackendUnavailable, NotSupportedError
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicCollection
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourcePatternType,
    ResourceType,
    ScramMechanism,
    UserScramCredentialDeletion,
)

from tests.integration.operator.conftest import closed_port, kafka_store
from tests.integration.operator.conftest import kafka_plan as plan
from tests.support.platform import Platform

PROPAGATION = 30.0  # seconds allowed for a new user / ACL to reach the broker


@pytest.fixture
def backend() -> Iterator[KafkaBackend]:
    b = KafkaBackend()
    yield b
    b.close()


@pytest.fixture(params=["plaintext", "sasl"])
def store(request: pytest.FixtureRequest, platform: Platform) -> StoreConnection:
    return kafka_store(platform, sasl=request.param == "sasl")


@pytest.fixture
def sasl_store(platform: Platform) -> StoreConnection:
    return kafka_store(platform, sasl=True)


@pytest.fixture
def admin(store: StoreConnection) -> AdminClient:
    return AdminClient(admin_conf(store))


@pytest.fixture
def memories(backend: KafkaBackend, platform: Platform) -> Iterator[list[tuple[StoreConnection, MemoryPlan]]]:
    made: list[tuple[StoreConnection, MemoryPlan]] = []
    yield made
    for s, p in made:
        backend.delete(s, p, DeletionPolicy.DELETE)


def admin_conf(store: StoreConnection) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap.servers": store.bootstrap_servers,
        "security.protocol": store.security_protocol,
    }
    if store.security_protocol.startswith("SASL"):
        conf.update(
            {
                "sasl.mechanism": store.sasl_mechanism,
                "sasl.username": store.admin_username,
                "sasl.password": store.admin_password,
            }
        )
    return conf


def client_conf(b: Binding) -> dict[str, Any]:
    """What the SDK builds from a binding."""
    conf: dict[str, Any] = {
        "bootstrap.servers": b.bootstrap_servers,
        "security.protocol": b.security_protocol,
    }
    if b.username:
        conf.update(
            {"sasl.mechanism": b.sasl_mechanism, "sasl.username": b.username, "sasl.password": b.password}
        )
    return conf


def produce(b: Binding, topic: str, value: bytes) -> KafkaError | None:
    """One idempotent, acks=all write (the SDK's producer settings); the delivery error or None."""
    errors: list[KafkaError] = []
    producer = Producer(
        {**client_conf(b), "enable.idempotence": True, "acks": "all", "message.timeout.ms": 5000}
    )
    producer.produce(
        topic, key=b"session", value=value, on_delivery=lambda err, _m: err and errors.append(err)
    )
    producer.flush(10)
    return errors[0] if errors else None


def connection_errors(b: Binding) -> set[int]:
    """Error codes librdkafka reports (error_cb) while a producer with ``b``'s credentials connects."""
    codes: set[int] = set()
    producer = Producer(
        {**client_conf(b), "error_cb": lambda err: codes.add(err.code()), "message.timeout.ms": 3000}
    )
    producer.produce(b.topic, value=b"probe")
    producer.flush(5)
    return codes


def produce_until_allowed(b: Binding, topic: str) -> None:
    deadline = time.monotonic() + PROPAGATION
    while (err := produce(b, topic, b"hello")) is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert err is None, f"the memory could not write its own topic: {err}"


def consume_one(b: Binding, topic: str, group: str) -> tuple[bytes | None, KafkaError | None]:
    """Subscribe with ``group`` and return the first message or the first error."""
    consumer = Consumer(
        {**client_conf(b), "group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False}
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + PROPAGATION
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                return None, msg.error()
            consumer.commit(message=msg, asynchronous=False)  # needs READ on the group
            return msg.value(), None
    finally:
        consumer.close()
    pytest.fail(f"nothing read from {topic} with group {group}")


def topic_state(admin: AdminClient, topic: str) -> tuple[int, int] | None:
    """(partitions, replication factor) from the broker, or None when the topic does not exist."""
    try:
        desc = admin.describe_topics(TopicCollection([topic]))[topic].result(timeout=30)
    except KafkaException as e:
        if e.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            return None
        raise
    return len(desc.partitions), len(desc.partitions[0].replicas)


def topic_config(admin: AdminClient, topic: str) -> dict[str, str]:
    res = ConfigResource(ResourceType.TOPIC, topic)
    return {k: v.value for k, v in admin.describe_configs([res])[res].result(timeout=30).items()}


def user_acls(admin: AdminClient, username: str) -> set[tuple[str, str, str, str]]:
    flt = AclBindingFilter(
        ResourceType.ANY,
        None,
        ResourcePatternType.ANY,
        f"User:{username}",
        None,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    return {
        (b.restype.name, b.name, b.resource_pattern_type.name, b.operation.name)
        for b in admin.describe_acls(flt).result(timeout=30)
    }


def has_credential(admin: AdminClient, username: str) -> bool:
    try:
        admin.describe_user_scram_credentials([username])[username].result(timeout=30)
    except KafkaException as e:
        if e.args[0].code() == KafkaError.RESOURCE_NOT_FOUND:
            return False
        raise
    return True


def test_check_reports_kafka_with_its_security_capabilities(
    backend: KafkaBackend, store: StoreConnection
) -> None:
    info = backend.check(store)
    assert info.provider == "kafka"
    assert info.version == ">=4.0"  # Kafka 4.x: no inter.broker.protocol.version any more
    assert info.capabilities == {"sasl": store.security_protocol.startswith("SASL"), "acl": True}


def test_ensure_twice_converges_to_one_topic_with_the_planned_layout(
    backend: KafkaBackend, store: StoreConnection, admin: AdminClient, memories: list[Any]
) -> None:
    p = plan(partitions=3, ttl_seconds=7200)
    memories.append((store, p))
    first = backend.ensure(store, p, "pw-1")
    assert backend.ensure(store, p, "pw-1") == first
    assert topic_state(admin, p.topic) == (3, 1)
    cfg = topic_config(admin, p.topic)
    assert cfg["retention.ms"] == "7200000" and cfg["cleanup.policy"] == "delete"
    assert first.topic == p.topic and first.bootstrap_servers == store.bootstrap_servers
    assert first.consumer_group_prefix == p.consumer_group_prefix and first.ttl_seconds == 7200
    assert first.uri == f"kafka://{store.bootstrap_servers}/{p.topic}"
    if store.security_protocol.startswith("SASL"):
        assert (first.username, first.password, first.sasl_mechanism) == (
            p.username,
            "pw-1",
            store.sasl_mechanism,
        )
        assert has_credential(admin, p.username)
        assert user_acls(admin, p.username) == {
            ("TOPIC", p.topic, "LITERAL", "READ"),
            ("TOPIC", p.topic, "LITERAL", "WRITE"),
            ("TOPIC", p.topic, "LITERAL", "DESCRIBE"),
            ("GROUP", p.consumer_group_prefix, "PREFIXED", "READ"),
            ("GROUP", p.consumer_group_prefix, "PREFIXED", "DESCRIBE"),
        }
        assert backend.observe(store, p).details["acls"] == "ok"
    else:
        assert (first.username, first.password, first.sasl_mechanism) == ("", "", "")


def test_sasl_memory_uses_its_topic_and_groups_and_is_denied_others(
    backend: KafkaBackend, sasl_store: StoreConnection, memories: list[Any]
) -> None:
    mine, theirs = plan(), plan()
    memories += [(sasl_store, mine), (sasl_store, theirs)]
    binding = backend.ensure(sasl_store, mine, "pw-mine")
    other = backend.ensure(sasl_store, theirs, "pw-theirs")
    produce_until_allowed(binding, mine.topic)  # idempotent + acks=all: no IDEMPOTENT_WRITE needed
    produce_until_allowed(other, theirs.topic)
    value, err = consume_one(binding, mine.topic, f"{mine.consumer_group_prefix}reader")
    assert err is None and value == b"hello"

    denied = produce(binding, theirs.topic, b"intrusion")
    assert denied is not None and denied.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    _, err = consume_one(binding, theirs.topic, f"{mine.consumer_group_prefix}reader")
    assert err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    _, err = consume_one(binding, mine.topic, f"not-mine-{uuid.uuid4().hex[:6]}")
    assert err is not None and err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED


def test_topic_deleted_by_hand_and_changed_retention_are_repaired(
    backend: KafkaBackend, store: StoreConnection, admin: AdminClient, memories: list[Any]
) -> None:
    p = plan(partitions=2)
    memories.append((store, p))
    backend.ensure(store, p, "pw")
    res = ConfigResource(
        ResourceType.TOPIC,
        p.topic,
        incremental_configs=[
            ConfigEntry("retention.ms", "1", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.SET),
        ],
    )
    admin.incremental_alter_configs([res])[res].result(timeout=30)
    backend.ensure(store, p, "pw")
    cfg = topic_config(admin, p.topic)
    assert (cfg["retention.ms"], cfg["cleanup.policy"]) == ("3600000", "delete")

    admin.delete_topics([p.topic])[p.topic].result(timeout=30)
    deadline = time.monotonic() + PROPAGATION
    while topic_state(admin, p.topic) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not backend.observe(store, p).exists
    deadline = time.monotonic() + PROPAGATION
    while True:  # the broker may still be finishing the deletion: ensure is retried, as kopf would
        try:
            backend.ensure(store, p, "pw")
            break
        except BackendUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    assert topic_state(admin, p.topic) == (2, 1)
    assert topic_config(admin, p.topic)["retention.ms"] == "3600000"


def test_sasl_user_credential_and_acls_removed_by_hand_come_back_and_extras_go(
    backend: KafkaBackend, sasl_store: StoreConnection, memories: list[Any]
) -> None:
    admin = AdminClient(admin_conf(sasl_store))
    p = plan()
    memories.append((sasl_store, p))
    binding = backend.ensure(sasl_store, p, "pw")
    mechanism = ScramMechanism[sasl_store.sasl_mechanism.replace("-", "_")]
    admin.alter_user_scram_credentials([UserScramCredentialDeletion(p.username, mechanism)])[
        p.username
    ].result(30)
    flt = AclBindingFilter(
        ResourceType.TOPIC,
        p.topic,
        ResourcePatternType.LITERAL,
        None,
        None,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    admin.delete_acls([flt])[flt].result(timeout=30)
    extra = AclBinding(
        ResourceType.TOPIC,
        "*",
        ResourcePatternType.LITERAL,
        f"User:{p.username}",
        "*",
        AclOperation.ALL,
        AclPermissionType.ALLOW,
    )
    admin.create_acls([extra])[extra].result(timeout=30)
    observed = backend.observe(sasl_store, p)
    assert not observed.user_exists and observed.details["acls"] != "ok"

    backend.ensure(sasl_store, p, "pw")
    assert has_credential(admin, p.username)
    assert ("TOPIC", "*", "LITERAL", "ALL") not in user_acls(admin, p.username)
    assert len(user_acls(admin, p.username)) == 5
    produce_until_allowed(binding, p.topic)


def test_ttl_change_updates_retention(
    backend: KafkaBackend, store: StoreConnection, admin: AdminClient, memories: list[Any]
) -> None:
    p = plan(ttl_seconds=3600)
    memories.append((store, p))
    backend.ensure(store, p, "pw")
    backend.ensure(store, dataclasses.replace(p, ttl_seconds=60), "pw")
    assert topic_config(admin, p.topic)["retention.ms"] == "60000"


def test_partitions_grow_and_impossible_changes_are_refused_untouched(
    backend: KafkaBackend, store: StoreConnection, admin: AdminClient, memories: list[Any]
) -> None:
    p = plan(partitions=1)
    memories.append((store, p))
    backend.ensure(store, p, "pw")
    backend.ensure(store, dataclasses.replace(p, partitions=4), "pw")
    assert topic_state(admin, p.topic) == (4, 1)
    with pytest.raises(NotSupportedError, match="cannot remove partitions: set partitions to 4 or more"):
        backend.ensure(store, dataclasses.replace(p, partitions=2), "pw")
    with pytest.raises(NotSupportedError, match="replication factor 1"):
        backend.ensure(store, dataclasses.replace(p, partitions=4, replication_factor=2), "pw")
    assert topic_state(admin, p.topic) == (4, 1)
    impossible = plan(replication_factor=3)
    with pytest.raises(NotSupportedError, match="needs at least that many brokers"):
        backend.ensure(store, impossible, "pw")
    assert topic_state(admin, impossible.topic) is None


def test_sasl_password_change_rotates_old_password_out(
    backend: KafkaBackend, sasl_store: StoreConnection, memories: list[Any]
) -> None:
    p = plan()
    memories.append((sasl_store, p))
    old = backend.ensure(sasl_store, p, "old-password")
    produce_until_allowed(old, p.topic)
    new = backend.ensure(sasl_store, p, "new-password")
    produce_until_allowed(new, p.topic)
    deadline = time.monotonic() + PROPAGATION
    while not (codes := connection_errors(old)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert KafkaError._AUTHENTICATION in codes


def test_retain_removes_user_and_acls_and_keeps_the_topic(
    backend: KafkaBackend, store: StoreConnection, admin: AdminClient
) -> None:
    p = plan()
    backend.ensure(store, p, "pw")
    backend.delete(store, p, DeletionPolicy.RETAIN)
    backend.delete(store, p, DeletionPolicy.RETAIN)
    try:
        assert topic_state(admin, p.topic) == (1, 1)
        if store.security_protocol.startswith("SASL"):
            assert not has_credential(admin, p.username)
            assert user_acls(admin, p.username) == set()
    finally:
        backend.delete(store, p, DeletionPolicy.DELETE)


def test_delete_removes_topic_user_and_acls_and_is_repeatable(
    backend: KafkaBackend, store: StoreConnection, admin: AdminClient
) -> None:
    p = plan()
    backend.ensure(store, p, "pw")
    backend.delete(store, p, DeletionPolicy.DELETE)
    backend.delete(store, p, DeletionPolicy.DELETE)
    deadline = time.monotonic() + PROPAGATION
    while topic_state(admin, p.topic) is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert topic_state(admin, p.topic) is None
    if store.security_protocol.startswith("SASL"):
        assert not has_credential(admin, p.username)
        assert user_acls(admin, p.username) == set()


def test_unreachable_store_raises_backend_unavailable_naming_the_servers(
    backend: KafkaBackend, store: StoreConnection
) -> None:
    dead = dataclasses.replace(store, bootstrap_servers=f"127.0.0.1:{closed_port()}")
    with pytest.raises(BackendUnavailable, match=dead.bootstrap_servers):
        backend.ensure(dead, plan(), "pw")


def test_wrong_admin_password_raises_backend_unavailable_without_the_password(
    backend: KafkaBackend, sasl_store: StoreConnection
) -> None:
    bad = dataclasses.replace(sasl_store, admin_password="definitely-wrong-pw")
    with pytest.raises(BackendUnavailable, match="SASL authentication") as exc:
        backend.check(bad)
    assert "definitely-wrong-pw" not in str(exc.value)


def test_on_one_broker_the_cluster_defaults_stay_one_replica_and_one_in_sync(
    backend: KafkaBackend, store: StoreConnection, admin: AdminClient, memories: list[Any]
) -> None:
    """The platform's single broker: no replication asked, none given (3/2 is for 3+ brokers)."""
    p = plan(replication_factor=None)  # neither the memory nor the store sets it
    assert (p.replication_factor, p.min_insync_replicas) == (None, None)
    memories.append((store, p))
    binding = backend.ensure(store, p, "pw")
    assert topic_state(admin, p.topic) == (1, 1)
    assert topic_config(admin, p.topic)["min.insync.replicas"] == "1"
    status = backend.provisioned(p, binding)
    assert (status.replication_factor, status.min_insync_replicas) == (1, 1)
    assert produce(binding, p.topic, b"acks=all is answered") is None


def test_min_insync_changed_by_hand_is_drift_and_is_reset(
    backend: KafkaBackend, store: StoreConnection, admin: AdminClient, memories: list[Any]
) -> None:
    p = plan(replication_factor=None)
    memories.append((store, p))
    backend.ensure(store, p, "pw")
    res = ConfigResource(
        ResourceType.TOPIC,
        p.topic,
        incremental_configs=[
            ConfigEntry("min.insync.replicas", "2", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    admin.incremental_alter_configs([res])[res].result(timeout=30)
    drift = backend.observe(store, p).drift
    assert [d.what for d in drift] == ["min.insync.replicas was 2"]
    backend.ensure(store, p, "pw")
    assert topic_config(admin, p.topic)["min.insync.replicas"] == "1"
    assert backend.observe(store, p).drift == ()


def test_more_in_sync_replicas_than_one_broker_holds_are_refused_untouched(
    backend: KafkaBackend, store: StoreConnection, admin: AdminClient
) -> None:
    p = plan(replication_factor=None, min_insync_replicas=2)
    with pytest.raises(NotSupportedError, match=r"spec\.kafka\.minInsyncReplicas: min\.insync\.replicas 2"):
        backend.ensure(store, p, "pw")
    assert topic_state(admin, p.topic) is None
