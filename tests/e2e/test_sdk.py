"""The SDK path: ``chatmemory.connect`` reads a memory's Secret from the API and round-trips messages."""

from __future__ import annotations

from collections.abc import Iterator

import chatmemory
import pytest
from langchain_core.messages import AIMessage, HumanMessage

from tests.e2e.conftest import E2E, STORE_KEYS, uid


@pytest.fixture(scope="module")
def sdk_memories(e2e: E2E) -> Iterator[dict[str, str]]:
    with e2e.ready_memories("sdk", STORE_KEYS, deletionPolicy="Delete") as names:
        yield names


@pytest.mark.parametrize("key", STORE_KEYS)
def test_connect_reads_the_binding_and_round_trips_messages(
    e2e: E2E, sdk_memories: dict[str, str], key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", e2e.platform["KUBECONFIG"])
    monkeypatch.delenv("SERVICE_BINDING_ROOT", raising=False)
    with chatmemory.connect(sdk_memories[key], namespace=e2e.namespace) as memory:
        assert memory.backend.value == e2e.stores[key].kind
        history = memory.history(f"user-{uid()}")
        history.add_messages([HumanMessage("hi"), AIMessage("hello, how can I help?")])
        assert [m.content for m in history.messages] == ["hi", "hello, how can I help?"]
