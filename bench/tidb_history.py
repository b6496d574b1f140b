"""TiDB: add one turn (vs the community history, a commit per message) and read 100 (vs raw PyMySQL).

Called by :mod:`bench.__main__` (``--only tidb``). One database per run on ``TIDB_URL`` (dropped at
the end). The community ``TiDBChatMessageHistory`` runs on SQLAlchemy ``mysql+pymysql://``; the
floors are one PyMySQL statement with autocommit (a 2-row INSERT; a SELECT plus LangChain's
decode, so both sides return the same message objects). Statement counts come from TiDB's
``information_schema.STATEMENTS_SUMMARY`` (``SCHEMA_NAME`` = this run's database).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from typing import Any

from bench import data
from bench.env import Ctx, cm, missing, mysql_params, sqlalchemy_url, with_db
from bench.harness import Check, RoundTrips, Row, compare, guarded, skipped

AREA = "tidb"
PEER_TABLE = "lc_store"


def admin(url: str, database: str | None = None) -> Any:
    import pymysql

    return pymysql.connect(**mysql_params(url, database))


def scratch_database(ctx: Ctx, url: str, db: str) -> Any:
    """Create ``db`` for one area's measures, drop it at the run's clean-up; the admin connection."""
    root = admin(url)
    with root.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{db}`")

    def drop() -> None:
        with contextlib.suppress(Exception), root.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{db}`")

    ctx.cleanups.append(drop)
    return root


def statements(conn: Any, database: str) -> dict[str, int]:
    """Executions per statement type in ``database`` so far (TiDB's statement summary)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT STMT_TYPE, SUM(EXEC_COUNT) FROM information_schema.STATEMENTS_SUMMARY "
            "WHERE SCHEMA_NAME = %s GROUP BY STMT_TYPE",
            (database,),
        )
        return {str(t): int(n) for t, n in cur.fetchall()}


def server_per_op(conn: Any, database: str, fn: Callable[[], Any], ops: int = 10) -> str:
    try:
        fn()
        before = statements(conn, database)
        for _ in range(ops):
            fn()
        after = statements(conn, database)
    except Exception as e:  # noqa: BLE001 - MySQL/MariaDB have no STATEMENTS_SUMMARY
        return f"n/a ({type(e).__name__})"
    per = {k: (after.get(k, 0) - before.get(k, 0)) / ops for k in after}
    per = {k: v for k, v in per.items() if v > 0}
    total = sum(per.values())
    return f"{total:g} stmts ({' '.join(f'{k}:{v:g}' for k, v in sorted(per.items()))})"


def _without_ping(history: Any, turn: list[Any]) -> Callable[[], None]:
    """``add_messages`` with PyMySQL's ``ping`` made a no-op for the call (bench-only diagnostic)."""
    import pymysql.connections as pc

    orig = pc.Connection.ping

    def call() -> None:
        pc.Connection.ping = lambda self, reconnect=True: None  # type: ignore[method-assign,assignment]
        try:
            history.add_messages(turn)
        finally:
            pc.Connection.ping = orig  # type: ignore[method-assign]

    return call


def make_chatmemory(url: str, database: str, sid: str, table: str) -> Any:
    """chatmemory's TiDB history; tries the URL forms the SDK may take."""
    Cm = cm("TiDBChatMessageHistory")
    if Cm is None:
        return None
    last: Exception | None = None
    for conn in (with_db(url, database), sqlalchemy_url(url, database)):
        try:
            return Cm(sid, conn, table_name=table)
        except Exception as e:  # noqa: BLE001
            last = e
    raise RuntimeError(f"chatmemory.TiDBChatMessageHistory refused both URL forms: {last}")


def run(ctx: Ctx) -> list[Row]:
    rows: list[Row] = []
    if reason := ctx.need("TIDB_URL"):
        return [skipped(AREA, "all TiDB measures", reason)]
    url = ctx.env["TIDB_URL"]
    db = ctx.name("tidb")
    root = scratch_database(ctx, url, db)
    guarded(AREA, "add one turn", rows)(lambda: _add(ctx, rows, url, db, root))
    guarded(AREA, "read 100 messages", rows)(lambda: _read(ctx, rows, url, db, root))
    return rows


def _peer(url: str, db: str, sid: str) -> Any:
    from langchain_community.chat_message_histories import TiDBChatMessageHistory as Peer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Peer(sid, sqlalchemy_url(url, db), table_name=PEER_TABLE)


def _add(ctx: Ctx, rows: list[Row], url: str, db: str, root: Any) -> None:
    turn = data.turn(1)
    peer = _peer(url, db, "add")
    raw = admin(url, db)

    def raw_add() -> None:
        enc = data.lc_encode_all(turn)
        with raw.cursor() as cur:
            cur.execute(
                f"INSERT INTO {PEER_TABLE} (session_id, message) VALUES (%s, %s), (%s, %s)",
                ("raw-add", enc[0], "raw-add", enc[1]),
            )

    cands: dict[str, Callable[[], Any]] = {
        "community TiDBChatMessageHistory": lambda: peer.add_messages(turn),
        "raw PyMySQL 2-row INSERT": raw_add,
    }
    ours_h = make_chatmemory(url, db, "add", "cm_messages")
    diag = "chatmemory without its pre-use ping (diagnostic)"
    if ours_h is not None:
        cands = {"chatmemory": lambda: ours_h.add_messages(turn), **cands, diag: _without_ping(ours_h, turn)}
    st = compare(cands, ctx.s, min_time=ctx.s.min_time * 2)  # goal rows: more interleaved rounds
    for n, fn in cands.items():
        st[n] = st[n].with_(round_trips=RoundTrips.per_op("mysql", fn), server=server_per_op(root, db, fn))
    ours = st.get("chatmemory")
    why = "" if ours else missing("TiDBChatMessageHistory")
    rows.append(
        Row(
            AREA,
            "add one turn (2 msgs)",
            ours,
            st["community TiDBChatMessageHistory"],
            1 / 3,
            "≥ 3x faster",
            skipped=why,
        )
    )
    if diag in st:
        rows.append(
            Row(
                AREA,
                "add one turn (2 msgs)",
                st[diag],
                st["raw PyMySQL 2-row INSERT"],
                None,
                "info (where the time goes)",
                note="chatmemory pings each pooled connection before use (COM_PING, one more round trip)",
            )
        )
    rows.append(
        Row(
            AREA,
            "add one turn (2 msgs)",
            ours,
            st["raw PyMySQL 2-row INSERT"],
            None,
            "info (floor)",
            skipped=why,
        )
    )


def _read(ctx: Ctx, rows: list[Row], url: str, db: str, root: Any) -> None:
    msgs = data.history(100)
    peer = _peer(url, db, "read100")
    peer.add_messages(msgs)
    raw = admin(url, db)
    ours_h = make_chatmemory(url, db, "read100", "cm_messages")
    if ours_h is not None:
        ours_h.add_messages(msgs)
    # The floor reads the rows chatmemory wrote (same table layout as the seed's), else the peer's.
    table = "cm_messages" if ours_h is not None else PEER_TABLE

    def raw_select_rows() -> list[Any]:
        with raw.cursor() as cur:
            cur.execute(f"SELECT message FROM {table} WHERE session_id = %s ORDER BY id", ("read100",))
            return [r[0] for r in cur.fetchall()]

    def raw_select_decode() -> list[Any]:
        return data.lc_decode(raw_select_rows())

    def peer_reload() -> list[Any]:
        peer.reload_cache()
        return peer.messages

    cands: dict[str, Callable[[], Any]] = {
        "raw PyMySQL SELECT + LangChain decode": raw_select_decode,
        "raw PyMySQL SELECT (rows only)": raw_select_rows,
        "community (reload_cache + messages)": peer_reload,
    }
    if ours_h is not None:
        cands = {"chatmemory": lambda: ours_h.messages, **cands}
    same = data.same(ours_h.messages, msgs) if ours_h is not None else False
    st = compare(cands, ctx.s, min_time=ctx.s.min_time * 2)  # goal rows: more interleaved rounds
    for n, fn in cands.items():
        st[n] = st[n].with_(
            round_trips=RoundTrips.per_op("mysql", fn, ops=5), server=server_per_op(root, db, fn, ops=5)
        )
    ours = st.get("chatmemory")
    why = "" if ours else missing("TiDBChatMessageHistory")
    checks = [Check("same objects", same, "== written messages")] if ours else []
    rows.append(
        Row(
            AREA,
            "read 100 messages",
            ours,
            st["raw PyMySQL SELECT + LangChain decode"],
            1.3,
            "≤ 1.3x raw select",
            checks=checks,
            skipped=why,
        )
    )
    rows.append(
        Row(
            AREA,
            "read 100 messages",
            ours,
            st["raw PyMySQL SELECT (rows only)"],
            None,
            "info (no decode)",
            skipped=why,
        )
    )
    rows.append(
        Row(
            AREA,
            "read 100 messages",
            ours,
            st["community (reload_cache + messages)"],
            None,
            "info",
            note="the peer's .messages serves a cache; reload_cache() forces a read",
            skipped=why,
        )
    )
