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

**Rotation.** A saver built from a binding that follows its Secret (``chatmemory.connect`` from a
mounted Secret or the API) opens each new connection with the credentials the Secret holds then
(the Redis credential provider, the SQL pools' opener). A pooled connection can outlive its
credentials: on TiDB/MySQL the previous user of a rotation is dropped when the grace period ends
and its open connections are refused. So ``get_tuple``, ``put``, ``put_writes`` and
``delete_thread`` (and their async twins) run once more when the server refused the credentials
or a privilege, with the Secret read again; the refused connection is not reused, and a refused
statement did not run (its transaction rolled back), so the write is applied once. ``list`` is
a generator and is not run again.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final, TypeVar

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
from chatmemory.contract import BackendKind, Binding, CredentialSource
from chatmemory.errors import BackendError, BindingError, NotSupported

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
        return _follow(binding, _build_sql_saver(binding, serde, timeouts, options), options)
    if binding.backend is BackendKind.KAFKA:
        raise NotSupported(KAFKA_NOT_SUPPORTED)
    raise NotSupported(f"no checkpointer for backend {binding.backend!r}")  # pragma: no cover


def _build_sql_saver(
    binding: Binding, serde: SerializerProtocol | None, timeouts: Timeouts, options: dict[str, Any]
) -> ChatMemorySQLSaver:
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
    built = saver(
        client,
        aclient=async_redis_client(binding, timeouts),  # no I/O until first used, on the caller's event loop
        prefix=binding.key_prefix,
        ttl_seconds=binding.ttl_seconds,
        serde=serde,
        owns_clients=True,
        **options,
    )
    return _follow(binding, built, options)


# -- savers that follow their Secret (see the module docstring) -------------------------------------

#: LangGraph's methods run once more after a refusal (each builds its operation anew).
_RETRIED: Final = ("get_tuple", "put", "put_writes", "delete_thread")
#: MySQL's refusals of a user or a privilege: access denied (1044, 1045), a command or a column
#: denied (1142, 1143), a privilege needed (1227).
_SQL_REFUSALS: Final = frozenset({1044, 1045, 1142, 1143, 1227})
#: Idle connections a SQL saver pools by default: each may speak for the previous user.
_DEFAULT_POOL: Final = 4


def _refused(e: BaseException) -> bool:
    """The server refused the credentials or a privilege (the error or one of its causes)."""
    seen: BaseException | None = e
    while seen is not None:
        args = getattr(seen, "args", ())
        if args and isinstance(args[0], int) and args[0] in _SQL_REFUSALS:
            return True
        if type(seen).__name__ == "AuthenticationError" or "WRONGPASS" in str(seen):
            return True
        seen = seen.__cause__
    return False


S = TypeVar("S")


def _follow(binding: Binding, saver: S, options: dict[str, Any]) -> S:
    """``saver``, its LangGraph methods run again after a refusal when ``binding`` follows its
    Secret: once per pooled connection that may still speak for the previous user, plus one."""
    source = binding.source
    if source is None:
        return saver
    attempts = int(options.get("pool_size", _DEFAULT_POOL)) + 2
    for name in _RETRIED:
        setattr(saver, name, _again(getattr(saver, name), source, attempts))
        setattr(saver, "a" + name, _aagain(getattr(saver, "a" + name), source, attempts))
    return saver


def _again(method: Callable[..., Any], source: CredentialSource, attempts: int) -> Callable[..., Any]:
    @functools.wraps(method)
    def run(*args: Any, **kwargs: Any) -> Any:
        for attempt in range(attempts):
            try:
                return method(*args, **kwargs)
            except BackendError as e:
                if attempt + 1 == attempts or not _refused(e):
                    raise
                source.refresh()
        raise AssertionError("unreachable")  # pragma: no cover

    return run


def _aagain(
    method: Callable[..., Coroutine[Any, Any, Any]], source: CredentialSource, attempts: int
) -> Callable[..., Coroutine[Any, Any, Any]]:
    @functools.wraps(method)
    async def run(*args: Any, **kwargs: Any) -> Any:
        for attempt in range(attempts):
            try:
                return await method(*args, **kwargs)
            except BackendError as e:
                if attempt + 1 == attempts or not _refused(e):
                    raise
                # Marks the source stale only; the next connection reads it, in a thread (the
                # async Redis client's credential provider, the async SQL pool's opener).
                source.refresh()
        raise AssertionError("unreachable")  # pragma: no cover

    return run
