"""A backend server that stops and starts again: status shows it, nothing crash-loops, it recovers.

The test runs its own Redis (the platform's redis-server binary on a free loopback port), so
stopping it disturbs no other test. A restarted Redis without persistence has lost the memory's
ACL user too: the operator's drift check puts it back, and the memory is Ready again.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import E2E, condition, uid, wait_until
from tests.support.servers import RedisProcess


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisProcess]:
    s = RedisProcess(tmp_path)
    s.start()
    yield s
    s.stop()


def test_a_stopped_backend_shows_in_status_and_the_memory_recovers_when_it_returns(
    e2e: E2E, server: RedisProcess
) -> None:
    store, memory = f"e2e-restart-{uid()}", f"restart-{uid()}"
    e2e.create_secret(f"admin-{store}", {"username": "admin", "password": server.password})
    e2e.create_store(
        store,
        {
            "redis": {
                "host": "127.0.0.1",
                "port": server.port,
                "adminSecretRef": {"name": f"admin-{store}", "namespace": e2e.namespace},
            }
        },
    )
    try:
        e2e.wait_store(store, timeout=60)
        e2e.create_memory(memory, store, deletionPolicy="Delete")
        e2e.wait_memory(memory, timeout=60)
        user = e2e.binding(memory).username

        server.stop()
        e2e.wait_store(store, status="False", reason="BackendUnavailable", timeout=60)
        down = e2e.wait_memory(memory, status="False", reason="BackendUnavailable", timeout=60)
        assert str(server.port) in condition(down)["message"], "the message names the server"
        assert e2e.operator.alive(), "the operator keeps running while a backend is down"

        server.start()  # a fresh, empty server: the memory's user is gone too
        e2e.wait_store(store, timeout=60)
        e2e.wait_memory(memory, timeout=60)
        with server.client() as admin:
            wait_until(lambda: admin.acl_getuser(user), timeout=30, what=f"ACL user {user} to be back")
    finally:
        e2e.delete_memory(memory)
        e2e.delete_store(store)
