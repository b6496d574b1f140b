"""LangGraph checkpointers from a ChatMemory binding: agent memory on Redis, Valkey, Redis Cluster or TiDB.

``ChatMemory.checkpointer()`` / ``acheckpointer()`` call :func:`checkpointer_for` /
:func:`acheckpointer_for`; applications may also call them with a :class:`~chatmemory.Binding`::

    saver = checkpointer_for(binding)
    agent = create_agent(model, tools, checkpointer=saver)
    agent.invoke({"messages": [...]}, {"configurable": {"thread_id": "user-42"}})

- Redis bindings give a :class:`ChatMemoryRedisSaver` (plain hashes and sorted sets under the
  memory's key prefix, one cluster slot per thread, TTL on every key of a thread).
- TiDB / MySQL / MariaDB bindings give a :class:`ChatMemorySQLSaver` on the tables the operator
  created (``<checkpoint_table_prefix>checkpoints``, ``..._blobs``, ``..._writes``); it runs no DDL.
- Kafka bindings raise :class:`~chatmemory.errors.NotSupported`: a checkpointer reads checkpoints
  back by id, which a log cannot do without replaying it.

Both savers can also be built directly (a redis client or PyMySQL connection settings, a prefix and
a TTL) by users without a binding; the SQL saver then offers ``setup()`` to create its tables.
``serde`` is LangGraph's serializer protocol: the default is LangGraph's own ``JsonPlusSerializer``;
pass an ``EncryptedSerializer`` to encrypt everything the saver stores.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import TYPE_CHECKING, Any, Final

from chatmemory._connect import Timeouts, TimeoutSpec, async_redis_client, mysql_kwargs, redis_client, require
from chatmemory.checkpoint.redis import EXTRA_REDIS_COMMANDS, REDIS_COMMANDS
from chatmemory.checkpoint.sql import (
    DEFAULT_TABLE_PREFIX,
    REQUIRED_GRANTS,
    checkpoint_table_ddl,
    checkpoint_table_names,
    checkpoint_ttl_alter_sql,
    checkpoint_ttl_event_sql,
)
from chatmemory.contract import BackendKind, Binding
from chatmemory.errors import BindingError, NotSupported

if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.checkpoint.serde.base import SerializerProtocol

    from chatmemory.checkpoint._redis_saver import ChatMemoryRedisSaver
    from chatmemory.checkpoint._sql_saver import ChatMemorySQLSaver

__all__ = [
    "DEFAULT_TABLE_PREFIX",
    "EXTRA_REDIS_COMMANDS",
    "KAFKA_NOT_SUPPORTED",
    "REDIS_COMMANDS",
    "REQUIRED_GRANTS",
    "ChatMemoryRedisSaver",
    "ChatMemorySQLSaver",
    "acheckpointer_for",
    "checkpoint_table_ddl",
    "checkpoint_table_names",
    "checkpoint_ttl_alter_sql",
    "checkpoint_ttl_event_sql",
    "checkpointer_for",
]

#: The saver classes and their modules, imported on first use: they need the ``langgraph`` extra,
#: while the DDL and the Redis command list (used by the operator) do not. This is the package's
#: only way to them: ``from chatmemory.checkpoint import ChatMemoryRedisSaver`` and the factories.
_SAVERS: Final = {
    "ChatMemoryRedisSaver": "chatmemory.checkpoint._redis_saver",
    "ChatMemorySQLSaver": "chatmemory.checkpoint._sql_saver",
}


def _saver_class(name: str) -> Any:
    require("langgraph.checkpoint.base", "langgraph")
    return getattr(importlib.import_module(_SAVERS[name]), name)


def __getattr__(name: str) -> Any:
    if name in _SAVERS:
        return _saver_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


KAFKA_NOT_SUPPORTED = (
    "a Kafka ChatMemory cannot hold LangGraph checkpoints: a checkpointer reads checkpoints back "
    "by id and lists them newest first, which a Kafka log only allows by replaying it. Use a Redis "
    "or TiDB ChatMemory for checkpoints (memory.checkpointer()), and keep this Kafka memory for "
    "chat history (memory.history(session_id))."
)


def checkpointer_for(
    binding: Binding,
    *,
    serde: SerializerProtocol | None = None,
    timeout: TimeoutSpec = None,
    **options: Any,
) -> BaseCheckpointSaver[str]:
    """A checkpointer on the binding's backend, with its credentials, TLS, prefix or tables and TTL.

    ``options`` go to the saver's constructor (e.g. ``pool_size`` for the SQL saver). ``timeout``:
    the clients' connect and operation timeouts (seconds, or ``Timeouts``; default 5 s and 10 s).
    The saver owns its clients: call ``close()`` (or ``await aclose()``) when done. No I/O happens
    here.
    """
    timeouts = Timeouts.of(timeout)
    if binding.backend is BackendKind.REDIS:
        return _build_redis_saver(binding, redis_client(binding, timeouts), serde, options, timeouts)
    if binding.backend is BackendKind.TIDB:
        if not binding.checkpoint_table_prefix:
            raise BindingError(
                "this memory has no checkpoint tables (empty key 'checkpoint_table_prefix'): "
                "the operator that provisioned it predates checkpoints; upgrade it and let it "
                "reconcile the ChatMemory",
                key="checkpoint_table_prefix",
            )
        require("pymysql", "tidb")
        saver: type[ChatMemorySQLSaver] = _saver_class("ChatMemorySQLSaver")
        return saver(
            mysql_kwargs(binding, timeouts),
            table_prefix=binding.checkpoint_table_prefix,
            ttl_seconds=binding.ttl_seconds,
            serde=serde,
            **options,
        )
    if binding.backend is BackendKind.KAFKA:
        raise NotSupported(KAFKA_NOT_SUPPORTED)
    raise NotSupported(f"no checkpointer for backend {binding.backend!r}")  # pragma: no cover


async def acheckpointer_for(
    binding: Binding,
    *,
    serde: SerializerProtocol | None = None,
    timeout: TimeoutSpec = None,
    **options: Any,
) -> BaseCheckpointSaver[str]:
    """:func:`checkpointer_for` for async code (the Redis saver's async methods use redis.asyncio).

    A Redis Cluster's sync client reads the slot map when it is built, so that happens in a worker
    thread here rather than on the event loop.
    """
    timeouts = Timeouts.of(timeout)
    if binding.backend is BackendKind.REDIS and binding.cluster:
        client = await asyncio.to_thread(redis_client, binding, timeouts)
        return _build_redis_saver(binding, client, serde, options, timeouts)
    return checkpointer_for(binding, serde=serde, timeout=timeouts, **options)


def _build_redis_saver(
    binding: Binding,
    client: Any,
    serde: SerializerProtocol | None,
    options: dict[str, Any],
    timeouts: Timeouts,
) -> ChatMemoryRedisSaver:
    saver: type[ChatMemoryRedisSaver] = _saver_class("ChatMemoryRedisSaver")
    return saver(
        client,
        aclient=async_redis_client(binding, timeouts),  # no I/O until first used, on the caller's event loop
        prefix=binding.key_prefix,
        ttl_seconds=binding.ttl_seconds,
        serde=serde,
        owns_clients=True,
        **options,
    )
