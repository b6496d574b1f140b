"""A store's policy and lifecycle on the real platform: who may use it, what its deletion revokes,
and deletions of memories that cannot reach their server but never hang."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import redis
from chatmemory.contract import Binding
from chatmemory_operator.k8s import KubeClient, KubernetesError
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tests.e2e.conftest import (
    E2E,
    NAMESPACE_PREFIX,
    condition,
    make_unreachable,
    redis7_spec,
    redis_admin,
    redis_for,
    redis_memory,
    uid,
    wait_until,
)


def logs_in(b: Binding) -> bool:
    """Whether a fresh connection with the binding's credentials is accepted."""
    c = redis_for(b)
    try:
        c.ping()
        return True
    except redis.exceptions.AuthenticationError:
        return False
    finally:
        c.close()


@pytest.fixture
def gold(e2e: E2E) -> Iterator[E2E]:
    """A namespace labelled tier=gold, watched by the operator."""
    name = f"{NAMESPACE_PREFIX}{uid()}-gold"
    labels = {"tier": "gold"}
    e2e.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels)))
    yield E2E(e2e.platform, e2e.api, name, e2e.operator)
    e2e.core.delete_namespace(name)


def test_a_namespace_that_stops_matching_the_selector_loses_its_credentials_and_keeps_its_data(
    e2e: E2E, gold: E2E
) -> None:
    store, name, outsider = f"sel-{uid()}", f"sel-{uid()}", f"out-{uid()}"
    selector = {"from": "Selector", "selector": {"matchLabels": {"tier": "gold"}}}
    e2e.create_store(store, redis7_spec(e2e, allowedNamespaces=selector))
    try:
        gold.create_memory(name, store, deletionPolicy="Delete")
        e2e.create_memory(outsider, store)
        b = gold.binding(gold.wait_memory(name)["metadata"]["name"])
        c = redis_for(b)
        c.rpush(f"{b.key_prefix}{{s}}", "kept")
        c.close()
        refused = e2e.wait_memory(outsider, status="False", reason="NamespaceNotAllowed")
        assert "binding" not in refused["status"] and e2e.secret(f"{outsider}-chatmemory") is None
        e2e.core.patch_namespace(gold.namespace, {"metadata": {"labels": {"tier": "free"}}})
        gone = gold.wait_memory(name, status="False", reason="NamespaceNotAllowed", timeout=60)
        assert "binding" not in gone["status"] and gold.secret(f"{name}-chatmemory") is None
        assert not logs_in(b)
        admin = redis_admin(e2e.platform, "redis7")
        assert admin.lrange(f"{b.key_prefix}{{s}}", 0, -1) == [b"kept"]
        admin.delete(f"{b.key_prefix}{{s}}")
        admin.close()
    finally:
        gold.delete_memory(name, wait=False)
        e2e.delete_memory(outsider, wait=False)
        e2e.delete_store(store)


def test_deleting_a_store_revokes_the_users_of_its_memories(e2e: E2E) -> None:
    store, name = f"rev-{uid()}", f"rev-{uid()}"
    e2e.create_store(store, redis7_spec(e2e))
    e2e.create_memory(name, store)
    try:
        e2e.wait_memory(name)
        b = e2e.binding(name)
        assert logs_in(b)
        e2e.delete_store(store)
        assert not logs_in(b)
        events = e2e.core.list_event_for_all_namespaces(field_selector=f"involvedObject.name={store}").items
        assert any(ev.reason == "CredentialsRevoked" for ev in events)
    finally:
        e2e.delete_memory(name, timeout=30)
        e2e.delete_store(store)


def test_a_retain_deletion_completes_when_the_stores_admin_secret_is_gone(e2e: E2E) -> None:
    store, secret = f"nosec-{uid()}", f"admin-nosec-{uid()}"
    u = urlsplit(e2e.platform["REDIS_URL"])
    e2e.create_secret(secret, {"username": u.username or "", "password": u.password or ""})
    ref = {"name": secret, "namespace": e2e.namespace}
    e2e.create_store(store, redis7_spec(e2e, redis={"adminSecretRef": ref}))
    with redis_memory(e2e, store, deletionPolicy="Retain") as (name, _):
        e2e.core.delete_namespaced_secret(secret, e2e.namespace)
        e2e.delete_memory(name, timeout=30)
        assert any(ev.reason == "CredentialsNotRemoved" for ev in e2e.events(name))


def test_force_delete_finishes_a_delete_deletion_whose_server_is_unreachable(e2e: E2E) -> None:
    store = f"force-{uid()}"
    e2e.create_store(store, redis7_spec(e2e))
    with redis_memory(e2e, store, deletionPolicy="Delete") as (name, _):
        make_unreachable(e2e, store)
        e2e.delete_memory(name, wait=False)
        deleting = wait_until(
            lambda: condition(e2e.memory(name)).get("reason") == "Deleting" and condition(e2e.memory(name)),
            timeout=30,
            what="the deletion to retry",
        )
        assert "unreachable" in deleting["message"]
        e2e.patch_memory(name, {"metadata": {"annotations": {"chatmemory.io/force-delete": "true"}}})
        wait_until(lambda: e2e.memory(name) is None, timeout=60, what=f"memory {name} to go")
        assert any(ev.reason == "ForceDeleted" for ev in e2e.events(name))


def test_the_operator_never_replaces_a_secret_it_did_not_read(e2e: E2E) -> None:
    """The create of a Secret that appeared meanwhile fails; so does a replace of a changed one."""
    kube = KubeClient(e2e.api)
    name = f"planted-{uid()}"
    e2e.create_secret(name, {"owner": "someone-else"})
    ours = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "namespace": e2e.namespace},
        "stringData": {"password": "x"},
    }
    with pytest.raises(KubernetesError):
        kube.write_secret(ours, None)  # read as absent before someone else created it
    stale = kube.read_secret(e2e.namespace, name)
    assert stale is not None
    e2e.core.patch_namespaced_secret(name, e2e.namespace, {"stringData": {"owner": "changed"}})
    with pytest.raises(KubernetesError):
        kube.write_secret(ours, stale)
    assert e2e.secret_data(name) == {"owner": "changed"}
    with contextlib.suppress(ApiException):
        e2e.core.delete_namespaced_secret(name, e2e.namespace)
