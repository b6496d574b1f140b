"""The Redis clients the SDK builds parse replies with hiredis (the ``redis`` extra installs it), over
RESP3, on Redis 7, Valkey, Redis 8, TLS and the Cluster, sync and asyncio; the history reads and
writes the same through it (the rest of the Redis history and checkpoint suites run on it too)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import redis.asyncio.cluster
import redis.cluster
from chatmemory import ChatMemory
from langchain_core.messages import AIMessage, HumanMessage
from redis._parsers import _AsyncHiredisParser, _HiredisParser
from redis.utils import HIREDIS_AVAILABLE

from tests.integration.sdk.conftest import uid


def connections(client: Any) -> list[Any]:
    """The open connections of a sync or asyncio client, standalone or cluster."""
    if isinstance(client, redis.asyncio.cluster.RedisCluster):
        return [c for n in client.get_nodes() for c in n._free]
    if isinstance(client, redis.cluster.RedisCluster):  # one pool per node
        pools = [n.redis_connection.connection_pool for n in client.get_nodes() if n.redis_connection]
        return [c for p in pools for c in p._available_connections]
    return list(client.connection_pool._available_connections)


def test_hiredis_is_installed_and_used_by_default() -> None:
    assert HIREDIS_AVAILABLE, "the redis extra installs hiredis; redis-py would parse in Python"


def test_every_client_parses_with_hiredis_over_resp3(make_memory: Callable[..., ChatMemory]) -> None:
    memory = make_memory()
    history = memory.history(f"p-{uid()}")
    turn = [HumanMessage("héllo", id="h1"), AIMessage("", tool_calls=[{"name": "f", "args": {}, "id": "c1"}])]
    history.add_messages(turn)
    assert history.messages == turn
    sync = connections(memory.connector.client)  # type: ignore[attr-defined]
    assert sync, "no pooled connection after a read"
    for conn in sync:
        assert isinstance(conn._parser, _HiredisParser), type(conn._parser)
        assert int(conn.protocol) == 3

    async def run() -> list[Any]:
        assert await history.aget_messages() == turn
        await history.aadd_messages([HumanMessage("async")])
        assert [m.text for m in await history.aget_messages()][-1] == "async"
        client = memory.connector.async_clients.get()  # type: ignore[attr-defined]
        found = connections(client)
        await memory.aclose()
        return found

    async_conns = asyncio.run(run())
    assert async_conns
    for conn in async_conns:
        assert isinstance(conn._parser, _AsyncHiredisParser), type(conn._parser)
        assert int(conn.protocol) == 3


@pytest.mark.parametrize("n", [1, 2500])
def test_large_and_unicode_replies_read_back_the_same(make_memory: Callable[..., ChatMemory], n: int) -> None:
    history = make_memory().history(f"big-{uid()}")
    msgs = [HumanMessage(f"{i} ✓ {'x' * (i % 300)}") for i in range(n)]
    history.add_messages(msgs)
    assert history.messages == msgs
    assert history.message_count() == n  # type: ignore[attr-defined]
