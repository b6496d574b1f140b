"""A thread expires ``ttl`` after its last write, on every key or row it owns, observed on the server."""

from __future__ import annotations

import re
import time
from typing import Any
from uuid import uuid4

import pytest
from chatmemory.checkpoint import ChatMemoryRedisSaver, ChatMemorySQLSaver, checkpointer_for
from chatmemory.checkpoint.sql import ttl_delete_after_seconds
from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint

from tests.integration.checkpoint.conftest import REDIS_KEYS, SQL_KEYS, TABLE_PREFIX, Memory, MemoryFactory

TABLES = tuple(f"{TABLE_PREFIX}{s}" for s in ("checkpoints", "checkpoint_blobs", "checkpoint_writes"))


def _config(thread: str, ns: str = "") -> Any:
    return {"configurable": {"thread_id": thread, "checkpoint_ns": ns}}


def _write_thread(saver: BaseCheckpointSaver[str], thread: str) -> Any:
    """Two checkpoints (root and a subgraph namespace) with values, a run id and pending writes."""
    stored = None
    for ns in ("", "tools:1"):
        cp = empty_checkpoint()
        cp["channel_values"] = {"messages": [f"hello {ns}"], "step": 1}
        cp["channel_versions"] = {"messages": saver.get_next_version(None, None), "step": "1"}
        s = saver.put(
            _config(thread, ns), cp, {"source": "loop", "step": 0, "run_id": "run-1"}, cp["channel_versions"]
        )
        saver.put_writes(s, [("messages", "pending"), ("__interrupt__", {"ask": "human"})], "task-1")
        stored = stored or s
    return stored


# -- Redis family -------------------------------------------------------------------------------


@pytest.mark.parametrize("key", REDIS_KEYS)
def test_every_key_of_a_thread_carries_the_ttl_and_each_write_refreshes_it(
    key: str, memory: MemoryFactory
) -> None:
    mem = memory(key, ttl_seconds=60)
    saver = checkpointer_for(mem.binding)
    assert isinstance(saver, ChatMemoryRedisSaver)
    thread = f"t-{uuid4().hex[:8]}"
    stored = _write_thread(saver, thread)
    keys = saver.keys(thread).all
    assert mem.admin.exists(*keys) == len(keys)  # all six exist, pending writes and run index included
    for k in keys:
        assert 55_000 < mem.admin.pttl(k) <= 60_000, k
    time.sleep(1.5)
    before = {k: mem.admin.pttl(k) for k in keys}
    assert all(v < 59_000 for v in before.values())
    saver.put_writes(stored, [("messages", "later")], "task-2")  # a pending write alone refreshes all
    for k in keys:
        assert mem.admin.pttl(k) > before[k] + 1_000, k
    saver.close()


@pytest.mark.parametrize("key", ["REDIS_URL", "REDIS_CLUSTER_NODES"])
def test_an_idle_thread_is_gone_from_the_server_after_the_ttl(key: str, memory: MemoryFactory) -> None:
    mem = memory(key, ttl_seconds=2)
    saver = checkpointer_for(mem.binding)
    assert isinstance(saver, ChatMemoryRedisSaver)
    thread = f"t-{uuid4().hex[:8]}"
    _write_thread(saver, thread)
    keys = saver.keys(thread).all
    assert mem.admin.exists(*keys) == len(keys)
    time.sleep(2.6)
    assert mem.admin.exists(*keys) == 0
    assert saver.get_tuple(_config(thread)) is None
    saver.close()


# -- TiDB / MariaDB -----------------------------------------------------------------------------


def _count(mem: Memory, table: str, thread: str) -> int:
    db = mem.binding.database
    return int(mem.sql(f"SELECT COUNT(*) FROM `{db}`.`{table}` WHERE thread_id = %s", (thread,))[0][0])


def test_tidb_tables_carry_a_row_ttl_of_ttl_plus_slack_on_updated_at(memory: MemoryFactory) -> None:
    mem = memory("TIDB_URL", ttl_seconds=600)
    for table in TABLES:
        ddl = mem.sql(f"SHOW CREATE TABLE `{mem.binding.database}`.`{table}`")[0][1]
        m = re.search(r"TTL=`updated_at` \+ INTERVAL (\d+) MINUTE", ddl)
        assert m, ddl
        assert int(m.group(1)) * 60 >= ttl_delete_after_seconds(600) == 660
        assert "TTL_ENABLE='ON'" in ddl
        assert "CLUSTERED" in ddl


def test_mariadb_has_an_enabled_expiry_event_for_the_checkpoint_tables(memory: MemoryFactory) -> None:
    mem = memory("MARIADB_URL", ttl_seconds=600)
    rows = mem.sql(
        "SELECT STATUS, EVENT_DEFINITION FROM information_schema.EVENTS WHERE EVENT_SCHEMA = %s",
        (mem.binding.database,),
    )
    assert len(rows) == 1
    status, body = rows[0]
    assert status == "ENABLED"
    assert body.count("INTERVAL 660 SECOND") == 3
    assert all(t in body for t in TABLES)


@pytest.mark.parametrize("key", SQL_KEYS)
def test_a_thread_idle_past_the_ttl_reads_as_gone_and_the_next_write_clears_it(
    key: str, memory: MemoryFactory
) -> None:
    mem = memory(key, ttl_seconds=2)
    saver = checkpointer_for(mem.binding)
    thread = f"t-{uuid4().hex[:8]}"
    _write_thread(saver, thread)
    assert saver.get_tuple(_config(thread)) is not None
    assert [_count(mem, t, thread) for t in TABLES] == [2, 4, 4]
    time.sleep(2.5)
    assert saver.get_tuple(_config(thread)) is None
    assert list(saver.list(_config(thread))) == []
    assert _count(mem, TABLES[0], thread) == 2  # still on disk: the server deletes after ttl + slack
    fresh = checkpointer_for(mem.binding)  # another process: nothing cached about the thread
    fresh.put(_config(thread), empty_checkpoint(), {"step": 5}, {})
    assert [_count(mem, t, thread) for t in TABLES] == [1, 0, 0]
    tup = fresh.get_tuple(_config(thread))
    assert tup is not None and tup.metadata["step"] == 5
    saver.close()
    fresh.close()


@pytest.mark.parametrize("key", SQL_KEYS)
def test_a_write_restamps_the_threads_older_rows_so_none_expires_before_the_thread(
    key: str, memory: MemoryFactory
) -> None:
    mem = memory(key, ttl_seconds=3600)  # slack 360 s: rows older than 180 s are re-stamped
    saver = checkpointer_for(mem.binding)
    thread, other = f"t-{uuid4().hex[:8]}", f"o-{uuid4().hex[:8]}"
    stored = _write_thread(saver, thread)
    _write_thread(saver, other)
    db = mem.binding.database
    for t in TABLES:
        mem.sql(f"UPDATE `{db}`.`{t}` SET updated_at = NOW(6) - INTERVAL 300 SECOND")
    fresh = checkpointer_for(mem.binding)
    fresh.put_writes(stored, [("messages", "again")], "task-9")
    for t in TABLES:
        ages = mem.sql(
            f"SELECT thread_id, MAX(TIMESTAMPDIFF(SECOND, updated_at, NOW(6))) FROM `{db}`.`{t}` "
            "GROUP BY thread_id"
        )
        by_thread = {bytes(tid).decode(): int(age) for tid, age in ages}
        assert by_thread[thread] < 30, (t, by_thread)
        assert by_thread[other] >= 299, (t, by_thread)  # other threads are untouched
    saver.close()
    fresh.close()


def test_mariadb_rows_past_ttl_plus_slack_are_deleted_by_the_sweep(memory: MemoryFactory) -> None:
    mem = memory("MARIADB_URL", ttl_seconds=60)
    saver = checkpointer_for(mem.binding)
    assert isinstance(saver, ChatMemorySQLSaver)
    thread, live = f"t-{uuid4().hex[:8]}", f"l-{uuid4().hex[:8]}"
    _write_thread(saver, thread)
    _write_thread(saver, live)
    db = mem.binding.database
    for t in TABLES:
        mem.sql(
            f"UPDATE `{db}`.`{t}` SET updated_at = NOW(6) - INTERVAL 200 SECOND WHERE thread_id = %s",
            (thread,),
        )
    assert saver.delete_expired() == 10
    assert [_count(mem, t, thread) for t in TABLES] == [0, 0, 0]
    assert [_count(mem, t, live) for t in TABLES] == [2, 4, 4]
    saver.close()
