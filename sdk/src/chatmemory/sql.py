"""The SQL message table, defined once: identifier rules, the table DDL, TiDB's row TTL clause.

Called by :mod:`chatmemory.histories.tidb` (the SDK's TiDB/MySQL/MariaDB history, which runs the DDL
only when it is built directly from a connection string, as LangChain's seed class does) and by the
operator's TiDB backend (``chatmemory_operator.backends.tidb``), which provisions the same table for
a ChatMemory. Both import from here so the table the operator makes is exactly the one the SDK reads.

The table keeps LangChain's ``TiDBChatMessageHistory`` columns (``id``, ``session_id``, ``message``
JSON, ``create_time``, ``INDEX session_idx``), so either class can read the other's rows. On TiDB it
adds ``AUTO_ID_CACHE 1`` (ids increase across TiDB servers, so ``ORDER BY id`` is the write order)
and, with a TTL, TiDB's row TTL clause. Everything here is pure: no connection, no I/O.

Identifiers are validated (``[A-Za-z0-9_]``, 1-64 characters) and backtick-quoted; values are never
spelled into SQL text: every statement built here takes ``%s`` parameters (PyMySQL's paramstyle).
"""

from __future__ import annotations

import math
import re
from typing import Final

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
