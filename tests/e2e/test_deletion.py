"""Deleting a ChatMemory: ``Delete`` removes data and user, ``Retain`` only the user (and Secret)."""

from __future__ import annotations

from typing import Any

import pytest
from chatmemory.contract import Binding

from tests.e2e.conftest import (
    E2E,
    STORE_KEYS,
    kafka_admin,
    mysql_admin,
    redis_admin,
    redis_nodes,
    uid,
    write_turn,
)

POLICIES = ("Delete", "Retain")


def write_something(b: Binding) -> None:
    write_turn(b, "s", "kept?")


def data_exists(e2e: E2E, key: str, b: Binding) -> bool:
    if b.backend.value == "redis":
        admin = redis_admin(e2e.platform, key)
        try:
            return any(list(n.scan_iter(match=f"{b.key_prefix}*")) for n in redis_nodes(admin))
        finally:
            admin.close()
    if b.backend.value == "kafka":
        return b.topic in kafka_admin(e2e.platform, sasl=key == "kafka-sasl").list_topics(timeout=10).topics
    with mysql_admin(e2e.platform, key) as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = %s", (b.database,))
        return bool(cur.fetchone()[0])


def user_exists(e2e: E2E, key: str, b: Binding) -> bool:
    if b.backend.value == "redis":
        admin = redis_admin(e2e.platform, key)
        try:
            return any(n.acl_getuser(b.username) for n in redis_nodes(admin))
        finally:
            admin.close()
    if b.backend.value == "kafka":
        if not b.username:
            return False
        admin = kafka_admin(e2e.platform, sasl=True)
        desc = admin.describe_user_scram_credentials([b.username])[b.username]
        try:
            return bool(desc.result(timeout=10).scram_credential_infos)
        except Exception:  # RESOURCE_NOT_FOUND once gone
            return False
    with mysql_admin(e2e.platform, key) as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM mysql.user WHERE User = %s", (b.username,))
        return bool(cur.fetchone()[0])


def cleanup_retained(e2e: E2E, key: str, b: Binding) -> None:
    if b.backend.value == "redis":
        admin = redis_admin(e2e.platform, key)
        for n in redis_nodes(admin):
            for k in n.scan_iter(match=f"{b.key_prefix}*"):
                n.unlink(k)
        admin.close()
    elif b.backend.value == "kafka":
        admin = kafka_admin(e2e.platform, sasl=key == "kafka-sasl")  # kept alive until the result arrives
        admin.delete_topics([b.topic])[b.topic].result(timeout=20)
    else:
        with mysql_admin(e2e.platform, key) as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{b.database}`")


@pytest.fixture(scope="module")
def deleted(e2e: E2E) -> Any:
    """(key, policy) -> the binding the memory had; every memory written to, then deleted."""
    names = {
        (key, policy): f"del-{policy.lower()}-{key}-{uid()}" for key in STORE_KEYS for policy in POLICIES
    }
    for (key, policy), name in names.items():
        e2e.create_memory(name, e2e.stores[key].name, deletionPolicy=policy)
    bindings = {}
    for ident, name in names.items():
        e2e.wait_memory(name)
        bindings[ident] = e2e.binding(name)
        write_something(bindings[ident])
    for name in names.values():
        e2e.delete_memory(name, wait=False)
    for name in names.values():
        e2e.delete_memory(name, wait=True, timeout=90)
    yield {ident: (names[ident], b) for ident, b in bindings.items()}
    for (key, policy), b in bindings.items():
        if policy == "Retain":
            cleanup_retained(e2e, key, b)


@pytest.mark.parametrize("key", STORE_KEYS)
def test_delete_policy_removes_the_data_the_user_and_the_secret(e2e: E2E, deleted: Any, key: str) -> None:
    name, b = deleted[(key, "Delete")]
    assert not data_exists(e2e, key, b)
    assert not user_exists(e2e, key, b)
    assert e2e.secret(f"{name}-chatmemory") is None


@pytest.mark.parametrize("key", STORE_KEYS)
def test_retain_policy_keeps_the_data_and_removes_only_the_credentials(
    e2e: E2E, deleted: Any, key: str
) -> None:
    name, b = deleted[(key, "Retain")]
    assert data_exists(e2e, key, b)
    assert not user_exists(e2e, key, b)
    assert e2e.secret(f"{name}-chatmemory") is None
