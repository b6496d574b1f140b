"""LangGraph runs a step's tasks in parallel, each calling put_writes on the same checkpoint."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import uuid4

import pytest
from chatmemory.checkpoint import acheckpointer_for, checkpointer_for
from langgraph.checkpoint.base import empty_checkpoint

from tests.integration.checkpoint.conftest import MemoryFactory

KEYS = ["REDIS_URL", "REDIS_CLUSTER_NODES", "TIDB_URL", "MARIADB_URL"]
TASKS = 24


def _config(thread: str) -> Any:
    return {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}


@pytest.mark.parametrize("key", KEYS)
def test_parallel_tasks_writing_one_checkpoint_from_threads_all_land(key: str, memory: MemoryFactory) -> None:
    mem = memory(key, ttl_seconds=600)
    saver = checkpointer_for(mem.binding)
    stored = saver.put(_config(f"t-{uuid4().hex[:8]}"), empty_checkpoint(), {"step": 0}, {})

    def task(i: int) -> None:
        saver.put_writes(stored, [("results", i), ("__error__", f"e{i}")], f"task-{i:02}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(task, range(TASKS)))
    tup = saver.get_tuple(stored)
    assert tup is not None and tup.pending_writes is not None
    assert sorted(w for w in tup.pending_writes if w[1] == "results") == [
        (f"task-{i:02}", "results", i) for i in range(TASKS)
    ]
    assert len(tup.pending_writes) == 2 * TASKS
    saver.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("key", KEYS)
async def test_parallel_tasks_writing_one_checkpoint_from_coroutines_all_land(
    key: str, memory: MemoryFactory
) -> None:
    mem = memory(key, ttl_seconds=600)
    saver = await acheckpointer_for(mem.binding)
    stored = await saver.aput(_config(f"t-{uuid4().hex[:8]}"), empty_checkpoint(), {"step": 0}, {})
    await asyncio.gather(*(saver.aput_writes(stored, [("results", i)], f"task-{i:02}") for i in range(TASKS)))
    tup = await saver.aget_tuple(stored)
    assert tup is not None
    assert [w[0] for w in tup.pending_writes or []] == [f"task-{i:02}" for i in range(TASKS)]
    await saver.aclose()  # type: ignore[attr-defined]
