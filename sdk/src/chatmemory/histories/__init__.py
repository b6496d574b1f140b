"""Per-backend history modules behind one small protocol, looked up lazily by backend kind.

Called by :mod:`chatmemory.memory` (``ChatMemory.history`` / ``checkpointer``). Each backend
module (``redis``, ``kafka``, ``tidb``) defines a *connector*: the pooled clients of one memory,
shared by every session and thread, built from a binding and closed once. Backend modules are
imported only when a binding of that kind is used, so ``pip install chatmemory[redis]`` is enough
for a Redis memory.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

from langchain_core.chat_history import BaseChatMessageHistory

from chatmemory.contract import BackendKind, Binding


class Connector(Protocol):
    """One memory's clients. ``history`` is cheap: no I/O until the history is used."""

    def history(self, session_id: str) -> BaseChatMessageHistory: ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...


_MODULES: dict[BackendKind, tuple[str, str]] = {
    BackendKind.REDIS: ("chatmemory.histories.redis", "RedisConnector"),
    BackendKind.KAFKA: ("chatmemory.histories.kafka", "KafkaConnector"),
    BackendKind.TIDB: ("chatmemory.histories.tidb", "TiDBConnector"),
}


def connector_for(binding: Binding, **options: Any) -> Connector:
    """Build the connector for ``binding``'s backend (``options`` go to its constructor)."""
    module, cls = _MODULES[binding.backend]
    connector: Connector = getattr(importlib.import_module(module), cls).from_binding(binding, **options)
    return connector
