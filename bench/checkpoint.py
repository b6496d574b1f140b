"""LangGraph checkpointers: ``put`` and ``get_tuple``, chatmemory's savers vs LangGraph's own.

Called by :mod:`bench.__main__` (``--only checkpoint``). chatmemory's Redis saver against
``langgraph-checkpoint-redis`` on Redis 8 with the modules (``REDIS_SEARCH_URL``; it cannot run on
plain Redis), goal ``<= 0.5x`` (at least twice as fast); on Redis 7 against
``langgraph-checkpoint-plainredis`` (a plain-Redis saver, no modules: the peer a Redis 7 user would
pick), for information; chatmemory's SQL saver against ``langgraph-checkpoint-mysql``
(``PyMySQLSaver``) on MariaDB, each in a database of its own, goal ``<= 1.2x``.

A checkpoint carries a 10-message ``messages`` channel and a counter; every ``put`` is a new
checkpoint of one thread whose parent is the previous one (what a graph step writes), and each
saver's own ``get_next_version`` makes the versions. ``get_tuple`` reads the latest checkpoint of a
thread holding 10 checkpoints (no ``checkpoint_id``: what ``invoke`` does at the start of a turn).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from bench import data
from bench.env import Ctx, cm, missing, mysql_params
from bench.harness import RoundTrips, Row, Stat, compare, guarded, skipped
from bench.tidb_history import scratch_database

AREA = "checkpoint"
#: ours / langgraph-checkpoint-redis on Redis 8: at least twice as fast.
REDIS_GOAL = 0.5
#: ours / langgraph-checkpoint-mysql on MariaDB: within 1.2x.
MYSQL_GOAL = 1.2


class Driver:
    """Writes a thread's checkpoints one after the other through any saver."""

    def __init__(self, saver: Any, thread: str) -> None:
        from langgraph.checkpoint.base import empty_checkpoint

        self.saver = saver
        self.thread = thread
        self.msgs = data.history(10)
        self.cp = empty_checkpoint()
        self.config: dict[str, Any] = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
        self.step = 0

    def put(self) -> None:
        from langgraph.checkpoint.base.id import uuid6

        self.step += 1
        cp = dict(self.cp)
        cp["id"] = str(uuid6(clock_seq=self.step))
        versions = dict(cp["channel_versions"])
        new = {}
        for ch in ("messages", "step"):
            new[ch] = versions[ch] = self.saver.get_next_version(versions.get(ch), None)
        cp["channel_versions"] = versions
        cp["channel_values"] = {"messages": self.msgs, "step": self.step}
        cp["versions_seen"] = {"agent": dict(versions)}
        meta = {"source": "loop", "step": self.step, "parents": {}}
        self.config = self.saver.put(self.config, cp, meta, new)
        self.cp = cp

    def get(self) -> Any:
        out = self.saver.get_tuple({"configurable": {"thread_id": self.thread, "checkpoint_ns": ""}})
        if out is None:
            raise RuntimeError(f"{type(self.saver).__name__}: no checkpoint for thread {self.thread}")
        return out


def _measure(ctx: Ctx, savers: dict[str, Any], kind: str) -> tuple[dict[str, Stat], dict[str, Stat]]:
    puts = {n: Driver(s, f"put-{i}") for i, (n, s) in enumerate(savers.items())}
    gets = {n: Driver(s, f"get-{i}") for i, (n, s) in enumerate(savers.items())}
    for d in gets.values():
        for _ in range(10):
            d.put()
    runs = 30 if ctx.s.quick else 150
    put_fns: dict[str, Callable[[], Any]] = {n: d.put for n, d in puts.items()}
    get_fns: dict[str, Callable[[], Any]] = {n: d.get for n, d in gets.items()}
    for n, d in gets.items():  # same state back from every saver
        got = d.get().checkpoint["channel_values"]
        if len(got.get("messages", [])) != 10:
            print(f"  ! {n}: get_tuple returned {len(got.get('messages', []))} messages, expected 10")
    sp = compare(put_fns, ctx.s, exact_runs=runs)
    sg = compare(get_fns, ctx.s)
    for n in savers:
        sp[n] = sp[n].with_(round_trips=RoundTrips.per_op(kind, put_fns[n], ops=5))
        sg[n] = sg[n].with_(round_trips=RoundTrips.per_op(kind, get_fns[n], ops=5))
    return sp, sg


def run(ctx: Ctx) -> list[Row]:
    rows: list[Row] = []
    guarded(AREA, "redis", rows)(lambda: _redis(ctx, rows))
    guarded(AREA, "mysql", rows)(lambda: _mysql(ctx, rows))
    return rows


def _redis(ctx: Ctx, rows: list[Row]) -> None:
    if reason := ctx.need("REDIS_SEARCH_URL"):
        rows.append(skipped(AREA, "put / get_tuple on Redis 8", reason))
        return
    import redis
    from langgraph.checkpoint.redis import RedisSaver

    url8 = ctx.env["REDIS_SEARCH_URL"]
    prefix = ctx.name("ckpt")
    c8 = redis.Redis.from_url(url8)
    admin = redis.Redis.from_url(url8, protocol=2)
    peer: Any = RedisSaver(
        redis_client=redis.Redis.from_url(url8),
        checkpoint_prefix=f"{prefix}_lg",
        checkpoint_write_prefix=f"{prefix}_lgw",
    )
    peer_error = ""
    try:
        peer.setup()
    except Exception as e:  # noqa: BLE001 - a server without the modules
        peer, peer_error = None, f"langgraph-checkpoint-redis setup failed: {str(e)[:120]}"
    if ctx.env.get("REDIS_URL"):  # the fact behind issue 8: the peer needs the modules
        try:
            RedisSaver(
                redis_client=redis.Redis.from_url(ctx.env["REDIS_URL"]),
                checkpoint_prefix=f"{prefix}_lg7",
                checkpoint_write_prefix=f"{prefix}_lgw7",
            ).setup()
            r7_note = "sets up on Redis 7 (unexpected)"
        except Exception as e:  # noqa: BLE001
            r7_note = f"fails on Redis 7: {type(e).__name__}: {str(e)[:90]}"
        ctx.extra.setdefault("notes", []).append(f"langgraph-checkpoint-redis {r7_note}")

    def cleanup() -> None:
        for c, p in ((admin, prefix),):
            with contextlib.suppress(Exception):
                for idx in c.execute_command("FT._LIST"):
                    name = idx.decode() if isinstance(idx, bytes) else str(idx)
                    if name.startswith(p):
                        c.execute_command("FT.DROPINDEX", name)
            with contextlib.suppress(Exception):
                keys = list(c.scan_iter(match=f"{p}*", count=1000))
                for i in range(0, len(keys), 500):
                    c.unlink(*keys[i : i + 500])
        if ctx.env.get("REDIS_URL"):
            r7 = redis.Redis.from_url(ctx.env["REDIS_URL"])
            with contextlib.suppress(Exception):
                keys = list(r7.scan_iter(match=f"{prefix}*", count=1000))
                for i in range(0, len(keys), 500):
                    r7.unlink(*keys[i : i + 500])

    ctx.cleanups.append(cleanup)
    savers: dict[str, Any] = {}
    Saver = cm("checkpoint", "ChatMemoryRedisSaver")
    if Saver is not None:
        savers["chatmemory (Redis 8)"] = Saver(c8, prefix=f"{prefix}_cm:", ttl_seconds=3600)
        if ctx.env.get("REDIS_URL"):
            savers["chatmemory (Redis 7)"] = Saver(
                redis.Redis.from_url(ctx.env["REDIS_URL"]), prefix=f"{prefix}_cm:", ttl_seconds=3600
            )
    peer_n = "langgraph-checkpoint-redis (Redis 8)"
    if peer is not None:
        savers[peer_n] = peer
    plain_n = "langgraph-checkpoint-plainredis (Redis 7)"
    plain_error = ""
    if ctx.env.get("REDIS_URL"):
        try:
            from langgraph_checkpoint_plainredis import RedisSaver as PlainRedisSaver

            savers[plain_n] = PlainRedisSaver(
                redis.Redis.from_url(ctx.env["REDIS_URL"]), prefix=f"{prefix}_pr", ttl=3600
            )
        except ImportError as e:
            plain_error = f"langgraph-checkpoint-plainredis not installed ({e})"
    if not savers:
        rows.append(skipped(AREA, "put / get_tuple, Redis", f"{missing('checkpoint')}; {peer_error}"))
        return
    sp, sg = _measure(ctx, savers, "redis")
    why = "" if Saver is not None else missing("checkpoint", "ChatMemoryRedisSaver")
    for op, st in (("put", sp), ("get_tuple (latest)", sg)):
        rows.append(
            Row(
                AREA,
                f"{op}, Redis 8",
                st.get("chatmemory (Redis 8)"),
                st.get(peer_n),
                REDIS_GOAL,
                f"<= {REDIS_GOAL}x (2x faster)",
                note=peer_error,
                skipped=why or ("" if peer is not None else peer_error),
            )
        )
        if "chatmemory (Redis 7)" in st:
            rows.append(
                Row(
                    AREA,
                    f"{op}, Redis 7",
                    st["chatmemory (Redis 7)"],
                    st.get(plain_n),
                    None,
                    "info",
                    note=plain_error or "peer: plain Redis, 58/58 base conformance, no optional capability",
                )
            )


def _mysql(ctx: Ctx, rows: list[Row]) -> None:
    if reason := ctx.need("MARIADB_URL"):
        rows.append(skipped(AREA, "put / get_tuple on MariaDB", reason))
        return
    import pymysql
    from langgraph.checkpoint.mysql.pymysql import PyMySQLSaver

    url = ctx.env["MARIADB_URL"]
    db_cm, db_lg = ctx.name("ckpt_cm"), ctx.name("ckpt_lg")
    root = pymysql.connect(**mysql_params(url))
    with root.cursor() as cur:
        # langgraph-checkpoint-mysql fails ("Illegal mix of collations") when the database's
        # collation differs from the connection's (PyMySQL: utf8mb4_general_ci); the platform's
        # MariaDB defaults to utf8mb4_unicode_ci. Both databases get the connection's collation.
        for db in (db_cm, db_lg):
            cur.execute(f"CREATE DATABASE `{db}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci")
        cur.execute("SELECT @@collation_server")
        server_collation = cur.fetchone()[0]
    if server_collation != "utf8mb4_general_ci":
        ctx.extra.setdefault("notes", []).append(
            f"langgraph-checkpoint-mysql fails on a MariaDB database with the server's default collation "
            f"({server_collation}) through a PyMySQL connection (utf8mb4_general_ci): 'Illegal mix of "
            "collations'; the bench creates both checkpoint databases with utf8mb4_general_ci"
        )

    def drop() -> None:
        with contextlib.suppress(Exception), root.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{db_cm}`")
            cur.execute(f"DROP DATABASE IF EXISTS `{db_lg}`")

    ctx.cleanups.append(drop)
    conn = pymysql.connect(**mysql_params(url, db_lg))  # as PyMySQLSaver.from_conn_string (autocommit)
    peer = PyMySQLSaver(conn)
    peer.setup()
    savers: dict[str, Any] = {}
    Saver = cm("checkpoint", "ChatMemorySQLSaver")
    if Saver is not None:
        ours = Saver(mysql_params(url, db_cm), table_prefix="cm_", ttl_seconds=3600)
        if hasattr(ours, "setup"):
            ours.setup()
        savers["chatmemory SQL saver (MariaDB)"] = ours
        ctx.cleanups.append(lambda: getattr(ours, "close", lambda: None)())
    savers["langgraph-checkpoint-mysql (MariaDB)"] = peer
    if Saver is not None and ctx.env.get("TIDB_URL"):  # the peer cannot set up on TiDB
        db_ti = ctx.name("ckpt_ti")
        scratch_database(ctx, ctx.env["TIDB_URL"], db_ti)
        ti = Saver(mysql_params(ctx.env["TIDB_URL"], db_ti), table_prefix="cm_", ttl_seconds=3600)
        ti.setup()
        savers["chatmemory SQL saver (TiDB)"] = ti
    sp, sg = _measure(ctx, savers, "mysql")
    why = "" if Saver is not None else missing("checkpoint", "ChatMemorySQLSaver")
    for op, st in (("put", sp), ("get_tuple (latest)", sg)):
        rows.append(
            Row(
                AREA,
                f"{op}, MariaDB",
                st.get("chatmemory SQL saver (MariaDB)"),
                st["langgraph-checkpoint-mysql (MariaDB)"],
                MYSQL_GOAL,
                f"<= {MYSQL_GOAL}x",
                skipped=why,
            )
        )
        if "chatmemory SQL saver (TiDB)" in st:
            rows.append(
                Row(
                    AREA,
                    f"{op}, ours on TiDB",
                    st["chatmemory SQL saver (TiDB)"],
                    st["langgraph-checkpoint-mysql (MariaDB)"],
                    None,
                    "info (peer cannot run on TiDB)",
                )
            )
