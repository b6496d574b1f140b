"""Which async MySQL driver the SDK uses: aiomysql or asyncmy, measured on the history's own turn.

``uv run --with aiomysql python -m bench.async_driver_choice [--runs N] [--delay-ms D] [--pool N]``
(run by hand; not an area of ``python -m bench``; aiomysql, the candidate not chosen, is no longer
a dependency). 100 sessions, one turn each (a 2-row INSERT, then the SELECT the
history's read does), run concurrently on TiDB with each driver's own pool, and the same 100 turns
one after the other on one PyMySQL connection (the sync path), directly and through
:mod:`bench.latency_proxy` (``--delay-ms``, tuned so the measured ``SELECT 1`` RTT is ~1.5 ms).
Raw drivers, no SDK code: the figures compare the drivers, not our wrapper. Prints a table of
medians; the choice and its reasons are in ``chatmemory.sql``'s docstring.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from bench.async_turns import mysql_rtt
from bench.env import ROOT, env_path, mysql_params, read_env

SESSIONS = 100
TABLE = "msgs"
INSERT = f"INSERT INTO {TABLE} (session_id, message) VALUES (%s, %s), (%s, %s)"
SELECT = f"SELECT message FROM {TABLE} WHERE session_id = %s ORDER BY id"
MSG = json.dumps({"type": "human", "data": {"content": "x" * 200, "type": "human"}})


def _proxy(host: str, port: int, delay_ms: float) -> tuple[subprocess.Popen[bytes], int]:
    p = subprocess.Popen(
        [sys.executable, "-m", "bench.latency_proxy", f"{host}:{port}", str(delay_ms)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    assert p.stdout is not None
    return p, int(p.stdout.readline())


def _sync_turns(params: dict[str, Any], sids: list[str]) -> Callable[[], None]:
    import pymysql

    conn = pymysql.connect(**params)

    def run() -> None:
        with conn.cursor() as cur:
            for s in sids:
                cur.execute(INSERT, (s, MSG, s, MSG))
                cur.execute(SELECT, (s,))
                cur.fetchall()

    return run


async def _pool(driver: str, params: dict[str, Any], size: int) -> tuple[Any, Callable[[], Awaitable[None]]]:
    """``driver``'s own pool (aiomysql and asyncmy share ``create_pool``'s signature)."""
    module = importlib.import_module(driver)
    pool = await module.create_pool(
        minsize=size,
        maxsize=size,
        host=params["host"],
        port=params["port"],
        user=params["user"],
        password=params["password"],
        db=params["database"],
        autocommit=True,
        charset="utf8mb4",
    )

    async def close() -> None:
        pool.close()
        await pool.wait_closed()

    return pool, close


async def _turn(pool: Any, sid: str) -> None:
    async with pool.acquire() as conn, conn.cursor() as cur:
        await cur.execute(INSERT, (sid, MSG, sid, MSG))
        await cur.execute(SELECT, (sid,))
        await cur.fetchall()


def _median(fn: Callable[[], Any], runs: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def measure(params: dict[str, Any], runs: int, pool_size: int) -> dict[str, float]:
    """Median seconds for 100 turns: sync (PyMySQL), and concurrent on each async driver."""
    sids = [f"s{i:03d}" for i in range(SESSIONS)]
    out = {"PyMySQL sync (one after another)": _median(_sync_turns(params, sids), runs)}
    loop = asyncio.new_event_loop()
    try:
        for name in ("aiomysql", "asyncmy"):
            if importlib.util.find_spec(name) is None:
                print(
                    f"  ({name} is not installed: uv run --with {name} python -m bench.async_driver_choice)"
                )
                continue
            pool, close = loop.run_until_complete(_pool(name, params, pool_size))

            async def gather(pool: Any = pool) -> None:
                await asyncio.gather(*(_turn(pool, s) for s in sids))

            def turns(gather: Callable[[], Awaitable[None]] = gather) -> None:
                loop.run_until_complete(gather())

            out[f"{name} async x{SESSIONS} concurrent"] = _median(turns, runs)
            loop.run_until_complete(close())
    finally:
        loop.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.async_driver_choice", description=__doc__)
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--delay-ms", type=float, default=1.0, help="latency_proxy delay (~1.5 ms RTT)")
    ap.add_argument("--pool", type=int, default=20, help="connections in each async pool")
    args = ap.parse_args(argv)
    import pymysql

    env = read_env(env_path())
    url = env["TIDB_URL"]
    db = f"bench_driver_{int(time.time())}"
    base = mysql_params(url)
    admin = pymysql.connect(**base)
    with admin.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{db}`")
        cur.execute(
            f"CREATE TABLE `{db}`.{TABLE} (id BIGINT AUTO_INCREMENT PRIMARY KEY, "
            "session_id VARCHAR(255) NOT NULL, message JSON NOT NULL, "
            "create_time TIMESTAMP DEFAULT CURRENT_TIMESTAMP, INDEX session_idx (session_id)) AUTO_ID_CACHE 1"
        )
    u = urlsplit(url)
    proxy, port = _proxy(u.hostname or "127.0.0.1", u.port or 4000, args.delay_ms)
    try:
        direct = {**base, "database": db}
        proxied = {**direct, "host": "127.0.0.1", "port": port}
        for label, params in (("direct (loopback)", direct), ("delay proxy", proxied)):
            rtt = mysql_rtt(params)
            print(
                f"\n{label}: SELECT 1 RTT {rtt * 1e3:.2f} ms; {SESSIONS} sessions x 1 turn, runs {args.runs}"
            )
            res = measure(params, args.runs, args.pool)
            sync = res["PyMySQL sync (one after another)"]
            for name, t in res.items():
                print(f"  {name:<36} {t * 1e3:8.1f} ms  {sync / t:5.1f}x sync throughput")
    finally:
        proxy.terminate()
        proxy.wait(5)
        with admin.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
        admin.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
