"""The Redis checkpointer's ``get_tuple`` costs at most two round trips, "latest" included.

Round trips are counted where the bench counts them: one per redis-py ``send_packed_command`` (a
pipeline is one), sync and asyncio, on Redis 7, Valkey, Redis 8 and the Cluster, each through a
memory's ACL user. The cases where the first round trip cannot tell (a thread written before ``put``
kept a copy of the latest record, puts out of id order, more pending writes than the window) cost
one more round trip and still read the right checkpoint; deleting a run's checkpoints or pruning
leaves no copy of a deleted checkpoint behind.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest
import redis.asyncio.connection as aconnection
import redis.connection as connection
from chatmemory.checkpoint import ChatMemoryRedisSaver, acheckpointer_for, checkpointer_for
from chatmemory.checkpoint.redis import WRITES_WINDOW, latest_field, thread_keys
from langgraph.checkpoint.base import Checkpoint, empty_checkpoint
from langgraph.checkpoint.base.id import uuid6

from tests.integration.checkpoint.conftest import REDIS_KEYS, MemoryFactory


class Sends:
    """Counts the client's socket writes (sync and asyncio redis-py connections)."""

    def __init__(self) -> None:
        self.count = 0


@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch) -> Sends:
    counter = Sends()
    sync_send = connection.AbstractConnection.send_packed_command
    async_send = aconnection.AbstractConnection.send_packed_command

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        counter.count += 1
        return sync_send(self, *args, **kwargs)

    async def acounted(self: Any, *args: Any, **kwargs: Any) -> Any:
        counter.count += 1
        return await async_send(self, *args, **kwargs)

    monkeypatch.setattr(connection.AbstractConnection, "send_packed_command", counted)
    monkeypatch.setattr(aconnection.AbstractConnection, "send_packed_command", acounted)
    return counter


def _config(thread: str, ns: str = "", cid: str | None = None) -> Any:
    conf: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ns}
    if cid is not None:
        conf["checkpoint_id"] = cid
    return {"configurable": conf}


def _checkpoint(saver: ChatMemoryRedisSaver, step: int, cid: str | None = None) -> tuple[Checkpoint, Any]:
    cp = empty_checkpoint()
    cp["id"] = cid or str(uuid6(clock_seq=step))
    cp["channel_values"] = {"messages": [f"message {step}"], "step": step}
    cp["channel_versions"] = {"messages": saver.get_next_version(str(step), None), "step": str(step + 1)}
    return cp, cp["channel_versions"]


def _older_than(cid: str) -> str:
    """An id that sorts before ``cid`` (a put out of id order)."""
    older = "0" + cid[1:] if cid[0] != "0" else cid[:-1] + "0"
    assert older < cid
    return older


def _write_thread(saver: ChatMemoryRedisSaver, thread: str, *, steps: int = 3, ns: str = "") -> Any:
    """``steps`` checkpoints, each with pending writes; returns the config of the last."""
    stored = None
    for step in range(steps):
        cp, versions = _checkpoint(saver, step)
        stored = saver.put(
            _config(thread, ns), cp, {"source": "loop", "step": step, "run_id": "r1"}, versions
        )
        saver.put_writes(stored, [("messages", f"pending {step}"), ("step", step)], f"task-{step}")
    return stored


def _redis_saver(saver: Any) -> ChatMemoryRedisSaver:
    assert isinstance(saver, ChatMemoryRedisSaver)
    return saver


@pytest.mark.parametrize("key", REDIS_KEYS)
def test_get_tuple_latest_or_given_takes_at_most_two_round_trips(
    key: str, memory: MemoryFactory, sends: Sends
) -> None:
    saver = _redis_saver(checkpointer_for(memory(key).binding))
    thread = f"t-{uuid4().hex[:8]}"
    stored = _write_thread(saver, thread)
    _write_thread(saver, thread, steps=2, ns="tools:1")  # another namespace's newer ids stay apart
    saver.get_tuple(_config(thread))  # connections and the slot map are set up before counting
    for config in (_config(thread), stored):
        before = sends.count
        tup = saver.get_tuple(config)
        assert sends.count - before <= 2, config
        assert (
            tup is not None
            and tup.config["configurable"]["checkpoint_id"] == stored["configurable"]["checkpoint_id"]
        )
        assert tup.checkpoint["channel_values"] == {"messages": ["message 2"], "step": 2}
        assert sorted(w[1:] for w in tup.pending_writes or []) == [("messages", "pending 2"), ("step", 2)]
    saver.close()


@pytest.mark.parametrize("key", REDIS_KEYS)
async def test_aget_tuple_latest_or_given_takes_at_most_two_round_trips(
    key: str, memory: MemoryFactory, sends: Sends
) -> None:
    saver = _redis_saver(await acheckpointer_for(memory(key).binding))
    thread = f"t-{uuid4().hex[:8]}"
    stored = None
    for step in range(3):
        cp, versions = _checkpoint(saver, step)
        stored = await saver.aput(_config(thread), cp, {"source": "loop", "step": step}, versions)
        await saver.aput_writes(stored, [("messages", f"pending {step}")], f"task-{step}")
    await saver.aget_tuple(_config(thread))
    for config in (_config(thread), stored):
        before = sends.count
        tup = await saver.aget_tuple(config)
        assert sends.count - before <= 2, config
        assert tup is not None and tup.checkpoint["channel_values"] == {"messages": ["message 2"], "step": 2}
        assert [w[1:] for w in tup.pending_writes or []] == [("messages", "pending 2")]
    await saver.aclose()


@pytest.mark.parametrize("key", REDIS_KEYS)
def test_a_latest_read_the_first_round_trip_cannot_settle_costs_one_more_and_is_still_right(
    key: str, memory: MemoryFactory, sends: Sends
) -> None:
    mem = memory(key)
    saver = _redis_saver(checkpointer_for(mem.binding))
    thread = f"t-{uuid4().hex[:8]}"
    keys = thread_keys(mem.binding.key_prefix, thread)
    stored = _write_thread(saver, thread)
    saver.get_tuple(_config(thread))

    def latest_read() -> tuple[Any, int]:
        before = sends.count
        tup = saver.get_tuple(_config(thread))
        return tup, sends.count - before

    # A thread written before put kept the copy.
    mem.admin.hdel(keys.cp, latest_field(""))
    tup, trips = latest_read()
    assert trips == 3
    assert (
        tup is not None
        and tup.config["configurable"]["checkpoint_id"] == stored["configurable"]["checkpoint_id"]
    )
    assert sorted(w[1:] for w in tup.pending_writes or []) == [("messages", "pending 2"), ("step", 2)]

    # More pending writes on the latest checkpoint than the window holds.
    many = [("messages", f"write {i}") for i in range(WRITES_WINDOW + 5)]
    saver.put_writes(stored, many, "task-many")
    tup, trips = latest_read()
    assert trips == 3
    assert tup is not None and len(tup.pending_writes or []) == 2 + len(many)

    # A put out of id order: the copy holds an older checkpoint than the latest id.
    older, versions = _checkpoint(saver, 9, cid=_older_than(stored["configurable"]["checkpoint_id"]))
    saver.put(_config(thread), older, {"source": "loop", "step": 9}, versions)
    tup, trips = latest_read()
    assert trips == 3
    assert (
        tup is not None
        and tup.config["configurable"]["checkpoint_id"] == stored["configurable"]["checkpoint_id"]
    )
    saver.close()


@pytest.mark.parametrize("key", REDIS_KEYS)
def test_deleting_a_runs_latest_checkpoint_or_pruning_leaves_no_copy_of_it(
    key: str, memory: MemoryFactory
) -> None:
    mem = memory(key)
    saver = _redis_saver(checkpointer_for(mem.binding))
    thread = f"t-{uuid4().hex[:8]}"
    first, versions = _checkpoint(saver, 0)
    kept = saver.put(_config(thread), first, {"source": "loop", "step": 0, "run_id": "keep"}, versions)
    last, versions = _checkpoint(saver, 1)
    saver.put(_config(thread), last, {"source": "loop", "step": 1, "run_id": "gone"}, versions)
    cp_key = saver.keys(thread).cp

    saver.delete_for_runs(["gone"])
    assert mem.admin.hget(cp_key, latest_field("")) is None
    assert not any(last["id"].encode() in v for v in mem.admin.hgetall(cp_key).values())
    tup = saver.get_tuple(_config(thread))
    assert (
        tup is not None
        and tup.config["configurable"]["checkpoint_id"] == kept["configurable"]["checkpoint_id"]
    )

    # Prune keeps the latest id; a copy of an older checkpoint put after it goes with that one.
    older, versions = _checkpoint(saver, 5, cid=_older_than(first["id"]))
    saver.put(_config(thread), older, {"source": "loop", "step": 5}, versions)
    saver.prune([thread])
    fields = set(mem.admin.hkeys(cp_key))
    assert fields == {f"\x00{first['id']}".encode()}
    tup = saver.get_tuple(_config(thread))
    assert tup is not None and tup.checkpoint["id"] == first["id"]
    saver.close()
