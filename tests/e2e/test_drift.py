"""Drift repair: what is deleted by hand on a backend (or in Kubernetes) comes back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from chatmemory_operator.backends.tidb import grant_pattern
from confluent_kafka.admin import (
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)

from tests.e2e.conftest import E2E, kafka_admin, mysql_admin, redis_admin, redis_nodes, wait_until

KEYS = ("redis7", "cluster", "kafka", "kafka-sasl", "tidb", "mariadb")


def user_filter(username: str) -> AclBindingFilter:
    return AclBindingFilter(
        ResourceType.ANY,
        None,
        ResourcePatternType.ANY,
        f"User:{username}",
        None,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )


def redis_users_present(e2e: E2E, key: str, username: str) -> bool:
    admin = redis_admin(e2e.platform, key)
    try:
        return all(n.acl_getuser(username) for n in redis_nodes(admin))
    finally:
        admin.close()


def topic_exists(e2e: E2E, key: str, topic: str) -> bool:
    md = kafka_admin(e2e.platform, sasl=key == "kafka-sasl").list_topics(timeout=10)
    return topic in md.topics


def sql_one(e2e: E2E, key: str, query: str, *args: Any) -> Any:
    with mysql_admin(e2e.platform, key) as conn, conn.cursor() as cur:
        cur.execute(query, args)
        return cur.fetchone()


@pytest.fixture(scope="module")
def sabotaged(e2e: E2E) -> Iterator[dict[str, str]]:
    """One Ready memory per backend, then its backend objects deleted by hand (and one Secret)."""
    with e2e.ready_memories("drift", KEYS, deletionPolicy="Delete") as names:
        bindings = {key: e2e.binding(name) for key, name in names.items()}
        for key in ("redis7", "cluster"):
            admin = redis_admin(e2e.platform, key)
            for node in redis_nodes(admin):
                node.acl_deluser(bindings[key].username)
            admin.close()
        kafka = kafka_admin(e2e.platform, sasl=False)
        kafka.delete_topics([bindings["kafka"].topic])[bindings["kafka"].topic].result(timeout=20)
        sasl = kafka_admin(e2e.platform, sasl=True)
        flt = user_filter(bindings["kafka-sasl"].username)
        sasl.delete_acls([flt])[flt].result(timeout=20)
        b = bindings["tidb"]
        with mysql_admin(e2e.platform, "tidb") as conn, conn.cursor() as cur:
            cur.execute(f"DROP TABLE `{b.database}`.`{b.table}`")
        b = bindings["mariadb"]
        with mysql_admin(e2e.platform, "mariadb") as conn, conn.cursor() as cur:
            cur.execute("DROP USER %s@'%%'", (b.username,))
        e2e.core.delete_namespaced_secret(f"{names['redis7']}-chatmemory", e2e.namespace)
        yield names


def test_redis_acl_users_deleted_by_hand_come_back(e2e: E2E, sabotaged: dict[str, str]) -> None:
    for key in ("redis7", "cluster"):
        username = e2e.memory(sabotaged[key])["status"]["provisioned"]["username"]  # type: ignore[index]
        wait_until(lambda: redis_users_present(e2e, key, username), timeout=60, what=f"{key} user back")  # noqa: B023


def test_a_kafka_topic_deleted_by_hand_comes_back(e2e: E2E, sabotaged: dict[str, str]) -> None:
    topic = e2e.memory(sabotaged["kafka"])["status"]["provisioned"]["topic"]  # type: ignore[index]
    wait_until(lambda: topic_exists(e2e, "kafka", topic), timeout=60, what="topic back")


def test_kafka_acls_deleted_by_hand_come_back(e2e: E2E, sabotaged: dict[str, str]) -> None:
    username = e2e.memory(sabotaged["kafka-sasl"])["status"]["provisioned"]["username"]  # type: ignore[index]
    admin = kafka_admin(e2e.platform, sasl=True)
    wait_until(
        lambda: len(admin.describe_acls(user_filter(username)).result(timeout=10)) == 5,
        timeout=60,
        what="5 ACLs back",
    )


def test_a_table_dropped_by_hand_comes_back(e2e: E2E, sabotaged: dict[str, str]) -> None:
    p = e2e.memory(sabotaged["tidb"])["status"]["provisioned"]  # type: ignore[index]
    query = "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s"
    wait_until(
        lambda: sql_one(e2e, "tidb", query, p["database"], p["table"])[0] == 1, timeout=60, what="table"
    )
    ddl = sql_one(e2e, "tidb", f"SHOW CREATE TABLE `{p['database']}`.`{p['table']}`")[1]
    assert "TTL=" in ddl


def test_a_user_dropped_by_hand_comes_back_with_its_grants(e2e: E2E, sabotaged: dict[str, str]) -> None:
    username = e2e.memory(sabotaged["mariadb"])["status"]["provisioned"]["username"]  # type: ignore[index]
    query = "SELECT COUNT(*) FROM mysql.user WHERE User = %s"
    wait_until(lambda: sql_one(e2e, "mariadb", query, username)[0] == 1, timeout=60, what="user back")
    b = e2e.binding(sabotaged["mariadb"])
    with mysql_admin(e2e.platform, "mariadb") as conn, conn.cursor() as cur:
        cur.execute("SHOW GRANTS FOR %s@'%%'", (username,))
        assert any(f"ON `{grant_pattern(b.database)}`.*" in row[0] for row in cur.fetchall())


def test_a_deleted_secret_is_written_again_and_its_password_works(
    e2e: E2E, sabotaged: dict[str, str]
) -> None:
    name = sabotaged["redis7"]
    wait_until(lambda: e2e.secret(f"{name}-chatmemory"), timeout=60, what="Secret back")
    b = e2e.binding(name)
    from tests.e2e.conftest import redis_for

    c = redis_for(b)
    wait_until(lambda: c.rpush(f"{b.key_prefix}{{s}}", "x") >= 1, timeout=30, what="the new password to work")
    c.close()


def test_repairs_are_reported_as_events(e2e: E2E, sabotaged: dict[str, str]) -> None:
    name = sabotaged["kafka"]
    wait_until(
        lambda: any(ev.reason == "DriftRepaired" for ev in e2e.events(name)),
        timeout=60,
        what="DriftRepaired event",
    )
