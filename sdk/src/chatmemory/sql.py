"""SQL defined once for the SDK and the operator: the message table and the MySQL connection pool.

Called by :mod:`chatmemory.histories.tidb` (the SDK's TiDB/MySQL/MariaDB history, which runs the DDL
only when it is built directly from a connection string, as LangChain's seed class does), by the SQL
checkpointer (:mod:`chatmemory.checkpoint`) and by the operator's TiDB backend
(``chatmemory_operator.backends.tidb``), which provisions the same table for a ChatMemory. All import
from here so the table the operator makes is exactly the one the SDK reads, and so the connection
reuse rule lives in one place.

The table keeps LangChain's ``TiDBChatMessageHistory`` columns (``id``, ``session_id``, ``message``
JSON, ``create_time``, ``INDEX session_idx``), so either class can read the other's rows. On TiDB it
adds ``AUTO_ID_CACHE 1`` (ids increase across TiDB servers, so ``ORDER BY id`` is the write order)
and, with a TTL, TiDB's row TTL clause. The table's functions are pure: no connection, no I/O.

Identifiers are validated (``[A-Za-z0-9_]``, 1-64 characters) and backtick-quoted; values are never
spelled into SQL text: every statement built here takes ``%s`` parameters (PyMySQL's paramstyle).

:class:`MySQLPool` keeps a few idle PyMySQL connections (PyMySQL is only needed by whoever builds
one). Its reuse rule follows go-sql-driver/mysql's connection check: a connection idle for less than
``ping_after`` seconds is reused if its socket has nothing to read (a server that restarted, hit
``wait_timeout`` or ran ``KILL`` has closed it or sent an error packet, and either makes the socket
readable); one idle for longer is pinged, which also catches a peer that vanished without closing.
Pinging on every checkout cost a round trip per statement: half of a TiDB agent turn. A connection
that saw an error is closed, never reused.

:class:`AsyncMySQLPool` is its asyncio twin, used by the history's and the checkpointer's ``a*``
methods (and public for the operator and the store): asyncmy connections per event loop, at most
``size`` open, the same reuse rule, timeouts, retry rules and Secret re-read as the sync history, and
:func:`mysql_error` for both paths' errors. No statement waits in a thread; two rare steps do, both
when a new connection opens: asyncio resolves a host *name* (not an IP) in its default executor, and
a memory that follows its Secret asks the Secret for the credentials in a thread (a read from the
Kubernetes API is a blocking HTTP call; the source reads at most every few seconds, or at once after
the server refused the credentials). asyncmy was chosen over
aiomysql by measurement (``bench/async_driver_choice.py``: 100 concurrent turns, a 2-row INSERT and
the session's SELECT each, through a 1.5 ms RTT proxy on TiDB: 3.8-4.6x the sync path's throughput
with asyncmy, 3.5-3.8x with aiomysql, pools of 8 and 50; on loopback both 1.6-1.9x, bounded by
TiDB's CPU on the same cores) and for maintenance: compiled wheels for CPython 3.11 manylinux and
musllinux on x86_64 and aarch64, a release in November 2026, its own read timeout, TLS from an
``ssl.SSLContext``, and the ``mysql_native_password``, ``caching_sha2_password`` and
``sha256_password`` plugins (TiDB, MySQL 8, MariaDB; neither driver has MariaDB's ``ed25519``).
aiomysql is pure Python over PyMySQL, with no read timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import itertools
import math
import queue
import random
import re
import select
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypeVar

from chatmemory.contract import Binding, CredentialSource
from chatmemory.errors import BackendError, BackendUnavailable, MissingExtra

if TYPE_CHECKING:
    import pymysql.connections

T = TypeVar("T")

_IDENT: Final = re.compile(r"^[A-Za-z0-9_]+$")
#: Longest database or table name on TiDB, MySQL and MariaDB.
MAX_NAME_LEN: Final = 64
#: Longest session id the ``session_id`` column holds (``VARCHAR(255)``, in characters).
MAX_SESSION_ID_LEN: Final = 255
#: How often TiDB runs the table's TTL job.
TTL_JOB_INTERVAL: Final = "1m"

_TTL_RE: Final = re.compile(r"TTL=`create_time` \+ INTERVAL (\d+) (MINUTE|HOUR|DAY)", re.IGNORECASE)
_TTL_ENABLE_RE: Final = re.compile(r"TTL_ENABLE='(\w+)'", re.IGNORECASE)
_TTL_JOB_RE: Final = re.compile(r"TTL_JOB_INTERVAL='(\w+)'", re.IGNORECASE)
#: Minutes per TTL unit TiDB accepts.
UNIT_MINUTES: Final = {"MINUTE": 1, "HOUR": 60, "DAY": 1440}


def validate_identifier(value: str, what: str, *, max_len: int = MAX_NAME_LEN) -> str:
    """Return ``value`` if it is 1..max_len characters from ``[A-Za-z0-9_]``.

    Raises:
        ValueError: naming ``what`` (``"table"``, ``"database"``, ...) and the rule.
    """
    if not value or len(value) > max_len or not _IDENT.match(value):
        raise ValueError(
            f"{what} {value!r} is not a valid name: use 1-{max_len} characters from [A-Za-z0-9_]"
        )
    return value


def qi(name: str) -> str:
    """Backtick-quote an identifier (doubling backticks, for names read back from the server)."""
    return "`" + name.replace("`", "``") + "`"


def qualified(database: str | None, table: str) -> str:
    """```db`.`table``` or, without a database, ```table``` (the connection's default database)."""
    return f"{qi(database)}.{qi(table)}" if database else qi(table)


def ttl_interval(ttl_seconds: int) -> tuple[int, str] | None:
    """TiDB's TTL interval for a ttl: whole minutes (rounded up), in the largest exact unit.

    TiDB on unistore takes MINUTE, HOUR and DAY only. ``None`` when the memory never expires.
    """
    if ttl_seconds <= 0:
        return None
    minutes = math.ceil(ttl_seconds / 60)
    if minutes % 1440 == 0:
        return minutes // 1440, "DAY"
    if minutes % 60 == 0:
        return minutes // 60, "HOUR"
    return minutes, "MINUTE"


def ttl_clause(ttl_seconds: int) -> str:
    """The table options for TiDB's row TTL (space separated, valid in CREATE and ALTER TABLE)."""
    interval = ttl_interval(ttl_seconds)
    if interval is None:
        return ""
    n, unit = interval
    return (
        f"TTL = `create_time` + INTERVAL {n} {unit} TTL_ENABLE = 'ON' TTL_JOB_INTERVAL = '{TTL_JOB_INTERVAL}'"
    )


def parse_ttl(create_table: str) -> tuple[int, str, str] | None:
    """(minutes, TTL_ENABLE, TTL_JOB_INTERVAL) from TiDB's SHOW CREATE TABLE; None without TTL."""
    m = _TTL_RE.search(create_table)
    if not m:
        return None
    enable = _TTL_ENABLE_RE.search(create_table)
    job = _TTL_JOB_RE.search(create_table)
    return (
        int(m.group(1)) * UNIT_MINUTES[m.group(2).upper()],
        enable.group(1).upper() if enable else "",
        job.group(1) if job else "",
    )


def table_ddl(database: str | None, table: str, *, tidb: bool, ttl_seconds: int) -> str:
    """CREATE TABLE IF NOT EXISTS for the message table (LangChain's TiDB history columns).

    ``database`` may be ``None`` for the connection's default database. On TiDB the table gets
    ``AUTO_ID_CACHE 1`` and, when ``ttl_seconds > 0``, the row TTL clause; MySQL and MariaDB get
    the plain table (they have no TTL clause: the operator adds an EVENT there).
    """
    if database:
        validate_identifier(database, "database")
    validate_identifier(table, "table")
    options = ""
    if tidb:
        options = " AUTO_ID_CACHE 1"
        clause = ttl_clause(ttl_seconds)
        if clause:
            options += " " + clause
    return (
        f"CREATE TABLE IF NOT EXISTS {qualified(database, table)} ("
        "id BIGINT AUTO_INCREMENT PRIMARY KEY, "
        f"session_id VARCHAR({MAX_SESSION_ID_LEN}) NOT NULL, "
        "message JSON NOT NULL, "
        "create_time TIMESTAMP DEFAULT CURRENT_TIMESTAMP, "
        "INDEX session_idx (session_id)"
        f"){options}"
    )


# -- the history's statements (all values as %s parameters) -----------------------------------------


def insert_sql(table: str, rows: int) -> str:
    """One multi-row INSERT of ``rows`` (session_id, message) pairs: one round trip per call."""
    if rows < 1:
        raise ValueError("an INSERT needs at least one row")
    values = ", ".join(["(%s, %s)"] * rows)
    return f"INSERT INTO {qi(validate_identifier(table, 'table'))} (session_id, message) VALUES {values}"  # noqa: S608


def select_sql(table: str, *, since: bool) -> str:
    """The session's messages in write order; with ``since``, a second parameter bounds create_time."""
    where = "session_id = %s AND create_time >= %s" if since else "session_id = %s"
    return f"SELECT message FROM {qi(validate_identifier(table, 'table'))} WHERE {where} ORDER BY id"  # noqa: S608


def delete_sql(table: str) -> str:
    """Every message of one session (``clear()``)."""
    return f"DELETE FROM {qi(validate_identifier(table, 'table'))} WHERE session_id = %s"  # noqa: S608


def trim_sql(table: str) -> str:
    """Delete a session's messages older than its newest N (parameters: session, session, N - 1).

    The newest-N boundary is read through a derived table, which MySQL and MariaDB accept in a
    DELETE on the same table; with fewer than N messages the boundary is NULL and nothing goes.
    """
    t = qi(validate_identifier(table, "table"))
    return (
        f"DELETE FROM {t} WHERE session_id = %s AND id < ("  # noqa: S608
        f"SELECT id FROM (SELECT id FROM {t} WHERE session_id = %s ORDER BY id DESC LIMIT 1 OFFSET %s)"
        " AS newest)"
    )


# -- the connection pool -------------------------------------------------------------------------

Connection: TypeAlias = "pymysql.connections.Connection[Any]"

#: Idle seconds after which a connection is pinged rather than only checked locally.
PING_AFTER: Final = 30.0


def _fd_is_quiet(fd: int) -> bool:
    """True when the socket ``fd`` is open and has nothing to read."""
    if fd < 0:
        return False
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        return not poller.poll(0)
    except (OSError, ValueError):
        return False


def socket_is_quiet(conn: Any) -> bool:
    """True when the connection's socket has nothing to read: not closed, no stray packet.

    A readable idle connection is never reusable (EOF, a KILL's error packet, or on TLS a record we
    did not ask for); treating a healthy TLS connection as unusable only costs a reconnect.
    """
    sock = getattr(conn, "_sock", None)
    if sock is None:
        return False
    pending = getattr(sock, "pending", None)  # TLS: bytes already decrypted and buffered
    if pending is not None and pending():
        return False
    try:
        fd = sock.fileno()
        if fd < 0:
            return False
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLPRI)
        return not poller.poll(0)
    except (OSError, ValueError):
        return False


class MySQLPool:
    """Up to ``size`` idle connections opened by ``connect``; more may be open while busy."""

    def __init__(
        self, connect: Callable[[], Connection], size: int, *, ping_after: float = PING_AFTER
    ) -> None:
        self._connect = connect
        self._ping_after = ping_after
        self._idle: queue.LifoQueue[tuple[Connection, float]] = queue.LifoQueue(maxsize=size)

    def take(self) -> Connection:
        """A reusable idle connection, or a new one."""
        while True:
            try:
                conn, last = self._idle.get_nowait()
            except queue.Empty:
                return self._connect()
            if self._reusable(conn, time.monotonic() - last):
                return conn
            with contextlib.suppress(Exception):  # closing a dead connection
                conn.close()

    def give_back(self, conn: Connection) -> None:
        """Return a healthy connection (closed instead when the pool is full)."""
        try:
            self._idle.put_nowait((conn, time.monotonic()))
        except queue.Full:
            with contextlib.suppress(Exception):
                conn.close()

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """A connection for one unit of work; closed, not pooled, if the work raised."""
        conn = self.take()
        try:
            yield conn
        except BaseException:
            with contextlib.suppress(Exception):
                conn.close()  # state unknown after an error: never hand it out again
            raise
        self.give_back(conn)

    def close(self) -> None:
        """Close every idle connection (busy ones are closed by their users)."""
        while True:
            try:
                conn, _ = self._idle.get_nowait()
            except queue.Empty:
                return
            with contextlib.suppress(Exception):
                conn.close()

    def _reusable(self, conn: Connection, idle_for: float) -> bool:
        if not socket_is_quiet(conn):
            return False
        if idle_for < self._ping_after:
            return True
        try:
            conn.ping(reconnect=False)
        except Exception:  # noqa: BLE001 - any failure means: open a new one
            return False
        return True


# -- errors, shared by the sync and async paths ------------------------------------------------------

#: Client error codes of a connection that could not be opened or was lost (CR_CONN_HOST_ERROR,
#: CR_SERVER_GONE_ERROR, CR_SERVER_LOST, CR_SERVER_LOST_EXTENDED).
UNAVAILABLE_CODES: Final = frozenset({2003, 2006, 2013, 2055})
#: MySQL's refusals of a user or a privilege: access denied (1044, 1045), a command or a column
#: denied (1142, 1143), a privilege needed (1227). A memory that follows its Secret re-reads it
#: after one of these (a rotation: the previous user's grace period ended) and retries once.
DENIED_CODES: Final = frozenset({1044, 1045, 1142, 1143, 1227})
_ACCESS_DENIED: Final = 1045


def describe_error(e: BaseException) -> str:
    """A MySQL driver error (PyMySQL or asyncmy) as ``(code) message`` text."""
    args: tuple[Any, ...] = tuple(getattr(e, "args", ()))
    if len(args) >= 2 and isinstance(args[0], int):
        return f"({args[0]}) {args[1]}"
    return f"{type(e).__name__}: {e}"


def error_code(e: BaseException) -> int | None:
    """The MySQL error code of a driver error, if it has one."""
    args: tuple[Any, ...] = tuple(getattr(e, "args", ()))
    return args[0] if args and isinstance(args[0], int) else None


def denied(e: BackendError) -> bool:
    """True when the server refused the user or a privilege (see :data:`DENIED_CODES`)."""
    cause = e.__cause__
    return cause is not None and error_code(cause) in DENIED_CODES


def timed_out(e: BaseException) -> bool:
    """True for a driver error caused by a timeout (a connect or a reply not in time)."""
    text = str(e).lower()
    return (
        isinstance(e, TimeoutError)
        or "timed out" in text
        or "read timeout" in text
        or isinstance(e.__cause__, TimeoutError)
    )


def say_if_applied(e: BackendUnavailable, *, sent: bool) -> None:
    """Tell in a failed write's error whether it may have been applied (``applied`` and the text)."""
    e.applied = False if not sent else None
    tail = (
        "the write may or may not have been applied: read the session before resending"
        if sent
        else "the write was not sent"
    )
    e.args = (f"{e.args[0]} ({tail})",)


def mysql_error(e: BaseException, where: str) -> BackendError:
    """A driver error as the SDK's error, naming ``where`` and the cause (never the password)."""
    text = describe_error(e)
    code = error_code(e)
    if code == _ACCESS_DENIED and "using password: NO" in text:
        return BackendError(
            f"{where}: authentication failed: no password was sent (is the binding's key 'password' "
            f"missing?): {text}"
        )
    if code == _ACCESS_DENIED:
        return BackendError(f"{where}: authentication failed (wrong user name or password): {text}")
    lower = text.lower()
    if "ssl" in lower or "certificate" in lower:
        return BackendError(f"{where}: TLS handshake failed (is the binding's CA the server's?): {text}")
    if code in UNAVAILABLE_CODES:
        cause = (
            "timed out (the server accepted no connection or sent no reply in time)"
            if timed_out(e)
            else "connection refused or lost"
        )
        return BackendUnavailable(f"{where}: unreachable: {cause}: {text}")
    return BackendError(f"{where}: {text}")


# -- the asyncio pool --------------------------------------------------------------------------------

#: Connections an :class:`AsyncMySQLPool` keeps open at most, per event loop (more callers wait).
ASYNC_POOL_SIZE: Final = 16
#: Seconds for a connect and for one reply when ``kwargs`` name none (the SDK's defaults,
#: :class:`chatmemory._connect.Timeouts`; this module, which the operator imports, cannot import it).
_CONNECT_TIMEOUT: Final = 5.0
_OPERATION_TIMEOUT: Final = 10.0
#: PyMySQL ``connect`` arguments that asyncmy spells differently, and those it has no use for (a
#: write waits in asyncio's buffer, not in a socket call; the pool bounds each step itself).
_ASYNCMY_RENAMED: Final = {"db": "database", "passwd": "password"}
_ASYNCMY_DROPPED: Final = frozenset({"write_timeout", "cursorclass", "binding"})


def asyncmy_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """asyncmy ``connect`` arguments from PyMySQL ones (the ``binding`` entry left out).

    A ``binding`` entry (:func:`chatmemory._connect.mysql_kwargs` adds it when the memory follows its
    Secret) is not read here: reading it may block, so :class:`AsyncMySQLPool` asks it for the user and
    password in a thread. asyncmy is a port of PyMySQL: most names are the same; ``db``/``passwd`` are
    renamed, ``write_timeout`` is dropped, an ``ssl.SSLContext`` passes as is; an argument asyncmy does
    not know makes its ``connect`` raise ``TypeError`` naming it (rather than a setting the async path
    silently lost).
    """
    out: dict[str, Any] = {}
    for name, value in kwargs.items():
        if name not in _ASYNCMY_DROPPED:
            out[_ASYNCMY_RENAMED.get(name, name)] = value
    return out


def _backoff(attempt: int) -> float:
    """Seconds before retry ``attempt``: 50 ms doubling to 1 s, +-50 % jitter (the sync history's)."""
    return float(min(1.0, 0.05 * 2**attempt) * (0.5 + random.random()))  # noqa: S311


@dataclass
class _LoopConnections:
    """One event loop's share of an :class:`AsyncMySQLPool`: its idle connections and its limit."""

    slots: asyncio.Semaphore
    idle: list[tuple[Any, float, int]] = field(default_factory=list)  # (connection, last use, generation)
    #: Suspended until the loop shuts down (see :meth:`AsyncMySQLPool._closer`); held here because
    #: the loop keeps only a weak reference.
    closer: AsyncIterator[None] | None = None


class AsyncMySQLPool:
    """Native asyncio connections to TiDB, MySQL or MariaDB (asyncmy), without worker threads.

    ``kwargs`` are PyMySQL ``connect`` arguments, as :func:`chatmemory._connect.mysql_kwargs` builds
    them from a binding (TLS context, timeouts, and ``binding`` when the credentials follow the
    Secret) or a history parses them from a URL; ``where`` names the server in errors (the password
    never appears in them). Each event loop gets its own connections (an asyncio connection belongs
    to the loop that opened it), at most ``size`` open at once; more callers wait their turn.

    Timeouts: a new connection must be open and authenticated within ``connect_timeout +
    read_timeout``, and each unit of work (a history call's one or two statements, a checkpointer
    step's few) done within ``read_timeout``, counting the ping of a pooled connection that was idle
    for ``ping_after`` seconds (a server that vanished without closing never answers it); either raises
    :class:`~chatmemory.errors.BackendUnavailable`. One timer per unit of work, not asyncmy's own
    ``read_timeout``: that one wraps every packet read in ``asyncio.wait_for`` (a task each) and
    turns off asyncmy's fast read path, which cost more CPU than the statements' round trips.

    Reuse follows :class:`MySQLPool`: a connection the server closed is dropped, one idle for
    ``ping_after`` seconds is pinged, one that saw an error or a cancellation is closed. :meth:`run`
    adds the retry rules of the sync history.
    """

    def __init__(
        self,
        kwargs: Mapping[str, Any],
        where: str,
        *,
        size: int = ASYNC_POOL_SIZE,
        ping_after: float = PING_AFTER,
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1 (got {size})")
        try:
            self._asyncmy = importlib.import_module("asyncmy")
        except ImportError:
            raise MissingExtra("tidb", "asyncmy") from None
        self._kwargs = dict(kwargs)
        self.where = where
        self.size = size
        self._ping_after = ping_after
        connect = float(self._kwargs.get("connect_timeout") or _CONNECT_TIMEOUT)
        self._operation = float(self._kwargs.pop("read_timeout", None) or _OPERATION_TIMEOUT)
        self._open_within = connect + self._operation
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopConnections] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self._generation = 0  # bumped when the credentials are re-read: older connections go
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    async def _mine(self) -> _LoopConnections:
        loop = asyncio.get_running_loop()
        with self._lock:
            mine = self._loops.get(loop)
            if mine is not None:
                return mine
            mine = self._loops[loop] = _LoopConnections(asyncio.Semaphore(self.size))
        mine.closer = self._closer(mine)
        await anext(mine.closer)
        return mine

    @staticmethod
    async def _closer(mine: _LoopConnections) -> AsyncIterator[None]:
        """Close the loop's idle connections when the loop shuts down.

        An asyncio connection cannot be closed once its loop is closed (its transport's last
        callback never runs), and an application that runs ``asyncio.run`` per request never calls
        :meth:`aclose`. The loop finalizes its suspended async generators before it closes
        (``asyncio.run``, ``asyncio.Runner`` and pytest-asyncio call ``shutdown_asyncgens``): this one
        then says goodbye on each idle connection.
        """
        try:
            yield
        finally:
            idle, mine.idle = mine.idle, []
            for conn, _, _ in idle:
                await _quit(conn)

    async def _open(self) -> Any:
        args = asyncmy_kwargs(self._kwargs)
        binding = self._kwargs.get("binding")
        if isinstance(binding, Binding):
            # The source may read its Secret now (every few seconds, or after a refusal): from the
            # Kubernetes API that is a blocking HTTP call, which the loop must not wait on.
            args["user"], args["password"] = await asyncio.to_thread(binding.credentials)
        try:
            async with asyncio.timeout(self._open_within):
                return await self._asyncmy.connect(**args)
        except TimeoutError as e:
            raise BackendUnavailable(
                f"{self.where}: unreachable: timed out (the server accepted no connection or sent no "
                f"reply within {self._open_within:g} s)"
            ) from e
        except self._asyncmy.errors.MySQLError as e:
            raise mysql_error(e, self.where) from e
        except OSError as e:
            raise BackendUnavailable(f"{self.where}: unreachable: connection refused or lost: {e}") from e

    async def _reusable(self, conn: Any, idle_for: float, generation: int, deadline: float) -> bool:
        """Whether a pooled connection can be used; a ping not answered by ``deadline`` (loop time)
        closes it and raises :class:`~chatmemory.errors.BackendUnavailable`."""
        if generation != self._generation or not conn.connected or getattr(conn, "_stream_broken", False):
            return False
        # The loop may not have read the server's EOF or error packet yet (a KILL while the loop was
        # busy): ask the socket itself, as the sync pool does.
        transport = getattr(conn, "_transport", None)
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None or not _fd_is_quiet(sock.fileno()):
            return False
        if idle_for < self._ping_after:
            return True
        try:
            async with asyncio.timeout_at(deadline):
                await conn.ping(reconnect=False)
        except TimeoutError as e:
            # Silence, not a closed socket: the server or the path to it is gone. The unit of work's
            # time is spent; asking for a new connection now would wait as long again.
            conn.close()
            raise BackendUnavailable(
                f"{self.where}: unreachable: timed out (the server did not answer a ping within "
                f"{self._operation:g} s)"
            ) from e
        except Exception:  # noqa: BLE001 - any other failure means: open a new one
            return False
        return True

    @asynccontextmanager
    async def connection(self, opened: list[bool] | None = None) -> AsyncIterator[Any]:
        """A live connection for one unit of work; closed, not pooled, if the work raised.

        Driver errors are raised as :class:`~chatmemory.errors.BackendError` (``BackendUnavailable``
        for a refused, lost or timed-out connection), with the driver's error as ``__cause__``.
        ``opened`` gets ``True`` appended once a connection is open (a statement may reach the server).
        """
        if self._closed:
            raise BackendError(f"{self.where}: the connection pool is closed")
        mine = await self._mine()
        loop = asyncio.get_running_loop()
        async with mine.slots:
            # One deadline for the unit of work, the reused connection's ping included; a new
            # connection has its own (``_open``) and the work then gets the full operation timeout.
            deadline = loop.time() + self._operation
            conn = None
            while mine.idle:
                candidate, last, generation = mine.idle.pop()
                if await self._reusable(candidate, time.monotonic() - last, generation, deadline):
                    conn = candidate
                    break
                candidate.close()
            generation = self._generation
            if conn is None:
                conn = await self._open()
                deadline = loop.time() + self._operation
            if opened is not None:
                opened.append(True)
            try:
                async with asyncio.timeout_at(deadline):
                    yield conn
            except self._asyncmy.errors.MySQLError as e:
                conn.close()
                raise mysql_error(e, self.where) from e
            except TimeoutError as e:
                conn.close()
                raise BackendUnavailable(
                    f"{self.where}: unreachable: timed out (the server sent no reply within "
                    f"{self._operation:g} s)"
                ) from e
            except BaseException:
                conn.close()  # state unknown after an error or a cancellation: never reuse it
                raise
            if self._closed or generation != self._generation:
                await _quit(conn)
            else:
                mine.idle.append((conn, time.monotonic(), generation))

    async def run(self, fn: Callable[[Any], Awaitable[T]], *, write: bool = False) -> T:
        """``await fn(cursor)`` on a live connection, retried where it is safe.

        A read (``write=False``, or a statement safe to repeat) is retried with backoff after a
        refused or lost connection, within the operation timeout; a timeout is not retried. A write
        is retried only when its connection could not be opened (it was never sent); otherwise the
        :class:`~chatmemory.errors.BackendUnavailable` says ``applied=None``. When the server refuses
        the credentials or a privilege and they follow a Secret, the Secret is read again, the
        pool's connections go, and the call (which the server did not run) is made once more.
        """
        deadline = time.monotonic() + self._operation
        refreshed = False
        for attempt in itertools.count():
            opened: list[bool] = []
            try:
                async with self.connection(opened) as conn, conn.cursor() as cur:
                    return await fn(cur)
            except BackendUnavailable as e:
                delay = _backoff(attempt)
                cause = e.__cause__
                safe = (not write or not opened) and cause is not None and not timed_out(cause)
                if safe and time.monotonic() + delay < deadline:
                    await asyncio.sleep(delay)
                    continue
                if write:
                    say_if_applied(e, sent=bool(opened))
                raise
            except BackendError as e:
                source = self._source()
                if refreshed or source is None or not denied(e):
                    raise
                refreshed = True
                source.refresh()  # marks it stale only: the next connection reads it, in a thread
                await self.forget_connections()
        raise AssertionError("unreachable")  # pragma: no cover

    def _source(self) -> CredentialSource | None:
        binding = self._kwargs.get("binding")
        return binding.source if isinstance(binding, Binding) else None

    async def forget_connections(self) -> None:
        """Close the idle connections and retire the busy ones (after the credentials changed)."""
        self._generation += 1
        await self._close_idle()

    async def _close_idle(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            loops = list(self._loops.items())
        for owner, mine in loops:
            idle, mine.idle = mine.idle, []
            for conn, _, _ in idle:
                if owner is loop:
                    await _quit(conn)
                else:
                    with contextlib.suppress(Exception):  # another loop's: close the transport only
                        conn.close()

    def close(self) -> None:
        """Close every idle connection without a goodbye (busy ones are closed when returned)."""
        self._closed = True
        with self._lock:
            loops = list(self._loops.values())
        for mine in loops:
            idle, mine.idle = mine.idle, []
            for conn, _, _ in idle:
                with contextlib.suppress(Exception):
                    conn.close()

    async def aclose(self) -> None:
        """Close every idle connection, saying goodbye (COM_QUIT) on the running loop's."""
        self._closed = True
        await self._close_idle()


async def _quit(conn: Any) -> None:
    """Close a connection politely, within a second; a peer that does not read is cut off."""
    try:
        async with asyncio.timeout(1.0):
            await conn.ensure_closed()
    except Exception:  # noqa: BLE001, S110 - closing: nothing to report
        pass
    finally:
        conn.close()
