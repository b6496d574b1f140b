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
"""

from __future__ import annotations

import contextlib
import math
import queue
import re
import select
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, TypeAlias

if TYPE_CHECKING:
    import pymysql.connections

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
