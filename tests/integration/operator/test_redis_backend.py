"""The Redis backend against real Redis 7, Redis 8 (search), Valkey, TLS Redis and a Redis Cluster.

Every claim is checked on the server itself: ACL GETUSER / ACL LIST per node, the memory's own
credentials from the binding, NOPERM replies, and the keys left after delete.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from chatmemory.contract import Binding
from chatmemory_operator.backends.base import DeletionPolicy, MemoryPlan, StoreConnection
from chatmemory_operator.backends.redis import RedisBackend
from chatmemory_operator.errors import BackendUnavailable
from redis.cluster import ClusterNode, RedisCluster

from tests.integration.operator.conftest import closed_port, redis_store
from tests.integration.operator.conftest import redis_plan as plan
from tests.support.platform import Platform

STORES = ["REDIS_URL", "VALKEY_URL", "REDIS_CLUSTER_NODES", "REDIS_SEARCH_URL", "REDIS_TLS_URL"]

Client = redis.Redis | RedisCluster


@pytest.fixture
def backend() -> Iterator[RedisBackend]:
    b = RedisBackend()
    yield b
    b.close()


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, platform: Platform) -> StoreConnection:
    return redis_store(platform, request.param)


def admin(store: StoreConnection) -> Client:
    return connect(store, store.admin_username, store.admin_password)


def connect(store: StoreConnection, username: str, password: str) -> Client:
    kwargs: dict[str, Any] = {"username": username, "password": password, "socket_connect_timeout": 4}
    if store.tls.enabled:
        kwargs.update(ssl=True, ssl_ca_data=store.tls.ca_cert)
    if store.cluster:
        return RedisCluster(startup_nodes=[ClusterNode(store.host, store.port)], **kwargs)
    return redis.Redis(host=store.host, port=store.port, **kwargs)


def ping(store: StoreConnection, username: str, password: str) -> None:
    client = connect(store, username, password)  # a cluster client authenticates here
    try:
        client.ping()
    finally:
        client.close()


def as_memory(store: StoreConnection, binding: Binding) -> Client:
    """A client built from the binding alone, as the SDK would."""
    if binding.cluster:
        return RedisCluster(
            startup_nodes=[ClusterNode(binding.host, binding.port)],
            username=binding.username,
            password=binding.password,
        )
    if binding.tls:
        return redis.Redis.from_url(binding.uri, ssl_ca_data=binding.ca_cert)
    return redis.Redis.from_url(binding.uri)


def nodes(client: Client) -> list[redis.Redis]:
    if isinstance(client, RedisCluster):
        return [client.get_redis_connection(n) for n in client.get_nodes()]
    return [client]


def text(v: str | bytes) -> str:
    return v.decode() if isinstance(v, bytes) else v


def acl_lines(client: Client, username: str) -> list[str]:
    """Every ACL LIST line naming the user, over every node."""
    out = []
    for n in nodes(client):
        out += [t for t in map(text, n.acl_list()) if t.split()[1] == username]
    return out


def write_turn(client: Client, key: str, *messages: str) -> None:
    """The SDK's write: MULTI RPUSH EXPIRE LTRIM EXEC on one session list."""
    pipe = client.pipeline(transaction=True)
    pipe.rpush(key, *messages)
    pipe.expire(key, 3600)
    pipe.ltrim(key, -100, -1)
    pipe.execute()


def session_keys(store: StoreConnection, p: MemoryPlan, sessions: int) -> list[str]:
    return [f"{p.key_prefix}{{s-{i}}}" for i in range(sessions)]


@pytest.mark.parametrize(
    ("key", "provider", "search", "cluster"),
    [
        ("REDIS_URL", "redis", False, False),
        ("VALKEY_URL", "valkey", False, False),
        ("REDIS_SEARCH_URL", "redis", True, False),
        ("REDIS_CLUSTER_NODES", "redis", False, True),
        ("REDIS_TLS_URL", "redis", False, False),
    ],
)
def test_check_reports_provider_version_and_capabilities(
    backend: RedisBackend, platform: Platform, key: str, provider: str, search: bool, cluster: bool
) -> None:
    info = backend.check(redis_store(platform, key))
    assert info.provider == provider
    assert info.version[:1].isdigit()
    assert info.capabilities == {
        "acl": True,
        "search": search,
        "json": search,
        "cluster": cluster,
        "vector_sets": search,  # the platform's Redis 8 is the search server; the others are 7 / Valkey
    }


def test_ensure_twice_sets_one_user_per_node_with_exactly_the_memory_rules(
    backend: RedisBackend, store: StoreConnection, memories: list[MemoryPlan], platform: Platform
) -> None:
    p = plan()
    memories.append(p)
    first = backend.ensure(store, p, "pw-one")
    second = backend.ensure(store, p, "pw-one")
    assert first == second
    client = admin(store)
    try:
        lines = acl_lines(client, p.username)
        assert len(lines) == len(nodes(client)), lines  # one user on every node, no duplicates
        vector_sets = store.port == redis_store(platform, "REDIS_SEARCH_URL").port  # the one Redis 8
        for line in lines:
            assert f"~{p.key_prefix}*" in line
            assert " on " in f" {line} " and "-@all" in line
            assert ("+vsim" in line) is vector_sets, line  # granted only where the server has it
            for forbidden in ("+@all", "+flushall", "+keys", "+config", "+eval", "+@dangerous"):
                assert forbidden not in line
    finally:
        client.close()
    observed = backend.observe(store, p)
    assert observed.user_exists and observed.details["rules_match"] == "true"
    assert first.isolated and first.username == p.username and first.key_prefix == p.key_prefix
    assert first.ttl_seconds == p.ttl_seconds and first.max_messages == p.max_messages
    assert first.cluster is store.cluster and first.tls is store.tls.enabled
    assert first.uri.startswith("rediss://" if store.tls.enabled else "redis://")


def test_memory_user_runs_the_sdk_commands_on_its_prefix_only(
    backend: RedisBackend, store: StoreConnection, memories: list[MemoryPlan]
) -> None:
    mine, theirs = plan(), plan()
    memories += [mine, theirs]
    mine_client = as_memory(store, backend.ensure(store, mine, "pw-mine"))
    theirs_client = as_memory(store, backend.ensure(store, theirs, "pw-theirs"))
    try:
        key = f"{mine.key_prefix}{{s-1}}"
        assert mine_client.ping()
        write_turn(mine_client, key, "m1", "m2")
        assert mine_client.lrange(key, 0, -1) == [b"m1", b"m2"]
        assert mine_client.llen(key) == 2
        assert 0 < mine_client.ttl(key) <= 3600 and mine_client.pttl(key) > 0
        assert mine_client.exists(key) == 1
        assert mine_client.unlink(key) == 1

        other_key = f"{theirs.key_prefix}{{s-1}}"
        write_turn(theirs_client, other_key, "secret")
        denied: list[Any] = [
            lambda: mine_client.lrange(other_key, 0, -1),
            lambda: mine_client.delete(other_key),
            lambda: mine_client.rpush(other_key, "x"),
            lambda: mine_client.rpush("unprefixed", "x"),
            lambda: mine_client.set(f"{mine.key_prefix}plain", "x"),  # not an SDK command
            lambda: mine_client.flushall(),
            lambda: mine_client.keys("*"),
            lambda: mine_client.scan(0),  # issue 13: SCAN would list every tenant's keys
            lambda: mine_client.randomkey(),
            lambda: mine_client.config_get("*"),
            lambda: mine_client.eval("return 1", 0),
        ]
        for call in denied:
            with pytest.raises(redis.exceptions.NoPermissionError):
                call()
        assert theirs_client.lrange(other_key, 0, -1) == [b"secret"]
    finally:
        mine_client.close()
        theirs_client.close()


def test_password_change_rotates_old_password_out(
    backend: RedisBackend, store: StoreConnection, memories: list[MemoryPlan]
) -> None:
    p = plan()
    memories.append(p)
    backend.ensure(store, p, "old-password")
    new = backend.ensure(store, p, "new-password")
    assert new.password == "new-password"
    fresh = as_memory(store, new)
    try:
        assert fresh.ping()
    finally:
        fresh.close()
    with pytest.raises((redis.AuthenticationError, redis.exceptions.RedisClusterException)):
        ping(store, p.username, "old-password")


def test_user_deleted_by_hand_is_back_after_the_next_ensure(
    backend: RedisBackend, store: StoreConnection, memories: list[MemoryPlan]
) -> None:
    p = plan()
    memories.append(p)
    backend.ensure(store, p, "pw")
    client = admin(store)
    try:
        victim = nodes(client)[-1]
        victim.acl_deluser(p.username)
        assert not backend.observe(store, p).user_exists
        backend.ensure(store, p, "pw")
        assert victim.acl_getuser(p.username) is not None
        assert len(acl_lines(client, p.username)) == len(nodes(client))
    finally:
        client.close()
    assert backend.observe(store, p).details["rules_match"] == "true"


def test_widened_rules_are_detected_and_narrowed_again(
    backend: RedisBackend, store: StoreConnection, memories: list[MemoryPlan]
) -> None:
    p = plan()
    memories.append(p)
    backend.ensure(store, p, "pw")
    client = admin(store)
    try:
        for n in nodes(client):
            n.execute_command("ACL", "SETUSER", p.username, "+flushall", "~*")
        assert backend.observe(store, p).details["rules_match"] == "false"
        backend.ensure(store, p, "pw")
        for line in acl_lines(client, p.username):
            assert "+flushall" not in line and "~* " not in f"{line} "
    finally:
        client.close()
    assert backend.observe(store, p).details["rules_match"] == "true"


def test_retain_removes_the_user_and_keeps_the_keys(backend: RedisBackend, store: StoreConnection) -> None:
    p = plan()
    mem = as_memory(store, backend.ensure(store, p, "pw"))
    keys = session_keys(store, p, 20)
    try:
        for k in keys:
            write_turn(mem, k, "kept")
    finally:
        mem.close()
    backend.delete(store, p, DeletionPolicy.RETAIN)
    backend.delete(store, p, DeletionPolicy.RETAIN)  # already gone is fine
    client = admin(store)
    try:
        assert acl_lines(client, p.username) == []
        assert sum(client.exists(k) for k in keys) == len(keys)
        for k in keys:
            assert client.ttl(k) > 0  # the SDK's TTL still expires retained sessions
    finally:
        backend.delete(store, p, DeletionPolicy.DELETE)
        client.close()


def test_delete_removes_every_key_of_the_memory_and_nothing_else(
    backend: RedisBackend, store: StoreConnection, memories: list[MemoryPlan]
) -> None:
    p, neighbour = plan(), plan()
    memories.append(neighbour)
    mem = as_memory(store, backend.ensure(store, p, "pw"))
    other = as_memory(store, backend.ensure(store, neighbour, "pw2"))
    keys = session_keys(store, p, 50)  # 50 hash tags: spread over every node of a cluster
    other_key = f"{neighbour.key_prefix}{{s-0}}"
    try:
        for k in keys:
            write_turn(mem, k, "gone soon")
        write_turn(other, other_key, "stays")
    finally:
        mem.close()
        other.close()
    backend.delete(store, p, DeletionPolicy.DELETE)
    backend.delete(store, p, DeletionPolicy.DELETE)  # twice is fine
    client = admin(store)
    try:
        assert sum(client.exists(k) for k in keys) == 0
        assert client.exists(other_key) == 1
        assert acl_lines(client, p.username) == []
    finally:
        client.close()


def test_unreachable_store_raises_backend_unavailable_naming_the_address(
    backend: RedisBackend, store: StoreConnection
) -> None:
    dead = dataclasses.replace(store, port=closed_port())
    with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{dead.port}"):
        backend.check(dead)
    with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{dead.port}"):
        backend.ensure(dead, plan(), "pw")


def test_wrong_admin_password_raises_backend_unavailable_without_the_password(
    backend: RedisBackend, store: StoreConnection
) -> None:
    bad = dataclasses.replace(store, admin_password="definitely-wrong-pw")
    with pytest.raises(BackendUnavailable) as exc:
        backend.check(bad)
    assert "definitely-wrong-pw" not in str(exc.value)
    assert f"{store.host}:{store.port}" in str(exc.value)


def test_a_memory_user_may_not_run_ft_search_even_where_the_search_module_is_loaded(
    backend: RedisBackend, platform: Platform
) -> None:
    """An index may span other prefixes and the SDK never sends FT.*: least privilege."""
    store = redis_store(platform, "REDIS_SEARCH_URL")
    p = plan()
    mem = as_memory(store, backend.ensure(store, p, "pw"))
    client = admin(store)
    index = f"{p.key_prefix}idx"  # Redis 8 checks the index name as a key
    client.execute_command(
        "FT.CREATE", index, "ON", "HASH", "PREFIX", "1", p.key_prefix, "SCHEMA", "t", "TEXT"
    )
    try:
        mem.rpush(f"{p.key_prefix}{{s}}", "the memory's own commands still work")
        for command in (("FT.SEARCH", index, "*"), ("FT.DROPINDEX", index), ("FT._LIST",)):
            with pytest.raises(redis.exceptions.NoPermissionError):
                mem.execute_command(*command)
    finally:
        client.execute_command("FT.DROPINDEX", index)
        backend.delete(store, p, DeletionPolicy.DELETE)
        mem.close()
        client.close()


def test_the_drift_check_agrees_with_ensure_on_every_server_from_a_fresh_operator(
    backend: RedisBackend, store: StoreConnection, memories: list[MemoryPlan]
) -> None:
    """The vector-set decision is asked again by a restarted operator and gives the same rules:
    no drift reported, so no flapping between ensure and observe."""
    p = plan()
    memories.append(p)
    backend.ensure(store, p, "pw")
    fresh = RedisBackend()
    try:
        for _ in range(2):
            observed = fresh.observe(store, p)
            assert observed.details["rules_match"] == "true" and not observed.drift
    finally:
        fresh.close()


def test_memory_b_cannot_vsim_or_vadd_memory_as_vector_set(backend: RedisBackend, platform: Platform) -> None:
    """Vector sets are ordinary keys: the ACL's key pattern confines VSIM / VADD / VREM / VCARD."""
    store = redis_store(platform, "REDIS_SEARCH_URL")
    a, b = plan(), plan()
    as_a = as_memory(store, backend.ensure(store, a, "pw-a"))
    as_b = as_memory(store, backend.ensure(store, b, "pw-b"))
    a_set, b_set = f"{a.key_prefix}store:{{ns}}:v", f"{b.key_prefix}store:{{ns}}:v"
    try:
        assert as_a.execute_command("VADD", a_set, "VALUES", 2, 1, 0, "secret", "NOQUANT") == 1
        assert as_b.execute_command("VADD", b_set, "VALUES", 2, 1, 0, "mine", "NOQUANT") == 1
        denied: list[Any] = [
            ("VSIM", a_set, "VALUES", 2, 1, 0, "WITHSCORES"),
            ("VADD", a_set, "VALUES", 2, 0, 1, "planted", "NOQUANT"),
            ("VREM", a_set, "secret"),
            ("VCARD", a_set),
            ("VEMB", a_set, "secret"),  # not granted to anyone
        ]
        for command in denied:
            with pytest.raises(redis.exceptions.NoPermissionError):
                as_b.execute_command(*command)
        assert as_a.execute_command("VCARD", a_set) == 1
        assert [text(e) for e in as_a.execute_command("VSIM", a_set, "VALUES", 2, 1, 0)] == ["secret"]
    finally:
        for p in (a, b):
            backend.delete(store, p, DeletionPolicy.DELETE)
        as_a.close()
        as_b.close()
