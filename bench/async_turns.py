"""Async: 100 sessions in parallel, one turn each (read the history, append two messages), vs sync.

Called by :mod:`bench.__main__` (``--only async``). The sync path runs the same 100 turns one after
the other through the same memory. Throughput ratio = sync time / async time; the goal (≥ 3x) is
on Redis (``redis.asyncio``) and on TiDB through a 1.5 ms RTT delay proxy (asyncmy, issue 14): what
async buys is overlapping round trips, so the goal is set where there is a network to overlap.
TiDB on loopback and Kafka (native async writes, threaded reads) are reported for information, and
the community Redis history's async path (LangChain's executor default) for comparison.
``BENCH_ASYNC_BACKENDS=tidb`` (comma-separated: redis, tidb, kafka) runs only those backends' rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from bench import data
from bench.env import ROOT, Ctx, cm, missing, mysql_params, with_db
from bench.harness import RoundTrips, Row, Stat, compare, guarded, skipped

AREA = "async"
SESSIONS = 100
PREFILL = 10
#: Delay of requests through :mod:`bench.latency_proxy` (the measured RTT is reported).
PROXY_DELAY_MS = 0.5
#: The TiDB row's delay: a ~1.5 ms RTT (asyncio's timers round a 1 ms delay up; measured, reported).
TIDB_PROXY_DELAY_MS = 1.0


def proxied(ctx: Ctx, url: str, delay_ms: float = PROXY_DELAY_MS) -> str:
    """``url`` through a delaying proxy process (stopped by pid at cleanup)."""
    u = urlsplit(url)
    p = subprocess.Popen(
        [sys.executable, "-m", "bench.latency_proxy", f"{u.hostname}:{u.port}", str(delay_ms)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )

    def stop() -> None:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()

    ctx.cleanups.append(stop)
    assert p.stdout is not None
    port = int(p.stdout.readline())
    user = u.netloc.rpartition("@")[0]
    return u._replace(netloc=(f"{user}@" if user else "") + f"127.0.0.1:{port}").geturl()


def _pair(
    ctx: Ctx, make: Callable[[str], Any], label: str, loop: asyncio.AbstractEventLoop, prefill: bool = True
) -> dict[str, Stat]:
    sids = [f"a{i:03d}" for i in range(SESSIONS)]
    hs = [make(s) for s in sids]
    if prefill:
        for h in hs:
            h.add_messages(data.history(PREFILL))
    turn = data.turn(3)

    def sync_all() -> None:
        for h in hs:
            _ = h.messages
            h.add_messages(turn)

    async def one(h: Any) -> None:
        await h.aget_messages()
        await h.aadd_messages(turn)

    async def gather() -> None:
        await asyncio.gather(*(one(h) for h in hs))

    def async_all() -> None:
        loop.run_until_complete(gather())

    runs = 4 if ctx.s.quick else 12
    st = compare(
        {f"{label} async x{SESSIONS}": async_all, f"{label} sync x{SESSIONS}": sync_all},
        ctx.s,
        exact_runs=runs,
        warmup=1,
    )
    return st


def _ping_rtt(url: str) -> float:
    import statistics
    import time

    import redis

    r = redis.Redis.from_url(url)
    for _ in range(5):
        r.ping()
    ts = []
    for _ in range(31):
        t0 = time.perf_counter()
        r.ping()
        ts.append(time.perf_counter() - t0)
    r.close()
    return statistics.median(ts)


def mysql_rtt(params: dict[str, Any]) -> float:
    """Median ``SELECT 1`` round trip through PyMySQL (``bench.env.mysql_params`` style arguments)."""
    import statistics
    import time

    import pymysql

    conn = pymysql.connect(**params)
    ts = []
    with conn.cursor() as cur:
        for _ in range(36):
            t0 = time.perf_counter()
            cur.execute("SELECT 1")
            cur.fetchall()
            ts.append(time.perf_counter() - t0)
    conn.close()
    return statistics.median(ts[5:])


def run(ctx: Ctx) -> list[Row]:
    rows: list[Row] = []
    wanted = os.environ.get("BENCH_ASYNC_BACKENDS", "redis,tidb,kafka").split(",")
    loop = asyncio.new_event_loop()
    try:
        if "redis" in wanted:
            guarded(AREA, "redis", rows)(lambda: _redis(ctx, rows, loop))
        if "tidb" in wanted:
            guarded(AREA, "tidb", rows)(lambda: _tidb(ctx, rows, loop))
        if "kafka" in wanted:
            guarded(AREA, "kafka", rows)(lambda: _kafka(ctx, rows, loop))
    finally:
        # Close what the memories opened on this loop before the loop goes.
        while ctx.cleanups:
            fn = ctx.cleanups.pop()
            with contextlib.suppress(Exception):
                out = fn()
                if asyncio.iscoroutine(out):
                    loop.run_until_complete(out)
        loop.close()
    return rows


def _row(rows: list[Row], backend: str, st: dict[str, Stat], label: str, goal: bool, note: str = "") -> None:
    a, s = st[f"{label} async x{SESSIONS}"], st[f"{label} sync x{SESSIONS}"]
    thr = s.median / a.median if a.median else float("nan")
    rows.append(
        Row(
            AREA,
            f"{SESSIONS} sessions x 1 turn, {backend}",
            a,
            s,
            1 / 3 if goal else None,
            "≥ 3x sync throughput" if goal else "info",
            note=f"throughput {thr:.1f}x sync{note}",
        )
    )


def _redis(ctx: Ctx, rows: list[Row], loop: asyncio.AbstractEventLoop) -> None:
    if reason := ctx.need("REDIS_URL"):
        rows.append(skipped(AREA, "redis", reason))
        return
    from langchain_community.chat_message_histories import RedisChatMessageHistory as Community

    url = ctx.env["REDIS_URL"]
    prefix = ctx.name("async_r") + ":"
    import redis

    admin = redis.Redis.from_url(url)

    def cleanup() -> None:
        keys = list(admin.scan_iter(match=f"{prefix}*", count=1000))
        for i in range(0, len(keys), 500):
            admin.unlink(*keys[i : i + 500])

    ctx.cleanups.append(cleanup)
    connect_url = cm("connect_url")
    if connect_url is None:
        rows.append(skipped(AREA, f"{SESSIONS} sessions x 1 turn, Redis", missing("connect_url"), "≥ 3x"))
    else:
        mem = connect_url(url, key_prefix=f"{prefix}cm:", ttl=3600)
        ctx.cleanups.append(mem.aclose)
        st = _pair(ctx, mem.history, "chatmemory", loop)
        a_key = f"chatmemory async x{SESSIONS}"
        h = mem.history("rt")

        async def one() -> None:
            await h.aget_messages()
            await h.aadd_messages(data.turn(1))

        rt = loop.run_until_complete(RoundTrips.aper_op("redis", one, ops=5))
        st[a_key] = st[a_key].with_(round_trips=rt * SESSIONS, note=f"{rt:g} RTT per session turn")
        # On loopback a round trip is tens of µs and a turn's CPU (encode, decode, the client) is
        # hundreds: async overlaps only the waits, and one Python thread does all the CPU work.
        rtt0 = _ping_rtt(url)
        sync = st[f"chatmemory sync x{SESSIONS}"].median
        waits = SESSIONS * rt * rtt0
        _row(
            rows,
            "Redis",
            st,
            "chatmemory",
            goal=True,
            note=f"; loopback PING {rtt0 * 1e6:.0f} µs: of {sync * 1e3:.0f} ms sync only "
            f"~{waits * 1e3:.0f} ms are round-trip waits that async can overlap; the rest is "
            "client CPU (encode, decode, redis-py) on one Python thread in both paths",
        )
        # The same through a proxy that adds ~1 ms per round trip: what a network between the
        # application and Redis (another host, another zone) multiplies.
        purl = proxied(ctx, url)
        rtt = _ping_rtt(purl)
        mem_p = connect_url(purl, key_prefix=f"{prefix}cmp:", ttl=3600)
        ctx.cleanups.append(mem_p.aclose)
        st_p = _pair(ctx, mem_p.history, "chatmemory", loop)
        _row(
            rows,
            f"Redis, {rtt * 1e3:.1f} ms RTT (delay proxy)",
            st_p,
            "chatmemory",
            goal=True,
            note=f"; PING {rtt * 1e3:.2f} ms via the proxy vs {rtt0 * 1e3:.2f} ms direct; "
            "sync pays every round trip in turn, async overlaps them",
        )
    st2 = _pair(
        ctx, lambda sid: Community(sid, url=url, key_prefix=f"{prefix}co:", ttl=3600), "community Redis", loop
    )
    _row(rows, "community Redis (executor)", st2, "community Redis", goal=False)


def _tidb(ctx: Ctx, rows: list[Row], loop: asyncio.AbstractEventLoop) -> None:
    if reason := ctx.need("TIDB_URL"):
        rows.append(skipped(AREA, "tidb", reason))
        return
    connect_url = cm("connect_url")
    Cm = cm("TiDBChatMessageHistory")
    if connect_url is None or Cm is None:
        rows.append(skipped(AREA, f"{SESSIONS} sessions x 1 turn, TiDB", missing("TiDBChatMessageHistory")))
        return
    from bench.tidb_history import scratch_database

    url = ctx.env["TIDB_URL"]
    db = ctx.name("async_tidb")
    scratch_database(ctx, url, db)
    Cm("setup", with_db(url, db), table_name="cm_messages").close()
    mem = connect_url(with_db(url, db), table="cm_messages")
    ctx.cleanups.append(mem.aclose)
    st = _pair(ctx, mem.history, "chatmemory", loop)
    rtt0 = mysql_rtt(mysql_params(url))
    _row(
        rows,
        "TiDB",
        st,
        "chatmemory",
        goal=False,
        note=f"; loopback SELECT 1 {rtt0 * 1e3:.2f} ms: little wait to overlap, TiDB's own CPU per "
        "statement (on the same cores) bounds both paths",
    )
    # Through a proxy adding ~1.5 ms per round trip: what async (asyncmy, no thread) overlaps.
    purl = proxied(ctx, url, TIDB_PROXY_DELAY_MS)
    rtt = mysql_rtt(mysql_params(purl))
    mem_p = connect_url(with_db(purl, db), table="cm_messages")
    ctx.cleanups.append(mem_p.aclose)
    sids = iter(range(10**6))
    st_p = _pair(ctx, lambda sid: mem_p.history(f"p{next(sids)}-{sid}"), "chatmemory", loop)
    _row(
        rows,
        f"TiDB, {rtt * 1e3:.1f} ms RTT (delay proxy)",
        st_p,
        "chatmemory",
        goal=True,
        note=f"; SELECT 1 {rtt * 1e3:.2f} ms via the proxy vs {rtt0 * 1e3:.2f} ms direct; async runs "
        "on asyncmy (a pool of 16 connections), sync pays every round trip in turn",
    )


def _kafka(ctx: Ctx, rows: list[Row], loop: asyncio.AbstractEventLoop) -> None:
    if reason := ctx.need("KAFKA_BOOTSTRAP"):
        rows.append(skipped(AREA, "kafka", reason))
        return
    connect_url = cm("connect_url")
    if connect_url is None or cm("KafkaChatMessageHistory") is None:
        rows.append(skipped(AREA, f"{SESSIONS} sessions x 1 turn, Kafka", missing("KafkaChatMessageHistory")))
        return
    from bench.kafka_history import _create_topic, _delete_topics

    boot = ctx.env["KAFKA_BOOTSTRAP"]
    topic = ctx.name("async_kafka").replace("_", "-")
    _create_topic(boot, topic)
    ctx.cleanups.append(lambda: _delete_topics(boot, [topic]))
    mem = connect_url(f"kafka://{boot}", topic=topic)
    ctx.cleanups.append(mem.aclose)
    st = _pair(ctx, mem.history, "chatmemory", loop)
    _row(rows, "Kafka", st, "chatmemory", goal=False)
