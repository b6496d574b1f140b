"""A namespace editor attacks another team's memory on a shared store, and gets nothing of it.

Team A (the session namespace) has a memory with data on each store; team B (a namespace of its
own) edits ChatMemories only. The stores here allow custom names (``allowCustomNames: true``), the
most a store owner can grant, so each attack reaches the name claims. Every test probes the server
itself, with the attacker's credentials where it got any and the victim's afterwards: nothing of
the victim's is readable, writable or deleted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pymysql
import pytest
import redis
from chatmemory.contract import Binding
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.conftest import (
    E2E,
    NAMESPACE_PREFIX,
    kafka_admin,
    kafka_roundtrip,
    mysql_for,
    redis_for,
    uid,
    wait_until,
    write_turn,
)

KEYS = ("redis7", "kafka-sasl", "tidb", "mariadb")
#: The name field of each backend, and where the victim's status says its value.
FIELDS = {"redis": ("redis", "keyPrefix"), "kafka": ("kafka", "topic"), "tidb": ("tidb", "database")}


@dataclass
class Victim:
    store: str
    name: str
    binding: Binding


@dataclass
class Tenants:
    a: E2E
    b: E2E
    victims: dict[str, Victim]


def write_victim_data(b: Binding) -> None:
    write_turn(b, "s1", "secret")


def victim_data_intact(b: Binding) -> bool:
    """Read the victim's data back with the victim's own credentials."""
    if b.backend.value == "redis":
        c = redis_for(b)
        try:
            return c.lrange(f"{b.key_prefix}{{s1}}", 0, -1) == [b"secret"]
        finally:
            c.close()
    if b.backend.value == "kafka":
        return kafka_roundtrip(b, b"still-mine") == b"still-mine"
    with mysql_for(b) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT COUNT(*) FROM `{b.table}` WHERE session_id = 's1'")
        row = cur.fetchone()
        return bool(row and row[0] == 1)


@pytest.fixture(scope="module")
def tenants(e2e: E2E) -> Iterator[Tenants]:
    """Stores that allow custom names; a victim memory with data on each, in the session
    namespace; an attacker's namespace."""
    ns_b = f"{NAMESPACE_PREFIX}{uid()}-b"
    e2e.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns_b)))
    b = E2E(e2e.platform, e2e.api, ns_b, e2e.operator)
    victims: dict[str, Victim] = {}
    created: dict[str, tuple[str, str]] = {}
    try:
        for key in KEYS:
            store, name = f"ten-{key}-{uid()}", f"victim-{key}-{uid()}"
            e2e.create_store(store, {**e2e.stores[key].spec, "allowCustomNames": True})
            created[key] = (store, name)
            e2e.wait_store(store, timeout=90)
            e2e.create_memory(name, store, deletionPolicy="Delete")
        for key, (store, name) in created.items():
            e2e.wait_memory(name)
            victims[key] = Victim(store, name, e2e.binding(name))
            write_victim_data(victims[key].binding)
        yield Tenants(e2e, b, victims)
    finally:
        plural = ("chatmemory.io", "v1alpha1", ns_b, "chatmemories")
        with contextlib.suppress(ApiException):
            b.custom.delete_collection_namespaced_custom_object(*plural)
        wait_until(
            lambda: not b.custom.list_namespaced_custom_object(*plural)["items"],
            timeout=60,
            what="the attacker's memories to go",
        )
        for _, name in created.values():
            e2e.delete_memory(name, timeout=60)
        for store, _ in created.values():
            e2e.delete_store(store)
        with contextlib.suppress(ApiException):
            e2e.core.delete_namespace(ns_b)


def provisioned_name(t: Tenants, key: str) -> tuple[str, str, str]:
    """(backend block, field, the victim's value) of the name field on ``key``'s backend."""
    v = t.victims[key]
    block, field = FIELDS[v.binding.backend.value]
    memory = t.a.memory(v.name)
    assert memory is not None
    return block, field, memory["status"]["provisioned"][field]


def attack(t: Tenants, key: str, spec: dict[str, Any]) -> str:
    """A memory in the attacker's namespace on the victim's store, deletionPolicy Delete."""
    name = f"attacker-{key}-{uid()}"
    t.b.create_memory(name, t.victims[key].store, deletionPolicy="Delete", **spec)
    return name


def refused_then_deleted(t: Tenants, key: str, name: str, reason: str, asked: str = "") -> dict[str, Any]:
    """The attacker's memory is refused for ``reason`` with no Secret, and the message says
    nothing of the victim beyond the name the attacker asked for; then it is deleted."""
    memory = t.b.wait_memory(name, status="False", reason=reason, timeout=60)
    assert t.b.secret(f"{name}-chatmemory") is None
    assert "binding" not in memory["status"]
    message = memory["status"]["conditions"][0]["message"]
    assert t.a.namespace not in message.replace(asked, "") and t.victims[key].name not in message.replace(
        asked, ""
    )
    t.b.delete_memory(name, timeout=60)
    return memory


@pytest.mark.parametrize("key", KEYS)
def test_naming_another_teams_data_is_a_name_conflict_and_deleting_it_removes_nothing(
    tenants: Tenants, key: str
) -> None:
    block, field, value = provisioned_name(tenants, key)
    name = attack(tenants, key, {block: {field: value}})
    memory = refused_then_deleted(tenants, key, name, "NameConflict", value)
    assert f"spec.{block}.{field}" in memory["status"]["conditions"][0]["message"]
    assert victim_data_intact(tenants.victims[key].binding)


@pytest.mark.parametrize("prefix", ["cm:", "OVERLONG"])
def test_a_key_prefix_overlapping_another_teams_is_a_name_conflict(tenants: Tenants, prefix: str) -> None:
    _, _, value = provisioned_name(tenants, "redis7")
    wider_or_narrower = prefix if prefix != "OVERLONG" else f"{value}sub:"
    name = attack(tenants, "redis7", {"redis": {"keyPrefix": wider_or_narrower}})
    refused_then_deleted(tenants, "redis7", name, "NameConflict", wider_or_narrower)
    assert victim_data_intact(tenants.victims["redis7"].binding)


@pytest.mark.parametrize("key", ["tidb", "mariadb"])
def test_a_database_named_with_grant_wildcards_reaches_no_system_schema(tenants: Tenants, key: str) -> None:
    """``_`` is a wildcard in a database grant: ``_____`` matched ``mysql`` (the user table)."""
    name = attack(tenants, key, {"tidb": {"database": "_____"}})
    tenants.b.wait_memory(name, timeout=60)
    attacker = tenants.b.binding(name)
    try:
        with mysql_for(attacker) as conn, conn.cursor() as cur:
            for probe in ("SELECT user FROM mysql.user", "SELECT * FROM mysql.db"):
                with pytest.raises(pymysql.MySQLError) as denied:
                    cur.execute(probe)
                assert denied.value.args[0] in (1142, 1044), denied.value.args
    finally:
        tenants.b.delete_memory(name, timeout=60)
    assert victim_data_intact(tenants.victims[key].binding)


def test_a_memorys_user_cannot_list_other_teams_keys_with_scan(tenants: Tenants) -> None:
    """ACL key patterns do not filter SCAN: a user allowed SCAN lists every key of the server."""
    victim = tenants.victims["redis7"].binding
    name = attack(tenants, "redis7", {})
    tenants.b.wait_memory(name, timeout=60)
    attacker = redis_for(tenants.b.binding(name))
    try:
        for command in (("SCAN", "0", "COUNT", "1000"), ("KEYS", "*"), ("RANDOMKEY",)):
            with pytest.raises(redis.exceptions.NoPermissionError):
                attacker.execute_command(*command)  # type: ignore[no-untyped-call]
    finally:
        attacker.close()
        tenants.b.delete_memory(name, timeout=60)
    assert victim_data_intact(victim)


def test_the_victims_topic_keeps_its_settings_after_the_attack(tenants: Tenants) -> None:
    """The attacker's spec never reached the victim's topic (no adoption, no config change)."""
    from confluent_kafka.admin import ConfigResource, ResourceType  # type: ignore[attr-defined]

    v = tenants.victims["kafka-sasl"].binding
    name = attack(tenants, "kafka-sasl", {"kafka": {"topic": v.topic}, "ttl": "1m"})
    refused_then_deleted(tenants, "kafka-sasl", name, "NameConflict", v.topic)
    admin = kafka_admin(tenants.a.platform, sasl=True)
    res = ConfigResource(ResourceType.TOPIC, v.topic)
    config = admin.describe_configs([res])[res].result(timeout=20)
    assert config["retention.ms"].value == str(3600 * 1000)
    assert victim_data_intact(v)
