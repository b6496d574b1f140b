"""An application writing turns through a rotation never notices it (issue 14's scenario).

The app holds one ``chatmemory.connect(path=...)`` on a directory laid out and updated the way the
kubelet does it (the update lands a few seconds after the Secret changes). It writes a turn every
50 ms while the operator rotates the memory's password with a grace period; after the grace period
ends (the old password refused by the server), every connection the app has is killed (a network
blip). No write fails or is duplicated, and every write reads back in order.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pymysql
import pytest
import redis
from chatmemory import connect
from chatmemory.contract import Binding
from langchain_core.messages import HumanMessage

from tests.e2e.conftest import E2E, mysql_admin, mysql_for, redis_admin, redis_for, wait_until
from tests.integration.sdk.test_follow_secret import MountedSecret

pytestmark = pytest.mark.faults


def logs_in(b: Binding) -> bool:
    try:
        if b.backend.value == "redis":
            c = redis_for(b)
            try:
                return bool(c.ping())
            finally:
                c.close()
        mysql_for(b).close()
        return True
    except (redis.exceptions.RedisError, pymysql.MySQLError):
        return False


def blip(e2e: E2E, key: str, users: set[str]) -> None:
    """Kill every connection of the memory's users (the app's), as a network blip would."""
    if key == "redis7":
        admin = redis_admin(e2e.platform, "redis7")
        for user in users:
            admin.execute_command("CLIENT", "KILL", "USER", user)
        admin.close()
        return
    with mysql_admin(e2e.platform, "tidb") as conn, conn.cursor() as cur:
        cur.execute("SELECT ID, USER FROM information_schema.PROCESSLIST")
        for conn_id, user in cur.fetchall():
            if user in users:
                cur.execute(f"KILL {int(conn_id)}")


@pytest.mark.parametrize("key", ["redis7", "tidb"])
def test_an_app_writing_every_50_ms_never_notices_a_rotation(e2e: E2E, tmp_path: Path, key: str) -> None:
    rotation = {"gracePeriod": "6s"}
    with e2e.ready_memories("load", [key], deletionPolicy="Delete", rotation=rotation) as names:
        name = names[key]
        old = e2e.binding(name)
        mounted = MountedSecret(tmp_path / "binding")
        mounted.write(old)
        written: list[str] = []
        failures: list[BaseException] = []
        running, paused = threading.Event(), threading.Event()
        running.set()

        def app() -> None:
            with connect(path=mounted.root) as memory:
                history = memory.history("load")
                i = 0
                while running.is_set():
                    if paused.is_set():
                        time.sleep(0.01)
                        continue
                    try:
                        history.add_message(HumanMessage(f"turn {i}"))
                        written.append(f"turn {i}")
                    except Exception as e:
                        failures.append(e)
                    i += 1
                    time.sleep(0.05)

        writer = threading.Thread(target=app, name="app")
        writer.start()
        try:
            time.sleep(1)
            e2e.patch_memory(
                name, {"metadata": {"annotations": {"chatmemory.io/rotate-credentials": "load"}}}
            )
            e2e.wait_memory(name, check=lambda m: m["status"].get("credentialsRotation") == "load")
            new = e2e.binding(name)
            time.sleep(2)  # the kubelet's sync lag
            mounted.write(new)
            wait_until(lambda: not logs_in(old), timeout=40, what="the previous password to stop")
            paused.set()  # the blip lands between two writes (a write in flight would be reported)
            time.sleep(0.1)
            blip(e2e, key, {old.username, new.username})
            paused.clear()
            time.sleep(2)
        finally:
            running.clear()
            writer.join(30)
        assert failures == []
        assert len(written) > 50
        with connect(path=mounted.root) as memory:
            assert [m.content for m in memory.history("load").messages] == written
