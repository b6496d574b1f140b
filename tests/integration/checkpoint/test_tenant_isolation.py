"""Issue 13, item 4: no memory's Redis user can list another tenant's keys.

The memory is provisioned exactly as the operator does (``RedisBackend().ensure``: the ACL user, its
key pattern and command list), on Redis 7, Valkey and the Redis Cluster. With the binding's
credentials, SCAN, KEYS, RANDOMKEY and the other keyless commands that name keys or clients are
refused, while the checkpointer lists threads across the memory (from its thread index), deletes
threads and runs, and the chat histories work.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from chatmemory import ChatMemory
from chatmemory._connect import redis_client
from chatmemory.checkpoint import ChatMemoryRedisSaver, acheckpointer_for, checkpointer_for
from chatmemory.contract import Binding
from chatmemory.errors import BackendError
from chatmemory_operator.backends.base import DeletionPolicy
from chatmemory_operator.backends.redis import RedisBackend, RedisConnection
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.base import empty_checkpoint
from redis.cluster import ClusterNode, RedisCluster

from tests.integration.operator.conftest import redis_plan, redis_store
from tests.support.platform import Platform

TARGETS = ["REDIS_URL", "VALKEY_URL", "REDIS_CLUSTER_NODES"]


@pytest.fixture(params=TARGETS)
def provisioned(
    request: pytest.FixtureRequest, platform: Platform
) -> Iterator[tuple[RedisConnection, Binding]]:
    """A memory's ACL user and binding from the operator's backend; user and keys removed after."""
    store = redis_store(platform, request.param)
    backend = RedisBackend()
    plan = redis_plan()
    try:
        binding = backend.ensure(store, plan, uuid.uuid4().hex)
        assert binding.isolated and binding.username == plan.username
        yield store, binding
    finally:
        backend.delete(store, plan, DeletionPolicy.DELETE)
        backend.close()


def admin_client(store: RedisConnection) -> redis.Redis | RedisCluster:
    kwargs: dict[str, Any] = {"username": store.admin_username, "password": store.admin_password}
    if store.cluster:
        return RedisCluster(startup_nodes=[ClusterNode(store.host, store.port)], **kwargs)
    return redis.Redis(host=store.host, port=store.port, **kwargs)


def _config(thread: str) -> Any:
    return {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}


def _threads(saver: ChatMemoryRedisSaver) -> list[str]:
    return sorted({t.config["configurable"]["thread_id"] for t in saver.list(None)})


def test_the_memory_user_cannot_list_any_key_or_client(provisioned: tuple[RedisConnection, Binding]) -> None:
    _store, binding = provisioned
    client = redis_client(binding)
    try:
        client.ping()  # the credentials work
        refused: dict[str, Callable[[], Any]] = {
            "SCAN": lambda: client.scan(0),
            "SCAN MATCH <prefix>*": lambda: list(client.scan_iter(match=f"{binding.key_prefix}*")),
            "KEYS": lambda: client.keys("*"),
            "RANDOMKEY": lambda: client.randomkey(),
            "DBSIZE": lambda: client.dbsize(),
            "CLIENT LIST": lambda: client.client_list(),
            "INFO keyspace": lambda: client.info("keyspace"),
        }
        allowed = []
        for name, call in refused.items():
            try:
                call()
                allowed.append(name)
            except redis.exceptions.NoPermissionError:
                pass
        assert allowed == []
    finally:
        client.close()


def test_the_checkpointer_lists_and_deletes_threads_and_the_histories_work_without_scan(
    provisioned: tuple[RedisConnection, Binding],
) -> None:
    _store, binding = provisioned
    saver = checkpointer_for(binding)
    assert isinstance(saver, ChatMemoryRedisSaver)
    with saver:
        for t in ("a", "b{1}", "c"):
            saver.put(_config(t), empty_checkpoint(), {"step": 0, "run_id": f"run-{t}"}, {})
        assert _threads(saver) == ["a", "b{1}", "c"]
        saver.delete_thread("b{1}")
        assert _threads(saver) == ["a", "c"]
        saver.delete_for_runs(["run-c"])
        assert saver.get_tuple(_config("c")) is None
        assert saver.get_tuple(_config("a")) is not None
        saver.copy_thread("a", "d")
        assert _threads(saver) == ["a", "d"]
    with ChatMemory(binding) as memory:
        history = memory.history("session-1")
        history.add_messages([HumanMessage("hi"), AIMessage("hello")])
        assert [m.content for m in memory.history("session-1").messages] == ["hi", "hello"]
        history.clear()
        assert memory.history("session-1").messages == []


async def test_the_async_checkpointer_lists_and_deletes_threads_without_scan(
    provisioned: tuple[RedisConnection, Binding],
) -> None:
    _store, binding = provisioned
    saver = await acheckpointer_for(binding)
    assert isinstance(saver, ChatMemoryRedisSaver)
    async with saver:
        for t in ("x", "y"):
            await saver.aput(_config(t), empty_checkpoint(), {"step": 0}, {})
        listed = sorted({t.config["configurable"]["thread_id"] async for t in saver.alist(None)})
        assert listed == ["x", "y"]
        await saver.adelete_thread("x")
        assert [t.config["configurable"]["thread_id"] async for t in saver.alist(None)] == ["y"]
        assert [t async for t in saver.alist(None, limit=0)] == []


def test_an_admin_indexes_threads_written_before_the_index_once(
    provisioned: tuple[RedisConnection, Binding],
) -> None:
    store, binding = provisioned
    saver = checkpointer_for(binding)
    assert isinstance(saver, ChatMemoryRedisSaver)
    admin = admin_client(store)
    with saver:
        for t in ("old-1", "old-2", "new"):
            saver.put(_config(t), empty_checkpoint(), {"step": 0}, {})
        admin.zrem(saver.index, "old-1", "old-2")  # as if written by chatmemory 0.1 (no index)
        assert _threads(saver) == ["new"]
        assert saver.index_existing_threads(admin) == 3
        assert _threads(saver) == ["new", "old-1", "old-2"]
        with pytest.raises(BackendError, match="permission"):
            saver.index_existing_threads(redis_client(binding))  # the memory's user may not SCAN
    admin.close()
