"""Thread ids are the application's (user ids, emails, anything): they round-trip exactly and stay apart."""

from __future__ import annotations

from typing import Any

import pytest
from chatmemory.checkpoint import checkpointer_for
from langgraph.checkpoint.base import empty_checkpoint

from tests.integration.checkpoint.conftest import MemoryFactory

ODD_IDS = ["user{42}", "}{", "ünïcødé 🧠", "a%7Bb", "a{b", "User", "user", "x" * 200, "42"]


@pytest.mark.parametrize("key", ["REDIS_CLUSTER_NODES", "TIDB_URL", "MARIADB_URL"])
def test_odd_thread_ids_round_trip_exactly_and_never_share_state(key: str, memory: MemoryFactory) -> None:
    mem = memory(key)
    saver = checkpointer_for(mem.binding)
    for i, tid in enumerate(ODD_IDS):
        cp = empty_checkpoint()
        cp["channel_values"] = {"who": tid}
        cp["channel_versions"] = {"who": "1"}
        config: Any = {"configurable": {"thread_id": tid, "checkpoint_ns": ""}}
        stored = saver.put(config, cp, {"step": i}, {"who": "1"})
        saver.put_writes(stored, [("who", tid)], "task")
    for i, tid in enumerate(ODD_IDS):
        tup = saver.get_tuple({"configurable": {"thread_id": tid, "checkpoint_ns": ""}})
        assert tup is not None, tid
        assert tup.config["configurable"]["thread_id"] == tid
        assert tup.checkpoint["channel_values"] == {"who": tid}
        assert tup.metadata["step"] == i
        assert tup.pending_writes == [("task", "who", tid)]
    listed = {t.config["configurable"]["thread_id"] for t in saver.list(None)}
    assert listed == set(ODD_IDS)
    saver.delete_thread("user")
    assert saver.get_tuple({"configurable": {"thread_id": "user", "checkpoint_ns": ""}}) is None
    assert saver.get_tuple({"configurable": {"thread_id": "User", "checkpoint_ns": ""}}) is not None
    saver.close()  # type: ignore[attr-defined]
