"""A deterministic tool-calling chat model and a tool, for create_agent runs in tests and subprocesses.

The model is stateless (its answer depends only on the conversation), so a second process that
builds the same agent reads and continues the same thread. Run as a module it is that second
process: ``python -m tests.integration.checkpoint.agent_support`` reads a binding (JSON of the
Secret's keys) from ``CHATMEMORY_TEST_BINDING`` (or connects to the ChatMemory named by
``CHATMEMORY_TEST_MEMORY`` in ``CHATMEMORY_TEST_NAMESPACE``), the thread id from
``CHATMEMORY_TEST_THREAD``, and prints the thread's messages as JSON lines
``{"type": ..., "content": ..., "tool_calls": n}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

from langchain.agents import create_agent
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool, tool


@tool
def lookup_order(order_id: str) -> str:
    """Look up an order's status by id."""
    return f"order {order_id} has shipped"


class ScriptedChatModel(BaseChatModel):
    """A chat model whose answer is a pure function of the conversation (:meth:`reply`); tools bound
    to it are accepted and ignored, since the script names the tool calls itself."""

    @property
    def _llm_type(self) -> str:
        return "scripted-chat-model"

    def bind_tools(
        self, tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool], **kwargs: Any
    ) -> Runnable[Any, BaseMessage]:
        return self

    def reply(self, messages: list[BaseMessage]) -> AIMessage:
        raise NotImplementedError

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        return ChatResult(generations=[ChatGeneration(message=self.reply(messages))])


class ScriptedToolModel(ScriptedChatModel):
    """Asks for ``lookup_order`` after each user turn, then answers with the tool's result."""

    def reply(self, messages: list[BaseMessage]) -> AIMessage:
        last = messages[-1]
        turn = sum(isinstance(m, HumanMessage) for m in messages)
        if isinstance(last, ToolMessage):
            return AIMessage(content=f"turn {turn}: {last.content}", id=f"ai-final-{turn}")
        order = str(last.content).split()[-1]
        return AIMessage(
            content="",
            id=f"ai-call-{turn}",
            tool_calls=[{"name": "lookup_order", "args": {"order_id": order}, "id": f"call-{turn}"}],
        )


def build_agent(checkpointer: Any) -> Any:
    return create_agent(ScriptedToolModel(), [lookup_order], checkpointer=checkpointer)


def summary(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    return [
        {"type": m.type, "content": m.content, "tool_calls": len(getattr(m, "tool_calls", []) or [])}
        for m in messages
    ]


def main() -> None:
    thread = os.environ["CHATMEMORY_TEST_THREAD"]
    if "CHATMEMORY_TEST_MEMORY" in os.environ:  # e2e: the memory's Secret, read from the API
        import chatmemory

        memory = chatmemory.connect(
            os.environ["CHATMEMORY_TEST_MEMORY"], namespace=os.environ["CHATMEMORY_TEST_NAMESPACE"]
        )
        saver = memory.checkpointer()
    else:
        from chatmemory.checkpoint import checkpointer_for
        from chatmemory.contract import Binding

        binding = Binding.from_mapping(json.loads(os.environ["CHATMEMORY_TEST_BINDING"]), source="env")
        saver = checkpointer_for(binding)
    try:
        state = build_agent(saver).get_state({"configurable": {"thread_id": thread}})
        for row in summary(state.values.get("messages", [])):
            print(json.dumps(row))
    finally:
        saver.close()


if __name__ == "__main__":
    main()
