"""A ChatMemory per backend: Ready, its Secret, the backend objects it asked for, updates.

One memory per platform store is created at once (module fixture) and checked on the server
itself: ACL GETUSER, topic partitions and configs, SHOW CREATE TABLE, SHOW GRANTS.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from chatmemory.contract import Key
from chatmemory_operator.backends.tidb import grant_pattern
from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ConfigResource,
    ResourcePatternType,
    ResourceType,
)

from tests.e2e.conftest import (
    E2E,
    KAFKA_KEYS,
    REDIS_KEYS,
    STORE_KEYS,
    condition,
    kafka_admin,
    kafka_roundtrip,
    mysql_admin,
    mysql_for,
    redis_admin,
    redis_for,
    redis_nodes,
    uid,
    wait_until,
)

TTL_SECONDS = 3600


@pytest.fixture(scope="module")
def memories(e2e: E2E) -> Iterator[dict[str, str]]:
    """key -> memory name, one per store, all Ready."""
    kafka = {key: {"kafka": {"partitions": 2}} for key in KAFKA_KEYS}
    with e2e.ready_memories(
        "life", STORE_KEYS, per_key=kafka, maxMessagesPerSession=50, deletionPolicy="Delete"
    ) as names:
        yield names


@pytest.mark.parametrize("key", STORE_KEYS)
def test_memory_becomes_ready_with_status_and_an_owned_service_binding_secret(
    e2e: E2E, memories: dict[str, str], key: str
) -> None:
    name = memories[key]
    m = e2e.memory(name)
    assert m is not None
    status = m["status"]
    assert status["observedGeneration"] == m["metadata"]["generation"]
    assert status["store"] == e2e.stores[key].name
    assert status["backend"] == e2e.stores[key].kind
    assert status["binding"] == {"name": f"{name}-chatmemory"}
    assert status["ttl"] == "1h"
    assert condition(m)["reason"] == "Provisioned"
    assert "chatmemory.io/finalizer" in m["metadata"]["finalizers"]
    secret = e2e.secret(f"{name}-chatmemory")
    assert secret is not None
    expected_type = {"redis": "redis", "kafka": "kafka", "tidb": "mysql"}[e2e.stores[key].kind]
    assert secret.type == f"servicebinding.io/{expected_type}"
    owner = secret.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.uid, owner.controller) == (
        "ChatMemory",
        name,
        m["metadata"]["uid"],
        True,
    )
    data = e2e.secret_data(f"{name}-chatmemory")
    for k in (Key.CONTRACT_VERSION, Key.TYPE, Key.PROVIDER, Key.URI, Key.TTL_SECONDS, Key.MAX_MESSAGES):
        assert data.get(k.value), f"key {k.value} missing"
    assert data[Key.TTL_SECONDS.value] == str(TTL_SECONDS)
    assert data[Key.MAX_MESSAGES.value] == "50"
    if key != "kafka":  # PLAINTEXT Kafka has no users
        assert data[Key.USERNAME.value] == status["provisioned"]["username"]
        assert len(data[Key.PASSWORD.value]) >= 24
        assert data[Key.PASSWORD.value] not in str(m)


@pytest.mark.parametrize("key", STORE_KEYS)
def test_the_secret_round_trips_data_with_the_memorys_own_credentials(
    e2e: E2E, memories: dict[str, str], key: str
) -> None:
    b = e2e.binding(memories[key])
    if b.backend.value == "redis":
        c = redis_for(b)
        k = f"{b.key_prefix}{{s1}}"
        c.rpush(k, "hello", "world")
        assert c.lrange(k, 0, -1) == [b"hello", b"world"]
        c.close()
    elif b.backend.value == "kafka":
        assert kafka_roundtrip(b, b"hello kafka") == b"hello kafka"
    else:
        with mysql_for(b) as conn, conn.cursor() as cur:
            cur.execute(f"INSERT INTO `{b.table}` (session_id, message) VALUES (%s, %s)", ("s1", '{"m": 1}'))
            cur.execute(f"SELECT message FROM `{b.table}` WHERE session_id = %s", ("s1",))
            assert cur.fetchall()


@pytest.mark.parametrize("key", REDIS_KEYS)
def test_redis_user_may_touch_only_its_prefix_with_the_sdk_commands(
    e2e: E2E, memories: dict[str, str], key: str
) -> None:
    b = e2e.binding(memories[key])
    admin = redis_admin(e2e.platform, key)
    for node in redis_nodes(admin):
        user = node.acl_getuser(b.username)
        assert user is not None, f"no ACL user on node {node}"
        assert [k.decode() if isinstance(k, bytes) else k for k in user["keys"]] == [f"~{b.key_prefix}*"]
        assert user["enabled"]
    admin.close()
    c = redis_for(b)
    with pytest.raises(redis.exceptions.NoPermissionError):
        c.set("not-my-prefix:{x}", "1")
    with pytest.raises(redis.exceptions.NoPermissionError):
        c.execute_command("FLUSHALL")  # type: ignore[no-untyped-call]
    with pytest.raises(redis.exceptions.NoPermissionError):
        c.execute_command("CONFIG", "GET", "maxmemory")  # type: ignore[no-untyped-call]
    c.close()


def topic_state(e2e: E2E, key: str, topic: str) -> tuple[int, dict[str, str]]:
    admin = kafka_admin(e2e.platform, sasl=key == "kafka-sasl")
    meta = admin.list_topics(topic, timeout=10).topics[topic]
    res = ConfigResource(ResourceType.TOPIC, topic)
    configs = admin.describe_configs([res])[res].result(timeout=10)
    return len(meta.partitions), {k: str(v.value) for k, v in configs.items()}


@pytest.mark.parametrize("key", KAFKA_KEYS)
def test_kafka_topic_has_the_partitions_and_retention_asked_for(
    e2e: E2E, memories: dict[str, str], key: str
) -> None:
    b = e2e.binding(memories[key])
    partitions, configs = topic_state(e2e, key, b.topic)
    assert partitions == 2
    assert configs["retention.ms"] == str(TTL_SECONDS * 1000)
    assert configs["cleanup.policy"] == "delete"


def test_kafka_sasl_user_has_acls_on_its_topic_and_group_prefix_only(
    e2e: E2E, memories: dict[str, str]
) -> None:
    b = e2e.binding(memories["kafka-sasl"])
    admin = kafka_admin(e2e.platform, sasl=True)
    flt = AclBindingFilter(
        ResourceType.ANY,
        None,
        ResourcePatternType.ANY,
        f"User:{b.username}",
        None,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    acls = admin.describe_acls(flt).result(timeout=10)
    resources = {(str(a.restype), a.name, str(a.resource_pattern_type)) for a in acls}
    assert resources == {
        (str(ResourceType.TOPIC), b.topic, str(ResourcePatternType.LITERAL)),
        (str(ResourceType.GROUP), b.consumer_group_prefix, str(ResourcePatternType.PREFIXED)),
    }
    assert all(a.permission_type == AclPermissionType.ALLOW for a in acls)


def test_tidb_table_has_native_ttl_and_the_user_only_its_grants(e2e: E2E, memories: dict[str, str]) -> None:
    b = e2e.binding(memories["tidb"])
    with mysql_admin(e2e.platform, "tidb") as conn, conn.cursor() as cur:
        cur.execute(f"SHOW CREATE TABLE `{b.database}`.`{b.table}`")
        ddl = cur.fetchone()[1]
        assert "TTL=`create_time` + INTERVAL 1 HOUR" in ddl
        assert "AUTO_ID_CACHE 1" in ddl or "AUTO_ID_CACHE=1" in ddl
        cur.execute("SHOW GRANTS FOR %s@'%%'", (b.username,))
        grants = [row[0] for row in cur.fetchall()]
    assert any(f"GRANT SELECT,INSERT,DELETE ON `{grant_pattern(b.database)}`.*" in g for g in grants), grants
    assert not any("ALL PRIVILEGES" in g for g in grants), grants
    # UPDATE only on the LangGraph checkpointer's and store's tables; the message table stays
    # append-only
    updates = [g for g in grants if "UPDATE" in g]
    assert updates and all(("_checkpoint" in g or "_store_" in g) and ".*" not in g for g in updates), grants
    assert any("_store_items" in g for g in updates) and any("_store_vectors" in g for g in updates), grants
    assert e2e.memory(memories["tidb"])["status"]["provisioned"]["expiry"] == "tidb-ttl"  # type: ignore[index]


def test_mariadb_expires_rows_with_an_event_and_the_user_only_its_grants(
    e2e: E2E, memories: dict[str, str]
) -> None:
    b = e2e.binding(memories["mariadb"])
    with mysql_admin(e2e.platform, "mariadb") as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT EVENT_DEFINITION, STATUS FROM information_schema.EVENTS "
            "WHERE EVENT_SCHEMA = %s AND EVENT_NAME = 'chatmemory_ttl'",
            (b.database,),
        )
        events = cur.fetchall()
        cur.execute("SHOW GRANTS FOR %s@'%%'", (b.username,))
        grants = [row[0] for row in cur.fetchall()]
    assert len(events) == 1
    assert f"INTERVAL {TTL_SECONDS} SECOND" in events[0][0]
    assert events[0][1] == "ENABLED"
    assert any(f"GRANT SELECT, INSERT, DELETE ON `{grant_pattern(b.database)}`.*" in g for g in grants), (
        grants
    )
    assert e2e.memory(memories["mariadb"])["status"]["provisioned"]["expiry"] == "mysql-event"  # type: ignore[index]


def test_updating_ttl_reaches_every_backend(e2e: E2E, memories: dict[str, str]) -> None:
    since = {name: condition(e2e.memory(name))["lastTransitionTime"] for name in memories.values()}
    for name in memories.values():
        e2e.patch_memory(name, {"spec": {"ttl": "2h"}})
    for name in memories.values():
        e2e.wait_memory(name, check=lambda m: m["status"].get("ttl") == "2h")
    for key in KAFKA_KEYS:
        _, configs = topic_state(e2e, key, e2e.binding(memories[key]).topic)
        assert configs["retention.ms"] == str(7200 * 1000)
    b = e2e.binding(memories["tidb"])
    with mysql_admin(e2e.platform, "tidb") as conn, conn.cursor() as cur:
        cur.execute(f"SHOW CREATE TABLE `{b.database}`.`{b.table}`")
        assert "INTERVAL 2 HOUR" in cur.fetchone()[1]
    b = e2e.binding(memories["mariadb"])
    with mysql_admin(e2e.platform, "mariadb") as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT EVENT_DEFINITION FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s", (b.database,)
        )
        assert "INTERVAL 7200 SECOND" in cur.fetchone()[0]
    for key in REDIS_KEYS:
        assert e2e.binding(memories[key]).ttl_seconds == 7200
    # Ready stayed True through the update: its lastTransitionTime did not move
    assert {name: condition(e2e.memory(name))["lastTransitionTime"] for name in memories.values()} == since


def test_kafka_partitions_grow_on_update(e2e: E2E, memories: dict[str, str]) -> None:
    name = memories["kafka"]
    e2e.patch_memory(name, {"spec": {"kafka": {"partitions": 4}}})
    e2e.wait_memory(name, check=lambda m: m["status"]["provisioned"].get("partitions") == 4)
    topic = e2e.binding(name).topic
    assert wait_until(lambda: topic_state(e2e, "kafka", topic)[0] == 4, timeout=20, what="4 partitions")


def test_an_impossible_replication_factor_is_refused_as_not_supported(e2e: E2E) -> None:
    name = f"rf-{uid()}"
    e2e.create_memory(name, e2e.stores["kafka"].name, kafka={"replicationFactor": 3})
    try:
        m = e2e.wait_memory(name, status="False", reason="NotSupported")
        assert "replication factor 3" in condition(m)["message"]
        admin = kafka_admin(e2e.platform, sasl=False)
        topics = admin.list_topics(timeout=10).topics
        assert not any(t.endswith(name) for t in topics)
    finally:
        e2e.delete_memory(name)


def test_a_backend_block_for_another_backend_is_an_invalid_spec(e2e: E2E) -> None:
    name = f"mismatch-{uid()}"
    e2e.create_memory(name, e2e.stores["redis7"].name, kafka={"partitions": 2})
    try:
        m = e2e.wait_memory(name, status="False", reason="InvalidSpec")
        assert "spec.kafka" in condition(m)["message"]
        assert e2e.secret(f"{name}-chatmemory") is None
    finally:
        e2e.delete_memory(name)


def test_the_operator_answers_its_liveness_probe(e2e: E2E) -> None:
    import urllib.request

    with urllib.request.urlopen(e2e.operator.liveness_url, timeout=5) as r:
        assert r.status == 200


def test_kafka_producing_to_a_missing_topic_is_not_the_memorys_business(
    e2e: E2E, memories: dict[str, str]
) -> None:
    """A SASL memory user cannot create or write other topics (its ACL is on its topic only)."""
    b = e2e.binding(memories["kafka-sasl"])
    with pytest.raises(KafkaException):
        kafka_roundtrip(b, b"x", topic=f"{b.topic}-other")


@pytest.mark.parametrize(
    ("key", "provider", "capabilities"),
    [
        ("redis7", "redis", {"acl": True, "cluster": False}),
        ("cluster", "redis", {"acl": True, "cluster": True}),
        ("valkey", "valkey", {"acl": True}),
        ("kafka", "kafka", {"sasl": False}),
        ("kafka-sasl", "kafka", {"sasl": True, "acl": True}),
        ("tidb", "tidb", {"ttl": True}),
        ("mariadb", "mariadb", {"ttl": False, "events": True}),
    ],
)
def test_each_store_reports_ready_version_provider_and_capabilities(
    e2e: E2E, key: str, provider: str, capabilities: dict[str, bool]
) -> None:
    s = e2e.store(e2e.stores[key].name)
    assert s is not None
    assert condition(s)["status"] == "True"
    assert condition(s)["reason"] == "Connected"
    assert s["status"]["provider"] == provider
    assert s["status"]["version"]
    assert s["status"]["backend"] == e2e.stores[key].kind
    for cap, value in capabilities.items():
        assert s["status"]["capabilities"][cap] is value, cap


def test_a_topic_with_more_partitions_than_the_spec_is_not_supported_until_the_spec_catches_up(
    e2e: E2E,
) -> None:
    from confluent_kafka.admin import NewPartitions

    name = f"shrink-{uid()}"
    e2e.create_memory(name, e2e.stores["kafka"].name, deletionPolicy="Delete", kafka={"partitions": 1})
    try:
        topic = e2e.wait_memory(name)["status"]["provisioned"]["topic"]
        admin = kafka_admin(e2e.platform, sasl=False)
        admin.create_partitions([NewPartitions(topic, 3)])[topic].result(timeout=20)
        m = e2e.wait_memory(name, status="False", reason="NotSupported")
        assert "cannot remove partitions" in condition(m)["message"]
        assert topic_state(e2e, "kafka", topic)[0] == 3
        e2e.patch_memory(name, {"spec": {"kafka": {"partitions": 3}}})
        e2e.wait_memory(name, check=lambda m: m["status"]["provisioned"]["partitions"] == 3)
    finally:
        e2e.delete_memory(name)


def test_a_tls_store_with_a_ca_secret_gives_memories_a_verified_tls_binding(e2e: E2E) -> None:
    from pathlib import Path
    from urllib.parse import urlsplit

    u = urlsplit(e2e.platform["REDIS_TLS_URL"])
    ca = Path(e2e.platform["REDIS_TLS_CA_FILE"]).read_text()
    sid = uid()
    e2e.create_secret(f"admin-tls-{sid}", {"username": u.username or "", "password": u.password or ""})
    e2e.create_secret(f"ca-tls-{sid}", {"ca.crt": ca})
    store, name = f"e2e-tls-{sid}", f"tls-{sid}"
    e2e.create_store(
        store,
        {
            "redis": {
                "host": u.hostname,
                "port": u.port,
                "tls": {
                    "enabled": True,
                    "caSecretRef": {"name": f"ca-tls-{sid}", "namespace": e2e.namespace},
                },
                "adminSecretRef": {"name": f"admin-tls-{sid}", "namespace": e2e.namespace},
            }
        },
    )
    e2e.create_memory(name, store, deletionPolicy="Delete")
    try:
        e2e.wait_memory(name)
        b = e2e.binding(name)
        assert b.tls
        assert b.ca_cert.strip() == ca.strip()
        assert b.uri.startswith("rediss://")
        c = redis.Redis(
            host=b.host,
            port=b.port,
            username=b.username,
            password=b.password,
            ssl=True,
            ssl_ca_data=b.ca_cert,
        )
        assert c.rpush(f"{b.key_prefix}{{s}}", "over tls") == 1
        c.close()
    finally:
        e2e.delete_memory(name)
        e2e.delete_store(store)


def test_changing_the_secret_name_moves_the_binding_and_removes_the_old_secret(e2e: E2E) -> None:
    name = f"rename-{uid()}"
    e2e.create_memory(name, e2e.stores["valkey"].name, deletionPolicy="Delete")
    try:
        e2e.wait_memory(name)
        old = e2e.secret_data(f"{name}-chatmemory")
        e2e.patch_memory(name, {"spec": {"secretName": f"{name}-renamed"}})
        e2e.wait_memory(name, check=lambda m: m["status"]["binding"]["name"] == f"{name}-renamed")
        assert e2e.secret_data(f"{name}-renamed")["password"] == old["password"]
        wait_until(lambda: e2e.secret(f"{name}-chatmemory") is None, timeout=20, what="the old Secret to go")
    finally:
        e2e.delete_memory(name)
