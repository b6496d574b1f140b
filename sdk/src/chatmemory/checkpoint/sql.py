# ruff: noqa: S608 - table names are validated identifiers ([A-Za-z0-9_], quoted); values are bound
"""LangGraph checkpointer on TiDB, MySQL or MariaDB (PyMySQL), and the DDL the operator runs for it.

Three tables in the memory's database, named from the binding's ``checkpoint_table_prefix``
(``<prefix>checkpoints``, ``<prefix>checkpoint_blobs``, ``<prefix>checkpoint_writes``). The
operator creates them with :func:`checkpoint_table_ddl` when it provisions a ChatMemory (and, on
MySQL/MariaDB, the expiry EVENT from :func:`checkpoint_ttl_event_sql`); a saver built from a
binding runs no DDL. A saver built directly (``chatmemory.checkpoint.ChatMemorySQLSaver``) offers
its ``setup()``.

Statements are the subset TiDB, MySQL and MariaDB all accept: no ``INSERT ... AS new`` (upserts use
``ON DUPLICATE KEY UPDATE col = VALUES(col)``), no JSON defaults, ids in ``VARBINARY`` columns
(byte-exact comparison and order, whatever the server's default collation), clustered primary
keys on TiDB.

**TTL**: a thread expires ``ttl`` after its last write. Each row has ``updated_at``; TiDB deletes
rows with its row TTL (``TTL = updated_at + INTERVAL n MINUTE``), MySQL/MariaDB with an EVENT, both
after ``ttl + slack`` (:func:`ttl_slack_seconds`, 10 % of the TTL and at least a minute). On every
write the saver:

- sets ``updated_at`` of the rows it writes, and of the checkpoint a ``put_writes`` belongs to, so
  the newest ``updated_at`` among a thread's checkpoints is the time of its last write;
- re-stamps the thread's rows older than ``slack / 2`` (skipped when this saver did so less than
  ``slack / 2`` ago), so no row of a thread is older than its last write minus ``slack``;
- treats a thread whose newest checkpoint row is older than ``ttl`` as gone: reads hide it and the
  next write deletes what is left of it first.

So a thread disappears for readers exactly ``ttl`` after its last write, no row goes earlier, and
all are physically gone within ``ttl + slack`` plus the TTL job (or event) interval.
"""

from __future__ import annotations

import math
import re
from typing import Final

__all__ = [
    "DEFAULT_TABLE_PREFIX",
    "REQUIRED_GRANTS",
    "checkpoint_table_ddl",
    "checkpoint_table_names",
    "checkpoint_ttl_alter_sql",
    "checkpoint_ttl_event_sql",
    "ttl_clause",
    "ttl_delete_after_seconds",
    "ttl_minutes",
    "ttl_slack_seconds",
]

DEFAULT_TABLE_PREFIX: Final = "chatmemory_"
#: What the memory's user needs on its database for checkpoints: UPDATE on top of the chat
#: history's SELECT, INSERT, DELETE (upserts and the TTL stamps). No DDL.
REQUIRED_GRANTS: Final[tuple[str, ...]] = ("SELECT", "INSERT", "UPDATE", "DELETE")
TABLE_SUFFIXES: Final = ("checkpoints", "checkpoint_blobs", "checkpoint_writes")
EVENT_SUFFIX: Final = "checkpoint_ttl"
TTL_JOB_INTERVAL: Final = "1m"
_IDENT: Final = re.compile(r"^[A-Za-z0-9_]*$")
_MAX_NAME: Final = 64


# -- names and DDL (called by the operator) ------------------------------------------------------


def _qi(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def checkpoint_table_names(table_prefix: str) -> tuple[str, str, str]:
    """(checkpoints, blobs, writes) table names for a prefix; validates the prefix."""
    if not _IDENT.match(table_prefix):
        raise ValueError(f"checkpoint table prefix {table_prefix!r} may only use [A-Za-z0-9_]")
    names = tuple(table_prefix + s for s in TABLE_SUFFIXES)
    if any(len(n) > _MAX_NAME for n in names):
        raise ValueError(f"checkpoint table prefix {table_prefix!r} is too long (table names over 64)")
    return names[0], names[1], names[2]


def ttl_slack_seconds(ttl_seconds: int) -> int:
    """How much later than ``ttl`` rows may be physically deleted (see the module docstring)."""
    return max(60, ttl_seconds // 10)


def ttl_delete_after_seconds(ttl_seconds: int) -> int:
    """Age of ``updated_at`` after which the server deletes a row: ``ttl + slack``."""
    return ttl_seconds + ttl_slack_seconds(ttl_seconds)


def ttl_minutes(ttl_seconds: int) -> int:
    """TiDB's TTL interval in whole minutes (rounded up) for a memory TTL."""
    return math.ceil(ttl_delete_after_seconds(ttl_seconds) / 60)


def ttl_clause(ttl_seconds: int | None) -> str:
    """TiDB table options for the row TTL on ``updated_at`` (empty without a TTL)."""
    if not ttl_seconds or ttl_seconds <= 0:
        return ""
    return (
        f"TTL = `updated_at` + INTERVAL {ttl_minutes(ttl_seconds)} MINUTE "
        f"TTL_ENABLE = 'ON' TTL_JOB_INTERVAL = '{TTL_JOB_INTERVAL}'"
    )


def _table(database: str | None, name: str) -> str:
    return f"{_qi(database)}.{_qi(name)}" if database else _qi(name)


def checkpoint_table_ddl(
    table_prefix: str, *, tidb: bool, ttl_seconds: int, database: str | None = None
) -> list[str]:
    """``CREATE TABLE IF NOT EXISTS`` for the three checkpoint tables, in creation order.

    ``tidb`` adds clustered primary keys and TiDB's row TTL (when ``ttl_seconds`` > 0); on
    MySQL/MariaDB expiry is the EVENT of :func:`checkpoint_ttl_event_sql` and each table gets an
    ``updated_at`` index for it. ``database`` qualifies the names (else the connection's database).
    """
    cp, blobs, writes = checkpoint_table_names(table_prefix)
    clustered = " CLUSTERED" if tidb else ""
    extra_index = "" if tidb else ",\n  KEY `updated_idx` (`updated_at`)"
    options = " DEFAULT CHARSET = utf8mb4"
    if tidb and ttl_seconds > 0:
        options += " " + ttl_clause(ttl_seconds)
    stamp = "`updated_at` TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)"
    return [
        f"CREATE TABLE IF NOT EXISTS {_table(database, cp)} (\n"
        "  `thread_id` VARBINARY(512) NOT NULL,\n"
        "  `checkpoint_ns` VARBINARY(1024) NOT NULL,\n"
        "  `checkpoint_id` VARBINARY(64) NOT NULL,\n"
        "  `parent_checkpoint_id` VARBINARY(64) NULL,\n"
        "  `run_id` VARBINARY(255) NULL,\n"
        "  `type` VARBINARY(64) NOT NULL,\n"
        "  `checkpoint` LONGBLOB NOT NULL,\n"
        "  `metadata_type` VARBINARY(64) NOT NULL,\n"
        "  `metadata` LONGBLOB NOT NULL,\n"
        f"  {stamp},\n"
        f"  PRIMARY KEY (`thread_id`, `checkpoint_ns`, `checkpoint_id`){clustered},\n"
        "  KEY `run_idx` (`run_id`),\n"
        f"  KEY `thread_updated_idx` (`thread_id`, `updated_at`){extra_index}\n"
        f"){options}",
        f"CREATE TABLE IF NOT EXISTS {_table(database, blobs)} (\n"
        "  `thread_id` VARBINARY(512) NOT NULL,\n"
        "  `checkpoint_ns` VARBINARY(1024) NOT NULL,\n"
        "  `channel` VARBINARY(512) NOT NULL,\n"
        "  `version` VARBINARY(128) NOT NULL,\n"
        "  `type` VARBINARY(64) NOT NULL,\n"
        "  `data` LONGBLOB NULL,\n"
        f"  {stamp},\n"
        f"  PRIMARY KEY (`thread_id`, `checkpoint_ns`, `channel`, `version`){clustered}{extra_index}\n"
        f"){options}",
        f"CREATE TABLE IF NOT EXISTS {_table(database, writes)} (\n"
        "  `thread_id` VARBINARY(512) NOT NULL,\n"
        "  `checkpoint_ns` VARBINARY(1024) NOT NULL,\n"
        "  `checkpoint_id` VARBINARY(64) NOT NULL,\n"
        "  `task_id` VARBINARY(255) NOT NULL,\n"
        "  `idx` INT NOT NULL,\n"
        "  `channel` VARBINARY(512) NOT NULL,\n"
        "  `type` VARBINARY(64) NOT NULL,\n"
        "  `data` LONGBLOB NOT NULL,\n"
        "  `task_path` VARBINARY(2048) NOT NULL DEFAULT '',\n"
        f"  {stamp},\n"
        "  PRIMARY KEY (`thread_id`, `checkpoint_ns`, `checkpoint_id`, `task_id`, `idx`)"
        f"{clustered}{extra_index}\n"
        f"){options}",
    ]


def checkpoint_ttl_alter_sql(
    table_prefix: str, *, ttl_seconds: int, database: str | None = None
) -> list[str]:
    """TiDB: ``ALTER TABLE`` statements that set (or remove) the row TTL of existing tables."""
    clause = ttl_clause(ttl_seconds)
    return [
        f"ALTER TABLE {_table(database, t)} {clause if clause else 'REMOVE TTL'}"
        for t in checkpoint_table_names(table_prefix)
    ]


def checkpoint_ttl_event_sql(database: str, table_prefix: str, ttl_seconds: int) -> list[str]:
    """MySQL/MariaDB: statements that (re)create the expiry EVENT (only a DROP without a TTL).

    The event runs every minute in ``database`` and deletes rows whose ``updated_at`` is older than
    ``ttl + slack``; it needs ``event_scheduler=ON``. Idempotent: it drops and recreates the event.
    """
    if not _IDENT.match(database) or not database:
        raise ValueError(f"database {database!r} may only use [A-Za-z0-9_]")
    names = checkpoint_table_names(table_prefix)
    event = _table(database, table_prefix + EVENT_SUFFIX)
    out = [f"DROP EVENT IF EXISTS {event}"]
    if ttl_seconds > 0:
        after = ttl_delete_after_seconds(ttl_seconds)
        deletes = " ".join(
            f"DELETE FROM {_table(database, t)} WHERE `updated_at` < NOW(6) - INTERVAL {after} SECOND;"
            for t in names
        )
        out.append(f"CREATE EVENT {event} ON SCHEDULE EVERY 1 MINUTE ENABLE DO BEGIN {deletes} END")
    return out
