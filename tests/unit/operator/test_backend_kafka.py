"""Pure parts of the Kafka backend: retention, the SCRAM mechanism, the ACL set, name checks."""

from __future__ import annotations

import pytest
from chatmemory_operator.backends.kafka import (
    KafkaPlan,
    expected_acls,
    retention_ms,
    scram_mechanism,
    topic_configs,
    validate_plan,
    version_from_broker_config,
)
from chatmemory_operator.errors import InvalidSpec, NotSupportedError
from confluent_kafka.admin import AclOperation, ResourcePatternType, ResourceType, ScramMechanism  # type: ignore[attr-defined]


def plan(**overrides: object) -> KafkaPlan:
    fields: dict[str, object] = {
        "namespace": "ns",
        "name": "m",
        "uid": "u",
        "ttl_seconds": 3600,
        "max_messages": None,
        "username": "cm-user",
        "topic": "cm.ns.m",
        "consumer_group_prefix": "cm.ns.m.",
    }
    fields.update(overrides)
    return KafkaPlan(**fields)  # type: ignore[arg-type]


def test_retention_follows_the_ttl() -> None:
    assert retention_ms(3600) == "3600000"
    assert topic_configs(60) == {"retention.ms": "60000", "cleanup.policy": "delete"}


def test_scram_mechanisms_map_and_others_are_not_supported() -> None:
    assert scram_mechanism("SCRAM-SHA-512") == ScramMechanism.SCRAM_SHA_512
    assert scram_mechanism("scram-sha-256") == ScramMechanism.SCRAM_SHA_256
    with pytest.raises(NotSupportedError, match="PLAIN"):
        scram_mechanism("PLAIN")


def test_acls_cover_the_topic_literally_and_the_group_prefix_only() -> None:
    acls = {
        (b.restype, b.name, b.resource_pattern_type, b.operation, b.principal) for b in expected_acls(plan())
    }
    assert acls == {
        (ResourceType.TOPIC, "cm.ns.m", ResourcePatternType.LITERAL, AclOperation.READ, "User:cm-user"),
        (ResourceType.TOPIC, "cm.ns.m", ResourcePatternType.LITERAL, AclOperation.WRITE, "User:cm-user"),
        (ResourceType.TOPIC, "cm.ns.m", ResourcePatternType.LITERAL, AclOperation.DESCRIBE, "User:cm-user"),
        (ResourceType.GROUP, "cm.ns.m.", ResourcePatternType.PREFIXED, AclOperation.READ, "User:cm-user"),
        (ResourceType.GROUP, "cm.ns.m.", ResourcePatternType.PREFIXED, AclOperation.DESCRIBE, "User:cm-user"),
    }


def test_version_comes_from_the_inter_broker_protocol_before_kafka_4() -> None:
    assert version_from_broker_config({"inter.broker.protocol.version": "3.7-IV4"}) == "3.7"
    assert version_from_broker_config({"log.retention.ms": "1"}) == ">=4.0"


@pytest.mark.parametrize("topic", ["", "has space", "a/b", "x" * 250, ".", ".."])
def test_invalid_topic_names_are_refused(topic: str) -> None:
    with pytest.raises(InvalidSpec, match="topic"):
        validate_plan(plan(topic=topic), sasl=False)


def test_sasl_memories_need_a_user_and_a_group_prefix() -> None:
    validate_plan(plan(username="", consumer_group_prefix=""), sasl=False)
    with pytest.raises(InvalidSpec, match="user"):
        validate_plan(plan(username=""), sasl=True)
    with pytest.raises(InvalidSpec, match="every group"):
        validate_plan(plan(consumer_group_prefix=""), sasl=True)


def test_partitions_and_replication_must_be_positive() -> None:
    with pytest.raises(InvalidSpec, match="partitions"):
        validate_plan(plan(partitions=0), sasl=False)
    with pytest.raises(InvalidSpec, match="replication"):
        validate_plan(plan(replication_factor=0), sasl=False)


def test_partitions_beyond_the_stores_limit_are_refused_naming_the_field() -> None:
    from chatmemory_operator.api import v1alpha1 as api
    from chatmemory_operator.backends.base import MemoryPlan
    from chatmemory_operator.backends.kafka import KafkaBackend
    from chatmemory_operator.errors import LimitExceeded

    store = api.ChatMemoryStore.from_body(
        {"metadata": {"name": "k"}, "spec": {"kafka": {"bootstrapServers": "b:9092"}}}
    )
    common = MemoryPlan(namespace="ns", name="m", uid="u", ttl_seconds=60, max_messages=None, username="x")

    def memory(partitions: int) -> api.ChatMemory:
        body = {"metadata": {"name": "m", "namespace": "ns"}, "spec": {"kafka": {"partitions": partitions}}}
        return api.ChatMemory.from_body(body)

    assert KafkaBackend().plan(common, memory(64), store).partitions == 64  # the default limit
    with pytest.raises(LimitExceeded, match=r"spec\.kafka\.partitions.*maxPartitions 64"):
        KafkaBackend().plan(common, memory(65), store)
    limited = store.model_copy(
        update={"spec": store.spec.model_copy(update={"limits": api.StoreLimits(max_partitions=8)})}
    )
    with pytest.raises(LimitExceeded, match="maxPartitions 8"):
        KafkaBackend().plan(common, memory(9), limited)


class _SlowMetadataAdmin:
    """describe_configs answers UNKNOWN_TOPIC_OR_PART a few times, as just after CreateTopics."""

    def __init__(self, unknown_times: int) -> None:
        self.unknown_times = unknown_times
        self.calls = 0

    def describe_configs(self, resources: list[object], request_timeout: float) -> dict[object, object]:
        from concurrent.futures import Future

        from confluent_kafka import KafkaError, KafkaException

        self.calls += 1
        fut: Future[object] = Future()
        if self.calls <= self.unknown_times:
            fut.set_exception(KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART)))
        else:
            fut.set_result({})
        return {resources[0]: fut}


def test_a_new_topics_configs_are_read_after_its_metadata_settles() -> None:
    from chatmemory_operator.backends.kafka import KafkaBackend
    from confluent_kafka import KafkaException

    admin = _SlowMetadataAdmin(unknown_times=2)
    assert KafkaBackend()._topic_config(admin, "cm.ns.m", settle=True) == {}  # type: ignore[arg-type]
    assert admin.calls == 3
    # an existing topic that is unknown is an error at once, not a wait
    with pytest.raises(KafkaException):
        KafkaBackend()._topic_config(_SlowMetadataAdmin(unknown_times=1), "cm.ns.m")  # type: ignore[arg-type]
