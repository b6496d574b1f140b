"""A Redis store whose admin user has exactly the documented permissions, and nothing more.

``spec.redis.adminSecretRef``'s description (``docs/reference.md``) lists what the admin user must be
allowed, from :data:`~chatmemory_operator.api.v1alpha1.REDIS_ADMIN_COMMANDS` (plus the cluster
ones). Issue 12: the list said ACL SETUSER, SCAN and UNLINK, but the operator also sends ACL DELUSER,
ACL WHOAMI and MODULE LIST (and GETUSER, INFO, CLIENT SETNAME). Here each Redis flavour of the
platform gets an admin user built from that list; the operator checks the store, provisions a
memory (``Delete`` policy, so the keys go too) and deletes it, and the server's ``ACL LOG`` then
holds no refusal for that user: every command the operator sent as admin was allowed. (A refused
``MODULE LIST`` would not fail provisioning, only hide the search capability: the ACL log sees it.)
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from chatmemory_operator.api import v1alpha1 as api
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.e2e.conftest import (
    E2E,
    NAMESPACE_PREFIX,
    condition,
    redis_admin,
    redis_for,
    redis_nodes,
    store_specs,
    uid,
    wait_until,
)
from tests.support.operator import OperatorProcess
from tests.support.platform import Platform

KEYS = ("redis7", "cluster", "valkey")


def documented_rules(*, cluster: bool) -> list[str]:
    commands = api.REDIS_ADMIN_COMMANDS + (api.REDIS_CLUSTER_ADMIN_COMMANDS if cluster else ())
    return ["reset", "on", "~*", "resetchannels", "-@all", *(f"+{c}" for c in commands)]


@pytest.fixture(scope="module")
def helper(
    platform: Platform, kube_api: client.ApiClient, operator_process: OperatorProcess
) -> Iterator[E2E]:
    """A watched namespace of this module's own (no other store is needed)."""
    namespace = f"{NAMESPACE_PREFIX}{uid()}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    e2e = E2E(platform, kube_api, namespace, operator_process)
    try:
        yield e2e
    finally:
        e2e.cleanup()
        with contextlib.suppress(ApiException):
            core.delete_namespace(namespace)


def acl_refusals(nodes: list[redis.Redis], username: str) -> list[dict[str, Any]]:
    """The ACL LOG entries of ``username``, minus the documented optional commands (redis-py sends
    CLIENT SETINFO where the server knows it and ignores a refusal)."""
    optional = {c.encode() for c in api.REDIS_OPTIONAL_ADMIN_COMMANDS} | set(
        api.REDIS_OPTIONAL_ADMIN_COMMANDS
    )
    out: list[dict[str, Any]] = []
    for node in nodes:
        for entry in node.acl_log(count=1000):
            if entry.get("username") in (username, username.encode()) and entry.get("object") not in optional:
                out.append(entry)
    return out


@pytest.mark.parametrize("key", KEYS)
def test_the_documented_admin_permissions_are_enough(platform: Platform, helper: E2E, key: str) -> None:
    kind, spec, _admin = store_specs(platform, helper.namespace)[key]
    assert kind == "redis"
    cluster = bool(spec["redis"].get("cluster"))
    admin = redis_admin(platform, key)
    nodes = redis_nodes(admin)
    username, password = f"cm-lp-admin-{uid()}", secrets.token_hex(16)
    for node in nodes:
        node.execute_command("ACL", "SETUSER", username, *documented_rules(cluster=cluster), f">{password}")  # type: ignore[no-untyped-call]
    store = f"e2e-lp-{key}-{uid()}"
    memory = f"lp-{key}-{uid()}"
    try:
        helper.create_secret(f"lp-admin-{key}", {"username": username, "password": password})
        spec = {
            "redis": {
                **spec["redis"],
                "adminSecretRef": {"name": f"lp-admin-{key}", "namespace": helper.namespace},
            }
        }
        helper.create_store(store, spec)
        s = helper.wait_store(store, timeout=90)
        assert s["status"]["capabilities"]["acl"] is True
        assert s["status"]["capabilities"]["cluster"] is cluster

        helper.create_memory(memory, store, deletionPolicy="Delete")
        m = helper.wait_memory(memory, timeout=90)
        ready, isolated = condition(m, "Ready"), condition(m, "Isolated")
        assert ready["reason"] == api.Reason.PROVISIONED and ready["reason"] in api.READY_REASONS
        assert (isolated["status"], isolated["reason"]) == ("True", api.Reason.OWN_USER)
        assert isolated["reason"] in api.ISOLATED_REASONS
        binding = helper.binding(memory)
        data_key = f"{binding.key_prefix}{{s1}}"
        mine = redis_for(binding)
        try:
            mine.rpush(data_key, "hello")
        finally:
            mine.close()
        assert admin.exists(data_key) == 1

        helper.delete_memory(memory, timeout=90)
        assert admin.exists(data_key) == 0
        wait_until(
            lambda: all(not n.acl_getuser(binding.username) for n in nodes),
            timeout=30,
            what="the memory's user to be removed from every node",
        )
        helper.delete_store(store)
        refused = acl_refusals(nodes, username)
        assert refused == [], (
            f"the admin user was refused: {refused}; operator log {helper.operator.log_path}"
        )
    finally:
        helper.delete_memory(memory, wait=False)
        helper.delete_store(store, wait=False)
        for node in nodes:
            with contextlib.suppress(redis.RedisError):
                node.execute_command("ACL", "DELUSER", username)  # type: ignore[no-untyped-call]
        admin.close()
