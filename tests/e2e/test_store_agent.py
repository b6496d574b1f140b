"""Long-term agent memory end to end: a ChatMemory created through the API, ``memory.store()`` from
its Secret, and ``create_agent`` with a fake tool-calling model and LangMem's memory tools. The agent
saves a fact in one thread and finds it by meaning in another thread; another user's fact, saved
the same way, is never found for this user.

Kafka memories refuse the store with NotSupported naming the backends that serve it.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any

import pytest

pytest.importorskip("chatmemory_operator.handlers", reason="the operator's handlers are not importable")

import chatmemory
import langmem
from chatmemory.errors import NotSupported
from langchain.agents import create_agent
from langchain_core.embeddings import Embeddings
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from tests.e2e.conftest import E2E, uid
from tests.integration.checkpoint.agent_support import ScriptedChatModel

STORE_KEYS = ("redis7", "cluster", "tidb", "mariadb")
DIMS = 64


class WordEmbeddings(Embeddings):
    """Bag of words hashed into DIMS dimensions, normalised: texts that share words are close."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_query(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        vec = [0.0] * DIMS
        for word in re.findall(r"[a-z0-9]+", text.lower()):
            vec[int(hashlib.sha256(word.encode()).hexdigest(), 16) % DIMS] += 1.0
        norm = math.sqrt(sum(v * v for v in vec)) or 1.0
        return [v / norm for v in vec]


class MemoryToolModel(ScriptedChatModel):
    """``remember: <fact>`` calls manage_memory, ``recall: <query>`` calls search_memory; a tool's
    result is answered with its content."""

    def reply(self, messages: list[BaseMessage]) -> AIMessage:
        last = messages[-1]
        if isinstance(last, ToolMessage):
            return AIMessage(content=str(last.content))
        verb, _, text = str(last.content).partition(": ")
        name, args = (
            ("manage_memory", {"content": text, "action": "create"})
            if verb == "remember"
            else ("search_memory", {"query": text, "limit": 3})
        )
        return AIMessage(content="", tool_calls=[{"name": name, "args": args, "id": f"call-{uid()}"}])


def build_agent(store: Any) -> Any:
    namespace = ("memories", "{user_id}")
    tools = [
        langmem.create_manage_memory_tool(namespace=namespace),
        langmem.create_search_memory_tool(namespace=namespace),
    ]
    return create_agent(MemoryToolModel(), tools, store=store)


def say(agent: Any, text: str, *, user: str) -> str:
    config: Any = {"configurable": {"thread_id": f"thread-{uid()}", "user_id": user}}
    result = agent.invoke({"messages": [HumanMessage(text)]}, config)
    return str(result["messages"][-1].content)


@pytest.mark.parametrize("key", STORE_KEYS)
def test_an_agent_finds_in_a_new_thread_what_it_saved_in_another_and_never_another_users(
    e2e: E2E, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", e2e.platform["KUBECONFIG"])
    monkeypatch.delenv("SERVICE_BINDING_ROOT", raising=False)
    name = f"store-{key}-{uid()}"
    e2e.create_memory(name, e2e.stores[key].name, deletionPolicy="Delete")
    try:
        e2e.wait_memory(name, timeout=90)
        with chatmemory.connect(name, namespace=e2e.namespace) as memory:
            store = memory.store(index={"dims": DIMS, "embed": WordEmbeddings()})
            try:
                agent = build_agent(store)
                say(agent, "remember: the user drinks green tea every morning", user="u42")
                say(agent, "remember: the user is allergic to peanuts", user="u7")
                found = say(agent, "recall: what does the user drink", user="u42")
                assert "green tea" in found
                assert "peanuts" not in found  # another user's namespace
                other = say(agent, "recall: allergic peanuts", user="u42")
                assert "peanuts" not in other
                items = store.search(("memories", "u42"), query="tea")
                assert [i.value["content"] for i in items] == ["the user drinks green tea every morning"]
            finally:
                store.close()
    finally:
        e2e.delete_memory(name, wait=False)


def test_a_kafka_memory_refuses_the_store_and_names_the_backends_that_serve_it(
    e2e: E2E, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", e2e.platform["KUBECONFIG"])
    monkeypatch.delenv("SERVICE_BINDING_ROOT", raising=False)
    name = f"store-kafka-{uid()}"
    e2e.create_memory(name, e2e.stores["kafka"].name, deletionPolicy="Delete")
    try:
        e2e.wait_memory(name, timeout=90)
        with (
            chatmemory.connect(name, namespace=e2e.namespace) as memory,
            pytest.raises(NotSupported, match=r"(?i)redis.*tidb|tidb.*redis"),
        ):
            memory.store()
    finally:
        e2e.delete_memory(name, wait=False)
