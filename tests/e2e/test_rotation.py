"""Rotation: a new chatmemory.io/rotate-credentials value issues a new password; the old one stops."""

from __future__ import annotations

from collections.abc import Iterator

import pymysql
import pytest
import redis
from chatmemory.contract import Binding
from confluent_kafka.admin import AdminClient
from kubernetes import client

from tests.e2e.conftest import E2E, kafka_conf_for, mysql_for, redis_for, uid, wait_until
from tests.support.operator import running_operator

KEYS = ("redis7", "cluster", "kafka-sasl", "tidb", "mariadb")


def works(b: Binding) -> bool:
    """Whether a fresh connection with the binding's credentials is accepted."""
    try:
        if b.backend.value == "redis":
            c = redis_for(b)
            try:
                c.lrange(f"{b.key_prefix}{{s}}", 0, -1)
            finally:
                c.close()
        elif b.backend.value == "kafka":
            admin = AdminClient({**kafka_conf_for(b), "socket.timeout.ms": 5000})
            md = admin.list_topics(b.topic, timeout=8)
            if md.topics[b.topic].error is not None:
                return False
        else:
            mysql_for(b).close()
    except (
        redis.exceptions.RedisError,
        redis.exceptions.RedisClusterException,
        pymysql.MySQLError,
        Exception,
    ):
        return False
    return True


@pytest.fixture(scope="module")
def rotated(e2e: E2E) -> Iterator[dict[str, tuple[str, Binding, Binding]]]:
    """key -> (memory name, binding before, binding after a rotation)."""
    # no grace period: the old password must stop at once (the overlap has its own tests below)
    with e2e.ready_memories("rot", KEYS, deletionPolicy="Delete", rotation={"gracePeriod": "0s"}) as names:
        before = {key: e2e.binding(name) for key, name in names.items()}
        for name in names.values():
            e2e.patch_memory(name, {"metadata": {"annotations": {"chatmemory.io/rotate-credentials": "r1"}}})
        after = {}
        for key, name in names.items():
            e2e.wait_memory(name, check=lambda m: m["status"].get("credentialsRotation") == "r1")
            after[key] = e2e.binding(name)
        yield {key: (names[key], before[key], after[key]) for key in KEYS}


@pytest.mark.parametrize("key", KEYS)
def test_rotation_issues_a_new_password_and_the_old_one_stops_working(
    rotated: dict[str, tuple[str, Binding, Binding]], key: str
) -> None:
    _, old, new = rotated[key]
    assert old.username == new.username
    assert old.password != new.password
    assert works(new)
    assert not works(old)


def test_rotation_is_recorded_in_status_with_one_event_and_not_repeated(
    e2e: E2E, rotated: dict[str, tuple[str, Binding, Binding]]
) -> None:
    name, _, after = rotated["redis7"]
    m = e2e.memory(name)
    assert m is not None
    assert m["status"]["credentialsRotation"] == "r1"
    assert [e.reason for e in e2e.events(name)].count("CredentialsRotated") == 1
    assert e2e.binding(name).password == after.password  # later reconciles keep the new password


def test_passwords_never_reach_the_operator_log(
    e2e: E2E, rotated: dict[str, tuple[str, Binding, Binding]]
) -> None:
    log = e2e.operator.log()
    for _, old, new in rotated.values():
        assert old.password not in log
        assert new.password not in log


@pytest.mark.parametrize("key", ["redis7", "tidb", "mariadb", "kafka-sasl"])
def test_the_previous_password_works_for_the_grace_period_then_stops(e2e: E2E, key: str) -> None:
    """Redis: the user holds both passwords; TiDB/MySQL and Kafka SCRAM (one password per user): two
    users in turn."""
    with e2e.ready_memories("grace", [key], deletionPolicy="Delete", rotation={"gracePeriod": "8s"}) as names:
        name = names[key]
        old = e2e.binding(name)
        e2e.patch_memory(name, {"metadata": {"annotations": {"chatmemory.io/rotate-credentials": "g1"}}})
        m = e2e.wait_memory(name, check=lambda m: m["status"].get("credentialsRotation") == "g1")
        new = e2e.binding(name)
        assert new.password != old.password and works(new)
        assert works(old)  # both passwords during the grace period
        assert m["status"]["previousCredentialsUntil"]
        wait_until(lambda: not works(old), timeout=40, what="the previous password to stop")
        m = e2e.wait_memory(name, check=lambda m: "previousCredentialsUntil" not in m["status"])
        assert works(e2e.binding(name))
        e2e.patch_memory(name, {"metadata": {"annotations": {"chatmemory.io/rotate-credentials": "g2"}}})
        e2e.wait_memory(name, check=lambda m: m["status"].get("credentialsRotation") == "g2")
        third = e2e.binding(name)
        assert works(third) and works(new)  # the second rotation overlaps too
        if key != "redis7":
            assert third.username == old.username != new.username  # the two users in turn


def test_scheduled_rotation_rotates_on_its_own(e2e: E2E) -> None:
    rotation = {"every": "5s", "gracePeriod": "0s"}
    with e2e.ready_memories("every", ["redis7", "tidb"], deletionPolicy="Delete", rotation=rotation) as names:
        before = {key: e2e.binding(name) for key, name in names.items()}
        for key, name in names.items():
            wait_until(
                lambda n=name, b=before[key]: e2e.binding(n).password != b.password,
                timeout=40,
                what=f"a scheduled rotation of {name}",
            )
            assert works(e2e.binding(name))
            wait_until(lambda b=before[key]: not works(b), timeout=20, what="the old password to stop")
            assert any(ev.reason == "CredentialsRotated" for ev in e2e.events(name))


@pytest.mark.faults
@pytest.mark.parametrize("key", ["redis7", "tidb"])
def test_an_operator_restart_during_the_grace_period_keeps_the_new_password_and_ends_the_old(
    e2e: E2E, key: str
) -> None:
    """The grace state lives in the Secret's annotations, not in the process: an operator stopped
    right after a rotation, and a new one started, neither rotates again (the new password stays)
    nor forgets to end the previous one."""
    namespace = f"cmr-e2e-{uid()}"
    e2e.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    mine = E2E(e2e.platform, e2e.api, namespace, e2e.operator)
    env = {"CHATMEMORY_STORE_SECRET_NAMESPACES": e2e.namespace}
    name = f"restart-{key}-{uid()}"
    try:
        with running_operator(e2e.platform, namespaces="cmr-e2e-*", env=env) as first:
            mine.operator = first
            mine.create_memory(
                name, e2e.stores[key].name, deletionPolicy="Delete", rotation={"gracePeriod": "15s"}
            )
            mine.wait_memory(name, timeout=90)
            old = mine.binding(name)
            mine.patch_memory(name, {"metadata": {"annotations": {"chatmemory.io/rotate-credentials": "r1"}}})
            m = mine.wait_memory(name, check=lambda m: m["status"].get("credentialsRotation") == "r1")
            until = m["status"]["previousCredentialsUntil"]
            new = mine.binding(name)
        assert new.password != old.password
        assert works(new) and works(old)  # no operator running: both still work
        with running_operator(e2e.platform, namespaces="cmr-e2e-*", env=env) as second:
            mine.operator = second
            wait_until(lambda: not works(old), timeout=60, what="the previous credentials to end")
            m = mine.wait_memory(name, check=lambda m: "previousCredentialsUntil" not in m["status"])
            assert m["status"]["credentialsRotation"] == "r1" and m["status"]["rotatedAt"]
            after = mine.binding(name)
            assert (after.username, after.password) == (new.username, new.password)  # not rotated again
            assert works(after)
            assert until  # the first operator had published when the old credentials end
            mine.delete_memory(name)
    finally:
        e2e.core.delete_namespace(namespace)
