"""Measure the Redis history's read path with redis-py's Python parser and with hiredis (issue 14, item 8).

Not a test (pytest does not collect it): run it against the platform's Redis 7::

    .venv/bin/python tests/integration/sdk/measure_redis_read.py [--runs 200] [--target REDIS_URL]

It writes a session of 100 and one of 10,000 messages (the bench's message mix: short human and AI
turns), then reads each many times through ``RedisChatMessageHistory`` on one client per parser:
``LRANGE`` alone (the reply parsing) and ``history.messages`` (LRANGE plus decoding into messages),
sync and asyncio. Prints the median and p90 in ms. The parser is chosen per client
(``parser_class``), so both rows come from one process and one server; the hiredis row needs
``hiredis`` installed (the ``redis`` extra has it).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
import redis.asyncio
from chatmemory.histories.redis import RedisChatMessageHistory
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from redis._parsers import _AsyncHiredisParser, _AsyncRESP3Parser, _HiredisParser, _RESP3Parser
from redis.utils import HIREDIS_AVAILABLE

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # run as a script from anywhere
from tests.support.platform import env_file, read_env


def turns(n: int) -> list[BaseMessage]:
    out: list[BaseMessage] = []
    for i in range(n // 2):
        out.append(HumanMessage(f"question {i}: what is the status of order {1000 + i}?"))
        out.append(AIMessage(f"answer {i}: order {1000 + i} shipped yesterday and arrives on Friday."))
    return out


def stats(samples: list[float]) -> str:
    samples = sorted(samples)
    p90 = samples[int(len(samples) * 0.9) - 1]
    return f"median {statistics.median(samples) * 1000:7.2f} ms  p90 {p90 * 1000:7.2f} ms"


def timed(fn: Callable[[], Any], runs: int) -> list[float]:
    fn()  # warm the connection
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


async def atimed(fn: Callable[[], Awaitable[Any]], runs: int) -> list[float]:
    await fn()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - start)
    return out


def measure(
    name: str,
    conn: dict[str, Any],
    sync_parser: type,
    async_parser: type,
    prefix: str,
    sessions: dict[int, str],
    runs: int,
) -> None:
    client = redis.Redis(connection_pool=redis.ConnectionPool(**conn, protocol=3, parser_class=sync_parser))
    for n, session in sessions.items():
        h = RedisChatMessageHistory(session, key_prefix=prefix, redis_client=client)
        assert len(h.messages) == n
        key = h.key
        lrange = timed(lambda key=key: client.lrange(key, 0, -1), runs)
        print(f"{name:15} {n:6} msgs  LRANGE           {stats(lrange)}")
        print(f"{name:15} {n:6} msgs  history.messages {stats(timed(lambda h=h: h.messages, runs))}")

    async def run_async() -> None:
        pool = redis.asyncio.ConnectionPool(**conn, protocol=3, parser_class=async_parser)
        aclient = redis.asyncio.Redis(connection_pool=pool)
        for n, session in sessions.items():
            h = RedisChatMessageHistory(
                session, key_prefix=prefix, redis_client=client, async_redis_client=aclient
            )
            print(f"{name:15} {n:6} msgs  aget_messages    {stats(await atimed(h.aget_messages, runs))}")
        await aclient.aclose()

    asyncio.run(run_async())
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--target", default="REDIS_URL")
    args = parser.parse_args()
    url = read_env(env_file())[args.target]
    u = urlsplit(url)
    conn: dict[str, Any] = {
        "host": u.hostname,
        "port": u.port,
        "username": u.username,
        "password": u.password,
    }
    prefix = f"cmbench:{uuid.uuid4().hex[:8]}:"
    writer = redis.Redis(**conn)
    sessions = {}
    for n in (100, 10_000):
        h = RedisChatMessageHistory(f"read-{n}", key_prefix=prefix, redis_client=writer)
        h.add_messages(turns(n))
        sessions[n] = h.session_id
    parsers: list[tuple[str, type, type]] = [("python (RESP3)", _RESP3Parser, _AsyncRESP3Parser)]
    if HIREDIS_AVAILABLE:
        parsers.append(("hiredis", _HiredisParser, _AsyncHiredisParser))
    else:
        print("hiredis is not installed: only the Python parser is measured")
    print(f"redis-py {redis.__version__}, {args.target}, {args.runs} runs each, protocol 3")
    try:
        for name, sync_parser, async_parser in parsers:
            measure(name, conn, sync_parser, async_parser, prefix, sessions, args.runs)
    finally:
        for session in sessions.values():
            writer.delete(RedisChatMessageHistory(session, key_prefix=prefix, redis_client=writer).key)
        writer.close()


if __name__ == "__main__":
    main()
