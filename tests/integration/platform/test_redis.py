"""Proof that the Redis family is real: ACLs on Redis 7 and Valkey, TLS, a 3-node cluster, Redis 8 search."""

from __future__ import annotations

import uuid

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from tests.support.platform import Platform


@pytest.mark.parametrize("key", ["REDIS_URL", "VALKEY_URL", "REDIS_SEARCH_URL"])
def test_acl_setuser_confines_a_user_to_its_prefix(platform: Platform, key: str) -> None:
    admin = redis.Redis.from_url(platform[key])
    user, pw = f"u-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    assert admin.acl_setuser(
        user, enabled=True, passwords=[f"+{pw}"], keys=[f"{user}:*"], commands=["+@all", "-@dangerous"]
    )
    try:
        limited = redis.Redis(
            host=admin.connection_pool.connection_kwargs["host"],
            port=admin.connection_pool.connection_kwargs["port"],
            username=user,
            password=pw,
        )
        limited.set(f"{user}:k", "v")
        assert limited.get(f"{user}:k") == b"v"
        with pytest.raises(redis.exceptions.NoPermissionError):
            limited.set("elsewhere", "v")
        with pytest.raises(redis.exceptions.NoPermissionError):
            limited.flushall()
        limited.close()
    finally:
        admin.delete(f"{user}:k")
        admin.acl_deluser(user)
        admin.close()


def test_tls_instance_serves_over_tls_with_the_platform_ca(platform: Platform) -> None:
    r = redis.Redis.from_url(platform["REDIS_TLS_URL"], ssl_ca_certs=platform["REDIS_TLS_CA_FILE"])
    assert r.ping()
    r.close()


def test_cluster_serves_hash_tagged_keys_from_one_slot(platform: Platform) -> None:
    nodes = [
        ClusterNode(h, int(p)) for h, p in (n.split(":") for n in platform["REDIS_CLUSTER_NODES"].split(","))
    ]
    assert len(nodes) == 3
    rc = RedisCluster(
        startup_nodes=nodes, username=platform["REDIS_ADMIN_USER"], password=platform["REDIS_ADMIN_PASSWORD"]
    )
    try:
        assert rc.cluster_info()["cluster_state"] == "ok"
        tag = uuid.uuid4().hex[:8]
        keys = [f"{{s-{tag}}}:a", f"{{s-{tag}}}:b"]
        assert rc.keyslot(keys[0]) == rc.keyslot(keys[1])
        rc.mset({keys[0]: "1", keys[1]: "2"})  # a multi-key command: only legal within one slot
        assert rc.mget(keys) == [b"1", b"2"]
        rc.delete(*keys)
        assert len({n.name for n in rc.get_primaries()}) == 3
    finally:
        rc.close()


def test_redis_8_answers_ft_search_with_the_json_module(platform: Platform) -> None:
    r = redis.Redis.from_url(platform["REDIS_SEARCH_URL"], protocol=2)
    idx, prefix = f"idx-{uuid.uuid4().hex[:8]}", f"doc-{uuid.uuid4().hex[:8]}:"
    r.execute_command(
        "FT.CREATE", idx, "ON", "JSON", "PREFIX", "1", prefix, "SCHEMA", "$.text", "AS", "text", "TEXT"
    )
    try:
        r.execute_command("JSON.SET", f"{prefix}1", "$", '{"text": "hello searchable world"}')
        res = r.execute_command("FT.SEARCH", idx, "searchable")
        assert res[0] == 1 and res[1] == f"{prefix}1".encode()
    finally:
        r.execute_command("FT.DROPINDEX", idx, "DD")
        r.close()


def test_memorystore_like_instance_takes_a_password_and_has_no_acl_command(platform: Platform) -> None:
    client = redis.Redis.from_url(platform["REDIS_NOACL_URL"])
    assert client.ping()
    with pytest.raises(redis.ResponseError, match="unknown command"):
        client.execute_command("ACL", "WHOAMI")
    client.close()
