"""The v1alpha1 models: parsing bodies as the API server and kopf hand them over, and writing status."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from chatmemory.contract import BackendKind
from chatmemory_operator.api import v1alpha1 as api
from pydantic import ValidationError


class FrozenView(Mapping[str, Any]):
    """A read-only mapping like kopf's ``Body``: not a dict."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        value = self._data[key]
        return FrozenView(value) if isinstance(value, Mapping) else value

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def memory_body(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": "ChatMemory",
        "metadata": {
            "name": "support-bot",
            "namespace": "team-a",
            "uid": "u-1",
            "generation": 3,
            "annotations": {api.ROTATE_CREDENTIALS_ANNOTATION: "2026-11-29"},
        },
        "spec": spec,
        "status": {"kopf": {"progress": {}}, "observedGeneration": 2, "unknownExtra": 1},
    }


def store_body(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": "ChatMemoryStore",
        "metadata": {"name": "redis", "annotations": {api.DEFAULT_STORE_ANNOTATION: "true"}},
        "spec": spec,
    }


# ---- ChatMemory ----------------------------------------------------------------------------------


def test_memory_body_parses_camel_case_fields_into_snake_case_attributes() -> None:
    body = memory_body(
        storeRef={"name": "kafka"},
        ttl="1h30m",
        maxMessagesPerSession=50,
        deletionPolicy="Delete",
        secretName="bot-kafka",
        kafka={"partitions": 3, "replicationFactor": 2, "topic": "chat.bot"},
    )
    memory = api.ChatMemory.from_body(body)
    spec = memory.spec
    assert spec.store_name == "kafka"
    assert spec.ttl_seconds == 5400
    assert spec.max_messages_per_session == 50
    assert spec.deletion_policy is api.DeletionPolicy.DELETE
    assert spec.kafka is not None
    assert (spec.kafka.partitions, spec.kafka.replication_factor, spec.kafka.topic) == (3, 2, "chat.bot")
    assert spec.backend is BackendKind.KAFKA
    assert memory.secret_name == "bot-kafka"
    assert memory.metadata.generation == 3
    assert memory.rotation_token == "2026-11-29"
    assert memory.status.observed_generation == 2


def test_memory_body_from_a_read_only_mapping_like_kopfs_body_parses() -> None:
    memory = api.ChatMemory.from_body(FrozenView(memory_body(redis={"keyPrefix": "bot:"})))
    assert memory.spec.redis is not None
    assert memory.spec.redis.key_prefix == "bot:"
    assert memory.metadata.namespace == "team-a"


def test_empty_memory_spec_takes_the_defaults() -> None:
    memory = api.ChatMemory.from_body(memory_body())
    assert memory.spec.store_name == ""
    assert memory.spec.ttl is None
    assert memory.spec.ttl_seconds is None
    assert memory.spec.deletion_policy is api.DeletionPolicy.RETAIN
    assert memory.spec.backend is None
    assert memory.secret_name == "support-bot-chatmemory"


def test_memory_spec_accepts_python_field_names_too() -> None:
    spec = api.ChatMemorySpec(store_ref=api.StoreRef(name="tidb"), tidb=api.TiDBMemorySpec(database="d1"))
    assert spec.store_name == "tidb"
    assert spec.backend is BackendKind.TIDB


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"ttl": "7 days"}, "ttl"),
        ({"ttl": "0s"}, "ttl"),
        ({"maxMessagesPerSession": 0}, "maxMessagesPerSession"),
        ({"deletionPolicy": "Orphan"}, "deletionPolicy"),
        ({"secretName": "Bad_Name"}, "secretName"),
        ({"kafka": {"partitions": 0}}, "partitions"),
        ({"kafka": {"replicationFactor": 0}}, "replicationFactor"),
        ({"kafka": {"topic": "bad topic"}}, "topic"),
        ({"kafka": {"topic": ".."}}, "topic"),
        ({"redis": {"keyPrefix": "a*b"}}, "keyPrefix"),
        ({"tidb": {"database": "drop-me"}}, "database"),
        ({"tidb": {"database": "MySQL"}}, "database"),
        ({"tidb": {"table": "a;b"}}, "table"),
        ({"redis": {}, "kafka": {}}, "at most one of redis, kafka or tidb"),
    ],
)
def test_invalid_memory_spec_is_refused_naming_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        api.ChatMemorySpec.model_validate(spec)
    assert field in str(info.value)


def test_unknown_spec_keys_are_ignored_when_parsing() -> None:
    spec = api.ChatMemorySpec.model_validate({"ttl": "7d", "fromTheFuture": True})
    assert spec.ttl == "7d"


# ---- ChatMemoryStore -----------------------------------------------------------------------------


def test_store_body_parses_each_backend_with_its_defaults() -> None:
    redis = api.ChatMemoryStore.from_body(
        store_body(redis={"host": "r", "adminSecretRef": {"name": "a", "namespace": "ops"}})
    )
    assert redis.spec.backend is BackendKind.REDIS
    assert redis.spec.redis is not None
    assert (redis.spec.redis.port, redis.spec.redis.cluster) == (6379, False)
    assert redis.spec.admin_secret_ref == api.AdminSecretRef(name="a", namespace="ops")
    assert redis.is_default

    kafka = api.ChatMemoryStoreSpec.model_validate({"kafka": {"bootstrapServers": "k:9092"}})
    assert kafka.backend is BackendKind.KAFKA
    assert kafka.kafka is not None
    assert kafka.kafka.security_protocol is api.SecurityProtocol.PLAINTEXT
    assert kafka.kafka.sasl_mechanism is api.SaslMechanism.SCRAM_SHA_512
    assert not kafka.kafka.security_protocol.uses_sasl

    tidb = api.ChatMemoryStoreSpec.model_validate(
        {"tidb": {"host": "t", "tls": {"enabled": True, "caSecretRef": {"name": "ca", "namespace": "ops"}}}}
    )
    assert tidb.backend is BackendKind.TIDB
    assert tidb.tidb is not None and tidb.tidb.port == 4000
    assert tidb.tls is not None and tidb.tls.ca_secret_ref is not None
    assert tidb.tls.ca_secret_ref.key == "ca.crt"
    assert tidb.admin_secret_ref is None


def test_store_without_the_default_annotation_is_not_default() -> None:
    body = store_body(redis={"host": "r"})
    body["metadata"]["annotations"] = {api.DEFAULT_STORE_ANNOTATION: "false"}
    assert not api.ChatMemoryStore.from_body(body).is_default


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({}, "exactly one of redis, kafka or tidb"),
        ({"redis": {"host": "r"}, "tidb": {"host": "t"}}, "exactly one of redis, kafka or tidb"),
        ({"redis": {"host": "r", "port": 0}}, "port"),
        ({"redis": {"host": "r", "port": 70000}}, "port"),
        ({"redis": {"host": ""}}, "host"),
        ({"kafka": {"bootstrapServers": "no-port"}}, "bootstrapServers"),
        ({"kafka": {"bootstrapServers": "k:1", "securityProtocol": "TLS"}}, "securityProtocol"),
        ({"kafka": {"bootstrapServers": "k:1", "saslMechanism": "PLAIN"}}, "saslMechanism"),
        ({"tidb": {"host": "t"}, "defaults": {"ttl": "forever"}}, "ttl"),
        ({"tidb": {"host": "t"}, "defaults": {"partitions": 0}}, "partitions"),
        ({"redis": {"host": "r", "adminSecretRef": {"name": "a"}}}, "namespace"),
    ],
)
def test_invalid_store_spec_is_refused_naming_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        api.ChatMemoryStoreSpec.model_validate(spec)
    assert field in str(info.value)


# ---- status --------------------------------------------------------------------------------------


def test_memory_status_patch_uses_wire_names_and_leaves_unset_fields_out() -> None:
    when = datetime(2026, 11, 29, 14, 0, 5, tzinfo=UTC)
    status = api.ChatMemoryStatus(
        observed_generation=4,
        backend=BackendKind.REDIS,
        store="redis",
        ttl="7d",
        conditions=[
            api.Condition.make(api.ConditionType.READY, True, api.Reason.PROVISIONED, "ok", now=when)
        ],
        binding=api.ServiceBindingRef(name="bot-chatmemory"),
        provisioned=api.Provisioned(key_prefix="bot:", username="cm-bot", isolated=True),
    )
    assert status.to_patch() == {
        "observedGeneration": 4,
        "backend": "redis",
        "store": "redis",
        "ttl": "7d",
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Provisioned",
                "message": "ok",
                "lastTransitionTime": "2026-11-29T14:00:05Z",
            }
        ],
        "binding": {"name": "bot-chatmemory"},
        "provisioned": {"keyPrefix": "bot:", "username": "cm-bot", "isolated": True},
    }
    assert api.ChatMemoryStatus.model_validate(status.to_patch()) == status


def test_store_status_patch_carries_version_provider_and_capabilities() -> None:
    status = api.ChatMemoryStoreStatus(
        observed_generation=1,
        backend=BackendKind.KAFKA,
        version="4.3.1",
        provider="kafka",
        capabilities={"sasl": True, "acl": True},
    )
    assert status.to_patch() == {
        "observedGeneration": 1,
        "conditions": [],
        "backend": "kafka",
        "version": "4.3.1",
        "provider": "kafka",
        "capabilities": {"sasl": True, "acl": True},
    }


def test_condition_make_stamps_whole_seconds_and_maps_bools() -> None:
    c = api.Condition.make("Ready", False, api.Reason.STORE_NOT_FOUND, "no store", generation=2)
    assert c.status is api.ConditionStatus.FALSE
    assert c.reason == "StoreNotFound"
    assert c.observed_generation == 2
    assert c.last_transition_time is not None
    assert c.last_transition_time.microsecond == 0
    assert c.last_transition_time.tzinfo is not None


def test_set_condition_keeps_the_transition_time_while_the_status_is_unchanged() -> None:
    t1 = datetime(2026, 1, 1, tzinfo=UTC)
    t2 = datetime(2026, 1, 2, tzinfo=UTC)
    old = [api.Condition.make("Ready", True, "Provisioned", "a", now=t1)]
    same = api.set_condition(old, api.Condition.make("Ready", True, "Provisioned", "b", now=t2))
    assert [(c.message, c.last_transition_time) for c in same] == [("b", t1)]
    flipped = api.set_condition(old, api.Condition.make("Ready", False, "BackendUnavailable", "c", now=t2))
    assert [(c.status, c.last_transition_time) for c in flipped] == [(api.ConditionStatus.FALSE, t2)]
    assert old[0].message == "a"  # the input is not modified


def test_set_condition_appends_a_new_type_and_find_condition_finds_it() -> None:
    ready = api.Condition.make("Ready", True, "Provisioned")
    isolated = api.Condition.make(api.ConditionType.ISOLATED, False, api.Reason.SHARED_CREDENTIALS)
    out = api.set_condition([ready], isolated)
    assert [c.type for c in out] == ["Ready", "Isolated"]
    assert api.find_condition(out, api.ConditionType.ISOLATED) == isolated
    assert api.find_condition([ready], "Isolated") is None


def test_ready_reasons_the_issue_names_are_defined() -> None:
    assert {
        "Provisioned",
        "BackendUnavailable",
        "InvalidSpec",
        "NotSupported",
        "StoreNotFound",
        "Deleting",
    } <= {r.value for r in api.Reason}


def test_reasons_split_into_ready_and_isolated() -> None:
    assert {r.value for r in api.ISOLATED_REASONS} == {"OwnUser", "SharedCredentials"}
    assert set(api.READY_REASONS) | set(api.ISOLATED_REASONS) == set(api.Reason)
    assert set(api.READY_REASONS).isdisjoint(api.ISOLATED_REASONS)


def test_deletion_policy_values_match_the_backends() -> None:
    from chatmemory_operator.backends.base import DeletionPolicy

    assert {p.value for p in api.DeletionPolicy} == {p.value for p in DeletionPolicy}
