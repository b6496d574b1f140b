"""The Kafka backend's replication decisions (pure): cluster defaults, what the memory or the store
sets, and what a cluster of so many brokers refuses."""

from __future__ import annotations

import pytest
from chatmemory_operator.api import v1alpha1 as api
from chatmemory_operator.backends.base import MemoryPlan
from chatmemory_operator.backends.kafka import (
    KafkaBackend,
    Replication,
    replication,
    topic_configs,
    validate_plan,
)
from chatmemory_operator.errors import InvalidSpec, NotSupportedError

from tests.unit.operator.test_backend_kafka import plan


@pytest.mark.parametrize(("brokers", "expected"), [(1, (1, 1)), (2, (1, 1)), (3, (3, 2)), (5, (3, 2))])
def test_unset_replication_fits_the_cluster(brokers: int, expected: tuple[int, int]) -> None:
    assert replication(plan(), brokers) == Replication(*expected)


def test_a_set_factor_gets_a_matching_min_insync() -> None:
    assert replication(plan(replication_factor=2), 3) == Replication(2, 1)
    assert replication(plan(replication_factor=5), 5) == Replication(5, 2)
    assert replication(plan(replication_factor=1), 3) == Replication(1, 1)


def test_a_set_min_insync_wins_over_the_default() -> None:
    assert replication(plan(min_insync_replicas=3), 3) == Replication(3, 3)
    assert replication(plan(min_insync_replicas=1), 3) == Replication(3, 1)


def test_an_existing_topic_keeps_its_factor_when_nobody_set_one() -> None:
    """A topic made with factor 1 before the cluster grew is not refused as a 'change'."""
    assert replication(plan(), 3, existing_factor=1) == Replication(1, 1)
    assert replication(plan(), 1, existing_factor=3) == Replication(3, 2)


def test_a_factor_above_the_brokers_is_refused_naming_the_field() -> None:
    with pytest.raises(NotSupportedError, match=r"spec.kafka.replicationFactor: .*3.* has 2: set it to 2"):
        replication(plan(replication_factor=3), 2)
    store_field = "ChatMemoryStore 'k' spec.defaults.replicationFactor"
    with pytest.raises(NotSupportedError, match=store_field):
        replication(plan(replication_factor=3, replication_field=store_field), 1)


def test_a_set_factor_other_than_the_topics_is_refused() -> None:
    with pytest.raises(NotSupportedError, match="has replication factor 1; changing it needs a partition"):
        replication(plan(replication_factor=3), 3, existing_factor=1)


def test_min_insync_above_the_factor_is_refused_naming_the_field() -> None:
    with pytest.raises(
        NotSupportedError, match=r"spec.kafka.minInsyncReplicas: min.insync.replicas 2 is more"
    ):
        replication(plan(min_insync_replicas=2), 1)  # one broker: factor 1
    with pytest.raises(NotSupportedError, match="more than the topic's replication factor 1"):
        replication(plan(min_insync_replicas=2), 3, existing_factor=1)


def test_min_insync_above_a_set_factor_is_an_invalid_spec() -> None:
    with pytest.raises(
        InvalidSpec, match=r"min\.insync\.replicas 3 is more than spec\.kafka\.replicationFactor 2"
    ):
        validate_plan(plan(replication_factor=2, min_insync_replicas=3), sasl=False)
    with pytest.raises(InvalidSpec, match=r"min\.insync\.replicas must be at least 1"):
        validate_plan(plan(min_insync_replicas=0), sasl=False)


def test_topic_configs_carry_min_insync_once_decided() -> None:
    assert "min.insync.replicas" not in topic_configs(60)
    assert topic_configs(60, 2)["min.insync.replicas"] == "2"


def store(defaults: dict[str, object] | None = None) -> api.ChatMemoryStore:
    spec: dict[str, object] = {"kafka": {"bootstrapServers": "k:9092"}}
    if defaults is not None:
        spec["defaults"] = defaults
    return api.ChatMemoryStore.model_validate({"metadata": {"name": "k"}, "spec": spec})


def memory(kafka: dict[str, object] | None = None) -> api.ChatMemory:
    spec: dict[str, object] = {"kafka": kafka} if kafka is not None else {}
    return api.ChatMemory.model_validate(
        {"metadata": {"name": "m", "namespace": "ns", "uid": "u"}, "spec": spec}
    )


COMMON = MemoryPlan(namespace="ns", name="m", uid="u", ttl_seconds=60, max_messages=None, username="cm-u")


def test_the_plan_leaves_unset_replication_to_the_cluster() -> None:
    p = KafkaBackend().plan(COMMON, memory(), store())
    assert (p.replication_factor, p.min_insync_replicas) == (None, None)


def test_the_memory_wins_over_the_store_and_the_field_at_fault_is_named() -> None:
    s = store({"replicationFactor": 3, "minInsyncReplicas": 2})
    p = KafkaBackend().plan(COMMON, memory(), s)
    assert (p.replication_factor, p.min_insync_replicas) == (3, 2)
    assert p.replication_field == "ChatMemoryStore 'k' spec.defaults.replicationFactor"
    assert p.min_insync_field == "ChatMemoryStore 'k' spec.defaults.minInsyncReplicas"
    p = KafkaBackend().plan(COMMON, memory({"replicationFactor": 1, "minInsyncReplicas": 1}), s)
    assert (p.replication_factor, p.min_insync_replicas) == (1, 1)
    assert (p.replication_field, p.min_insync_field) == (
        "spec.kafka.replicationFactor",
        "spec.kafka.minInsyncReplicas",
    )


def test_the_api_refuses_min_insync_above_the_memorys_factor() -> None:
    with pytest.raises(ValueError, match="minInsyncReplicas \\(3\\) cannot exceed replicationFactor \\(2\\)"):
        memory({"replicationFactor": 2, "minInsyncReplicas": 3})
