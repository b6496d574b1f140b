"""The SQL checkpointer's async methods run natively on the event loop (asyncmy), on TiDB and MariaDB.

Many threads' checkpoints at once on one saver each read back as written; no worker thread is used
(``asyncio.to_thread``, the loop's executor and ``Thread.start`` are made to raise); a blackholed
server raises ``BackendUnavailable`` instead of hanging; a saver on a mounted Secret follows a rotated
password after its connections were killed, and reads the Secret in a thread, never on the loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

import pymysql
import pytest
from chatmemory import connect
from chatmemory._connect import Timeouts
from chatmemory.checkpoint import acheckpointer_for
from chatmemory.contract import BackendKind, Binding
from chatmemory.errors import BackendUnavailable
from chatmemory.loaders import BindingSource
from langgraph.checkpoint.base import empty_checkpoint

from tests.integration.checkpoint.conftest import TABLE_PREFIX, MemoryFactory
from tests.integration.sdk import test_tidb_async
from tests.integration.sdk.test_follow_secret import MountedSecret
from tests.support.platform import Platform

KEYS = ["TIDB_URL", "MARIADB_URL"]
#: The history's async tests' fixtures: a listener that never answers, and no thread allowed.
blackhole = test_tidb_async.blackhole
no_threads = test_tidb_async.no_threads
THREADS = 50
#: A generous bound for a call that must raise within a 1 s timeout: reaching it means a hang.
HANG = 30.0


def _config(thread: str) -> Any:
    return {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}


def _checkpoint(value: str, version: str = "1") -> Any:
    cp = empty_checkpoint()
    cp["channel_values"] = {"messages": value}
    cp["channel_versions"] = {"messages": version}
    return cp


@pytest.mark.parametrize("key", KEYS)
async def test_fifty_threads_at_once_on_one_saver_each_read_back_their_checkpoint(
    key: str, memory: MemoryFactory
) -> None:
    saver = await acheckpointer_for(memory(key, ttl_seconds=600).binding)
    threads = [f"t-{uuid4().hex[:8]}" for _ in range(THREADS)]

    async def turn(thread: str) -> Any:
        stored = await saver.aput(_config(thread), _checkpoint(thread), {"step": 1}, {"messages": "1"})
        await saver.aput_writes(stored, [("messages", f"w-{thread}")], "task")
        return await saver.aget_tuple(_config(thread))

    try:
        tuples = await asyncio.gather(*(turn(t) for t in threads))
        for thread, tup in zip(threads, tuples, strict=True):
            assert tup is not None and tup.checkpoint["channel_values"] == {"messages": thread}
            assert tup.pending_writes == [("task", "messages", f"w-{thread}")]
    finally:
        await saver.aclose()  # type: ignore[attr-defined]


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.usefixtures("no_threads")
async def test_every_async_method_runs_without_a_thread(key: str, memory: MemoryFactory) -> None:
    saver = await acheckpointer_for(memory(key, ttl_seconds=600).binding)
    thread = f"t-{uuid4().hex[:8]}"
    try:
        first = await saver.aput(_config(thread), _checkpoint("a"), {"step": 1}, {"messages": "1"})
        await saver.aput_writes(first, [("messages", "w")], "task")
        second = await saver.aput(first, _checkpoint("b"), {"step": 2}, {})
        latest = await saver.aget_tuple(_config(thread))
        assert latest is not None and latest.config == second
        assert [t.metadata["step"] async for t in saver.alist(_config(thread))] == [2, 1]
        await saver.adelete_thread(thread)
        assert await saver.aget_tuple(_config(thread)) is None
    finally:
        await saver.aclose()  # type: ignore[attr-defined]


async def test_a_blackholed_server_raises_backend_unavailable(blackhole: int) -> None:
    binding = Binding(
        backend=BackendKind.TIDB, provider="tidb", host="127.0.0.1", port=blackhole, username="u",
        password="secret-pw", database="d", table="messages", checkpoint_table_prefix=TABLE_PREFIX,
    )  # fmt: skip
    saver = await acheckpointer_for(binding, timeout=Timeouts(connect=1, operation=1))
    try:
        with pytest.raises(BackendUnavailable) as read:
            await asyncio.wait_for(saver.aget_tuple(_config("t")), HANG)
        with pytest.raises(BackendUnavailable) as write:
            await asyncio.wait_for(saver.aput(_config("t"), _checkpoint("a"), {}, {}), HANG)
        for err in (read.value, write.value):
            assert f"127.0.0.1:{blackhole}" in str(err) and "timed out" in str(err)
            assert "secret-pw" not in str(err)
    finally:
        await saver.aclose()  # type: ignore[attr-defined]


def gone(cur: Any, user: str) -> None:
    """Wait until the server has closed every connection of ``user`` (a KILL lands asynchronously)."""
    for _ in range(200):
        cur.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = %s", (user,))
        if cur.fetchone()[0] == 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"the server kept {user}'s connections after KILL")


@pytest.mark.parametrize("key", KEYS)
async def test_a_saver_follows_its_rotated_password_after_a_blip(
    key: str, memory: MemoryFactory, platform: Platform, tmp_path: Path
) -> None:
    mem = memory(key, ttl_seconds=600)
    mounted = MountedSecret(tmp_path / "binding")
    mounted.write(mem.binding)
    root = pymysql.connect(**{**platform.mysql_params(key), "autocommit": True})
    memory_ = connect(path=mounted.root)
    saver = memory_.checkpointer()
    thread = f"t-{uuid4().hex[:8]}"
    try:
        first = await saver.aput(_config(thread), _checkpoint("before"), {"step": 1}, {"messages": "1"})
        user = mem.binding.username
        with root.cursor() as cur:
            cur.execute("ALTER USER %s@'%%' IDENTIFIED BY 'second-password'", (user,))
            mounted.write(mem.binding.model_copy(update={"password": "second-password"}))
            cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (user,))
            killed = [int(r[0]) for r in cur.fetchall()]
            assert killed, "the saver's async pool keeps its connection open between calls"
            for conn_id in killed:
                cur.execute(f"KILL {conn_id}")  # the blip
            gone(cur, user)
        await saver.aput(first, _checkpoint("after", "2"), {"step": 2}, {"messages": "2"})
        latest = await saver.aget_tuple(_config(thread))
        assert latest is not None and latest.checkpoint["channel_values"] == {"messages": "after"}
    finally:
        await saver.aclose()
        await memory_.aclose()
        root.close()


@pytest.mark.parametrize("key", KEYS)
async def test_a_saver_that_follows_its_secret_reads_it_in_a_thread_not_on_the_event_loop(
    key: str, memory: MemoryFactory
) -> None:
    binding = memory(key, ttl_seconds=600).binding
    readers: list[threading.Thread] = []

    def load() -> Binding:  # stands for a blocking read (the Kubernetes API)
        readers.append(threading.current_thread())
        return binding

    source = BindingSource(load, binding, interval=0)  # every new connection reads the source
    saver = await acheckpointer_for(binding.with_source(source))
    readers.clear()  # only the saver's methods are under test
    thread = f"t-{uuid4().hex[:8]}"
    try:
        await saver.aput(_config(thread), _checkpoint("a"), {"step": 1}, {"messages": "1"})
        stored = await saver.aget_tuple(_config(thread))
        assert stored is not None and stored.checkpoint["channel_values"] == {"messages": "a"}
    finally:
        await saver.aclose()  # type: ignore[attr-defined]
    assert readers, "the new connection asked the source for the credentials"
    assert threading.current_thread() not in readers  # the event loop's thread
