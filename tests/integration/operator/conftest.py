"""Helpers for the backend tests: platform keys turned into StoreConnections and unique MemoryPlans.

Every name carries a fresh uuid fragment so the tests can rerun against the same servers.
"""

from __future__ import annotations

import dataclasses
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import pytest
from chatmemory_operator.backends.base import Backend, DeletionPolicy, MemoryPlan, StoreConnection, TLSConfig
from chatmemory_operator.backends.kafka import KafkaConnection, KafkaPlan
from chatmemory_operator.backends.redis import RedisConnection, RedisPlan
from chatmemory_operator.backends.tidb import SQLConnection, SQLPlan

from tests.support.platform import Platform

P = TypeVar("P", bound=MemoryPlan)


def uid() -> str:
    return uuid.uuid4().hex[:10]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_store(platform: Platform, key: str) -> RedisConnection:
    """A store for REDIS_URL / VALKEY_URL / REDIS_SEARCH_URL / REDIS_TLS_URL / REDIS_CLUSTER_NODES."""
    if key == "REDIS_CLUSTER_NODES":
        host, _, port = platform[key].split(",")[0].partition(":")
        return RedisConnection(
            name=f"cluster-{uid()}",
            host=host,
            port=int(port),
            cluster=True,
            admin_username=platform["REDIS_ADMIN_USER"],
            admin_password=platform["REDIS_ADMIN_PASSWORD"],
        )
    u = urlsplit(platform[key])
    tls = TLSConfig()
    if u.scheme == "rediss":
        tls = TLSConfig(enabled=True, ca_cert=Path(platform["REDIS_TLS_CA_FILE"]).read_text())
    return RedisConnection(
        name=f"{key.lower()}-{uid()}",
        host=u.hostname or "",
        port=u.port or 0,
        tls=tls,
        admin_username=u.username or "",
        admin_password=u.password or "",
    )


def kafka_store(platform: Platform, *, sasl: bool) -> KafkaConnection:
    if not sasl:
        return KafkaConnection(name=f"kafka-{uid()}", bootstrap_servers=platform["KAFKA_BOOTSTRAP"])
    return KafkaConnection(
        name=f"kafka-sasl-{uid()}",
        bootstrap_servers=platform["KAFKA_SASL_BOOTSTRAP"],
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=platform["KAFKA_SASL_MECHANISM"],
        admin_username=platform["KAFKA_ADMIN_USER"],
        admin_password=platform["KAFKA_ADMIN_PASSWORD"],
    )


def sql_store(platform: Platform, key: str) -> SQLConnection:
    """A store for TIDB_URL or MARIADB_URL."""
    p = platform.mysql_params(key)
    return SQLConnection(
        name=f"{key.lower()}-{uid()}",
        host=str(p["host"]),
        port=int(str(p["port"])),
        admin_username=str(p["user"]),
        admin_password=str(p["password"]),
    )


def _plan(cls: type[P], **overrides: object) -> P:
    """A memory with unique names on every backend; override what the test is about."""
    u = uid()
    fields: dict[str, object] = {
        "namespace": "test",
        "name": f"mem-{u}",
        "uid": str(uuid.uuid4()),
        "ttl_seconds": 3600,
        "max_messages": 100,
        "username": f"cm_{u}",
        "key_prefix": f"cm:test:mem-{u}:",
        "topic": f"cm.test.mem-{u}",
        "partitions": 1,
        "replication_factor": 1,
        "consumer_group_prefix": f"cm.test.mem-{u}.",
        "database": f"cm_{u}",
        "table": "messages",
    }
    fields.update(overrides)
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in fields.items() if k in names})


def redis_plan(**overrides: object) -> RedisPlan:
    return _plan(RedisPlan, **overrides)


def kafka_plan(**overrides: object) -> KafkaPlan:
    return _plan(KafkaPlan, **overrides)


def sql_plan(**overrides: object) -> SQLPlan:
    return _plan(SQLPlan, **overrides)


@pytest.fixture
def unique() -> str:
    return uid()


@pytest.fixture
def memories(backend: Backend, store: StoreConnection) -> Iterator[list[MemoryPlan]]:
    """Plans a test creates on the module's ``backend`` and ``store``; each is deleted, data too.

    (The Kafka module overrides it: its tests use several stores.)"""
    made: list[MemoryPlan] = []
    yield made
    for p in made:
        backend.delete(store, p, DeletionPolicy.DELETE)
