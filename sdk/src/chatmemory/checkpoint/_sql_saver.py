"""The TiDB / MySQL / MariaDB checkpointer itself (see :mod:`chatmemory.checkpoint.sql` for the
layout, the DDL and the TTL semantics). Separate so that the DDL imports without langgraph; users
reach the class through :mod:`chatmemory.checkpoint` (``checkpointer_for`` or the lazy
``ChatMemorySQLSaver`` export)."""

# ruff: noqa: S608 - table names are validated identifiers ([A-Za-z0-9_], quoted); values are bound
from __future__ import annotations

import asyncio
import builtins
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import Checkpoint, CheckpointMetadata, CheckpointTuple
from langgraph.checkpoint.serde.base import SerializerProtocol

from chatmemory._connect import live_mysql_kwargs, mysql_timeouts
from chatmemory.checkpoint._common import (
    PAGE,
    DumpedCheckpoint,
    DumpedWrites,
    Listing,
    Op,
    Saver,
    address,
    adrive,
    checkpoint_tuple,
    drive,
    matches,
    run_id_of,
    thread_id_of,
    uses_delta_channels,
    version_text,
)
from chatmemory.checkpoint.sql import (
    DEFAULT_TABLE_PREFIX,
    _qi,
    checkpoint_table_ddl,
    checkpoint_table_names,
    ttl_delete_after_seconds,
    ttl_slack_seconds,
)
from chatmemory.errors import BackendError
from chatmemory.sql import ASYNC_POOL_SIZE, AsyncMySQLPool, MySQLPool, error_code

if TYPE_CHECKING:
    import pymysql.connections

_RETRY_CODES: Final = frozenset({1213, 1205, 9007, 8022, 8028})  # deadlock, lock wait, TiDB conflicts
_ATTEMPTS: Final = 4

T = TypeVar("T")


@dataclass(frozen=True)
class _Query:
    """One statement a step sends; the step gets back its :class:`_Result`."""

    sql: str
    args: Any = ()


@dataclass(frozen=True)
class _Result:
    rows: Sequence[Sequence[Any]]
    rowcount: int


#: The statements of one step, written once for both drivers: a generator that yields each
#: :class:`_Query`, receives its :class:`_Result`, and returns the step's value.
Queries: TypeAlias = Generator[_Query, _Result, T]


@dataclass(frozen=True)
class _Statements:
    """The I/O step of the SQL saver's operations: the queries ``run()`` makes, on one pooled
    connection (PyMySQL's or asyncmy's), in a transaction (retried on lock conflicts) unless
    ``transaction`` is false. ``run`` is called again for a retry."""

    run: Callable[[], Queries[Any]]
    transaction: bool = True


class ChatMemorySQLSaver(Saver):
    """A LangGraph checkpointer on TiDB, MySQL or MariaDB through PyMySQL.

    Args:
        connect_kwargs: ``pymysql.connect`` arguments (host, port, user, password, database, ssl,
            ...); the saver adds ``autocommit``, ``binary_prefix``, utf8mb4 and READ COMMITTED.
        table_prefix: the tables are ``<prefix>checkpoints``, ``<prefix>checkpoint_blobs`` and
            ``<prefix>checkpoint_writes`` in the connection's database.
        ttl_seconds: a thread expires this long after its last write (see the module docstring);
            None or 0: never. Must match the TTL the tables were created with.
        serde: LangGraph serializer (default ``JsonPlusSerializer``; ``EncryptedSerializer`` works).
        pool_size: idle connections kept.
        async_pool_size: connections the async methods open at most, per event loop.

    Sync methods run on the calling thread over PyMySQL; async methods run the same statements
    natively on the event loop over asyncmy (:class:`chatmemory.sql.AsyncMySQLPool`: no worker
    thread), with the same transactions and lock-conflict retries. Every step is safe to run twice
    (upserts keyed by the checkpoint, deletes, reads), so the async path also retries a step after
    a refused or lost connection, with backoff within the operation timeout.
    """

    def __init__(
        self,
        connect_kwargs: Mapping[str, Any],
        *,
        table_prefix: str = DEFAULT_TABLE_PREFIX,
        ttl_seconds: int | None = None,
        serde: SerializerProtocol | None = None,
        pool_size: int = 4,
        async_pool_size: int = ASYNC_POOL_SIZE,
    ) -> None:
        super().__init__(serde=serde)
        self.table_prefix = table_prefix
        self.t_cp, self.t_blobs, self.t_writes = (_qi(n) for n in checkpoint_table_names(table_prefix))
        self.ttl_seconds = ttl_seconds if ttl_seconds and ttl_seconds > 0 else None
        self._slack = ttl_slack_seconds(self.ttl_seconds) if self.ttl_seconds else 0
        kwargs = dict(connect_kwargs)
        kwargs.update(autocommit=True, binary_prefix=True, charset="utf8mb4")
        kwargs.setdefault("init_command", "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        for name, seconds in mysql_timeouts().items():  # a blackholed server raises, never hangs
            kwargs.setdefault(name, seconds)
        self._connect_kwargs = kwargs
        self._pool = MySQLPool(self._open, pool_size)
        self._async_pool_size = async_pool_size
        self._apool: AsyncMySQLPool | None = None
        self._lock = threading.Lock()
        self._written: OrderedDict[str, float] = OrderedDict()  # thread -> monotonic time of a write
        self._touched: OrderedDict[str, float] = OrderedDict()  # thread -> monotonic time of a touch

    def _open(self) -> pymysql.connections.Connection[Any]:
        import pymysql

        try:
            return pymysql.connect(**live_mysql_kwargs(self._connect_kwargs))
        except pymysql.MySQLError as e:
            raise BackendError(f"cannot connect to the checkpoint database: {_describe(e)}") from e

    def close(self) -> None:
        """Close the pooled connections."""
        self._pool.close()
        if self._apool is not None:
            self._apool.close()

    async def aclose(self) -> None:
        """Close the pooled connections (the running loop's with a goodbye to the server)."""
        self._pool.close()
        if self._apool is not None:
            await self._apool.aclose()

    def _async_pool(self) -> AsyncMySQLPool:
        """The asyncmy connections, made on the first async call (``MissingExtra`` without asyncmy)."""
        if self._apool is None:
            k = self._connect_kwargs
            database = k.get("database") or k.get("db") or ""
            where = f"checkpoint database {k.get('host')}:{k.get('port')}/{database}"
            self._apool = AsyncMySQLPool(k, where, size=self._async_pool_size)
        return self._apool

    # -- setup (direct use only) ------------------------------------------------------------------

    def setup(self) -> None:
        """Create the tables (and, on TiDB, their TTL) if missing. Needs CREATE on the database.

        Savers built from a binding never call this: the operator provisions the tables. On
        MySQL/MariaDB the expiry EVENT is not created here (it needs the EVENT privilege): use
        :func:`checkpoint_ttl_event_sql`, or call :meth:`delete_expired` from a job.
        """

        self._with_cursor(self._setup, transaction=False)

    async def asetup(self) -> None:
        await self._aexecute(_Statements(self._setup, transaction=False))

    def _setup(self) -> Queries[None]:
        version = yield _Query("SELECT VERSION()")
        tidb = "tidb" in str(version.rows[0][0]).lower()
        for stmt in checkpoint_table_ddl(self.table_prefix, tidb=tidb, ttl_seconds=self.ttl_seconds or 0):
            yield _Query(stmt)

    def delete_expired(self) -> int:
        """Delete rows past ``ttl + slack`` (what the EVENT / TiDB TTL do); returns rows deleted."""
        if self.ttl_seconds is None:
            return 0
        after = ttl_delete_after_seconds(self.ttl_seconds)

        def run() -> Queries[int]:
            n = 0
            for t in (self.t_writes, self.t_blobs, self.t_cp):
                done = yield _Query(
                    f"DELETE FROM {t} WHERE updated_at < NOW(6) - INTERVAL %s SECOND", (after,)
                )
                n += done.rowcount
            return n

        return self._with_cursor(run)

    # -- operations (each yields the statements to run) ------------------------------------------

    def _get_tuple_op(self, config: RunnableConfig) -> Op[CheckpointTuple | None]:
        addr = address(config)

        def run() -> Queries[CheckpointTuple | None]:
            where = "c.thread_id = %s AND c.checkpoint_ns = %s"
            args: builtins.list[Any] = [addr.thread_id, addr.checkpoint_ns]
            if addr.checkpoint_id is not None:
                where += " AND c.checkpoint_id = %s"
                args.append(addr.checkpoint_id)
            alive, alive_args = self._alive()
            found = yield _Query(
                f"SELECT c.thread_id, c.checkpoint_ns, c.checkpoint_id, c.parent_checkpoint_id, "
                f"c.type, c.checkpoint, c.metadata_type, c.metadata FROM {self.t_cp} c "
                f"WHERE {where}{alive} ORDER BY c.checkpoint_id DESC LIMIT 1",
                (*args, *alive_args),
            )
            tuples = yield from self._hydrate(self._decode_rows(found.rows, None))
            return tuples[0] if tuples else None

        found: CheckpointTuple | None = yield _Statements(run, transaction=False)
        return found

    def _store_checkpoint_op(self, d: DumpedCheckpoint) -> Op[None]:
        addr, cid, ns = d.addr, d.checkpoint_id, d.addr.checkpoint_ns
        (ctype, cdata), (mtype, mdata) = d.checkpoint_typed, d.metadata_typed
        blob_rows = [(addr.thread_id, ns, *blob) for blob in d.blobs]

        def run() -> Queries[Callable[[], None]]:
            started = yield from self._begin_write(addr.thread_id)
            if blob_rows:
                yield from _insert(
                    f"INSERT INTO {self.t_blobs} (thread_id, checkpoint_ns, channel, version, type, data, "
                    "updated_at) VALUES {rows} ON DUPLICATE KEY UPDATE updated_at = VALUES(updated_at)",
                    blob_rows,
                )
            yield _Query(
                f"INSERT INTO {self.t_cp} (thread_id, checkpoint_ns, checkpoint_id, "
                "parent_checkpoint_id, run_id, type, checkpoint, metadata_type, metadata, updated_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, NOW(6)) ON DUPLICATE KEY UPDATE "
                "parent_checkpoint_id = VALUES(parent_checkpoint_id), run_id = VALUES(run_id), "
                "type = VALUES(type), checkpoint = VALUES(checkpoint), "
                "metadata_type = VALUES(metadata_type), metadata = VALUES(metadata), "
                "updated_at = VALUES(updated_at)",
                (
                    addr.thread_id,
                    ns,
                    cid,
                    addr.checkpoint_id,
                    run_id_of(d.metadata),
                    ctype,
                    cdata,
                    mtype,
                    mdata,
                ),
            )
            return (yield from self._touch(addr.thread_id, started))

        committed = yield _Statements(run)
        committed()

    def _store_writes_op(self, w: DumpedWrites) -> Op[None]:
        addr, cid, task_id, task_path = w.addr, w.checkpoint_id, w.task_id, w.task_path
        regular: builtins.list[tuple[Any, ...]] = []
        special: builtins.list[tuple[Any, ...]] = []
        for widx, channel, wtype, wdata in w.writes:
            row = (
                addr.thread_id,
                addr.checkpoint_ns,
                cid,
                task_id,
                widx,
                channel,
                wtype,
                wdata,
                task_path,
            )
            (regular if widx >= 0 else special).append(row)
        if not regular and not special:
            return
        cols = (
            "(thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, type, data, task_path, "
            "updated_at)"
        )

        def run() -> Queries[Callable[[], None]]:
            started = yield from self._begin_write(addr.thread_id)
            if regular:  # a regular write is never replaced (a retried task writes the same thing)
                yield from _insert(
                    f"INSERT INTO {self.t_writes} {cols} VALUES {{rows}} "
                    "ON DUPLICATE KEY UPDATE updated_at = VALUES(updated_at)",
                    regular,
                )
            if special:  # errors, interrupts, ...: the latest wins
                yield from _insert(
                    f"INSERT INTO {self.t_writes} {cols} VALUES {{rows}} ON DUPLICATE KEY UPDATE "
                    "channel = VALUES(channel), type = VALUES(type), data = VALUES(data), "
                    "task_path = VALUES(task_path), updated_at = VALUES(updated_at)",
                    special,
                )
            if self.ttl_seconds is not None:  # the thread's newest checkpoint stamp = its last write
                yield _Query(
                    f"UPDATE {self.t_cp} SET updated_at = NOW(6) "
                    "WHERE thread_id = %s AND checkpoint_ns = %s AND checkpoint_id = %s",
                    (addr.thread_id, addr.checkpoint_ns, cid),
                )
            return (yield from self._touch(addr.thread_id, started))

        committed = yield _Statements(run)
        committed()

    def _delete_thread_op(self, thread_id: str) -> Op[None]:
        tid = thread_id_of(thread_id)

        yield _Statements(partial(self._delete_thread_rows, tid))

    def _delete_for_runs_op(self, run_ids: Sequence[str]) -> Op[None]:
        runs = [str(r) for r in run_ids]
        if not runs:
            return
        marks = ", ".join(["%s"] * len(runs))

        def run() -> Queries[None]:
            yield _Query(
                f"DELETE w FROM {self.t_writes} w JOIN {self.t_cp} c ON w.thread_id = c.thread_id "
                "AND w.checkpoint_ns = c.checkpoint_ns AND w.checkpoint_id = c.checkpoint_id "
                f"WHERE c.run_id IN ({marks})",
                runs,
            )
            yield _Query(f"DELETE FROM {self.t_cp} WHERE run_id IN ({marks})", runs)

        yield _Statements(run)

    def _copy_thread_op(self, source_thread_id: str, target_thread_id: str) -> Op[None]:
        src, dst = thread_id_of(source_thread_id), thread_id_of(target_thread_id)
        alive, alive_args = self._alive("s")

        def run() -> Queries[Callable[[], None]]:
            started = yield from self._begin_write(dst)
            copied = yield _Query(
                f"INSERT INTO {self.t_cp} (thread_id, checkpoint_ns, checkpoint_id, "
                "parent_checkpoint_id, run_id, type, checkpoint, metadata_type, metadata, updated_at) "
                "SELECT %s, s.checkpoint_ns, s.checkpoint_id, s.parent_checkpoint_id, s.run_id, s.type, "
                f"s.checkpoint, s.metadata_type, s.metadata, NOW(6) FROM {self.t_cp} s "
                f"WHERE s.thread_id = %s{alive} ON DUPLICATE KEY UPDATE updated_at = VALUES(updated_at)",
                (dst, src, *alive_args),
            )
            if not copied.rowcount:
                return lambda: None
            yield _Query(
                f"INSERT INTO {self.t_blobs} (thread_id, checkpoint_ns, channel, version, type, data, "
                "updated_at) SELECT %s, checkpoint_ns, channel, version, type, data, NOW(6) "
                f"FROM {self.t_blobs} WHERE thread_id = %s "
                "ON DUPLICATE KEY UPDATE updated_at = VALUES(updated_at)",
                (dst, src),
            )
            yield _Query(
                f"INSERT INTO {self.t_writes} (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, "
                "channel, type, data, task_path, updated_at) SELECT %s, checkpoint_ns, checkpoint_id, "
                f"task_id, idx, channel, type, data, task_path, NOW(6) FROM {self.t_writes} "
                "WHERE thread_id = %s ON DUPLICATE KEY UPDATE updated_at = VALUES(updated_at)",
                (dst, src),
            )
            return (yield from self._touch(dst, started))

        committed = yield _Statements(run)
        committed()

    def _keep_latest_op(self, thread_id: str) -> Op[None]:
        yield _Statements(partial(self._keep_latest, thread_id=thread_id))

    def _list_page_op(
        self, q: Listing, source: str | None, offset: int
    ) -> Op[tuple[builtins.list[CheckpointTuple], bool]]:
        page: tuple[builtins.list[CheckpointTuple], bool] = yield _Statements(
            partial(self._list_page, q, offset), transaction=False
        )
        return page

    # -- driver -----------------------------------------------------------------------------------

    def _run(self, op: Op[T]) -> T:
        return drive(op, lambda step: self._with_cursor(step.run, transaction=step.transaction))

    async def _arun(self, op: Op[T]) -> T:
        return await adrive(op, self._aexecute)

    async def _aexecute(self, step: _Statements) -> Any:
        """:meth:`_with_cursor` on the event loop: one step's queries on an asyncmy connection."""
        pool = self._async_pool()

        async def run(cur: Any) -> Any:
            if not step.transaction:
                return await _adrive_queries(cur, step.run())
            # On an error the pool closes the connection, which rolls the transaction back.
            await cur.execute("BEGIN")
            result = await _adrive_queries(cur, step.run())
            await cur.execute("COMMIT")
            return result

        for attempt in range(_ATTEMPTS):
            try:
                # Every step is safe to send again (upserts, deletes, reads): retried like a read.
                return await pool.run(run)
            except BackendError as e:
                cause = e.__cause__
                code = error_code(cause) if cause is not None else None
                if code in _RETRY_CODES and attempt + 1 < _ATTEMPTS:
                    await asyncio.sleep(0.01 * (2**attempt))
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    # -- internals --------------------------------------------------------------------------------

    def _with_cursor(self, step: Callable[[], Queries[T]], *, transaction: bool = True) -> T:
        """Run ``step``'s queries on a pooled connection, in a transaction, retrying lock conflicts."""
        import pymysql

        for attempt in range(_ATTEMPTS):
            try:
                with self._pool.connection() as conn, conn.cursor() as cur:
                    if not transaction:
                        return _drive_queries(cur, step())
                    conn.begin()
                    try:
                        result = _drive_queries(cur, step())
                    except BaseException:
                        conn.rollback()
                        raise
                    conn.commit()
                    return result
            except pymysql.MySQLError as e:
                code = e.args[0] if e.args and isinstance(e.args[0], int) else None
                if code in _RETRY_CODES and attempt + 1 < _ATTEMPTS:
                    time.sleep(0.01 * (2**attempt))
                    continue
                raise BackendError(f"checkpoint statement failed: {_describe(e)}") from e
        raise AssertionError("unreachable")  # pragma: no cover

    def _alive(self, alias: str = "c") -> tuple[str, tuple[Any, ...]]:
        """SQL condition hiding threads idle for longer than the TTL (empty without a TTL)."""
        if self.ttl_seconds is None:
            return "", ()
        return (
            f" AND EXISTS (SELECT 1 FROM {self.t_cp} l WHERE l.thread_id = {alias}.thread_id "
            "AND l.updated_at > NOW(6) - INTERVAL %s SECOND)",
            (self.ttl_seconds,),
        )

    def _remember(self, cache: OrderedDict[str, float], thread_id: str, at: float) -> None:
        with self._lock:
            cache[thread_id] = at
            cache.move_to_end(thread_id)
            while len(cache) > 10_000:
                cache.popitem(last=False)

    def _recent(self, cache: OrderedDict[str, float], thread_id: str, within: float, now: float) -> bool:
        with self._lock:
            at = cache.get(thread_id)
        return at is not None and now - at < within

    def _begin_write(self, thread_id: str) -> Queries[float]:
        """Start a write: clear what is left of an expired thread. Returns the monotonic start."""
        started = time.monotonic()
        if self.ttl_seconds is None:
            return started
        # This saver wrote the thread less than a TTL ago: it is alive, no need to ask.
        if not self._recent(self._written, thread_id, self.ttl_seconds - 1, started):
            expired = yield _Query(
                f"SELECT MAX(updated_at) <= NOW(6) - INTERVAL %s SECOND FROM {self.t_cp} "
                "WHERE thread_id = %s",
                (self.ttl_seconds, thread_id),
            )
            if expired.rows and expired.rows[0][0]:
                yield from self._delete_thread_rows(thread_id)
        return started

    def _touch(self, thread_id: str, started: float) -> Queries[Callable[[], None]]:
        """Re-stamp the thread's rows older than slack/2 (at most every slack/2 per saver).

        Returns what to remember about the thread once the transaction has committed (a rolled
        back write must not let the next one skip its checks).
        """
        touched = False
        if self.ttl_seconds is not None:
            half = self._slack / 2
            if not self._recent(self._touched, thread_id, half, started):
                for t in (self.t_cp, self.t_blobs, self.t_writes):
                    yield _Query(
                        f"UPDATE {t} SET updated_at = NOW(6) WHERE thread_id = %s "
                        "AND updated_at < NOW(6) - INTERVAL %s SECOND",
                        (thread_id, half),
                    )
                touched = True

        def committed() -> None:
            self._remember(self._written, thread_id, started)
            if touched:
                self._remember(self._touched, thread_id, started)

        return committed

    def _delete_thread_rows(self, thread_id: str) -> Queries[None]:
        for t in (self.t_writes, self.t_blobs, self.t_cp):
            yield _Query(f"DELETE FROM {t} WHERE thread_id = %s", (thread_id,))
        with self._lock:
            self._written.pop(thread_id, None)
            self._touched.pop(thread_id, None)

    def _list_page(self, q: Listing, offset: int) -> Queries[tuple[builtins.list[CheckpointTuple], bool]]:
        """One page of the checkpoints ``q`` selects, newest first; and whether more exist."""
        config, filter, before_id = q.config, q.filter, q.before_id
        where: builtins.list[str] = []
        args: builtins.list[Any] = []
        if config is not None:
            conf = config.get("configurable") or {}
            where.append("c.thread_id = %s")
            args.append(thread_id_of(conf["thread_id"]))
            if conf.get("checkpoint_ns") is not None:
                where.append("c.checkpoint_ns = %s")
                args.append(str(conf["checkpoint_ns"]))
            if conf.get("checkpoint_id"):
                where.append("c.checkpoint_id = %s")
                args.append(str(conf["checkpoint_id"]))
        if before_id:
            where.append("c.checkpoint_id < %s")
            args.append(str(before_id))
        alive, alive_args = self._alive()
        clause = ("WHERE " + " AND ".join(where)) if where else "WHERE 1 = 1"
        page = yield _Query(
            f"SELECT c.thread_id, c.checkpoint_ns, c.checkpoint_id, c.parent_checkpoint_id, "
            f"c.type, c.checkpoint, c.metadata_type, c.metadata FROM {self.t_cp} c "
            f"{clause}{alive} ORDER BY c.checkpoint_id DESC, c.thread_id, c.checkpoint_ns "
            "LIMIT %s OFFSET %s",
            (*args, *alive_args, PAGE, offset),
        )
        tuples = yield from self._hydrate(self._decode_rows(page.rows, filter))
        return tuples, len(page.rows) == PAGE

    def _decode_rows(
        self, rows: Sequence[Sequence[Any]], filter: dict[str, Any] | None
    ) -> builtins.list[tuple[str, str, str, str | None, Checkpoint, CheckpointMetadata]]:
        out = []
        for tid, ns, cid, parent, ctype, cdata, mtype, mdata in rows:
            metadata: CheckpointMetadata = self.serde.loads_typed((_s(mtype), mdata))
            if not matches(metadata, filter):
                continue
            ckpt: Checkpoint = self.serde.loads_typed((_s(ctype), cdata))
            out.append((_s(tid), _s(ns), _s(cid), _s(parent) if parent else None, ckpt, metadata))
        return out

    def _hydrate(
        self,
        loaded: builtins.list[tuple[str, str, str, str | None, Checkpoint, CheckpointMetadata]],
    ) -> Queries[builtins.list[CheckpointTuple]]:
        """Add channel values and pending writes to decoded checkpoint rows (two queries in all)."""
        if not loaded:
            return []
        blob_keys = sorted(
            {
                (tid, ns, ch, version_text(v))
                for tid, ns, _cid, _p, ckpt, _md in loaded
                for ch, v in ckpt["channel_versions"].items()
            }
        )
        blobs: dict[tuple[str, str, str, str], Any] = {}
        for chunk in _chunks(blob_keys, 500):
            found = yield _Query(
                f"SELECT thread_id, checkpoint_ns, channel, version, type, data FROM {self.t_blobs} "
                "WHERE (thread_id, checkpoint_ns, channel, version) IN ("
                + ", ".join(["(%s, %s, %s, %s)"] * len(chunk))
                + ")",
                [x for k in chunk for x in k],
            )
            for tid, ns, ch, ver, btype, bdata in found.rows:
                if _s(btype) != "empty":
                    blobs[(_s(tid), _s(ns), _s(ch), _s(ver))] = (_s(btype), bdata)
        cp_keys = sorted({(tid, ns, cid) for tid, ns, cid, _p, _c, _m in loaded})
        writes: dict[tuple[str, str, str], builtins.list[tuple[str, int, str, str, Any]]] = {}
        for chunk3 in _chunks(cp_keys, 500):
            pending = yield _Query(
                f"SELECT thread_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, type, data, "
                f"task_path FROM {self.t_writes} WHERE (thread_id, checkpoint_ns, checkpoint_id) IN ("
                + ", ".join(["(%s, %s, %s)"] * len(chunk3))
                + ")",
                [x for k in chunk3 for x in k],
            )
            for tid, ns, cid, task, idx, ch, wtype, wdata, path in pending.rows:
                writes.setdefault((_s(tid), _s(ns), _s(cid)), []).append(
                    (_s(task), int(idx), _s(path), _s(ch), self.serde.loads_typed((_s(wtype), wdata)))
                )
        out = []
        for tid, ns, cid, parent, ckpt, metadata in loaded:
            values = {}
            for ch, v in ckpt["channel_versions"].items():
                blob = blobs.get((tid, ns, ch, version_text(v)))
                if blob is not None:
                    values[ch] = self.serde.loads_typed(blob)
            out.append(
                checkpoint_tuple(tid, ns, cid, parent, ckpt, metadata, values, writes.get((tid, ns, cid), []))
            )
        return out

    def _keep_latest(self, thread_id: str) -> Queries[None]:
        now = yield _Query("SELECT NOW(6)")
        (started,) = now.rows[0]
        latest = yield _Query(
            f"SELECT c.checkpoint_ns, c.checkpoint_id, c.type, c.checkpoint, c.metadata_type, c.metadata "
            f"FROM {self.t_cp} c WHERE c.thread_id = %s AND c.checkpoint_id = (SELECT MAX(m.checkpoint_id) "
            f"FROM {self.t_cp} m WHERE m.thread_id = c.thread_id AND m.checkpoint_ns = c.checkpoint_ns)",
            (thread_id,),
        )
        for ns_raw, cid_raw, ctype, cdata, mtype, mdata in latest.rows:
            ns, cid = _s(ns_raw), _s(cid_raw)
            metadata: CheckpointMetadata = self.serde.loads_typed((_s(mtype), mdata))
            if uses_delta_channels(metadata):
                continue  # a DeltaChannel chain: keep the whole namespace
            ckpt: Checkpoint = self.serde.loads_typed((_s(ctype), cdata))
            for t in (self.t_writes, self.t_cp):
                yield _Query(
                    f"DELETE FROM {t} WHERE thread_id = %s AND checkpoint_ns = %s AND checkpoint_id < %s",
                    (thread_id, ns, cid),
                )
            keep = [(ch, version_text(v)) for ch, v in ckpt["channel_versions"].items()]
            not_kept = ""
            if keep:
                not_kept = " AND (channel, version) NOT IN (" + ", ".join(["(%s, %s)"] * len(keep)) + ")"
            yield _Query(
                f"DELETE FROM {self.t_blobs} WHERE thread_id = %s AND checkpoint_ns = %s "
                f"AND updated_at < %s{not_kept}",
                (thread_id, ns, started, *(x for k in keep for x in k)),
            )


def _insert(sql: str, rows: Sequence[tuple[Any, ...]]) -> Queries[None]:
    """One multi-row INSERT (``{rows}`` in ``sql``); every row gets ``NOW(6)`` as its last column."""
    width = len(rows[0])
    group = "(" + ", ".join(["%s"] * width) + ", NOW(6))"
    for chunk in _chunks(list(rows), 200):
        yield _Query(sql.replace("{rows}", ", ".join([group] * len(chunk))), [x for r in chunk for x in r])


def _drive_queries(cur: Any, queries: Queries[T]) -> T:
    """Run a step's queries on a PyMySQL cursor."""
    try:
        q = next(queries)
        while True:
            cur.execute(q.sql, q.args)
            q = queries.send(_Result(cur.fetchall() if cur.description else (), cur.rowcount))
    except StopIteration as stop:
        result: T = stop.value
        return result


async def _adrive_queries(cur: Any, queries: Queries[T]) -> T:
    """Run a step's queries on an asyncmy cursor."""
    try:
        q = next(queries)
        while True:
            await cur.execute(q.sql, q.args)
            rows = await cur.fetchall() if cur.description else ()
            q = queries.send(_Result(rows, cur.rowcount))
    except StopIteration as stop:
        result: T = stop.value
        return result


def _chunks(items: Sequence[T], n: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


def _describe(e: Exception) -> str:
    if len(e.args) >= 2:
        return f"error {e.args[0]}: {e.args[1]}"
    return str(e)
