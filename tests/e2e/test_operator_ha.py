"""Two operator replicas, one Lease: the active one killed (SIGKILL) during a churn of 100 memories.

Both processes watch their own namespace (``cmha-e2e-*``), which the session's operator never sees,
and hold a Lease of their own name; only they manage the test's store (its admin Secret lives in
that namespace). The standby takes over, every memory converges, the deleted ones are gone, and on
the Redis server each memory has exactly its one user. The handover time (SIGKILL to the standby
leading) is reported as the ``handover_seconds`` property (``--junitxml``) and on stdout (``-s``),
never asserted: speed belongs to ``make bench``.

Reproduce: ``flock /tmp/chatmemory-e2e.lock .venv/bin/pytest tests/e2e/test_operator_ha.py -s``.
"""

from __future__ import annotations

import contextlib
import re
import signal
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
import redis
from chatmemory_operator import naming
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.e2e.conftest import E2E, GROUP, VERSION, store_specs, uid, wait_until
from tests.support.operator import OperatorProcess, install_crds, running_operator
from tests.support.platform import Platform

pytestmark = pytest.mark.faults  # about a minute: two operators, a lease expiry, 100 memories

MEMORIES = 100
DELETED = 10  # deleted during the churn, after the kill: the new leader runs their finalizers
KILL_AFTER = 40  # memories created when the active replica is killed
GLOB = "cmha-e2e-*"


def leader_gauge(op: OperatorProcess) -> float | None:
    """``chatmemory_operator_leader`` of a live operator (None when it does not answer)."""
    try:
        with urllib.request.urlopen(op.metrics_url, timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return None
    found = re.search(r"^chatmemory_operator_leader (\S+)$", text, re.M)
    return float(found.group(1)) if found else None


@pytest.fixture
def kube_api(platform: Platform) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=platform["KUBECONFIG"])
    yield api
    api.close()


@contextlib.contextmanager
def replica(platform: Platform, lease: str) -> Iterator[OperatorProcess]:
    """One operator replica of the pair (quick drift and store checks, as every e2e operator)."""
    with running_operator(platform, namespaces=GLOB, env={"CHATMEMORY_LEADER_ELECTION_LEASE": lease}) as op:
        yield op


def create_in_background(helper: E2E, names: list[str], store: str) -> tuple[threading.Thread, list[str]]:
    """Create the memories one after another in a thread; the list fills as they are created."""
    created: list[str] = []

    def run() -> None:
        for name in names:
            helper.create_memory(name, store)
            created.append(name)
            time.sleep(0.02)

    thread = threading.Thread(target=run, name="churn", daemon=True)
    thread.start()
    return thread, created


def timed(fn: Callable[[], object], *, timeout: float, what: str) -> float:
    """Seconds until ``fn`` returns something truthy."""
    started = time.monotonic()
    wait_until(fn, timeout=timeout, what=what, interval=0.05)
    return time.monotonic() - started


def test_the_standby_takes_over_a_killed_replica_and_every_memory_converges_with_one_user(
    platform: Platform, kube_api: client.ApiClient, record_property: Callable[[str, object], None]
) -> None:
    install_crds(platform)
    namespace, lease = f"cmha-e2e-{uid()}", f"cm-ha-e2e-{uid()}"
    core, custom = client.CoreV1Api(kube_api), client.CustomObjectsApi(kube_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    _, spec, admin = store_specs(platform, namespace)["redis7"]
    store = f"e2e-ha-{uid()}"
    names = [f"ha-{i:03d}" for i in range(MEMORIES)]
    with replica(platform, lease) as first:
        wait_until(lambda: leader_gauge(first) == 1, timeout=30, what="the first replica to lead")
        with replica(platform, lease) as second:
            helper = E2E(platform, kube_api, namespace, second)
            try:
                assert leader_gauge(second) == 0  # live, standing by
                helper.create_secret("admin-redis7", admin)
                helper.create_store(store, spec)
                helper.wait_store(store, timeout=60)
                churn, created = create_in_background(helper, names, store)
                wait_until(lambda: len(created) >= KILL_AFTER, timeout=60, what=f"{KILL_AFTER} memories")
                first.proc.send_signal(signal.SIGKILL)
                killed_at = time.monotonic()
                handover = timed(lambda: leader_gauge(second) == 1, timeout=60, what="the standby to lead")
                churn.join(timeout=60)
                assert len(created) == MEMORIES
                for name in names[:DELETED]:
                    helper.delete_memory(name, wait=False)
                for name in names[DELETED:]:
                    helper.wait_memory(name, timeout=90)
                converged = time.monotonic() - killed_at
                for name in names[:DELETED]:
                    wait_until(lambda n=name: helper.memory(n) is None, timeout=60, what=f"{name} deleted")
                assert not first.alive()
                assert "leading as" in second.log()

                users = {
                    str(u)
                    for u in redis.Redis.from_url(platform["REDIS_URL"], decode_responses=True).acl_users()
                }
                for name in names[DELETED:]:
                    m = helper.memory(name)
                    assert m is not None
                    own = naming.username(namespace, name)
                    assert m["status"]["provisioned"]["username"] == own
                    assert own in users, name
                # every user the namespace has on the server: one per remaining memory, no other
                # (a second replica running a creation beside the first would leave a second user)
                ours = {u for u in users if u.startswith(f"cm_{namespace.replace('-', '_')}_")}
                assert ours == {naming.username(namespace, n) for n in names[DELETED:]}
                figures = {
                    "handover_seconds": round(handover, 2),
                    "all_ready_after_kill_seconds": round(converged, 2),
                }
                for key, value in figures.items():
                    record_property(key, value)
                print(f"\nHA handover: {figures}")  # the figure the issue asks to report
            finally:
                with contextlib.suppress(ApiException):
                    custom.delete_collection_namespaced_custom_object(
                        GROUP, VERSION, namespace, "chatmemories"
                    )
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline and second.alive():
                    listing = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "chatmemories")
                    items: list[Any] = cast(dict[str, Any], listing)["items"]
                    if not items:
                        break
                    time.sleep(0.5)
                helper.cleanup()
                with contextlib.suppress(ApiException):
                    core.delete_namespace(namespace)
