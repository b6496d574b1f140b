"""A memory connected from a mounted Secret follows it: a rotated password needs no restart.

The directory is laid out the way the kubelet lays out a Secret volume (a timestamped directory, the
``..data`` link to it, and a link per key), and updated the way the kubelet does it: a new
timestamped directory, then ``..data`` swapped at once. The server's password is changed, the
memory's open connections are killed (a network blip), and the next write must go through with the
new password, read from the directory.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
import redis
from chatmemory import connect
from chatmemory.contract import BackendKind, Binding
from chatmemory.loaders import RELOAD_INTERVAL, read_directory
from chatmemory_operator.backends.redis import acl_rules
from langchain_core.messages import HumanMessage

from tests.integration.sdk.conftest import admin_client, delete_prefix, redis_binding
from tests.support.platform import Platform


def uid() -> str:
    return uuid.uuid4().hex[:10]


class MountedSecret:
    """A Secret volume the way the kubelet writes and updates it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir()
        self.version = 0

    def write(self, binding: Binding) -> None:
        self.version += 1
        snapshot = self.root / f"..2026_12_03_00_00_{self.version:02d}"
        snapshot.mkdir()
        for key, value in binding.to_secret_data().items():
            (snapshot / key).write_text(value)
        link = self.root / "..data_tmp"
        link.symlink_to(snapshot.name)
        os.replace(link, self.root / "..data")  # the atomic swap
        for key in binding.to_secret_data():
            if not (self.root / key).is_symlink():
                (self.root / key).symlink_to(f"..data/{key}")


def test_a_read_never_mixes_two_versions_of_the_secret(tmp_path: Path) -> None:
    mounted = MountedSecret(tmp_path / "mnt")
    first = Binding(
        backend=BackendKind.REDIS, provider="redis", host="h", port=1, username="u", password="p1"
    )
    mounted.write(first)
    assert read_directory(mounted.root)["password"] == "p1"
    mounted.write(first.model_copy(update={"password": "p2"}))
    data = read_directory(mounted.root)
    assert (data["username"], data["password"]) == ("u", "p2")


@pytest.fixture
def redis_user(platform: Platform) -> Iterator[tuple[redis.Redis, str, str]]:
    admin: Any = admin_client(platform, "REDIS_URL")
    user, prefix = f"cmfollow-{uid()}", f"cmfollow:{uid()}:"
    yield admin, user, prefix
    admin.acl_deluser(user)
    delete_prefix(admin, prefix)
    admin.close()


def test_a_redis_memory_follows_its_mounted_secret_through_a_rotation_and_a_blip(
    platform: Platform, tmp_path: Path, redis_user: tuple[redis.Redis, str, str]
) -> None:
    admin, user, prefix = redis_user
    admin.execute_command("ACL", "SETUSER", user, *acl_rules(prefix, "first-password", cluster=False))
    binding = redis_binding(platform, "REDIS_URL", prefix, username=user, password="first-password")
    mounted = MountedSecret(tmp_path / "binding")
    mounted.write(binding)
    with connect(path=mounted.root) as memory:
        history = memory.history("s")
        history.add_message(HumanMessage("before"))
        admin.execute_command("ACL", "SETUSER", user, *acl_rules(prefix, "second-password", cluster=False))
        mounted.write(binding.model_copy(update={"password": "second-password"}))
        admin.execute_command("CLIENT", "KILL", "USER", user)  # the blip: every connection of the app
        time.sleep(RELOAD_INTERVAL + 0.2)
        history.add_message(HumanMessage("after"))
        assert [m.content for m in history.messages] == ["before", "after"]


def test_a_tidb_memory_follows_its_mounted_secret_through_a_rotation_and_a_blip(
    platform: Platform, tmp_path: Path
) -> None:
    params = platform.mysql_params("TIDB_URL")
    admin = pymysql.connect(**{**params, "autocommit": True})  # type: ignore[arg-type]
    user, database = f"cmfollow_{uid()}", f"cmfollow_{uid()}"
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{database}`")
        cur.execute("CREATE USER %s@'%%' IDENTIFIED BY 'first-password'", (user,))
        cur.execute(f"GRANT SELECT, INSERT, DELETE, CREATE ON `{database}`.* TO %s@'%%'", (user,))
    binding = Binding(
        backend=BackendKind.TIDB,
        provider="tidb",
        host=str(params["host"]),
        port=int(str(params["port"])),
        username=user,
        password="first-password",
        database=database,
        table="messages",
    )
    mounted = MountedSecret(tmp_path / "binding")
    mounted.write(binding)
    try:
        with connect(path=mounted.root) as memory:
            from chatmemory.histories.tidb import TiDBConnector

            TiDBConnector(binding, create=True).close()  # the table, as the operator would make it
            history = memory.history("s")
            history.add_message(HumanMessage("before"))
            with admin.cursor() as cur:
                cur.execute("ALTER USER %s@'%%' IDENTIFIED BY 'second-password'", (user,))
                mounted.write(binding.model_copy(update={"password": "second-password"}))
                cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (user,))
                for (conn_id,) in cur.fetchall():
                    cur.execute(f"KILL {int(conn_id)}")  # the blip
            time.sleep(RELOAD_INTERVAL + 0.2)
            history.add_message(HumanMessage("after"))
            assert [m.content for m in history.messages] == ["before", "after"]
    finally:
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{database}`")
            cur.execute("DROP USER IF EXISTS %s@'%%'", (user,))
        admin.close()
