"""Chat histories on Redis, Valkey and Redis Cluster: one list per session, one round trip per turn.

Used by applications directly (``chatmemory.RedisChatMessageHistory``, a drop-in for
``langchain_redis.RedisChatMessageHistory``'s constructor) and by :class:`chatmemory.ChatMemory`
through :class:`RedisConnector` (``memory.history(session_id)``), which shares one pooled client per
memory across every session and thread.

Layout (the operator's ACL for a memory grants exactly these commands on ``<key_prefix>*``):

- a session is one Redis LIST at ``<key_prefix>{<session_id>}``; the braces are a Redis Cluster
  *hash tag*, so every key of a session (today one) hashes to one slot and multi-key commands and
  transactions on a session stay legal on a cluster;
- each element is one message in :mod:`chatmemory._codec` form (LangChain's ``message_to_dict``
  JSON), appended with ``RPUSH``, so the list is in write order;
- ``add_messages`` is one ``MULTI RPUSH [LTRIM] [EXPIRE] EXEC`` transaction: atomic, one round trip,
  the TTL slides on every write (the session expires ``ttl`` seconds after its last write) and
  ``max_messages`` keeps the newest messages. (The asyncio client on a Redis Cluster writes the
  same ``MULTI ... EXEC`` by hand on one connection to the slot's primary: redis-py's async cluster
  transactions are not usable, and its plain pipeline resends redirected commands one at a time,
  which could apply half a turn and then send it again; see :meth:`RedisChatMessageHistory.aadd_messages`);
- ``messages`` is one ``LRANGE 0 -1``: the full history, never capped, atomic with respect to writers;
- with ``key_prefix=""`` the key is the session id verbatim, which is the Memorystore seed's layout
  (see :mod:`chatmemory.histories.memorystore`).

Errors from the server (authentication, ``NOPERM``, connection) are raised as
:class:`~chatmemory.errors.BackendError` with the redis-py exception as ``__cause__``; nothing is
swallowed. A server that cannot be reached or does not answer within the client's timeouts
(:class:`chatmemory._connect.Timeouts`) raises :class:`~chatmemory.errors.BackendUnavailable`.

Retries (redis-py's own are off, see :mod:`chatmemory._connect`): a read (``LRANGE``, ``LLEN``) is
retried with backoff after a refused or broken connection, within the operation timeout; a timeout
is not retried (the server had the whole timeout). A write (the turn's ``MULTI``/``EXEC``) is
retried only when its connection could not be opened, so it was never sent; once sent it is never
sent again, so a turn is applied at most once: a failure after sending raises
``BackendUnavailable`` with ``applied=None`` (the turn may be in the list). ``DEL`` is idempotent
and retried like a read.

**Redis Cluster failover**: a turn whose queued commands or ``EXEC`` a node answered with
``MOVED``, ``ASK``, ``TRYAGAIN`` or ``CLUSTERDOWN`` was discarded by the server, so it is retried
like a turn never sent; before each retry on a cluster the client reads the slot map again
(redis-py's transaction pipeline, with its retries off, refreshes it only on every fifth error), so
a turn waiting out a failover lands on the promoted replica within one backoff (at most 1.5 s) of
the promotion, if the operation timeout has not run out. A turn in flight when its primary died
raises ``BackendUnavailable`` with ``applied=None``, as on one server.

**Durability** (``wait_replicas``; the binding keys ``redis_wait_replicas`` and
``redis_wait_timeout_ms``, so ``connect_url(url, redis_wait_replicas=1)`` too): Redis replicates
asynchronously, so a turn the primary acknowledged can be lost when the primary dies before a
replica copied it. With ``wait_replicas=N`` a turn is ``MULTI ... EXEC`` followed by
``WAIT N <wait_timeout_ms>`` on the same connection, written in one round trip (``WAIT`` inside
the transaction would not block), and ``add_messages`` returns only when N replicas hold the
turn; fewer within the timeout raise :class:`NotReplicated` (``applied=True``: the turn *is* in
the session on the primary; do not send it again, it would be stored twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeAlias, TypeVar

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage, ToolMessage

from chatmemory import _codec
from chatmemory._connect import (
    Timeouts,
    TimeoutSpec,
    async_redis_client,
    backoff,
    no_retry,
    redis_client,
    require,
)
from chatmemory._redis_driver import aslot_pipeline
from chatmemory.contract import BackendKind, Binding
from chatmemory.errors import BackendError, BackendUnavailable, BindingError

require("redis", "redis")
import redis  # noqa: E402  (after the MissingExtra check)
import redis.asyncio  # noqa: E402
import redis.asyncio.cluster  # noqa: E402
import redis.cluster  # noqa: E402

#: The clients a history accepts: what the Memorystore seed takes, and their asyncio twins.
SyncClient: TypeAlias = redis.Redis | redis.cluster.RedisCluster
AsyncClient: TypeAlias = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster

DEFAULT_URL: Final = "redis://localhost:6379"
#: langchain_redis's default ``index_name``: passing it warns about nothing
LANGCHAIN_REDIS_INDEX: Final = "idx:chat_history"


def session_key(key_prefix: str, session_id: str) -> str:
    """The list holding ``session_id``: ``<key_prefix>{<session_id>}``, or the id alone for ``""``."""
    if not key_prefix:
        return session_id
    return f"{key_prefix}{{{session_id}}}"


def _describe(client: object) -> str:
    """``redis host:port`` or ``redis cluster host:port`` for error messages (never credentials)."""
    manager = getattr(client, "nodes_manager", None)
    if manager is not None:
        nodes = getattr(manager, "startup_nodes", None) or {}
        return f"redis cluster {next(iter(nodes), '?')}"
    pool = getattr(client, "connection_pool", None)
    kw = getattr(pool, "connection_kwargs", None) or {}
    return f"redis {kw.get('host', '?')}:{kw.get('port', '?')}"


#: What redis-py raises: its error family, and the cluster client's own (not a RedisError).
CLIENT_ERRORS: Final = (redis.RedisError, redis.exceptions.RedisClusterException)
T = TypeVar("T")
#: A cluster node's answers to a turn's queued commands or its EXEC that make the server discard
#: the transaction (the slot is served elsewhere, is moving, or nobody serves it), and the cluster
#: client's own refusal before sending: the turn was not applied, so it may be sent again.
NOT_APPLIED: Final = (
    redis.exceptions.AskError,  # MovedError is an AskError
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.SlotNotCoveredError,
)
#: Milliseconds a turn's WAIT blocks for its replicas when only ``wait_replicas`` is given.
DEFAULT_WAIT_TIMEOUT_MS: Final = 1000


class NotReplicated(BackendUnavailable):
    """A turn the primary applied but fewer replicas than ``wait_replicas`` confirmed in time.

    ``applied`` is True: the turn is in the session and readable; it may be lost only if the primary
    fails before a replica copies it. Do not write it again (it would be stored twice). ``replicas``
    says how many replicas confirmed it, ``wanted`` how many were asked for.
    """

    def __init__(self, message: str, *, replicas: int, wanted: int) -> None:
        super().__init__(message, applied=True)
        self.replicas = replicas
        self.wanted = wanted


def check_applied(replies: Sequence[Any]) -> None:
    """Check the replies of ``MULTI <turn> EXEC``: raise the first error, in the order received.

    A queued command the server refused (``MOVED``, ``TRYAGAIN``, ``CLUSTERDOWN``, ``NOPERM``) made
    it discard the whole transaction, and comes before EXEC's ``EXECABORT``, so the caller sees the
    reason (and retries a redirection, :data:`NOT_APPLIED`); an error inside EXEC's reply is raised
    too. A connection broken while reading leaves redis-py's error on every reply after it: the turn
    may have been applied, and that error is not retried.
    """
    *queued, executed = replies
    for reply in queued:
        if isinstance(reply, Exception):
            raise reply
    if isinstance(executed, Exception):
        raise executed
    if executed is None:  # no WATCH is sent, so the server never aborts on its own
        raise redis.exceptions.ResponseError("the transaction was aborted (EXEC returned nil)")
    for reply in executed:
        if isinstance(reply, Exception):
            raise reply


def check_waited(replies: Sequence[Any], *, wanted: int, timeout_ms: int, where: str, key: str) -> None:
    """Check the replies of ``MULTI <turn> EXEC WAIT``: raise the first refusal, or
    :class:`NotReplicated` when WAIT counted fewer than ``wanted`` replicas.

    A refused queued command (``MOVED``, ``NOPERM``) makes the server discard the transaction, and
    is raised as redis-py's error (the caller decides whether to retry); an error inside EXEC's
    reply too. A failed WAIT after an EXEC that succeeded is a :class:`NotReplicated`: the turn was
    applied.
    """
    *turn, acked = replies
    check_applied(turn)
    option = f"wait_replicas={wanted} (binding key redis_wait_replicas)"
    if isinstance(acked, Exception):
        raise NotReplicated(
            f"{where}: the turn on key {key!r} was written, but WAIT failed ({acked}); the memory's user "
            f"may lack WAIT (an operator older than {option}): it cannot be confirmed on a replica",
            replicas=0,
            wanted=wanted,
        )
    if int(acked) < wanted:
        raise NotReplicated(
            f"{where}: the turn on key {key!r} was written on the primary, but only {int(acked)} of "
            f"{wanted} replicas confirmed it within {timeout_ms} ms ({option}, redis_wait_timeout_ms="
            f"{timeout_ms}): it is readable and may be lost if the primary fails before a replica copies "
            "it; do not send it again (it would be stored twice). A replica is down or lagging: check "
            "the server, or lower the option",
            replicas=int(acked),
            wanted=wanted,
        )


def _is_auth(exc: BaseException) -> bool:
    msg = str(exc)
    return (
        isinstance(exc, redis.AuthenticationError)
        or "WRONGPASS" in msg
        or "invalid username" in msg
        or msg.startswith("NOAUTH")
    )


def _is_tls(exc: BaseException) -> bool:
    """A TLS failure (a certificate the binding's CA did not sign, a protocol mismatch): permanent."""
    msg = str(exc)
    return "CERTIFICATE_VERIFY_FAILED" in msg or "SSL" in msg


def _not_sent(exc: BaseException) -> bool:
    """True when redis-py failed opening the connection (``Error 111 connecting to h:p``): the
    command was never written to a socket, so sending it again cannot apply it twice."""
    return isinstance(exc, redis.ConnectionError) and not _is_auth(exc) and "connecting to" in str(exc)


def _retryable(exc: BaseException, *, write: bool) -> bool:
    """A refused or broken connection (not a timeout, not a server's refusal) that is safe to retry."""
    if _is_auth(exc) or _is_tls(exc) or isinstance(exc, redis.TimeoutError):
        return False
    if write:
        return _not_sent(exc) or isinstance(exc, NOT_APPLIED)
    return isinstance(exc, redis.ConnectionError | redis.exceptions.ClusterDownError)


def _connection_kwargs(client: object) -> dict[str, Any]:
    kw = getattr(getattr(client, "connection_pool", None), "connection_kwargs", None)
    if kw is None:  # a cluster client keeps its nodes' settings elsewhere
        kw = getattr(getattr(client, "nodes_manager", None), "connection_kwargs", None) or {}
    return dict(kw)


def _operation_timeout(client: object) -> float:
    """The client's operation timeout, the budget its retries stay within."""
    value = _connection_kwargs(client).get("socket_timeout")
    return float(value) if value else Timeouts().operation


def _backend_error(
    exc: Exception, where: str, key: str, *, write: bool = False, password: bool = True
) -> BackendError:
    """A :class:`BackendError` saying what went wrong in words, with the client error as cause."""
    msg = str(exc)
    if _is_auth(exc):
        if msg.startswith("NOAUTH") or not password:
            return BackendError(
                f"{where}: authentication failed: no password was sent (is the binding's key 'password' "
                f"missing?): {msg}"
            )
        return BackendError(f"{where}: authentication failed (wrong user name or password): {msg}")
    if _is_tls(exc):
        return BackendError(f"{where}: TLS handshake failed (is the binding's CA the server's?): {msg}")
    if isinstance(exc, redis.exceptions.NoPermissionError) or msg.startswith("NOPERM"):
        return BackendError(
            f"{where}: permission denied on key {key!r} (is it outside the memory's key prefix?): {msg}"
        )
    if isinstance(exc, redis.exceptions.RedisClusterException | redis.ConnectionError | redis.TimeoutError):
        if isinstance(exc, redis.TimeoutError) or "timed out" in msg.lower():
            cause = "timed out (the server accepted no connection or sent no reply in time)"
        elif isinstance(exc, redis.exceptions.RedisClusterException):
            cause = "cluster unreachable"
        else:
            cause = "connection refused or broken"
        applied: bool | None = None
        tail = ""
        if write:
            if _not_sent(exc):
                applied, tail = False, " (the write was not sent)"
            else:
                tail = " (the write may or may not have been applied: read the session before resending)"
        return BackendUnavailable(f"{where}: unreachable: {cause}: {msg}{tail}", applied=applied)
    return BackendError(f"{where}: {type(exc).__name__}: {msg}")


class AsyncClients:
    """One ``redis.asyncio`` client per event loop, made on first use in that loop.

    An asyncio client's connections belong to the loop that opened them, so a memory used from
    several loops (``asyncio.run`` per request, a test per loop) gets a client in each. Clients of
    loops that are gone are dropped with them.
    """

    def __init__(self, make: Callable[[], AsyncClient]) -> None:
        self._make = make
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()

    def get(self) -> AsyncClient:
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._by_loop.get(loop)
            if client is None:
                client = self._by_loop[loop] = self._make()
            return client

    async def aclose(self) -> None:
        """Close the running loop's client; the others are forgotten (their loops must close them)."""
        with self._lock:
            clients = dict(self._by_loop)
            self._by_loop.clear()
        loop = asyncio.get_running_loop()
        for owner, client in clients.items():
            if owner is loop:
                await client.aclose()


class RedisChatMessageHistory(BaseChatMessageHistory):
    """A session's messages in one Redis list (see the module docstring for the layout).

    Args:
        session_id: The session; any non-empty text.
        redis_url: ``redis://`` or ``rediss://`` URL, used when ``redis_client`` is not given
            (default ``redis://localhost:6379``, as the seed).
        key_prefix: Prepended to ``{session_id}``. ``""`` reads and writes the Memorystore layout
            (the session id is the key).
        ttl: Seconds the session lives after its last write (sliding); ``None`` keeps it forever.
        index_name: Accepted for compatibility with ``langchain_redis`` (a name other than its
            default ``idx:chat_history`` warns). The search module cannot index a LIST, so
            :meth:`search_messages` scans the session (one ``LRANGE``, no ``FT.*``).
        redis_client: A ``redis.Redis`` or ``redis.cluster.RedisCluster`` you own (never closed here).
        overwrite_index: Accepted for compatibility with ``langchain_redis``; ``True`` warns (there
            is no index to overwrite).
        max_messages: Keep only the newest ``max_messages`` messages (trimmed on write).
        async_redis_client: The ``redis.asyncio`` twin used by the ``a*`` methods (yours, never
            closed here). When not given, one is built from ``redis_url`` per event loop; with only
            a sync ``redis_client`` the ``a*`` methods run the sync ones in a thread (LangChain's
            default).
        async_clients: Per-event-loop asyncio clients shared with other histories (what
            :class:`RedisConnector` passes: one set per memory); used when ``async_redis_client``
            is not given.
        wait_replicas: Replicas that must hold each turn before ``add_messages`` returns (``WAIT``
            after the turn's ``EXEC``, same round trip); fewer raise :class:`NotReplicated`. ``None``
            or 0: no WAIT (Redis' asynchronous replication).
        wait_timeout_ms: How long that WAIT blocks (default 1000 ms); shorter than the operation
            timeout.
        **kwargs: redis-py connection options for the clients built from ``redis_url`` (as
            ``langchain_redis`` passes them to ``Redis.from_url``); they win over ``timeout``.
            With ``redis_client`` they are ignored, with a warning.

    The arguments up to ``overwrite_index`` are positional in ``langchain_redis``'s order
    (``session_id, redis_url, key_prefix, ttl, index_name, redis_client, overwrite_index``); the
    ones after it are keyword-only.
    """

    def __init__(
        self,
        session_id: str,
        redis_url: str | None = None,
        key_prefix: str = "chat:",
        ttl: int | None = None,
        index_name: str | None = None,
        redis_client: SyncClient | None = None,
        overwrite_index: bool = False,
        *,
        max_messages: int | None = None,
        async_redis_client: AsyncClient | None = None,
        async_clients: AsyncClients | None = None,
        timeout: TimeoutSpec = None,
        wait_replicas: int | None = None,
        wait_timeout_ms: int | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(session_id, str) or not session_id:
            raise ValueError("session_id must be a non-empty string")
        if ttl is not None and ttl < 0:
            # langchain-redis sends EXPIRE <negative>, which deletes the key at once: every message
            # added is lost. That is never what a caller means, so it is refused here.
            raise ValueError(
                f"ttl must be a positive number of seconds, 0 or None (got {ttl!r}); "
                "0 and None keep the session forever"
            )
        if ttl == 0:
            ttl = None  # langchain-redis's "no expiry"
        if max_messages is not None and max_messages < 1:
            raise ValueError("max_messages must be at least 1 or None")
        self.session_id = session_id
        self.key_prefix = key_prefix
        self.ttl = ttl
        self.index_name = index_name
        self.overwrite_index = overwrite_index
        self.max_messages = max_messages
        _warn_unused(
            index_name=index_name, overwrite_index=overwrite_index, kwargs=kwargs, client=redis_client
        )
        self.key = session_key(key_prefix, session_id)
        self._owns_client = redis_client is None
        url = redis_url or DEFAULT_URL
        t = Timeouts.of(timeout)
        # The URL's own socket_timeout / socket_connect_timeout query options win over these.
        self.redis_client: SyncClient = (
            redis_client
            if redis_client is not None
            else redis.Redis.from_url(
                url,
                **{
                    "retry": no_retry(),
                    "socket_connect_timeout": t.connect,
                    "socket_timeout": t.operation,
                    **kwargs,  # redis-py options, as langchain-redis passes them: yours win
                },
            )
        )
        self._async_client = async_redis_client
        #: asyncio clients, one per event loop: a connector's, or made here from the URL
        self._async_clients = async_clients
        if async_clients is None and redis_client is None and async_redis_client is None:
            self._async_clients = AsyncClients(
                lambda: redis.asyncio.Redis.from_url(
                    url,
                    **{
                        "retry": no_retry(True),
                        "socket_connect_timeout": t.connect,
                        "socket_timeout": t.operation,
                        **kwargs,
                    },
                )
            )
        if kwargs and redis_client is None:
            _check_options(self.redis_client)
        self._where = _describe(self.redis_client)
        self._budget = _operation_timeout(self.redis_client)
        self._password = bool(_connection_kwargs(self.redis_client).get("password"))
        self.wait_replicas, self.wait_timeout_ms = wait_options(wait_replicas, wait_timeout_ms, self._budget)

    # -- sync --------------------------------------------------------------------------------------

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The session's full history, oldest first (one ``LRANGE``)."""
        raw = self._call(lambda: self.redis_client.lrange(self.key, 0, -1))
        return _codec.decode_all(raw)

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append ``messages`` atomically in one round trip, refreshing the TTL and trimming."""
        docs = _codec.encode_all(list(messages))
        if not docs:
            return

        def send() -> Any:
            if self.wait_replicas:
                return self._send_waited(docs)
            pipe = self.redis_client.pipeline(transaction=True)
            self._queue_add(pipe, docs)
            return pipe.execute()

        self._call(send, write=True)

    def clear(self) -> None:
        """Delete this session only (``DEL`` of its one key)."""
        self._call(lambda: self.redis_client.delete(self.key))

    def search_messages(self, query: str, limit: int = 10) -> list[dict[str, Any]]:
        """Messages of this session matching any word of ``query`` (case-insensitive), oldest first.

        A message matches when one of its words is one of the query's words or a suffixed form of it
        (see :func:`_search` for how this mirrors ``langchain_redis``). Each result has
        langchain-redis's keys ``content``, ``additional_kwargs``, ``type`` (and ``tool_call_id``,
        ``status`` for a tool message) plus ``id``, ``name``, ``index`` (the message's position in
        the session) and ``data`` (its full dict form). An empty query or ``limit=0`` returns
        ``[]`` without a round trip.
        """
        if not _searchable(query, limit):
            return []
        return _search(self.messages, query, limit)

    def message_count(self) -> int:
        """How many messages the session holds (``LLEN``), without reading them."""
        return int(self._call(lambda: self.redis_client.llen(self.key)))

    @property
    def id(self) -> str:
        """The session id (``langchain_redis``'s ``id``)."""
        return self.session_id

    def __len__(self) -> int:
        """How many messages the session holds (one ``LLEN``), as ``len()`` does in ``langchain_redis``."""
        return self.message_count()

    def __bool__(self) -> bool:
        # Without this, ``__len__`` would make an empty history falsy (and ``if history:`` cost an
        # LLEN). langchain-redis's history has the same ``__len__`` and the same trap; an object
        # that exists is true here.
        return True

    def delete(self) -> None:
        """Delete this session (``DEL`` of its key), like :meth:`clear`, with a warning.

        ``langchain_redis``'s ``delete()`` drops its search index *and every session under its
        prefix*. There is no index here, and finding the other sessions' keys would need ``SCAN``,
        which the memory's ACL user may not run (it would list every tenant's keys on the server);
        dropping them is an operator's job (delete the ``ChatMemory``), so only this session goes.
        """
        warnings.warn(
            "RedisChatMessageHistory.delete() deletes this session only: chatmemory keeps no "
            "search index and does not drop other sessions (langchain_redis's delete() drops all "
            "of them); use clear() to say so explicitly",
            UserWarning,
            stacklevel=2,
        )
        self.clear()

    # -- async (redis.asyncio) ---------------------------------------------------------------------

    async def aget_messages(self) -> list[BaseMessage]:
        client = self._aclient()
        if client is None:
            return await super().aget_messages()
        raw = await self._acall(lambda: client.lrange(self.key, 0, -1))
        return _codec.decode_all(raw)

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        client = self._aclient()
        if client is None:
            await super().aadd_messages(messages)
            return
        docs = _codec.encode_all(list(messages))
        if not docs:
            return

        # redis.asyncio's cluster *transaction* pipeline runs every queued command in a new
        # thread and event loop (redis-py 8.1), leaving connections bound to dead loops, and its
        # plain pipeline resends redirected commands one by one (a retry after a half-applied turn
        # would store it twice). On a cluster the turn is written by hand as MULTI ... EXEC to the
        # slot's primary, one round trip: applied whole or discarded whole, as NOT_APPLIED assumes.
        async def send() -> Any:
            if self.wait_replicas:
                return await self._asend_waited(client, docs)
            if isinstance(client, redis.asyncio.cluster.RedisCluster):
                check_applied(await aslot_pipeline(client, self.key, self._transaction(docs)))
                return None
            pipe = client.pipeline(transaction=True)
            self._queue_add(pipe, docs)
            return await pipe.execute()

        await self._acall(send, write=True)

    async def aclear(self) -> None:
        client = self._aclient()
        if client is None:
            await super().aclear()
            return
        await self._acall(lambda: client.delete(self.key))

    async def asearch_messages(self, query: str, limit: int = 10) -> list[dict[str, Any]]:
        """Async :meth:`search_messages`."""
        if not _searchable(query, limit):
            return []
        return _search(await self.aget_messages(), query, limit)

    # -- lifecycle ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the clients this history built itself (a client you passed in stays open)."""
        if self._owns_client:
            self.redis_client.close()

    async def aclose(self) -> None:
        """Close the clients this history built (sync and async)."""
        self.close()
        if self._async_clients is not None:
            await self._async_clients.aclose()

    # -- helpers -----------------------------------------------------------------------------------

    def _queue_add(self, pipe: Any, docs: list[str]) -> None:
        pipe.rpush(self.key, *docs)
        if self.max_messages is not None:
            pipe.ltrim(self.key, -self.max_messages, -1)
        if self.ttl is not None:
            pipe.expire(self.key, self.ttl)

    def _turn(self, docs: list[str]) -> list[tuple[Any, ...]]:
        """:meth:`_queue_add`'s commands as tuples, for the hand-made MULTI/EXEC (WAIT, asyncio cluster)."""
        commands: list[tuple[Any, ...]] = [("RPUSH", self.key, *docs)]
        if self.max_messages is not None:
            commands.append(("LTRIM", self.key, -self.max_messages, -1))
        if self.ttl is not None:
            commands.append(("EXPIRE", self.key, self.ttl))
        return commands

    def _transaction(self, docs: list[str]) -> list[tuple[Any, ...]]:
        """``MULTI <turn> EXEC``, for the asyncio cluster client's hand-made transaction."""
        return [("MULTI",), *self._turn(docs), ("EXEC",)]

    def _waited(self, docs: list[str]) -> list[tuple[Any, ...]]:
        """``MULTI <turn> EXEC WAIT``: sent together on one connection to the key's primary."""
        return [*self._transaction(docs), ("WAIT", self.wait_replicas, self.wait_timeout_ms)]

    def _check_waited(self, replies: Sequence[Any]) -> None:
        check_waited(
            replies,
            wanted=self.wait_replicas,
            timeout_ms=self.wait_timeout_ms,
            where=self._where,
            key=self.key,
        )

    def _send_waited(self, docs: list[str]) -> None:
        """A turn and its WAIT in one round trip. On a cluster, on a connection to the slot's primary
        as the client's slot map says (a stale map gets MOVED, which discards the turn: retried)."""
        client: Any = self.redis_client  # redis-py's cluster methods are untyped
        if isinstance(client, redis.cluster.RedisCluster):
            client = client.get_redis_connection(client.get_node_from_key(self.key))  # type: ignore[no-untyped-call]
        pipe = client.pipeline(transaction=False)
        for command in self._waited(docs):
            pipe.execute_command(*command)
        self._check_waited(pipe.execute(raise_on_error=False))

    async def _asend_waited(self, client: AsyncClient, docs: list[str]) -> None:
        """:meth:`_send_waited` on the asyncio client (a cluster node's own pipeline call)."""
        commands = self._waited(docs)
        if isinstance(client, redis.asyncio.cluster.RedisCluster):
            self._check_waited(await aslot_pipeline(client, self.key, commands))
            return
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        self._check_waited(await pipe.execute(raise_on_error=False))

    def _follow_topology(self) -> None:
        """Read a cluster's slot map again before a retry (a failover may have moved the slot)."""
        manager = getattr(self.redis_client, "nodes_manager", None)
        if manager is not None:
            with contextlib.suppress(*CLIENT_ERRORS):  # no node answers: the retry fails and says so
                manager.initialize()

    async def _afollow_topology(self) -> None:
        manager = getattr(self._aclient(), "nodes_manager", None)
        if manager is not None:
            with contextlib.suppress(*CLIENT_ERRORS):
                await manager.initialize()

    def _aclient(self) -> AsyncClient | None:
        """The asyncio client for the running event loop, or None (then LangChain's thread pool)."""
        if self._async_client is not None:
            return self._async_client
        if self._async_clients is not None:
            return self._async_clients.get()
        return None

    def _call(self, fn: Callable[[], T], *, write: bool = False) -> T:
        """Run one command (or pipeline), retrying what is safe (see the module docstring)."""
        deadline = time.monotonic() + self._budget
        for attempt in itertools.count():
            try:
                return fn()
            except CLIENT_ERRORS as e:
                delay = backoff(attempt)
                if _retryable(e, write=write) and time.monotonic() + delay < deadline:
                    time.sleep(delay)
                    self._follow_topology()
                    continue
                raise _backend_error(e, self._where, self.key, write=write, password=self._password) from e
        raise AssertionError("unreachable")  # pragma: no cover

    async def _acall(self, fn: Callable[[], Any], *, write: bool = False) -> Any:
        """:meth:`_call` for the asyncio client (``fn`` returns an awaitable)."""
        deadline = time.monotonic() + self._budget
        for attempt in itertools.count():
            try:
                return await fn()
            except CLIENT_ERRORS as e:
                delay = backoff(attempt)
                if _retryable(e, write=write) and time.monotonic() + delay < deadline:
                    await asyncio.sleep(delay)
                    await self._afollow_topology()
                    continue
                raise _backend_error(e, self._where, self.key, write=write, password=self._password) from e
        raise AssertionError("unreachable")  # pragma: no cover


_WORD = re.compile(r"\w+")


def _terms(text: str) -> list[str]:
    """The words of ``text``, case-folded (RediSearch's default tokenizer splits on punctuation)."""
    return _WORD.findall(text.casefold())


#: (suffix, replacement) a word loses before words are compared, tried in order: a light stand-in
#: for RediSearch's Snowball stemmer (``learned``, ``learning``, ``learns`` -> ``learn``;
#: ``stories`` -> ``story``), never leaving fewer than 3 letters.
_SUFFIXES: Final = (("ies", "y"), ("ing", ""), ("ed", ""), ("s", ""))


def _stem(word: str) -> str:
    for suffix, repl in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) + len(repl) >= 3:
            return word[: len(word) - len(suffix)] + repl
    return word


def _searchable(query: Any, limit: int) -> bool:
    """False when a search can only find nothing (no round trip then); a negative limit raises."""
    if limit < 0:
        raise ValueError(f"limit must be 0 or more (got {limit})")
    return bool(query) and isinstance(query, str) and limit > 0 and bool(_terms(query))


def _search(messages: list[BaseMessage], query: str, limit: int) -> list[dict[str, Any]]:
    """``langchain_redis``'s ``search_messages`` matching, over a list instead of an index.

    langchain-redis sends RedisVL's ``TextQuery``: the query split into words, lower-cased, joined
    with ``|`` (any word matches), no stopwords, matched against whole indexed words with stemming
    (``learned`` finds ``learning``; ``par`` does not find ``Paris``). Here a message matches when
    one of the query's words equals one of its words (case-insensitive) once both lose a common
    English suffix (:func:`_stem`, lighter than Snowball: ``making`` does not find ``make``).
    Empty or non-text query: ``[]``; ``limit`` 0: ``[]``; a negative ``limit`` is refused
    (langchain-redis's server refuses it too). Results are oldest first (langchain-redis: by score).
    """
    if not _searchable(query, limit):
        return []
    wanted = {_stem(t) for t in _terms(query)}
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if len(out) >= limit:
            break
        if not wanted.isdisjoint(_stem(w) for w in _terms(m.text)):
            out.append(_found(m, i))
    return out


def _found(m: BaseMessage, index: int) -> dict[str, Any]:
    """A search result: langchain-redis's keys (``content``, ``additional_kwargs``, ``type`` and,
    for a tool message, ``tool_call_id`` and ``status``) plus ours (``id``, ``name``, ``index``, ``data``)."""
    found: dict[str, Any] = {
        "type": m.type,
        "content": m.text,
        "additional_kwargs": m.additional_kwargs,
        "id": m.id,
        "name": m.name,
        "index": index,
        "data": m.model_dump(),
    }
    if isinstance(m, ToolMessage):
        found["tool_call_id"] = m.tool_call_id
        found["status"] = m.status
    return found


def wait_options(replicas: int | None, timeout_ms: int | None, budget: float) -> tuple[int, int]:
    """``(replicas, timeout_ms)`` for a history's WAIT; ``(0, ...)`` means no WAIT.

    Raises ``ValueError`` naming the option for a negative count or a timeout that is not positive
    or not shorter than the client's operation timeout (``budget`` seconds: the WAIT's reply must
    arrive before the socket gives up, or a written turn would look lost).
    """
    n = 0 if replicas is None else replicas
    ms = DEFAULT_WAIT_TIMEOUT_MS if timeout_ms is None else timeout_ms
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(
            f"wait_replicas (binding key redis_wait_replicas) must be 0 or more, got {replicas!r}"
        )
    if isinstance(ms, bool) or not isinstance(ms, int) or ms < 1:
        raise ValueError(
            f"wait_timeout_ms (binding key redis_wait_timeout_ms) must be a positive number of milliseconds, "
            f"got {timeout_ms!r} (WAIT 0 would block forever)"
        )
    if n and ms / 1000 >= budget:
        raise ValueError(
            f"wait_timeout_ms (binding key redis_wait_timeout_ms) is {ms} ms, not shorter than the operation "
            f"timeout ({budget:g} s): raise the timeout or lower the wait"
        )
    return n, ms


def _check_options(client: Any) -> None:
    """Raise ``TypeError`` now for a connection option redis-py does not know (a misspelt keyword
    argument would otherwise fail on the first command): builds one connection object, no I/O."""
    pool = client.connection_pool
    pool.connection_class(**pool.connection_kwargs)


def _warn_unused(
    *, index_name: str | None, overwrite_index: bool, kwargs: dict[str, Any], client: Any
) -> None:
    """Warn about ``langchain_redis`` arguments that change nothing in this layout."""
    if index_name is not None and index_name != LANGCHAIN_REDIS_INDEX:
        warnings.warn(
            f"index_name={index_name!r} is ignored: chatmemory keeps each session in one Redis LIST and "
            "creates no search index (search_messages reads the session)",
            UserWarning,
            stacklevel=3,
        )
    if overwrite_index:
        warnings.warn(
            "overwrite_index=True is ignored: chatmemory creates no search index", UserWarning, stacklevel=3
        )
    if kwargs and client is not None:
        warnings.warn(
            f"{sorted(kwargs)} ignored: they are redis-py connection options, and redis_client was given",
            UserWarning,
            stacklevel=3,
        )


class RedisConnector:
    """One memory's Redis clients (sync now, async on first use), shared by all its histories.

    Built by :func:`chatmemory.histories.connector_for` from a Redis binding. Thread-safe.
    """

    kind: Final = BackendKind.REDIS

    def __init__(
        self,
        binding: Binding,
        *,
        key_prefix: str | None = None,
        ttl: int | None = None,
        max_messages: int | None = None,
        timeout: TimeoutSpec = None,
        wait_replicas: int | None = None,
        wait_timeout_ms: int | None = None,
    ) -> None:
        if binding.backend is not BackendKind.REDIS:
            raise BindingError(f"not a Redis binding: {binding.backend}", key="type")
        self.binding = binding
        self.key_prefix = binding.key_prefix if key_prefix is None else key_prefix
        self.ttl = ttl if ttl is not None else binding.ttl_seconds or None
        self.max_messages = max_messages if max_messages is not None else binding.max_messages
        self.wait_replicas = wait_replicas if wait_replicas is not None else binding.redis_wait_replicas
        self.wait_timeout_ms = (
            wait_timeout_ms if wait_timeout_ms is not None else binding.redis_wait_timeout_ms
        )
        self.timeouts = Timeouts.of(timeout)
        wait_options(self.wait_replicas, self.wait_timeout_ms, self.timeouts.operation)  # named, at connect
        try:  # a cluster client reads the slot map here: the first I/O of the memory
            self.client: SyncClient = redis_client(binding, self.timeouts)
        except CLIENT_ERRORS as e:
            where = f"redis {'cluster ' if binding.cluster else ''}{binding.host}:{binding.port}"
            raise _backend_error(e, where, "") from e
        self.async_clients = AsyncClients(lambda: async_redis_client(binding, self.timeouts))

    @classmethod
    def from_binding(cls, binding: Binding, **options: Any) -> RedisConnector:
        """Options: ``key_prefix``, ``ttl``, ``max_messages``, ``wait_replicas``, ``wait_timeout_ms``
        override the binding's values; ``timeout`` (seconds or :class:`~chatmemory._connect.Timeouts`)
        the clients' timeouts."""
        return cls(binding, **options)

    def history(self, session_id: str) -> RedisChatMessageHistory:
        return RedisChatMessageHistory(
            session_id,
            key_prefix=self.key_prefix,
            ttl=self.ttl,
            max_messages=self.max_messages,
            redis_client=self.client,
            wait_replicas=self.wait_replicas,
            wait_timeout_ms=self.wait_timeout_ms,
            async_clients=self.async_clients,  # the memory's, shared by every session
        )

    def close(self) -> None:
        self.client.close()

    async def aclose(self) -> None:
        self.client.close()
        await self.async_clients.aclose()


__all__ = ["NotReplicated", "RedisChatMessageHistory", "RedisConnector", "session_key"]
