"""chatmemory: durable, isolated LangChain chat memory from a ChatMemory binding.

Public API only; everything else is an implementation detail. ``__all__`` is pinned by
``tests/unit/test_public_api.py``. ``import chatmemory`` needs only langchain-core and pydantic: the
history classes, whose client libraries are optional extras (``redis``, ``kafka``, ``tidb``,
``streamlit``), are imported on first access through the module ``__getattr__``::

    import chatmemory

    memory = chatmemory.connect("support-bot")  # the binding: mounted Secret, env or Kubernetes API
    history = memory.history("user-42")  # a BaseChatMessageHistory
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from chatmemory.contract import CONTRACT_VERSION, BackendKind, Binding
from chatmemory.errors import (
    BackendError,
    BindingError,
    BindingNotFound,
    ChatMemoryError,
    MissingExtra,
    NotSupported,
)

if TYPE_CHECKING:
    from chatmemory.histories.kafka import KafkaChatMessageHistory
    from chatmemory.histories.memorystore import MemorystoreChatMessageHistory
    from chatmemory.histories.redis import RedisChatMessageHistory
    from chatmemory.histories.streamlit import StreamlitChatMessageHistory
    from chatmemory.histories.tidb import TiDBChatMessageHistory
    from chatmemory.memory import ChatMemory, connect, connect_url

#: Public name -> module defining it, imported on first access (so the operator, which imports
#: only the contract, does not load langchain-core).
_LAZY: dict[str, str] = {
    "ChatMemory": "chatmemory.memory",
    "connect": "chatmemory.memory",
    "connect_url": "chatmemory.memory",
    "RedisChatMessageHistory": "chatmemory.histories.redis",
    "MemorystoreChatMessageHistory": "chatmemory.histories.memorystore",
    "KafkaChatMessageHistory": "chatmemory.histories.kafka",
    "TiDBChatMessageHistory": "chatmemory.histories.tidb",
    "StreamlitChatMessageHistory": "chatmemory.histories.streamlit",
}

__all__ = [
    "CONTRACT_VERSION",
    "BackendError",
    "BackendKind",
    "Binding",
    "BindingError",
    "BindingNotFound",
    "ChatMemory",
    "ChatMemoryError",
    "KafkaChatMessageHistory",
    "MemorystoreChatMessageHistory",
    "MissingExtra",
    "NotSupported",
    "RedisChatMessageHistory",
    "StreamlitChatMessageHistory",
    "TiDBChatMessageHistory",
    "connect",
    "connect_url",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'chatmemory' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
