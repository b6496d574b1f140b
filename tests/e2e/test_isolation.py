"""One memory's credentials are denied on another memory's data, on every backend with users."""

from __future__ import annotations

from collections.abc import Iterator

import pymysql
import pytest
import redis
from confluent_kafka import KafkaException

from tests.e2e.conftest import E2E, kafka_roundtrip, mysql_for, redis_for, uid

KEYS = ("redis7", "cluster", "valkey", "kafka-sasl", "tidb", "mariadb")


@pytest.fixture(scope="module")
def pairs(e2e: E2E) -> Iterator[dict[str, tuple[str, str]]]:
    """key -> (memory a, memory b) on the same store, all Ready."""
    out = {key: (f"iso-a-{key}-{uid()}", f"iso-b-{key}-{uid()}") for key in KEYS}
    for key, names in out.items():
        for name in names:
            e2e.create_memory(name, e2e.stores[key].name, deletionPolicy="Delete")
    for names in out.values():
        for name in names:
            e2e.wait_memory(name)
    yield out
    for names in out.values():
        for name in names:
            e2e.delete_memory(name, wait=False)


@pytest.mark.parametrize("key", KEYS)
def test_a_memorys_credentials_are_denied_on_another_memorys_data(
    e2e: E2E, pairs: dict[str, tuple[str, str]], key: str
) -> None:
    a, b = (e2e.binding(n) for n in pairs[key])
    if a.backend.value == "redis":
        mine, theirs = redis_for(a), redis_for(b)
        other_key = f"{b.key_prefix}{{s1}}"
        theirs.rpush(other_key, "secret")
        with pytest.raises(redis.exceptions.NoPermissionError):
            mine.lrange(other_key, 0, -1)
        with pytest.raises(redis.exceptions.NoPermissionError):
            mine.delete(other_key)
        assert theirs.lrange(other_key, 0, -1) == [b"secret"]
        mine.close()
        theirs.close()
    elif a.backend.value == "kafka":
        assert kafka_roundtrip(b, b"theirs") == b"theirs"
        with pytest.raises(KafkaException) as exc:
            kafka_roundtrip(a, b"mine", topic=b.topic)
        assert "authoriz" in str(exc.value).lower() or "AUTHORIZATION" in str(exc.value)
    else:
        with mysql_for(b) as conn, conn.cursor() as cur:
            cur.execute(f"INSERT INTO `{b.table}` (session_id, message) VALUES ('s', '{{}}')")
        with pytest.raises(pymysql.err.OperationalError) as exc:
            mysql_for(a, database=b.database)
        assert exc.value.args[0] in (1044, 1142)
        with mysql_for(a) as conn, conn.cursor() as cur, pytest.raises(pymysql.err.MySQLError) as exc2:
            cur.execute(f"SELECT * FROM `{b.database}`.`{b.table}`")
        assert exc2.value.args[0] in (1044, 1142)
