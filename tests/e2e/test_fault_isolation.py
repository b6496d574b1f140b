"""One hung server never stalls the operator: work for other stores goes on while it is paused.

A Redis of the test's own is paused with SIGSTOP (connections open, nothing answers, as in a network
partition) while memories are created on it and on the other stores. The others become Ready as
if nothing happened; the paused store's memories say why (BackendUnavailable, a timeout) within
the operator's backend timeout; all are Ready soon after the server resumes.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.e2e.conftest import E2E, condition, uid, wait_until

pytestmark = pytest.mark.faults


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def pausable_redis(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A Redis of this test's own (its default user is the admin), stopped by pid afterwards."""
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    args = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    proc = subprocess.Popen([*args, "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
    try:
        wait_until(lambda: _pings(port), timeout=20, what="the test's redis-server")
        yield proc, port
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        proc.wait(timeout=10)


def _pings(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def test_a_paused_server_stalls_only_its_own_memories(
    e2e: E2E, pausable_redis: tuple[subprocess.Popen[bytes], int]
) -> None:
    proc, port = pausable_redis
    store = f"paused-{uid()}"
    e2e.create_store(store, {"redis": {"host": "127.0.0.1", "port": port}})
    e2e.wait_store(store)
    paused = [f"paused-{i}-{uid()}" for i in range(8)]  # more than a default thread pool (cores + 4)
    others = {f"calm-{key}-{i}-{uid()}": e2e.stores[key].name for key in ("tidb", "redis7") for i in range(2)}
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        for name in paused:
            e2e.create_memory(name, store, deletionPolicy="Delete")
        for name, other in others.items():
            e2e.create_memory(name, other, deletionPolicy="Delete")
        for name in others:
            e2e.wait_memory(name, timeout=30)
        calm = time.monotonic() - started
        for name in paused:
            m = e2e.wait_memory(name, status="False", reason="BackendUnavailable", timeout=45)
            assert f"store '{store}'" in condition(m)["message"]  # says which server does not answer
        print(f"other stores' memories Ready {calm:.1f} s after the creates, with one store paused")
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    resumed = time.monotonic()
    for name in paused:
        e2e.wait_memory(name, timeout=30)
    print(f"the paused store's memories Ready {time.monotonic() - resumed:.1f} s after SIGCONT")
    for name in [*paused, *others]:
        e2e.delete_memory(name, wait=False)
    for name in [*paused, *others]:
        wait_until(lambda n=name: e2e.memory(n) is None, timeout=60, what=f"memory {name} to go")
    e2e.delete_store(store)
