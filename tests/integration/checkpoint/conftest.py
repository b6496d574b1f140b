"""Memories for the checkpointer tests, provisioned the way the operator does, on the real servers.

- Redis family: an ACL user confined to a fresh prefix, allowed exactly the operator's SDK commands
  plus the checkpointer's extra ones (and the cluster client's metadata commands on a cluster);
- TiDB / MariaDB: a fresh database with the checkpoint tables from ``checkpoint_table_ddl`` (and the
  expiry EVENT on MariaDB), and a user with SELECT, INSERT, UPDATE, DELETE on it and nothing else.

Each memory is removed (keys, user, database) when the test ends.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pymysql
import pytest
import redis
from chatmemory.checkpoint import (
    EXTRA_REDIS_COMMANDS,
    REQUIRED_GRANTS,
    checkpoint_table_ddl,
    checkpoint_ttl_event_sql,
)
from chatmemory.checkpoint.redis import glob_escape
from chatmemory.contract import BackendKind, Binding
from chatmemory_operator.backends.redis import CLUSTER_COMMANDS, SDK_COMMANDS
from redis.cluster import ClusterNode, RedisCluster

from tests.support.platform import Platform

REDIS_KEYS = ["REDIS_URL", "VALKEY_URL", "REDIS_SEARCH_URL", "REDIS_CLUSTER_NODES"]
SQL_KEYS = ["TIDB_URL", "MARIADB_URL"]
TABLE_PREFIX = "chatmemory_"
#: What the memory's SQL user holds: the operator's data rights plus UPDATE (upserts, TTL stamps).
SQL_GRANTS = REQUIRED_GRANTS


def uid() -> str:
    return uuid.uuid4().hex[:10]


def acl_commands(*, cluster: bool) -> list[str]:
    """The operator's command list for a memory plus the checkpointer's additions."""
    return sorted(
        set(SDK_COMMANDS) | set(EXTRA_REDIS_COMMANDS) | (set(CLUSTER_COMMANDS) if cluster else set())
    )


@dataclass
class Memory:
    key: str
    binding: Binding
    admin: Any  # redis.Redis | RedisCluster | a PyMySQL connection
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    @property
    def tidb(self) -> bool:
        return self.key == "TIDB_URL"

    def sql(self, statement: str, args: Any = None) -> list[tuple[Any, ...]]:
        with self.admin.cursor() as cur:
            cur.execute(statement, args)
            return list(cur.fetchall())


def _redis_admin(platform: Platform, key: str) -> redis.Redis | RedisCluster:
    if key == "REDIS_CLUSTER_NODES":
        nodes = [ClusterNode(h, int(p)) for h, p in (n.split(":") for n in platform[key].split(","))]
        return RedisCluster(
            startup_nodes=nodes,
            username=platform["REDIS_ADMIN_USER"],
            password=platform["REDIS_ADMIN_PASSWORD"],
        )
    return redis.Redis.from_url(platform[key])


def _node_clients(admin: redis.Redis | RedisCluster, *, primaries: bool) -> list[redis.Redis]:
    if isinstance(admin, RedisCluster):
        nodes = admin.get_primaries() if primaries else admin.get_nodes()  # type: ignore[no-untyped-call]
        return [admin.get_redis_connection(n) for n in nodes]
    return [admin]


def redis_memory(platform: Platform, key: str, ttl_seconds: int | None) -> Memory:
    cluster = key == "REDIS_CLUSTER_NODES"
    admin = _redis_admin(platform, key)
    prefix = f"cmtest:{uid()}:"
    user, password = f"cmtest-{uid()}", uuid.uuid4().hex
    rules = [
        "reset",
        "on",
        f">{password}",
        f"~{glob_escape(prefix)}*",
        "resetchannels",
        "-@all",
        *(f"+{c}" for c in acl_commands(cluster=cluster)),
    ]
    for node in _node_clients(admin, primaries=False):
        node.execute_command("ACL", "SETUSER", user, *rules)  # type: ignore[no-untyped-call]
    if cluster:
        host, _, port = platform[key].split(",")[0].partition(":")
    else:
        u = urlsplit(platform[key])
        host, port = u.hostname or "", str(u.port or 0)
    binding = Binding(
        backend=BackendKind.REDIS,
        provider="valkey" if key == "VALKEY_URL" else "redis",
        host=host,
        port=int(port),
        username=user,
        password=password,
        key_prefix=prefix,
        ttl_seconds=ttl_seconds,
        cluster=cluster,
    )
    mem = Memory(key, binding, admin)

    def cleanup() -> None:
        for node in _node_clients(admin, primaries=True):
            keys = list(node.scan_iter(match=glob_escape(prefix) + "*", count=1000))
            for k in keys:
                node.unlink(k)
        for node in _node_clients(admin, primaries=False):
            node.execute_command("ACL", "DELUSER", user)  # type: ignore[no-untyped-call]
        admin.close()

    mem.cleanups.append(cleanup)
    return mem


def sql_memory(platform: Platform, key: str, ttl_seconds: int | None) -> Memory:
    params = platform.mysql_params(key)
    admin = pymysql.connect(**params)  # type: ignore[arg-type]
    tidb = key == "TIDB_URL"
    db, user, password = f"cmtest_{uid()}", f"cmt_{uid()}", uuid.uuid4().hex
    mem_ttl = ttl_seconds or 0
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{db}` CHARACTER SET utf8mb4")
        for stmt in checkpoint_table_ddl(TABLE_PREFIX, tidb=tidb, ttl_seconds=mem_ttl, database=db):
            cur.execute(stmt)
        if not tidb:
            for stmt in checkpoint_ttl_event_sql(db, TABLE_PREFIX, mem_ttl):
                cur.execute(stmt)
        cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, password))
        cur.execute(f"GRANT {', '.join(SQL_GRANTS)} ON `{db}`.* TO %s@'%%'", (user,))
    binding = Binding(
        backend=BackendKind.TIDB,
        provider="tidb" if tidb else "mariadb",
        host=str(params["host"]),
        port=int(params["port"]),  # type: ignore[call-overload]
        username=user,
        password=password,
        database=db,
        table="messages",
        checkpoint_table_prefix=TABLE_PREFIX,
        ttl_seconds=ttl_seconds,
    )
    mem = Memory(key, binding, admin)

    def cleanup() -> None:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
            cur.execute("DROP USER IF EXISTS %s@'%%'", (user,))
        admin.close()

    mem.cleanups.append(cleanup)
    return mem


MemoryFactory = Callable[..., Memory]


@pytest.fixture
def memory(platform: Platform) -> Iterator[MemoryFactory]:
    """``memory(key, ttl_seconds=...)``: a fresh memory on the server behind a platform key."""
    made: list[Memory] = []

    def make(key: str, *, ttl_seconds: int | None = 3600) -> Memory:
        mem = (sql_memory if key in SQL_KEYS else redis_memory)(platform, key, ttl_seconds)
        made.append(mem)
        return mem

    yield make
    for mem in made:
        for fn in mem.cleanups:
            fn()
