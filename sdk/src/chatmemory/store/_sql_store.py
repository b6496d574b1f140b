# ruff: noqa: S608 - table names are validated identifiers ([A-Za-z0-9_], quoted); values are bound
"""The LangGraph store on TiDB, MySQL or MariaDB (PyMySQL), on the tables of :mod:`chatmemory.store.sql`.

Built by :func:`chatmemory.store.store_for` through :meth:`ChatMemorySQLStore.from_binding`, or
directly with PyMySQL connection settings (then :meth:`ChatMemorySQLStore.setup` creates the
tables). The batch logic, filters, ranking and TTL rules are the shared core's
(:mod:`chatmemory.store._common`); this module is the four primitives in SQL.

Round trips: statements that go together are sent in one packet (PyMySQL's multi-statement mode;
every value is escaped by PyMySQL, identifiers are validated): a batch's writes are one transaction
in one round trip (the items' upsert, the deletes, the vectors' replacement, one instant for all);
the gets of a batch are one SELECT; a search is one SELECT (on MariaDB with a query: the vectors,
then the page's values). A read that found items with a TTL, and refreshes, adds one UPDATE of
those items and their vectors (sent only then: an UPDATE that finds nothing still costs TiDB a
locking read). The server's clock decides expiry, the same clock its row TTL (TiDB) or EVENT
(MySQL/MariaDB) deletes by.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar

import orjson
from langgraph.store.base import GetOp, IndexConfig, Item, ListNamespacesOp, SearchItem, SearchOp, TTLConfig

from chatmemory._connect import Timeouts, live_mysql_kwargs, mysql_kwargs, mysql_timeouts
from chatmemory.contract import Binding, Key
from chatmemory.errors import BackendError, BackendUnavailable, BindingError
from chatmemory.sql import MySQLPool, qi
from chatmemory.store._common import (
    Candidate,
    StoreBase,
    Write,
    decode_value,
    encode_value,
    matches_filter,
    namespace_matches,
    namespace_of,
    namespace_text,
    scored_item,
    select_items,
    select_namespaces,
)
from chatmemory.store.sql import (
    DEFAULT_TABLE_PREFIX,
    MAX_FIELD_BYTES,
    MAX_KEY_BYTES,
    MAX_NAMESPACE_BYTES,
    TIMESTAMP_MAX,
    store_table_ddl,
    store_table_names,
    vector_in_sql,
)

if TYPE_CHECKING:
    import pymysql.connections

__all__ = ["ChatMemorySQLStore"]

T = TypeVar("T")

#: Lock conflicts worth retrying the whole transaction for: deadlock, lock wait timeout, TiDB's
#: write conflicts.
_RETRY_CODES: Final = frozenset({1213, 1205, 9007, 8022, 8028})
_ATTEMPTS: Final = 4
#: The server refused the user or a privilege (a rotation's previous user was dropped).
_DENIED: Final = frozenset({1044, 1045, 1142, 1143, 1227})
_DENIED_RETRIES: Final = 3
#: Client errors of a connection that could not be opened or was lost.
_UNAVAILABLE: Final = frozenset({2003, 2006, 2013, 2055})
#: Rows per multi-row INSERT or IN list.
_CHUNK: Final = 500
#: Longest TTL the SQL arithmetic is given (100 years; TIMESTAMP ends in 2038 anyway).
_MAX_TTL_SECONDS: Final = 100 * 365 * 86400.0
_INIT_COMMAND: Final = "SET time_zone = '+00:00'"
_COLUMNS: Final = "i.`namespace`, i.`key`, i.`value`, i.`created_at`, i.`updated_at`, i.`ttl_seconds`"
_LIVE: Final = "({a}.`expires_at` IS NULL OR {a}.`expires_at` > NOW(6))"
#: Newest first, then namespace as a tuple (``.`` sorts like the end of a label), then key: the
#: core's order (:func:`chatmemory.store._common.select_items`).
_RECENCY: Final = "i.`updated_at` DESC, REPLACE(i.`namespace`, '.', X'00'), i.`key`"


def _expiry(micros: str, now: str = "NOW(6)") -> str:
    """SQL for ``now + micros`` held within TIMESTAMP's range (NULL ``micros``: NULL, never)."""
    return f"LEAST({now} + INTERVAL {micros} MICROSECOND, TIMESTAMP'{TIMESTAMP_MAX}')"


class ChatMemorySQLStore(StoreBase):
    """A LangGraph ``BaseStore`` on TiDB, MySQL or MariaDB through PyMySQL.

    Args:
        connect_kwargs: ``pymysql.connect`` arguments (host, port, user, password, database, ssl,
            ...); the store adds utf8mb4, UTC sessions, autocommit and multi-statement packets.
        table_prefix: the tables are ``<prefix>store_items`` and ``<prefix>store_vectors``.
        index: LangGraph ``IndexConfig`` for semantic search. On TiDB 8.4+ the vectors are ranked
            in SQL (``VEC_COSINE_DISTANCE``, no vector index: the distances of the vectors under
            the searched prefix are computed on the server, only the page comes back); elsewhere the
            store loads the items and vectors under the prefix and ranks them itself.
        ttl: LangGraph ``TTLConfig`` (``default_ttl`` minutes, ``refresh_on_read``).
        pool_size: idle connections kept.

    Sync methods run on the calling thread. The async methods run the same code in a worker
    thread (PyMySQL has no asyncio API; only the Redis store is natively async), each call on its
    own pooled connection.
    """

    def __init__(
        self,
        connect_kwargs: Mapping[str, Any],
        *,
        table_prefix: str = DEFAULT_TABLE_PREFIX,
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        pool_size: int = 4,
    ) -> None:
        super().__init__(index=index, ttl=ttl)
        import pymysql.constants.CLIENT

        self.table_prefix = table_prefix
        items, vectors = store_table_names(table_prefix)
        self._items, self._vectors = qi(items), qi(vectors)
        kwargs = dict(connect_kwargs)
        for name, seconds in mysql_timeouts().items():  # a blackholed server raises, never hangs
            kwargs.setdefault(name, seconds)
        kwargs.update(
            autocommit=True,
            binary_prefix=True,
            charset="utf8mb4",
            init_command=_INIT_COMMAND,
            client_flag=int(kwargs.get("client_flag", 0)) | pymysql.constants.CLIENT.MULTI_STATEMENTS,
        )
        self._connect_kwargs = kwargs
        self._pool = MySQLPool(self._open, pool_size)
        self._server_version: str | None = None
        self._vector_column: bool | None = None

    @classmethod
    def from_binding(
        cls,
        binding: Binding,
        *,
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        timeouts: Timeouts | None = None,
        **options: Any,
    ) -> ChatMemorySQLStore:
        """The store of a ChatMemory on its binding's tables; follows the Secret's credentials.

        Raises:
            BindingError: the binding has no ``store_table_prefix`` (an operator from before the
                store provisioned the memory).
        """
        if not binding.store_table_prefix:
            raise BindingError(
                f"this memory has no LangGraph store tables (empty key {Key.STORE_TABLE_PREFIX.value!r}): "
                "the operator that provisioned it predates the store; upgrade it and let it "
                "reconcile the ChatMemory",
                key=Key.STORE_TABLE_PREFIX.value,
            )
        return cls(
            mysql_kwargs(binding, timeouts),
            table_prefix=binding.store_table_prefix,
            index=index,
            ttl=ttl,
            **options,
        )

    # -- connections ------------------------------------------------------------------------------

    def _open(self) -> pymysql.connections.Connection[Any]:
        import pymysql

        try:
            conn = pymysql.connect(**live_mysql_kwargs(self._connect_kwargs))
        except pymysql.MySQLError as e:
            raise _error(e, "cannot connect to the store's database") from e
        self._server_version = str(conn.get_server_info())  # from the handshake: no round trip
        return conn

    @property
    def vector_in_sql(self) -> bool:
        """Whether the embeddings are a VECTOR column, ranked in SQL (TiDB 8.4+ made them so).

        Read once from the table itself (one query, at the first indexed put or query search):
        tables made before the server gained the type keep float32 bytes and the brute force.
        """
        if self._vector_column is None:
            _, vectors = store_table_names(self.table_prefix)
            rows = self._run(
                [
                    (
                        "SELECT DATA_TYPE FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() "
                        "AND TABLE_NAME = %s AND COLUMN_NAME = 'embedding'",
                        (vectors,),
                    )
                ]
            )[0]
            if not rows:  # no table (yet): what setup() would make
                return vector_in_sql(self._version())
            self._vector_column = str(rows[0][0]).lower() == "vector"
        return self._vector_column

    def close(self) -> None:
        """Close the pooled connections."""
        self._pool.close()

    async def aclose(self) -> None:
        self.close()

    def setup(self) -> None:
        """Create the tables if missing (direct use; needs CREATE). Stores from a binding never call
        this: the operator provisions the tables and their expiry (a TiDB row TTL; on MySQL/MariaDB
        the EVENT of :func:`chatmemory.store.sql.store_ttl_event_sql`, which needs the EVENT
        privilege and is not created here)."""
        tidb = "tidb" in (self._version()).lower()
        ddl = store_table_ddl(self.table_prefix, tidb=tidb, vector_type=vector_in_sql(self._version()))
        self._run([(s, ()) for s in ddl])
        self._vector_column = None

    def _version(self) -> str:
        if self._server_version is None:
            with self._pool.connection():
                pass
        return self._server_version or ""

    def _run(
        self, statements: Sequence[tuple[str, Sequence[Any]]], *, transaction: bool = False
    ) -> list[list[Any]]:
        """Send ``statements`` in one packet and return the rows of each (``[]`` for a write).

        With ``transaction`` they run between START TRANSACTION and COMMIT; a lock conflict
        retries the whole packet. A memory that follows its Secret sends the packet again after
        the server refused its user or a privilege (a rotation's grace period ended while pooled
        connections still spoke for the previous user): the idle connections go, the Secret is read
        again; the refused packet did not run (a transaction's part rolled back with its
        connection). At most :data:`_DENIED_RETRIES` times: another thread may hand back one more
        connection of the previous user meanwhile.
        """
        import pymysql

        refreshed = 0
        attempt = 0
        while True:
            try:
                with self._pool.connection() as conn, conn.cursor() as cur:
                    parts = [cur.mogrify(sql, tuple(args) or None) for sql, args in statements]
                    if transaction:
                        parts = ["START TRANSACTION", *parts, "COMMIT"]
                    cur.execute(";\n".join(parts))
                    results = [list(cur.fetchall())]
                    while cur.nextset():
                        results.append(list(cur.fetchall()))
                    if transaction:
                        results = results[1:-1]
                    return results
            except pymysql.MySQLError as e:
                code = _code(e)
                if code in _RETRY_CODES and attempt + 1 < _ATTEMPTS:
                    time.sleep(0.01 * (2**attempt))
                    attempt += 1
                    continue
                if code in _DENIED and refreshed < _DENIED_RETRIES and self._follow_secret():
                    refreshed += 1
                    continue
                raise _error(e, "store statement failed") from e
            except BackendError as e:  # opening a connection failed
                cause = e.__cause__
                denied = cause is not None and _code(cause) in _DENIED
                if denied and refreshed < _DENIED_RETRIES and self._follow_secret():
                    refreshed += 1
                    continue
                raise

    def _follow_secret(self) -> bool:
        """After a refusal: read the Secret again and drop the idle connections; False when the
        store does not follow a Secret (its credentials cannot change)."""
        binding = self._connect_kwargs.get("binding")
        source = binding.source if isinstance(binding, Binding) else None
        if source is None:
            return False
        source.refresh()
        self._pool.close()  # the idle ones speak for the previous user too
        return True

    # -- the core's primitives --------------------------------------------------------------------

    def _get_items(self, gets: Sequence[GetOp]) -> list[Item | None]:
        """One SELECT for the batch's gets; then, only if a found item has a TTL and its op refreshes,
        one UPDATE (an UPDATE that finds nothing to do still costs TiDB a locking read)."""
        wanted = list(dict.fromkeys((op.namespace, op.key) for op in gets))
        rows = [r for part in self._run([self._select_sql(c) for c in _chunks(wanted, _CHUNK)]) for r in part]
        found: dict[tuple[tuple[str, ...], str], Item] = {}
        with_ttl: set[tuple[tuple[str, ...], str]] = set()
        for row in rows:
            item = _item(row)
            found[(item.namespace, item.key)] = item
            if row[5] is not None:
                with_ttl.add((item.namespace, item.key))
        refresh = list(dict.fromkeys((op.namespace, op.key) for op in gets if op.refresh_ttl))
        self._refresh([k for k in refresh if k in with_ttl])
        return [found.get((op.namespace, op.key)) for op in gets]

    def _select_sql(self, keys: Sequence[tuple[tuple[str, ...], str]]) -> tuple[str, Sequence[Any]]:
        where, args = _keys_in("i", keys)
        return f"SELECT {_COLUMNS} FROM {self._items} i WHERE {where} AND {_LIVE.format(a='i')}", args

    def _search_items(self, op: SearchOp, query_vector: list[float] | None) -> list[SearchItem]:
        if query_vector is not None and not self.vector_in_sql:
            return self._refreshed(op, self._rank_here(op, query_vector))
        where, args = _prefix("i", op.namespace_prefix)
        narrow, needles = _prefilter("i", op.filter)
        if query_vector is None:
            sql = (
                f"SELECT {_COLUMNS}, NULL FROM {self._items} i "
                f"WHERE {where} AND {_LIVE.format(a='i')}{narrow} ORDER BY {_RECENCY}"
            )
            params: tuple[Any, ...] = (*args, *needles)
        else:
            vwhere, vargs = _prefix("v", op.namespace_prefix)
            sql = (
                f"SELECT {_COLUMNS}, s.score FROM {self._items} i LEFT JOIN ("
                "SELECT v.`namespace`, v.`key`, "
                "MAX(COALESCE(1 - VEC_COSINE_DISTANCE(v.`embedding`, %s), 0)) AS score "
                f"FROM {self._vectors} v WHERE {vwhere} AND VEC_DIMS(v.`embedding`) = %s "
                f"AND {_LIVE.format(a='v')} GROUP BY v.`namespace`, v.`key`) s "
                "ON s.`namespace` = i.`namespace` AND s.`key` = i.`key` "
                f"WHERE {where} AND {_LIVE.format(a='i')}{narrow} "
                f"ORDER BY s.score IS NULL, s.score DESC, {_RECENCY}"
            )
            params = (orjson.dumps(query_vector).decode(), *vargs, len(query_vector), *args, *needles)
        return self._refreshed(op, self._page(op, sql, params))

    def _page(self, op: SearchOp, sql: str, params: tuple[Any, ...]) -> list[tuple[SearchItem, bool]]:
        """The page of ``op`` from ``sql`` (rows in the final order), each hit with whether it has a
        TTL: LIMIT/OFFSET on the server without a filter; with one, rows in growing chunks (the
        server already dropped those that cannot match, see :func:`_prefilter`), filtered here,
        until the page is full."""
        if op.limit == 0:
            return []
        if not op.filter:
            rows = self._run([(f"{sql} LIMIT %s OFFSET %s", (*params, op.limit, op.offset))])[0]
            return [(_search_item(r), r[5] is not None) for r in rows]
        wanted = op.offset + op.limit
        kept: list[tuple[SearchItem, bool]] = []
        start, size = 0, max(64, 2 * wanted)
        while len(kept) < wanted:
            rows = self._run([(f"{sql} LIMIT %s OFFSET %s", (*params, size, start))])[0]
            for r in rows:
                hit = _search_item(r)
                if matches_filter(hit.value, op.filter):
                    kept.append((hit, r[5] is not None))
            if len(rows) < size:
                break
            start += size
            size *= 4
        return kept[op.offset : wanted]

    def _rank_here(self, op: SearchOp, query_vector: list[float]) -> list[tuple[SearchItem, bool]]:
        """Brute force where the server has no vector type: every live item under the prefix (that
        may match the filter) with its vectors of the query's dimensions, ranked by the core:
        O(items x vectors x dims) here, and every candidate's vectors sent over. Without a filter
        the values are not sent: only the page's items are read back, in a second round trip."""
        where, args = _prefix("i", op.namespace_prefix)
        narrow, needles = _prefilter("i", op.filter)
        # without a filter the ranking needs no value nor created_at: both are read for the page only
        value, created = ("i.`value`", "i.`created_at`") if op.filter else ("NULL", "NULL")
        rows = self._run(
            [
                (
                    f"SELECT i.`namespace`, i.`key`, {value}, {created}, i.`updated_at`, "
                    f"i.`ttl_seconds`, v.`embedding` FROM {self._items} i LEFT JOIN {self._vectors} v "
                    "ON v.`namespace` = i.`namespace` AND v.`key` = i.`key` "
                    f"AND LENGTH(v.`embedding`) = %s AND {_LIVE.format(a='v')} "
                    f"WHERE {where} AND {_LIVE.format(a='i')}{narrow}",
                    (4 * len(query_vector), *args, *needles),
                )
            ]
        )[0]
        candidates: dict[tuple[bytes, bytes], Candidate] = {}
        for row in rows:
            at = (bytes(row[0]), bytes(row[1]))
            candidate = candidates.get(at)
            if candidate is None:
                candidate = candidates[at] = Candidate(_item(row) if op.filter else _bare_item(row))
            if row[6] is not None:
                blob = bytes(row[6])
                candidate.vectors.append(list(struct.unpack(f"<{len(blob) // 4}f", blob)))
        hits = select_items(candidates.values(), op, query_vector)
        if not op.filter and hits:  # read the page's values
            keys = [(h.namespace, h.key) for h in hits]
            full = {
                (item.namespace, item.key): (item, r[5] is not None)
                for r in self._run([self._select_sql(keys)])[0]
                for item in (_item(r),)
            }
            return [
                (scored_item(full[(h.namespace, h.key)][0], h.score), full[(h.namespace, h.key)][1])
                for h in hits
                if (h.namespace, h.key) in full  # deleted since the first read
            ]
        ttl = {(bytes(r[0]), bytes(r[1])) for r in rows if r[5] is not None}
        return [(h, (namespace_text(h.namespace).encode(), h.key.encode()) in ttl) for h in hits]

    def _refreshed(self, op: SearchOp, hits: list[tuple[SearchItem, bool]]) -> list[SearchItem]:
        """Refresh the TTL of the found items that have one when the search asks (one UPDATE)."""
        if op.refresh_ttl:
            self._refresh([(h.namespace, h.key) for h, has_ttl in hits if has_ttl])
        return [h for h, _ in hits]

    def _refresh(self, keys: Sequence[tuple[tuple[str, ...], str]]) -> None:
        if keys:
            self._run([self._refresh_sql(chunk) for chunk in _chunks(keys, _CHUNK)])

    def _refresh_sql(self, keys: Sequence[tuple[tuple[str, ...], str]]) -> tuple[str, Sequence[Any]]:
        """Push the expiry of live items that have a TTL (and of their vectors) to now + TTL."""
        where, args = _keys_in("i", keys)
        expiry = _expiry("ROUND(i.`ttl_seconds` * 1000000)")
        return (
            f"UPDATE {self._items} i LEFT JOIN {self._vectors} v "
            "ON v.`namespace` = i.`namespace` AND v.`key` = i.`key` "
            f"SET i.`expires_at` = {expiry}, v.`expires_at` = {expiry} "
            f"WHERE {where} AND i.`ttl_seconds` IS NOT NULL AND {_LIVE.format(a='i')}",
            args,
        )

    def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        if op.max_depth is not None and op.max_depth < 1:
            raise ValueError(f"max_depth must be at least 1, got {op.max_depth}")
        conditions = list(op.match_conditions or ())
        literal = (
            len(conditions) == 1 and conditions[0].match_type == "prefix" and "*" not in conditions[0].path
        )
        known = _literal_prefix(conditions)
        where, args = _prefix("i", known)
        live = _LIVE.format(a="i")
        if not conditions or literal:  # all the work on the server: distinct, cut, sorted, paged
            if op.limit == 0:
                return []
            ns = "i.`namespace`" if op.max_depth is None else "SUBSTRING_INDEX(i.`namespace`, '.', %s)"
            depth: tuple[Any, ...] = () if op.max_depth is None else (op.max_depth,)
            rows = self._run(
                [
                    (
                        f"SELECT {ns} AS ns FROM {self._items} i WHERE {where} AND {live} "
                        "GROUP BY ns ORDER BY REPLACE(ns, '.', X'00') LIMIT %s OFFSET %s",
                        (*depth, *args, op.limit, op.offset),
                    )
                ]
            )[0]
            return [namespace_of(bytes(r[0]).decode()) for r in rows]
        rows = self._run(
            [(f"SELECT DISTINCT i.`namespace` FROM {self._items} i WHERE {where} AND {live}", args)]
        )[0]
        spaces = (namespace_of(bytes(r[0]).decode()) for r in rows)
        return select_namespaces((s for s in spaces if namespace_matches(s, conditions)), op)

    def _write_items(self, writes: Sequence[Write]) -> None:
        if not writes:
            return
        puts = [w for w in writes if w.value is not None]
        deletes = [(w.namespace, w.key) for w in writes if w.value is None]
        vector_rows: list[tuple[Any, ...]] = []
        item_rows: list[tuple[Any, ...]] = []
        tidb_vectors = any(w.vectors for w in puts) and self.vector_in_sql
        for w in puts:
            ns, key = _checked(w.namespace, w.key)
            assert w.value is not None
            micros = None if w.ttl is None else round(min(w.ttl, _MAX_TTL_SECONDS) * 1_000_000)
            ttl = None if micros is None else micros / 1_000_000
            item_rows.append((ns, key, encode_value(w.value, namespace=w.namespace, key=w.key), micros, ttl))
            for field, vector in w.vectors:
                if len(field.encode()) > MAX_FIELD_BYTES:
                    raise ValueError(f"index field {field!r} is longer than {MAX_FIELD_BYTES} bytes")
                embedding: Any = (
                    orjson.dumps(vector).decode()
                    if tidb_vectors
                    else struct.pack(f"<{len(vector)}f", *vector)
                )
                vector_rows.append((ns, key, field.encode(), embedding, micros))
        # one instant for the whole batch: an item and its vectors get the same expiry
        statements: list[tuple[str, Sequence[Any]]] = [("SET @cm_now = NOW(6)", ())]
        for chunk in _chunks(item_rows, _CHUNK):
            values = ", ".join(
                [f"(%s, %s, %s, @cm_now, @cm_now, {_expiry('%s', '@cm_now')}, %s)"] * len(chunk)
            )
            statements.append(
                (
                    f"INSERT INTO {self._items} (`namespace`, `key`, `value`, `created_at`, `updated_at`, "
                    f"`expires_at`, `ttl_seconds`) VALUES {values} ON DUPLICATE KEY UPDATE "
                    # an overwrite keeps created_at, unless the item it replaces had expired
                    "`created_at` = IF(`expires_at` IS NOT NULL AND `expires_at` <= @cm_now, "
                    "VALUES(`created_at`), `created_at`), `value` = VALUES(`value`), "
                    "`updated_at` = VALUES(`updated_at`), `expires_at` = VALUES(`expires_at`), "
                    "`ttl_seconds` = VALUES(`ttl_seconds`)",
                    [x for row in chunk for x in row],
                )
            )
        deleted = [_checked(ns, key) for ns, key in deletes]
        for chunk in _chunks(deleted, _CHUNK):
            where, args = _encoded_keys_in("", chunk)  # MariaDB before 11.6: no alias in a DELETE
            statements.append((f"DELETE FROM {self._items} WHERE {where}", args))
        # every written key loses its old vectors: an overwrite re-indexes, a delete leaves none
        for chunk in _chunks([(r[0], r[1]) for r in item_rows] + deleted, _CHUNK):
            where, args = _encoded_keys_in("", chunk)
            statements.append((f"DELETE FROM {self._vectors} WHERE {where}", args))
        for chunk in _chunks(vector_rows, _CHUNK):
            values = ", ".join([f"(%s, %s, %s, %s, {_expiry('%s', '@cm_now')})"] * len(chunk))
            statements.append(
                (
                    f"INSERT INTO {self._vectors} (`namespace`, `key`, `field`, `embedding`, `expires_at`) "
                    f"VALUES {values}",
                    [x for row in chunk for x in row],
                )
            )
        self._run(statements, transaction=True)


# -- rows and SQL fragments -----------------------------------------------------------------------


def _checked(namespace: tuple[str, ...], key: str) -> tuple[bytes, bytes]:
    """The namespace and key as stored (UTF-8), within the primary key's limits."""
    ns, k = namespace_text(namespace).encode(), str(key).encode()
    if len(ns) > MAX_NAMESPACE_BYTES:
        raise ValueError(f"namespace {namespace!r} is longer than {MAX_NAMESPACE_BYTES} bytes (as text)")
    if len(k) > MAX_KEY_BYTES:
        raise ValueError(f"key {key[:40]!r} (cut here) is longer than {MAX_KEY_BYTES} bytes")
    return ns, k


def _keys_in(alias: str, keys: Sequence[tuple[tuple[str, ...], str]]) -> tuple[str, tuple[Any, ...]]:
    return _encoded_keys_in(alias, [(namespace_text(ns).encode(), k.encode()) for ns, k in keys])


def _encoded_keys_in(alias: str, keys: Sequence[tuple[bytes, bytes]]) -> tuple[str, tuple[Any, ...]]:
    """Rows with these (namespace, key) pairs, spelt as ORs: MariaDB reads a row constructor
    ``(a, b) IN (...)`` in a DELETE or UPDATE with a full scan, the ORs as primary-key lookups."""
    a = f"{alias}." if alias else ""
    one = f"({a}`namespace` = %s AND {a}`key` = %s)"
    return "(" + " OR ".join([one] * len(keys)) + ")", tuple(x for k in keys for x in k)


#: Characters every JSON encoder writes as themselves inside a string.
_PLAIN: Final = frozenset(chr(c) for c in range(0x20, 0x7F)) - {'"', "\\", "/"}


def _needles(expected: Any) -> list[bytes]:
    """JSON strings an item's value must contain to meet ``expected`` as a filter condition."""
    if isinstance(expected, str):
        return [b'"' + expected.encode() + b'"'] if set(expected) <= _PLAIN else []
    if isinstance(expected, Mapping):
        if any(str(k).startswith("$") for k in expected):
            return _needles(expected["$eq"]) if "$eq" in expected else []
        return [n for v in expected.values() for n in _needles(v)]
    return []


def _prefilter(alias: str, filter: Mapping[str, Any] | None) -> tuple[str, tuple[Any, ...]]:
    """SQL that drops rows which cannot match ``filter``: a value equal to a string holds that
    string's JSON text. Only a superset of the matches: the core's evaluator decides."""
    needles = [n for v in (filter or {}).values() for n in _needles(v)]
    return "".join(f" AND INSTR({alias}.`value`, %s) > 0" for _ in needles), tuple(needles)


def _prefix(alias: str, prefix: tuple[str, ...]) -> tuple[str, tuple[Any, ...]]:
    """Rows whose namespace starts with the whole labels of ``prefix``: one key range or two."""
    if not prefix:
        return "1 = 1", ()
    p = namespace_text(prefix).encode()
    column = f"{alias}.`namespace`"
    return f"({column} = %s OR ({column} >= %s AND {column} < %s))", (p, p + b".", p + b"/")


def _literal_prefix(conditions: Sequence[Any]) -> tuple[str, ...]:
    """The labels every listed namespace must start with: a prefix condition's leading literal labels."""
    for cond in conditions:
        if cond.match_type == "prefix":
            out: list[str] = []
            for label in cond.path:
                if label == "*":
                    break
                out.append(label)
            return tuple(out)
    return ()


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC)  # sessions run in UTC


def _item(row: Sequence[Any]) -> Item:
    return Item(
        namespace=namespace_of(bytes(row[0]).decode()),
        key=bytes(row[1]).decode(),
        value=decode_value(bytes(row[2])),
        created_at=_utc(row[3]),
        updated_at=_utc(row[4]),
    )


def _bare_item(row: Sequence[Any]) -> Item:
    """An item to rank by (namespace, key, updated_at; no value)."""
    updated = _utc(row[4])
    return Item(
        namespace=namespace_of(bytes(row[0]).decode()),
        key=bytes(row[1]).decode(),
        value={},
        created_at=updated,
        updated_at=updated,
    )


def _search_item(row: Sequence[Any]) -> SearchItem:
    return scored_item(_item(row), None if row[6] is None else float(row[6]))


def _chunks(items: Sequence[T], n: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _code(e: BaseException) -> int | None:
    args: tuple[Any, ...] = tuple(getattr(e, "args", ()))
    return args[0] if args and isinstance(args[0], int) else None


def _error(e: BaseException, what: str) -> BackendError:
    """A PyMySQL error as a BackendError naming the cause (never the password)."""
    args: tuple[Any, ...] = tuple(getattr(e, "args", ()))
    text = f"error {args[0]}: {args[1]}" if len(args) >= 2 else str(e)
    if _code(e) in _UNAVAILABLE:
        return BackendUnavailable(f"{what}: the server is unreachable: {text}")
    return BackendError(f"{what}: {text}")
