"""create_agent with the binding's checkpointer: two turns on one thread, read back by a new process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from chatmemory.checkpoint import acheckpointer_for, checkpointer_for
from langchain_core.messages import HumanMessage

from tests.integration.checkpoint.agent_support import build_agent, summary
from tests.integration.checkpoint.conftest import Memory, MemoryFactory
from tests.support.agent import read_in_new_process

BACKENDS = ["REDIS_URL", "VALKEY_URL", "REDIS_CLUSTER_NODES", "TIDB_URL", "MARIADB_URL"]

EXPECTED = [
    {"type": "human", "content": "where is order A1", "tool_calls": 0},
    {"type": "ai", "content": "", "tool_calls": 1},
    {"type": "tool", "content": "order A1 has shipped", "tool_calls": 0},
    {"type": "ai", "content": "turn 1: order A1 has shipped", "tool_calls": 0},
    {"type": "human", "content": "and order B2", "tool_calls": 0},
    {"type": "ai", "content": "", "tool_calls": 1},
    {"type": "tool", "content": "order B2 has shipped", "tool_calls": 0},
    {"type": "ai", "content": "turn 2: order B2 has shipped", "tool_calls": 0},
]


def read_back_in_new_process(mem: Memory, thread: str) -> list[dict[str, Any]]:
    env = {
        "CHATMEMORY_TEST_BINDING": json.dumps(mem.binding.to_secret_data()),
        "CHATMEMORY_TEST_THREAD": thread,
    }
    return read_in_new_process(env, "-W", "error")


@pytest.mark.parametrize("key", BACKENDS)
def test_an_agents_two_turns_are_read_back_by_a_new_process(key: str, memory: MemoryFactory) -> None:
    mem = memory(key, ttl_seconds=600)
    saver = checkpointer_for(mem.binding)
    agent = build_agent(saver)
    thread = f"user-{uuid4().hex[:8]}"
    config: Any = {"configurable": {"thread_id": thread}}
    agent.invoke({"messages": [HumanMessage("where is order A1")]}, config)
    result = agent.invoke({"messages": [HumanMessage("and order B2")]}, config)
    assert summary(result["messages"]) == EXPECTED
    assert read_back_in_new_process(mem, thread) == EXPECTED
    tool_call = result["messages"][5].tool_calls[0]
    assert (tool_call["name"], tool_call["args"], tool_call["id"]) == (
        "lookup_order",
        {"order_id": "B2"},
        "call-2",
    )
    saver.close()


@pytest.mark.parametrize("key", ["REDIS_URL", "TIDB_URL"])
async def test_an_async_agent_continues_a_thread_a_sync_agent_started(
    key: str, memory: MemoryFactory
) -> None:
    mem = memory(key, ttl_seconds=600)
    thread = f"user-{uuid4().hex[:8]}"
    config: Any = {"configurable": {"thread_id": thread}}
    sync_saver = checkpointer_for(mem.binding)
    build_agent(sync_saver).invoke({"messages": [HumanMessage("where is order A1")]}, config)
    sync_saver.close()
    saver = await acheckpointer_for(mem.binding)
    agent = build_agent(saver)
    result = await agent.ainvoke({"messages": [HumanMessage("and order B2")]}, config)
    assert summary(result["messages"]) == EXPECTED
    history = [s async for s in agent.aget_state_history(config)]
    assert len(history) >= 8
    await saver.aclose()  # type: ignore[attr-defined]


def test_a_tls_binding_checkpoints_over_tls_with_the_bindings_ca(platform: Any) -> None:
    from urllib.parse import urlsplit

    from chatmemory.contract import BackendKind, Binding

    u = urlsplit(platform["REDIS_TLS_URL"])
    binding = Binding(
        backend=BackendKind.REDIS,
        provider="redis",
        host=u.hostname or "",
        port=u.port or 0,
        username=u.username or "",
        password=u.password or "",
        tls=True,
        ca_cert=Path(platform["REDIS_TLS_CA_FILE"]).read_text(),
        key_prefix=f"cmtest:{uuid4().hex[:10]}:",
        ttl_seconds=60,
    )
    saver = checkpointer_for(binding)
    thread = f"user-{uuid4().hex[:8]}"
    config: Any = {"configurable": {"thread_id": thread}}
    try:
        result = build_agent(saver).invoke({"messages": [HumanMessage("where is order A1")]}, config)
        assert summary(result["messages"]) == EXPECTED[:4]
        assert saver.client is not None  # type: ignore[attr-defined]
        assert saver.client.connection_pool.connection_class.__name__ == "SSLConnection"  # type: ignore[attr-defined]
    finally:
        saver.delete_thread(thread)
        saver.close()  # type: ignore[attr-defined]
