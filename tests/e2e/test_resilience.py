"""Stores that are missing, unreachable or go away: reported, retried, recovered, never stuck."""

from __future__ import annotations

from urllib.parse import urlsplit

from kubernetes import client

from tests.e2e.conftest import (
    E2E,
    closed_port,
    condition,
    drop_redis_user,
    make_unreachable,
    redis7_spec,
    redis_memory,
    uid,
    wait_until,
)
from tests.support.operator import running_operator


def redis_spec(e2e: E2E, **overrides: object) -> dict[str, object]:
    return redis7_spec(e2e, redis=overrides)


def test_a_memory_whose_store_does_not_exist_yet_becomes_ready_when_it_is_created(e2e: E2E) -> None:
    store, name = f"e2e-late-{uid()}", f"late-{uid()}"
    e2e.create_memory(name, store)
    try:
        m = e2e.wait_memory(name, status="False", reason="StoreNotFound")
        assert store in condition(m)["message"]
        e2e.create_store(store, redis_spec(e2e))
        m = e2e.wait_memory(name, timeout=60)
        assert m["status"]["store"] == store
    finally:
        e2e.delete_memory(name)
        e2e.delete_store(store)


def test_an_unreachable_store_is_reported_retried_and_recovers_when_fixed(e2e: E2E) -> None:
    store, name = f"e2e-down-{uid()}", f"down-{uid()}"
    e2e.create_store(store, redis_spec(e2e, port=closed_port()))
    e2e.create_memory(name, store)
    try:
        s = e2e.wait_store(store, status="False", reason="BackendUnavailable")
        assert "unreachable" in condition(s)["message"]
        m = e2e.wait_memory(name, status="False", reason="BackendUnavailable")
        assert "127.0.0.1" in condition(m)["message"]
        assert e2e.operator.alive()
        e2e.patch_store(store, {"spec": {"redis": {"port": e2e.stores["redis7"].spec["redis"]["port"]}}})
        e2e.wait_store(store, timeout=60)
        e2e.wait_memory(name, timeout=60)
        warnings = [
            ev for ev in e2e.events(name) if ev.type == "Warning" and ev.reason == "BackendUnavailable"
        ]
        assert warnings
    finally:
        e2e.delete_memory(name)
        e2e.delete_store(store)


def test_deleting_a_memory_completes_when_its_store_is_gone(e2e: E2E) -> None:
    store, name = f"e2e-gone-{uid()}", f"gone-{uid()}"
    e2e.create_store(store, redis_spec(e2e))
    e2e.create_memory(name, store)
    m = e2e.wait_memory(name)
    username = m["status"]["provisioned"]["username"]
    try:
        e2e.delete_store(store)
        e2e.delete_memory(name, timeout=30)
        assert any(ev.reason == "NothingRemoved" for ev in e2e.events(name))
    finally:
        drop_redis_user(e2e.platform, username)


def test_a_retain_deletion_on_an_unreachable_server_gives_up_after_a_few_retries(e2e: E2E) -> None:
    store = f"e2e-lost-{uid()}"
    e2e.create_store(store, redis_spec(e2e))
    with redis_memory(e2e, store, deletionPolicy="Retain") as (name, _):
        make_unreachable(e2e, store)
        e2e.delete_memory(name, timeout=90)
        assert any(ev.reason == "CredentialsNotRemoved" for ev in e2e.events(name))


def test_an_empty_store_ref_uses_the_default_store(e2e: E2E) -> None:
    """The one test that marks a store as the default; it removes it again."""
    store, name = f"e2e-default-{uid()}", f"dflt-{uid()}"
    e2e.create_store(store, redis_spec(e2e), annotations={"chatmemory.io/is-default-store": "true"})
    try:
        e2e.wait_store(store)
        e2e.create_memory(name, None)
        m = wait_until(
            lambda: (lambda x: x if x and condition(x).get("status") == "True" else None)(e2e.memory(name)),
            timeout=60,
            what="the memory on the default store",
        )
        # another session may have a default store too: the newest wins, as for StorageClasses
        assert m["status"]["store"]
        if m["status"]["store"] == store:
            assert m["status"]["backend"] == "redis"
    finally:
        e2e.delete_memory(name)
        e2e.delete_store(store)


def test_a_store_becoming_ready_wakes_its_waiting_memories_at_once(e2e: E2E) -> None:
    """With retries and drift checks minutes away, the store's own handler re-triggers the memory.

    A second operator process watches its own namespace (``cmw-e2e-*``) with slow retries; the main
    one never sees that namespace, and only the second manages the store (its Secret lives there).
    """
    slow = {
        "CHATMEMORY_DRIFT_INTERVAL": "600",
        "CHATMEMORY_STORE_INTERVAL": "600",
        "CHATMEMORY_RETRY_DELAY": "300",
        "CHATMEMORY_RETRY_MAX_DELAY": "300",
    }
    namespace = f"cmw-e2e-{uid()}"
    store, name = f"e2e-wake-{uid()}", f"wake-{uid()}"
    e2e.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    helper = E2E(e2e.platform, e2e.api, namespace, e2e.operator)
    try:
        with running_operator(e2e.platform, namespaces="cmw-e2e-*", env=slow) as op:
            helper.operator = op
            redis_url = urlsplit(e2e.platform["REDIS_URL"])
            helper.create_secret(
                "admin", {"username": redis_url.username or "", "password": redis_url.password or ""}
            )
            helper.create_memory(name, store)
            helper.wait_memory(name, status="False", reason="StoreNotFound")
            spec = redis_spec(e2e, adminSecretRef={"name": "admin", "namespace": namespace})
            helper.create_store(store, spec)
            m = helper.wait_memory(name, timeout=30)
            assert m["status"]["store"] == store
            helper.delete_memory(name)
            helper.delete_store(store)
    finally:
        helper.cleanup()
        e2e.core.delete_namespace(namespace)
