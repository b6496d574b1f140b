"""Chat history on TiDB, MySQL or MariaDB: one row per message in LangChain's TiDB table layout.

Who calls it: applications, directly (``chatmemory.TiDBChatMessageHistory(session_id,
connection_string)``, a drop-in for ``langchain_community``'s class of the same name), and
:mod:`chatmemory.memory` through :class:`TiDBConnector` (``ChatMemory.history(session_id)`` for a
binding of kind ``tidb``).

What it does better than the seed class (``langchain_community.chat_message_histories.tidb``):

- ``messages`` re-reads the table on every access (no stale cache); ``reload_cache()`` is kept for
  compatibility and does the same read.
- ``add_messages`` is one multi-row INSERT (one round trip); values are always bound parameters,
  the table name is validated and quoted, ``earliest_time`` is a parameter too.
- Errors are raised as :class:`~chatmemory.errors.BackendError` (the seed logs and swallows them),
  and a session id longer than the ``session_id`` column raises instead of being dropped.
- Connections come from a small thread-safe pool that checks each before reuse (its socket, and a
  ping after 30 s idle; :class:`chatmemory.sql.MySQLPool`), so a server restart or an idle timeout
  costs one reconnect, not an error or a lost write, and a turn no extra round trip.
- Built from a binding (:class:`TiDBConnector`) it runs no DDL: the operator made the table. Built
  directly it creates the table if missing, as the seed does, from :func:`chatmemory.sql.table_ddl`
  (``AUTO_ID_CACHE 1`` and an optional row TTL on TiDB, a plain table on MySQL/MariaDB).
- ``max_messages`` (from the binding, or a keyword) trims a session to its newest N rows on write.

Time zone: each connection runs with ``time_zone = '+00:00'``, so ``create_time`` and a naive
``earliest_time`` are UTC (LangChain's docs pass ``datetime.utcnow()``); an aware ``earliest_time``
is converted to UTC. ``create_time`` has second precision, as in the seed's table.

Timeouts and retries: every connection has a connect timeout and a read/write timeout
(:class:`chatmemory._connect.Timeouts`, default 5 s and 10 s; ``timeout=``); a server that cannot be
reached or does not answer in time raises :class:`~chatmemory.errors.BackendUnavailable` naming
``host:port`` and the cause. A read (``SELECT``) is retried with backoff after a refused or lost
connection, within the operation timeout; a timeout is not retried. A write (one ``INSERT``, in
autocommit) is retried only when its connection could not be opened, so it was never sent: once sent
it is never sent again (the INSERT is not idempotent: a lost reply may hide a commit), so a turn is
stored at most once; a failure after sending raises ``BackendUnavailable`` with ``applied=None``.

Async: ``aget_messages``, ``aadd_messages`` and ``aclear`` run the same statements natively on the
event loop over asyncmy (:class:`chatmemory.sql.AsyncMySQLPool`, made on the first async call; no
statement waits in a worker thread), with the same retry rules and credential re-read as the sync
calls; the operation timeout bounds each call (one or two statements) rather than each reply.
asyncmy was chosen over aiomysql by measurement (``bench/async_driver_choice.py``; see
:mod:`chatmemory.sql`). A memory used from several event loops gets connections in each.
"""

from __future__ import annotations

import contextlib
import itertools
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage

from chatmemory import sql
from chatmemory._codec import decode_all, encode
from chatmemory._connect import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_OPERATION_TIMEOUT,
    Timeouts,
    TimeoutSpec,
    backoff,
    live_mysql_kwargs,
    mysql_kwargs,
    mysql_timeouts,
    require,
)
from chatmemory.contract import BackendKind, Binding, CredentialSource
from chatmemory.errors import BackendError, BackendUnavailable, BindingError

if TYPE_CHECKING:
    import pymysql.connections

__all__ = ["TiDBChatMessageHistory", "TiDBConnector"]

DEFAULT_TABLE: Final = "langchain_message_store"
#: Default seconds to wait for a TCP connect and for one statement's reply (``timeout=`` changes them).
CONNECT_TIMEOUT: Final = DEFAULT_CONNECT_TIMEOUT
READ_TIMEOUT: Final = DEFAULT_OPERATION_TIMEOUT

T = TypeVar("T")
#: Idle connections kept per pool (more may be open while busy; extras are closed on return).
POOL_SIZE: Final = 8
_INIT_COMMAND: Final = "SET time_zone = '+00:00'"


class _Pool:
    """A few idle PyMySQL connections for one database, shared by every session and thread.

    Reuse follows :class:`chatmemory.sql.MySQLPool`: a connection the server closed (restart,
    ``wait_timeout``, KILL) is dropped and a new one opened, transparently; a connection that saw an
    error is closed, never reused. ``where`` names the server in errors; the password never
    appears in them.
    """

    def __init__(self, kwargs: dict[str, Any], where: str) -> None:
        self._pymysql = require("pymysql", "tidb")
        self._kwargs = {
            **mysql_timeouts(),
            "charset": "utf8mb4",
            **kwargs,
            "autocommit": True,
            "init_command": _INIT_COMMAND,
        }
        self._budget = float(self._kwargs["read_timeout"])
        self.where = where
        self._connections = sql.MySQLPool(self._open, POOL_SIZE)
        self._closed = False
        self._server_version: str | None = None
        self._aio: sql.AsyncMySQLPool | None = None

    def aio(self) -> sql.AsyncMySQLPool:
        """The asyncio twin of this pool (asyncmy), made on the first async call."""
        if self._closed:
            raise BackendError(f"{self.where}: the history's connector is closed")
        if self._aio is None:
            self._aio = sql.AsyncMySQLPool(self._kwargs, self.where)
        return self._aio

    def _open(self) -> pymysql.connections.Connection[Any]:
        conn: pymysql.connections.Connection[Any] = self._pymysql.connect(**live_mysql_kwargs(self._kwargs))
        return conn

    def run(self, fn: Callable[[Any], T], *, write: bool = False) -> T:
        """``fn(cursor)`` on a live connection, retried where safe (see the module docstring).

        A memory that follows its Secret retries once after the server refused its credentials or
        a privilege (a rotation: the previous user's grace period ended): the pool's connections go,
        the Secret is read again, and the statement, which the server did not run, is sent again.
        """
        deadline = time.monotonic() + self._budget
        refreshed = False
        for attempt in itertools.count():
            sent: list[bool] = []
            try:
                with self.cursor(sent) as cur:
                    return fn(cur)
            except BackendUnavailable as e:
                delay = backoff(attempt)
                cause = e.__cause__
                safe = (not write or not sent) and cause is not None and not _timed_out(cause)
                if safe and time.monotonic() + delay < deadline:
                    time.sleep(delay)
                    continue
                if write:
                    sql.say_if_applied(e, sent=bool(sent))
                raise
            except BackendError as e:
                source = self._source()
                if refreshed or source is None or not _denied(e):
                    raise
                refreshed = True
                source.refresh()
                self._connections.close()  # the idle ones too: they speak for the previous user
        raise AssertionError("unreachable")  # pragma: no cover

    def _source(self) -> CredentialSource | None:
        """Where the memory's credentials are read again, when it follows its Secret."""
        binding = self._kwargs.get("binding")
        return binding.source if isinstance(binding, Binding) else None

    @contextmanager
    def cursor(self, sent: list[bool] | None = None) -> Iterator[Any]:
        """A cursor on a live connection; every MySQL error is raised as BackendError.

        ``sent`` gets ``True`` appended once a connection is open (a statement may reach the server).
        """
        if self._closed:
            raise BackendError(f"{self.where}: the history's connector is closed")
        err = self._pymysql.MySQLError
        conn = None
        try:
            conn = self._connections.take()
            if sent is not None:
                sent.append(True)
            with conn.cursor() as cur:
                yield cur
        except err as e:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
            raise _error(e, self.where) from e
        except BaseException:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()  # state unknown after an interruption: never hand it out again
            raise
        if self.closed:  # closed while in use: do not pool it
            conn.close()
            return
        self._connections.give_back(conn)

    @property
    def closed(self) -> bool:
        return self._closed

    def server_version(self) -> str:
        """``SELECT VERSION()``, cached (``...-TiDB-v8.5...`` on TiDB)."""
        if self._server_version is None:
            with self.cursor() as cur:
                cur.execute("SELECT VERSION()")
                self._server_version = str(cur.fetchone()[0])
        return self._server_version

    def close(self) -> None:
        self._closed = True
        self._connections.close()
        if self._aio is not None:
            self._aio.close()

    async def aclose(self) -> None:
        self._closed = True
        self._connections.close()
        if self._aio is not None:
            await self._aio.aclose()


#: The error helpers live in :mod:`chatmemory.sql`, shared with the asyncio pool.
_error = sql.mysql_error
_denied = sql.denied
_timed_out = sql.timed_out


def _bool(values: dict[str, list[str]], key: str) -> bool | None:
    if key not in values:
        return None
    return values[key][-1].strip().lower() in ("1", "true", "yes", "on")


def parse_connection_string(url: str) -> tuple[dict[str, Any], str]:
    """PyMySQL ``connect`` kwargs and a printable location from a SQLAlchemy-style URL.

    Accepts ``mysql+pymysql://``, ``mysql://``, ``mariadb://`` and ``tidb://`` URLs with an optional
    database path and the seed's TLS query options ``ssl_ca``, ``ssl_verify_cert`` and
    ``ssl_verify_identity`` (``ssl=true`` turns TLS on with the system CAs).
    """
    u = urlsplit(url)
    scheme = u.scheme.split("+")[0].lower()
    if scheme not in ("mysql", "mariadb", "tidb"):
        raise ValueError(
            f"connection string scheme {u.scheme!r} is not supported: use mysql+pymysql://user:pw@host:port/db"
        )
    kwargs: dict[str, Any] = {
        "host": u.hostname or "127.0.0.1",
        "port": u.port or 3306,
        "user": unquote(u.username) if u.username else "root",
        "password": unquote(u.password) if u.password else "",
    }
    database = unquote(u.path.lstrip("/"))
    if database:
        kwargs["database"] = database
    q = parse_qs(u.query)
    ca = q.get("ssl_ca", [""])[-1]
    verify_cert = _bool(q, "ssl_verify_cert")
    verify_identity = _bool(q, "ssl_verify_identity")
    if ca or verify_cert or verify_identity or _bool(q, "ssl"):
        ctx = ssl.create_default_context(cafile=ca or None)
        if verify_cert is False:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif verify_identity is False:
            ctx.check_hostname = False
        kwargs["ssl"] = ctx
    if "charset" in q:
        kwargs["charset"] = q["charset"][-1]
    where = f"mysql {kwargs['host']}:{kwargs['port']}/{database}"
    return kwargs, where


def _utc_naive(t: datetime) -> datetime:
    return t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo is not None else t


class TiDBChatMessageHistory(BaseChatMessageHistory):
    """A session's messages in a TiDB/MySQL/MariaDB table (LangChain's TiDB history layout).

    Args:
        session_id: the chat session (at most 255 characters, the ``session_id`` column's size).
        connection_string: ``mysql+pymysql://user:password@host:port/database`` (also
            ``mysql://``); ``?ssl_ca=/path/ca.pem&ssl_verify_cert=true&ssl_verify_identity=true``
            for TLS, as the seed documents.
        table_name: the message table (``[A-Za-z0-9_]``, 1-64 characters), created if missing.
        earliest_time: only messages written at or after this time are returned (UTC when naive).
        ttl_seconds: on TiDB, a new table gets a row TTL of this many seconds (rounded up to
            minutes); ignored on MySQL/MariaDB and for an existing table.
        max_messages: keep only the newest N messages of the session (trimmed on write).
        timeout: seconds for a connect and for each reply, or ``Timeouts(connect=, operation=)``
            (default 5 s and 10 s).
    """

    def __init__(
        self,
        session_id: str,
        connection_string: str,
        table_name: str = DEFAULT_TABLE,
        earliest_time: datetime | None = None,
        *,
        ttl_seconds: int | None = None,
        max_messages: int | None = None,
        timeout: TimeoutSpec = None,
    ) -> None:
        kwargs, where = parse_connection_string(connection_string)
        kwargs.update(mysql_timeouts(Timeouts.of(timeout)))
        self._setup(session_id, _Pool(kwargs, where), table_name, earliest_time, max_messages, owns_pool=True)
        self._create_table(ttl_seconds or 0)

    @classmethod
    def _shared(
        cls,
        session_id: str,
        pool: _Pool,
        table_name: str,
        earliest_time: datetime | None,
        max_messages: int | None,
    ) -> TiDBChatMessageHistory:
        """A history on a connector's pool: no DDL, no I/O until used."""
        self = cls.__new__(cls)
        self._setup(session_id, pool, table_name, earliest_time, max_messages, owns_pool=False)
        return self

    def _setup(
        self,
        session_id: str,
        pool: _Pool,
        table_name: str,
        earliest_time: datetime | None,
        max_messages: int | None,
        *,
        owns_pool: bool,
    ) -> None:
        if not isinstance(session_id, str) or not session_id:
            raise ValueError("session_id must be a non-empty string")
        if len(session_id) > sql.MAX_SESSION_ID_LEN:
            raise ValueError(
                f"session id is {len(session_id)} characters long; the message table's session_id "
                f"column holds at most {sql.MAX_SESSION_ID_LEN}: use a shorter id (or a hash of it)"
            )
        if max_messages is not None and max_messages < 1:
            raise ValueError(f"max_messages must be at least 1 (got {max_messages})")
        self.session_id = session_id
        self.table_name = sql.validate_identifier(table_name, "table")
        self.earliest_time = earliest_time
        self.max_messages = max_messages
        self._pool = pool
        self._owns_pool = owns_pool
        # The seed's attribute: the last messages read (kept for code that inspects it).
        self.cache: list[BaseMessage] = []

    def _create_table(self, ttl_seconds: int) -> None:
        tidb = "tidb" in self._pool.server_version().lower()
        ddl = sql.table_ddl(None, self.table_name, tidb=tidb, ttl_seconds=ttl_seconds)
        with self._pool.cursor() as cur:
            cur.execute(ddl)

    # -- reading ----------------------------------------------------------------------------------

    def _select(self) -> tuple[str, tuple[Any, ...]]:
        """The session's SELECT and its parameters."""
        params: tuple[Any, ...] = (self.session_id,)
        if self.earliest_time is not None:
            params += (_utc_naive(self.earliest_time),)
        return sql.select_sql(self.table_name, since=self.earliest_time is not None), params

    def _decoded(self, rows: Any) -> list[BaseMessage]:
        messages = decode_all(r[0] for r in rows)
        self.cache = messages
        return messages

    def _load(self) -> list[BaseMessage]:
        statement, params = self._select()

        def read(cur: Any) -> Any:
            cur.execute(statement, params)
            return cur.fetchall()

        return self._decoded(self._pool.run(read))

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The session's messages in write order, read from the table on every access."""
        return self._load()

    def reload_cache(self) -> None:
        """Re-read the session into ``cache`` (kept for the seed's API; ``messages`` always reads)."""
        self._load()

    # -- writing ----------------------------------------------------------------------------------

    def add_message(self, message: BaseMessage) -> None:
        """Append one message (one INSERT)."""
        self.add_messages([message])

    def _insert(self, messages: Sequence[BaseMessage]) -> list[tuple[str, Sequence[Any]]]:
        """The statements of an append: the multi-row INSERT, then the trim if ``max_messages``."""
        params: list[str] = []
        for m in messages:
            params += (self.session_id, encode(m))
        insert = sql.insert_sql(self.table_name, len(messages))
        statements: list[tuple[str, Sequence[Any]]] = [(insert, params)]
        if self.max_messages is not None:
            statements.append(
                (sql.trim_sql(self.table_name), (self.session_id, self.session_id, self.max_messages - 1))
            )
        return statements

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Append messages in order with one multi-row INSERT (then trim if ``max_messages``)."""
        if not messages:
            return
        statements = self._insert(messages)

        def write(cur: Any) -> None:
            for statement, params in statements:
                cur.execute(statement, params)

        self._pool.run(write, write=True)

    def clear(self) -> None:
        """Delete this session's messages (other sessions in the table are untouched)."""
        # Idempotent (a DELETE of the session): retried like a read.
        self._pool.run(lambda cur: cur.execute(sql.delete_sql(self.table_name), (self.session_id,)))
        self.cache = []

    def close(self) -> None:
        """Close the history's own connections (a connector's shared pool stays open)."""
        if self._owns_pool:
            self._pool.close()

    # -- asyncio: the same statements on asyncmy connections, no thread ----------------------------

    async def aget_messages(self) -> list[BaseMessage]:
        """The session's messages in write order (one SELECT on the event loop)."""
        statement, params = self._select()

        async def read(cur: Any) -> Any:
            await cur.execute(statement, params)
            return await cur.fetchall()

        return self._decoded(await self._pool.aio().run(read))

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        """:meth:`add_messages` on the event loop: the same INSERT, sent at most once."""
        if not messages:
            return
        statements = self._insert(messages)

        async def write(cur: Any) -> None:
            for statement, params in statements:
                await cur.execute(statement, params)

        await self._pool.aio().run(write, write=True)

    async def aclear(self) -> None:
        """:meth:`clear` on the event loop (retried like a read: deleting twice is deleting once)."""
        statement = sql.delete_sql(self.table_name)

        async def delete(cur: Any) -> None:
            await cur.execute(statement, (self.session_id,))

        await self._pool.aio().run(delete)
        self.cache = []

    async def aclose(self) -> None:
        """:meth:`close`, saying goodbye to the server on the running loop's connections."""
        if self._owns_pool:
            await self._pool.aclose()


class TiDBConnector:
    """One TiDB/MySQL memory's connection pool, shared by all its sessions and threads.

    Built by :func:`chatmemory.histories.connector_for` from a binding of kind ``tidb``. Runs no DDL:
    the operator made the database and table. Options: ``earliest_time`` for every history;
    ``timeout`` (seconds or :class:`~chatmemory._connect.Timeouts`) for its connections;
    ``create=True`` (for a binding made from a URL, without an operator) creates the table if it is
    missing, with the binding's TTL on TiDB, as a directly built history does.
    """

    def __init__(
        self,
        binding: Binding,
        *,
        earliest_time: datetime | None = None,
        create: bool = False,
        timeout: TimeoutSpec = None,
    ) -> None:
        if binding.backend is not BackendKind.TIDB:
            raise BindingError(f"a {binding.backend.value} binding cannot build a TiDB connector")
        try:
            self._table = sql.validate_identifier(binding.table, "table")
        except ValueError as e:
            raise BindingError(str(e), key="table") from None
        self._binding = binding
        self._earliest_time = earliest_time
        kwargs = mysql_kwargs(binding, Timeouts.of(timeout))
        self._pool = _Pool(kwargs, f"mysql {binding.host}:{binding.port}/{binding.database}")
        if create:
            try:
                tidb = "tidb" in self._pool.server_version().lower()
                with self._pool.cursor() as cur:
                    cur.execute(
                        sql.table_ddl(None, self._table, tidb=tidb, ttl_seconds=binding.ttl_seconds or 0)
                    )
            except BaseException:
                self._pool.close()
                raise

    @classmethod
    def from_binding(cls, binding: Binding, **options: Any) -> TiDBConnector:
        return cls(binding, **options)

    def history(self, session_id: str) -> TiDBChatMessageHistory:
        return TiDBChatMessageHistory._shared(
            session_id, self._pool, self._table, self._earliest_time, self._binding.max_messages
        )

    def close(self) -> None:
        self._pool.close()

    async def aclose(self) -> None:
        await self._pool.aclose()
