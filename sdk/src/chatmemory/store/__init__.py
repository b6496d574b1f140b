"""LangGraph stores (long-term agent memory, ``BaseStore``) from a ChatMemory binding.

``ChatMemory.store()`` / ``astore()`` call :func:`store_for` / :func:`astore_for`; applications
may also call them with a :class:`~chatmemory.Binding`::

    store = store_for(binding, index={"dims": 1536, "embed": embeddings, "fields": ["text"]})
    agent = create_agent(model, tools, store=store)

- Redis bindings (Redis 7/8, Valkey, Redis Cluster) give a :class:`ChatMemoryRedisStore`: plain
  hashes and sorted sets under ``<key_prefix>store:`` (layout in :mod:`chatmemory.store.redis`).
- TiDB / MySQL / MariaDB bindings give a ``ChatMemorySQLStore`` on the tables the operator created.
- Kafka bindings raise :class:`~chatmemory.errors.NotSupported`: a store reads items back by key
  and searches them, which a log cannot do without replaying it.

``index`` is LangGraph's ``IndexConfig`` (semantic search), ``ttl`` its ``TTLConfig`` (item expiry
in minutes, ``refresh_on_read``). The binding's ``ttl_seconds`` (the chat history's retention) does
not apply to store items: they live until deleted or until their own ``ttl``. The semantics shared
by every backend are in :mod:`chatmemory.store._common` and docs/store.md.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import TYPE_CHECKING, Any, Final

from chatmemory._connect import Timeouts, TimeoutSpec, async_redis_client, redis_client, require
from chatmemory.contract import BackendKind, Binding
from chatmemory.errors import NotSupported
from chatmemory.store.redis import STORE_REDIS_COMMANDS

if TYPE_CHECKING:
    from langgraph.store.base import BaseStore, IndexConfig, TTLConfig

    from chatmemory.store._redis_store import ChatMemoryRedisStore

__all__ = [
    "KAFKA_NOT_SUPPORTED",
    "STORE_REDIS_COMMANDS",
    "ChatMemoryRedisStore",
    "ChatMemorySQLStore",
    "astore_for",
    "store_for",
]

#: The store classes and their modules, imported on first use (they need the ``langgraph`` extra;
#: the Redis command list, read by the operator, does not).
_STORES: Final = {
    "ChatMemoryRedisStore": "chatmemory.store._redis_store",
    "ChatMemorySQLStore": "chatmemory.store._sql_store",
}


def _store_class(name: str) -> Any:
    require("langgraph.store.base", "langgraph")
    return getattr(importlib.import_module(_STORES[name]), name)


def __getattr__(name: str) -> Any:
    if name in _STORES:
        return _store_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


KAFKA_NOT_SUPPORTED = (
    "a Kafka ChatMemory cannot hold a LangGraph store: a store reads items back by namespace and "
    "key and searches them, which a Kafka log only allows by replaying it. Use a Redis (Redis, "
    "Valkey, Redis Cluster) or TiDB (TiDB, MySQL, MariaDB) ChatMemory for the store "
    "(memory.store()), and keep this Kafka memory for chat history (memory.history(session_id))."
)


def store_for(
    binding: Binding,
    *,
    index: IndexConfig | None = None,
    ttl: TTLConfig | None = None,
    timeout: TimeoutSpec = None,
    **options: Any,
) -> BaseStore:
    """A LangGraph store on the binding's backend, with its credentials, TLS and prefix or tables.

    ``options`` go to the store's constructor. ``timeout``: the clients' connect and operation
    timeouts (seconds, or ``Timeouts``; default 5 s and 10 s). The store owns its clients: call
    ``close()`` (or ``await aclose()``) when done. No I/O happens here, except on a Redis Cluster,
    whose client reads the slot map when it is built (:func:`astore_for` does that off the loop).
    """
    timeouts = Timeouts.of(timeout)
    if binding.backend is BackendKind.REDIS:
        return _build_redis_store(binding, redis_client(binding, timeouts), index, ttl, options, timeouts)
    if binding.backend is BackendKind.TIDB:
        require("pymysql", "tidb")
        sql_store: Any = _store_class("ChatMemorySQLStore")
        built: BaseStore = sql_store.from_binding(binding, index=index, ttl=ttl, timeouts=timeouts, **options)
        return built
    if binding.backend is BackendKind.KAFKA:
        raise NotSupported(KAFKA_NOT_SUPPORTED)
    raise NotSupported(f"no store for backend {binding.backend!r}")  # pragma: no cover


async def astore_for(
    binding: Binding,
    *,
    index: IndexConfig | None = None,
    ttl: TTLConfig | None = None,
    timeout: TimeoutSpec = None,
    **options: Any,
) -> BaseStore:
    """:func:`store_for` for async code (the Redis store's async methods use redis.asyncio).

    A Redis Cluster's sync client reads the slot map when it is built, so that happens in a worker
    thread here rather than on the event loop.
    """
    timeouts = Timeouts.of(timeout)
    if binding.backend is BackendKind.REDIS and binding.cluster:
        client = await asyncio.to_thread(redis_client, binding, timeouts)
        return _build_redis_store(binding, client, index, ttl, options, timeouts)
    return store_for(binding, index=index, ttl=ttl, timeout=timeouts, **options)


def _build_redis_store(
    binding: Binding,
    client: Any,
    index: IndexConfig | None,
    ttl: TTLConfig | None,
    options: dict[str, Any],
    timeouts: Timeouts,
) -> ChatMemoryRedisStore:
    store: type[ChatMemoryRedisStore] = _store_class("ChatMemoryRedisStore")
    return store(
        client,
        aclient=async_redis_client(binding, timeouts),  # no I/O until first used, on the caller's loop
        prefix=binding.key_prefix,
        index=index,
        ttl=ttl,
        owns_clients=True,
        **options,
    )
