# ruff: noqa: S608 - table names are validated identifiers ([A-Za-z0-9_], quoted); values are bound
"""The LangGraph store's tables on TiDB, MySQL or MariaDB: names, DDL and expiry, without langgraph.

The operator (``chatmemory_operator.backends.tidb``) creates these tables with a ChatMemory and
writes their prefix into the Secret (``store_table_prefix``); the SDK's
:class:`chatmemory.store._sql_store.ChatMemorySQLStore` reads and writes them and runs no DDL when
built from a binding. Both sides take the names, the DDL and the vector rule from here.

Two tables in the memory's database:

``<prefix>store_items``
    One row per item: ``namespace`` (the labels joined by ``.``, which no label may contain, as
    UTF-8 bytes), ``key``, ``value`` (the JSON text, byte for byte as the SDK encoded it: TiDB's
    JSON type would turn ``1.0`` into ``1`` and round integers beyond 64 bits), ``created_at``,
    ``updated_at``, ``expires_at`` (NULL: never) and ``ttl_seconds`` (what a read refreshes the
    expiry by). Primary key ``(namespace, key)``: a namespace prefix is the key range
    ``[p, p]`` plus ``[p + ".", p + "/")``, so prefix searches and listings read one index range.
``<prefix>store_vectors``
    One row per embedded text of an item: ``namespace``, ``key``, ``field`` (the index path, with
    ``.<i>`` for paths that select several texts), ``embedding`` and the item's ``expires_at``.
    On TiDB 8.4 and later (:func:`vector_in_sql`) the embedding is a ``VECTOR`` column *without*
    fixed dimensions and searches rank with ``VEC_COSINE_DISTANCE`` in SQL; elsewhere (MariaDB
    10.x, MySQL, older TiDB) it is a ``MEDIUMBLOB`` of little-endian float32 values ranked by the
    SDK over the namespaces searched.

**Why one dimension-free vector table, made by the operator.** The dimensions are only known when
an application passes ``index=``. A per-dimension table would need the memory's user to hold
``CREATE`` (and ``DROP``, to change models) on its database, or the operator to guess the
dimensions. A dimension-free column needs no DDL from the SDK: the memory's user keeps exactly
``SELECT, INSERT, DELETE`` on its database and ``UPDATE`` on its own tables. The cost: no vector
(HNSW) index, which on TiDB needs fixed dimensions and TiFlash anyway; TiDB still computes the
distances next to the data and sends back only the page. Rows of another dimension (an index
whose model changed) are ignored by searches: their items count as unindexed until re-put.

**Expiry.** Readers never return a row whose ``expires_at`` has passed (the server's clock,
``NOW(6)``); the server removes such rows: on TiDB the tables' row TTL (``TTL = expires_at +
INTERVAL 0 MINUTE``, job every minute), on MySQL/MariaDB an EVENT (:func:`store_ttl_event_sql`)
every minute. ``TIMESTAMP`` columns keep the instants in UTC whatever the session's time zone,
which the TTL job and the event compare correctly; their range ends in January 2038, so an expiry
later than that is stored as the range's end (:data:`TIMESTAMP_MAX`).
"""

from __future__ import annotations

import re
from typing import Final

from chatmemory.sql import qualified, validate_identifier

__all__ = [
    "DEFAULT_TABLE_PREFIX",
    "EVENT_SUFFIX",
    "MAX_FIELD_BYTES",
    "MAX_KEY_BYTES",
    "MAX_NAMESPACE_BYTES",
    "TABLE_GRANT",
    "TIMESTAMP_MAX",
    "store_event_name",
    "store_table_ddl",
    "store_table_names",
    "store_ttl_alter_sql",
    "store_ttl_clause",
    "store_ttl_current",
    "store_ttl_event_sql",
    "vector_in_sql",
]

DEFAULT_TABLE_PREFIX: Final = "chatmemory_"
TABLE_SUFFIXES: Final = ("store_items", "store_vectors")
EVENT_SUFFIX: Final = "store_ttl"
#: What the memory's user needs on the two tables beyond its database's SELECT, INSERT, DELETE:
#: UPDATE, for the upsert of a put and the expiry a read refreshes. No DDL.
TABLE_GRANT: Final = "UPDATE"
#: Longest namespace (labels joined by ``.``), key and field name, in UTF-8 bytes: the primary
#: keys stay within the 3072-byte index limit of TiDB and InnoDB.
MAX_NAMESPACE_BYTES: Final = 1024
MAX_KEY_BYTES: Final = 1024
MAX_FIELD_BYTES: Final = 512
#: The last instant a TIMESTAMP holds (UTC).
TIMESTAMP_MAX: Final = "2038-01-19 03:14:07.999999"
TTL_JOB_INTERVAL: Final = "1m"
#: The first TiDB release with the VECTOR type and its distance functions.
TIDB_VECTOR_SINCE: Final = (8, 4)

_TIDB_VERSION: Final = re.compile(r"TiDB-v(\d+)\.(\d+)", re.IGNORECASE)
_MAX_PREFIX: Final = 64 - len("store_vectors")


def store_table_names(table_prefix: str) -> tuple[str, str]:
    """(items, vectors) table names for a prefix; raises ValueError naming a bad prefix."""
    if table_prefix:
        validate_identifier(table_prefix, "store table prefix", max_len=_MAX_PREFIX)
    items, vectors = (table_prefix + s for s in TABLE_SUFFIXES)
    return items, vectors


def store_event_name(table_prefix: str) -> str:
    """The MySQL/MariaDB expiry EVENT of the store's tables."""
    store_table_names(table_prefix)
    return table_prefix + EVENT_SUFFIX


def vector_in_sql(server_version: str) -> bool:
    """Whether a server (``SELECT VERSION()``) keeps embeddings as ``VECTOR`` and ranks in SQL.

    TiDB 8.4 and later; MySQL and MariaDB 10.x have no usable vector type. The operator picks the
    column type and the SDK the search path by this one rule, so they always agree.
    """
    m = _TIDB_VERSION.search(server_version)
    return m is not None and (int(m.group(1)), int(m.group(2))) >= TIDB_VECTOR_SINCE


def store_ttl_clause() -> str:
    """TiDB table options: delete rows once ``expires_at`` has passed (NULL never expires)."""
    return f"TTL = `expires_at` + INTERVAL 0 MINUTE TTL_ENABLE = 'ON' TTL_JOB_INTERVAL = '{TTL_JOB_INTERVAL}'"


def store_ttl_current(create_table: str) -> bool:
    """Whether TiDB's ``SHOW CREATE TABLE`` text carries :func:`store_ttl_clause`, enabled."""
    flat = create_table.replace(" ", "")
    return (
        "TTL=`expires_at`+INTERVAL0MINUTE" in flat
        and "TTL_ENABLE='ON'" in flat
        and f"TTL_JOB_INTERVAL='{TTL_JOB_INTERVAL}'" in flat
    )


def store_table_ddl(
    table_prefix: str, *, tidb: bool, vector_type: bool, database: str | None = None
) -> list[str]:
    """``CREATE TABLE IF NOT EXISTS`` for the items and vectors tables, in that order.

    ``tidb`` adds clustered primary keys and the row TTL; elsewhere each table gets an
    ``expires_at`` index for the expiry EVENT. ``vector_type`` (see :func:`vector_in_sql`) makes
    the embedding a dimension-free ``VECTOR``, else float32 bytes. ``database`` qualifies the names.
    """
    if database:
        validate_identifier(database, "database")
    items, vectors = store_table_names(table_prefix)
    clustered = " CLUSTERED" if tidb else ""
    expiry_index = "" if tidb else ",\n  KEY `expires_idx` (`expires_at`)"
    options = " DEFAULT CHARSET = utf8mb4"
    if tidb:
        options += " " + store_ttl_clause()
    stamp = "TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)"
    embedding = "VECTOR NOT NULL" if vector_type else "MEDIUMBLOB NOT NULL"
    return [
        f"CREATE TABLE IF NOT EXISTS {qualified(database, items)} (\n"
        f"  `namespace` VARBINARY({MAX_NAMESPACE_BYTES}) NOT NULL,\n"
        f"  `key` VARBINARY({MAX_KEY_BYTES}) NOT NULL,\n"
        "  `value` LONGBLOB NOT NULL,\n"
        f"  `created_at` {stamp},\n"
        f"  `updated_at` {stamp},\n"
        "  `expires_at` TIMESTAMP(6) NULL DEFAULT NULL,\n"
        "  `ttl_seconds` DOUBLE NULL DEFAULT NULL,\n"
        f"  PRIMARY KEY (`namespace`, `key`){clustered}{expiry_index}\n"
        f"){options}",
        f"CREATE TABLE IF NOT EXISTS {qualified(database, vectors)} (\n"
        f"  `namespace` VARBINARY({MAX_NAMESPACE_BYTES}) NOT NULL,\n"
        f"  `key` VARBINARY({MAX_KEY_BYTES}) NOT NULL,\n"
        f"  `field` VARBINARY({MAX_FIELD_BYTES}) NOT NULL,\n"
        f"  `embedding` {embedding},\n"
        "  `expires_at` TIMESTAMP(6) NULL DEFAULT NULL,\n"
        f"  PRIMARY KEY (`namespace`, `key`, `field`){clustered}{expiry_index}\n"
        f"){options}",
    ]


def store_ttl_alter_sql(table_prefix: str, *, database: str | None = None) -> list[str]:
    """TiDB: ``ALTER TABLE`` statements that put back the row TTL of both tables."""
    return [
        f"ALTER TABLE {qualified(database, t)} {store_ttl_clause()}" for t in store_table_names(table_prefix)
    ]


def store_ttl_event_sql(database: str, table_prefix: str) -> list[str]:
    """MySQL/MariaDB: statements that (re)create the EVENT deleting expired rows every minute.

    Idempotent (drop, then create); needs ``event_scheduler=ON`` to run.
    """
    validate_identifier(database, "database")
    deletes = " ".join(
        f"DELETE FROM {qualified(database, t)} WHERE `expires_at` <= NOW(6);"
        for t in store_table_names(table_prefix)
    )
    event = qualified(database, store_event_name(table_prefix))
    return [
        f"DROP EVENT IF EXISTS {event}",
        f"CREATE EVENT {event} ON SCHEDULE EVERY 1 MINUTE ENABLE DO BEGIN {deletes} END",
    ]
