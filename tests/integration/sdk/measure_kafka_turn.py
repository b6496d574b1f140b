"""Kafka turn latency: add_messages of one turn (2 messages), ours vs the community class.

Not a test (pytest does not collect it): a measurement against the platform's Kafka, run by hand::

    CHATMEMORY_PLATFORM_ENV=.platform/env .venv/bin/python -m tests.integration.sdk.measure_kafka_turn

Median of ``N`` (500) turns per candidate, candidates interleaved in batches of 10 so a shared
machine's drift hits them alike; Produce requests per turn from librdkafka's statistics, counted as
``bench/kafka_history.py`` counts them; then 8 threads writing turns at once on one memory (Produce
requests per turn there: below 1 means several turns shared a request).
"""

from __future__ import annotations

import asyncio
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from chatmemory.histories.kafka import KafkaChatMessageHistory
from confluent_kafka import Producer, libversion

from bench import data
from bench.kafka_history import ProduceCounter, _create_topic, _delete_topics

N = int(os.environ.get("N", "500"))
BATCH = 10


def platform_env() -> dict[str, str]:
    path = os.environ.get("CHATMEMORY_PLATFORM_ENV", ".platform/env")
    with open(path) as f:
        return dict(line.strip().split("=", 1) for line in f if "=" in line)


def main() -> None:
    boot = platform_env()["KAFKA_BOOTSTRAP"]
    turn = data.turn(1)
    topic = f"cm.measure.turn.{uuid.uuid4().hex[:8]}"
    peer_topic = f"cm-measure-peer-{uuid.uuid4().hex[:8]}"
    _create_topic(boot, topic)
    counters = {k: ProduceCounter() for k in ("chatmemory", "chatmemory async", "community", "raw")}
    ours = KafkaChatMessageHistory("s-sync", boot, topic=topic, **counters["chatmemory"].config())
    ours_async = KafkaChatMessageHistory(
        "s-async", boot, topic=topic, **counters["chatmemory async"].config()
    )
    loop = asyncio.new_event_loop()
    cands: dict[str, Callable[[], Any]] = {
        "chatmemory": lambda: ours.add_messages(turn),
        "chatmemory async": lambda: loop.run_until_complete(ours_async.aadd_messages(turn)),
    }
    try:
        from langchain_community.chat_message_histories import KafkaChatMessageHistory as Peer

        peer = Peer(peer_topic, boot)
        peer.producer = Producer({"bootstrap.servers": boot, **counters["community"].config()})
        cands["community"] = lambda: peer.add_messages(turn)
    except ImportError:
        pass
    raw = Producer({"bootstrap.servers": boot, "acks": "all", **counters["raw"].config()})

    def raw_add() -> None:
        for m in data.lc_encode_all(turn):
            raw.produce(topic, key=b"raw", value=m)
        raw.flush(10)

    cands["raw produce x2 + flush"] = raw_add
    counters["raw produce x2 + flush"] = counters.pop("raw")
    for fn in cands.values():
        for _ in range(20):
            fn()
    times: dict[str, list[float]] = {k: [] for k in cands}
    for _ in range(N // BATCH):
        for k, fn in cands.items():
            for _ in range(BATCH):
                t = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - t)
    base = "community" if "community" in cands else "raw produce x2 + flush"
    base_med = statistics.median(times[base])
    print(f"{N} turns per candidate, interleaved in batches of {BATCH}; librdkafka {libversion()[0]}")
    for k, fn in cands.items():
        med = statistics.median(times[k])
        q = statistics.quantiles(times[k], n=10)
        rq = counters[k].per_op(fn, ops=20)
        print(
            f"  {k:24} median {med * 1e6:6.0f} us [p10 {q[0] * 1e6:5.0f}, p90 {q[-1] * 1e6:5.0f}]"
            f"  {med / base_med:4.2f}x {base}  Produce requests/turn {rq}"
        )
    # 8 threads at once on one memory's producer
    counter = ProduceCounter()
    shared = KafkaChatMessageHistory("w-0", boot, topic=topic, **counter.config())

    def burst() -> None:
        def write(w: int) -> None:
            h = KafkaChatMessageHistory._shared(f"w-{w}", shared._clients, topic, None)
            for _ in range(25):
                h.add_messages(turn)

        threads = [threading.Thread(target=write, args=(w,)) for w in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()

    t = time.perf_counter()
    per_burst = counter.per_op(burst, ops=2)
    took = time.perf_counter() - t
    if per_burst is not None:
        print(
            f"  8 threads x 25 turns: {per_burst / 200:.2f} Produce requests/turn ({took:.1f} s for 4 bursts)"
        )
    # 100 sessions x 1 turn at once from one event loop (bench's async row), and the same in sync
    many = [KafkaChatMessageHistory._shared(f"a-{i}", shared._clients, topic, None) for i in range(100)]

    async def gather() -> None:
        await asyncio.gather(*(h.aadd_messages(turn) for h in many))

    runs: dict[str, list[float]] = {"async": [], "sync": []}
    for _ in range(12):
        t = time.perf_counter()
        loop.run_until_complete(gather())
        runs["async"].append(time.perf_counter() - t)
        t = time.perf_counter()
        for h in many:
            h.add_messages(turn)
        runs["sync"].append(time.perf_counter() - t)
    a, s_ = statistics.median(runs["async"]), statistics.median(runs["sync"])
    print(
        f"  100 sessions x 1 turn: async {a * 1e3:.1f} ms, sync {s_ * 1e3:.1f} ms (async {s_ / a:.1f}x sync)"
    )
    for h in (ours, ours_async, shared):
        h.close()
    loop.close()
    _delete_topics(boot, [topic, peer_topic])


if __name__ == "__main__":
    main()
