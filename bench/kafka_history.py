"""Kafka: add one turn (one flush, acknowledged) and the full history of one session.

Called by :mod:`bench.__main__` (``--only kafka``). chatmemory keeps many sessions in one topic
(``topic=``, keyed by session); the community ``KafkaChatMessageHistory`` uses one topic per session
(the topic *is* the session id), so its session has a topic to itself: an easier case than ours,
which reads one session out of a topic holding ``--scale`` sessions (1,000; 100 with ``--quick``).

Produce requests per add come from librdkafka's own statistics (``statistics.interval.ms`` +
``stats_cb``: ``brokers.*.req.Produce``), read between idle gaps so each snapshot is unambiguous.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any

from bench import data
from bench.env import Ctx, cm, missing
from bench.harness import Check, Row, compare, guarded, skipped

AREA = "kafka"
PER_SESSION = 20  # messages per session in the shared topic


class ProduceCounter:
    """Produce requests sent, from the statistics a client emits every ``INTERVAL_MS``.

    Each statistics document carries ``ts``, librdkafka's monotonic clock in µs (``CLOCK_MONOTONIC``,
    the clock of :func:`time.monotonic`), so a count is the difference between the last document
    generated before the timed calls and the first one generated after them, whichever thread
    delivered them (chatmemory's producer has a polling thread; the others are served by flush).
    """

    INTERVAL_MS = 50

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def config(self) -> dict[str, Any]:
        return {"statistics.interval.ms": self.INTERVAL_MS, "stats_cb": self._cb}

    def _cb(self, raw: str) -> None:
        st = json.loads(raw)
        if st.get("type") != "producer":
            return
        n = sum(b.get("req", {}).get("Produce", 0) for b in st.get("brokers", {}).values())
        self.seen.append((int(st.get("ts", 0)), n))

    def per_op(self, fn: Callable[[], Any], ops: int = 10) -> float | None:
        gap = self.INTERVAL_MS * 4 / 1000
        fn()
        time.sleep(gap)
        t_start = int(time.monotonic() * 1e6)
        for _ in range(ops):
            fn()
        t_end = int(time.monotonic() * 1e6)
        time.sleep(gap)
        fn()  # serves queued statistics on clients without a polling thread
        time.sleep(gap / 2)
        before = [c for ts, c in self.seen if ts <= t_start]
        after = [c for ts, c in sorted(self.seen) if ts >= t_end]
        if not before or not after:
            return None
        return (after[0] - before[-1]) / ops


_ADMINS: dict[str, Any] = {}


def _admin(boot: str) -> Any:
    """One AdminClient per bootstrap, kept alive (a collected client fails its pending futures)."""
    from confluent_kafka.admin import AdminClient

    if boot not in _ADMINS:
        _ADMINS[boot] = AdminClient({"bootstrap.servers": boot})
    return _ADMINS[boot]


def _create_topic(boot: str, topic: str, partitions: int = 3) -> None:
    from confluent_kafka.admin import NewTopic

    admin = _admin(boot)
    fs = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    for f in fs.values():
        f.result(timeout=30)


def _delete_topics(boot: str, topics: list[str]) -> None:
    if not topics:
        return
    admin = _admin(boot)
    fs = admin.delete_topics(list(topics), operation_timeout=30)
    for f in fs.values():
        with contextlib.suppress(Exception):
            f.result(timeout=30)


def _broker_config(boot: str, key: str) -> str | None:
    """One broker setting (describe_configs on the first broker), or None."""
    try:
        from confluent_kafka.admin import ConfigResource, ResourceType

        admin = _admin(boot)
        broker = next(iter(admin.list_topics(timeout=10).brokers))
        fs = admin.describe_configs([ConfigResource(ResourceType.BROKER, str(broker))])
        for f in fs.values():
            entry = f.result(timeout=10).get(key)
            return None if entry is None else str(entry.value)
    except Exception:  # noqa: BLE001
        return None
    return None


def _high_watermarks(boot: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": boot, "group.id": "bench-watermarks", "enable.auto.commit": False})
    try:
        md = c.list_topics(topic, timeout=10)
        total = 0
        for p in md.topics[topic].partitions:
            _, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += hi
        return total
    finally:
        c.close()


def make_chatmemory(boot: str, sid: str, topic: str, extra: dict[str, Any] | None = None) -> Any:
    Cm = cm("KafkaChatMessageHistory")
    if Cm is None:
        return None
    try:
        return Cm(sid, boot, topic=topic, **(extra or {}))
    except TypeError:
        if extra:  # the SDK may not pass client settings through
            return Cm(sid, boot, topic=topic)
        raise


def run(ctx: Ctx) -> list[Row]:
    rows: list[Row] = []
    if reason := ctx.need("KAFKA_BOOTSTRAP"):
        return [skipped(AREA, "all Kafka measures", reason)]
    boot = ctx.env["KAFKA_BOOTSTRAP"]
    topics: list[str] = []
    ctx.cleanups.append(lambda: _delete_topics(boot, topics))
    guarded(AREA, "add one turn", rows)(lambda: _add(ctx, rows, boot, topics))
    guarded(AREA, "full history", rows)(lambda: _read(ctx, rows, boot, topics))
    return rows


def _add(ctx: Ctx, rows: list[Row], boot: str, topics: list[str]) -> None:
    from confluent_kafka import Producer
    from langchain_community.chat_message_histories import KafkaChatMessageHistory as Peer

    turn = data.turn(1)
    shared = ctx.name("kafka_add").replace("_", "-")
    peer_topic = ctx.name("kafka_peer_add").replace("_", "-")
    raw_topic = ctx.name("kafka_raw_add").replace("_", "-")
    topics.extend([shared, peer_topic, raw_topic])
    _create_topic(boot, shared)
    _create_topic(boot, raw_topic)
    counters = {k: ProduceCounter() for k in ("chatmemory", "peer", "raw")}
    peer = Peer(peer_topic, boot)  # creates its topic (3 partitions)
    peer.producer = Producer(
        {"bootstrap.servers": boot, **counters["peer"].config()}
    )  # same settings + stats
    raw = Producer(
        {
            "bootstrap.servers": boot,
            "acks": "all",
            "partitioner": "murmur2_random",
            "linger.ms": 0,
            **counters["raw"].config(),
        }
    )

    def raw_add() -> None:
        for m in data.lc_encode_all(turn):
            raw.produce(raw_topic, key=b"raw-session", value=m)
        if raw.flush(10) != 0:
            raise RuntimeError("raw flush left messages undelivered")

    cands: dict[str, Callable[[], Any]] = {
        "community KafkaChatMessageHistory": lambda: peer.add_messages(turn),
        "raw produce x2 + flush": raw_add,
    }
    ours_h = make_chatmemory(boot, "add-session", shared, counters["chatmemory"].config())
    diag = "chatmemory, linger.ms=0 (diagnostic)"
    if ours_h is not None:
        counters["diag"] = ProduceCounter()
        diag_h = make_chatmemory(boot, "add-diag", shared, {"linger.ms": 0, **counters["diag"].config()})
        cands = {
            "chatmemory": lambda: ours_h.add_messages(turn),
            **cands,
            diag: lambda: diag_h.add_messages(turn),
        }
    st = compare(cands, ctx.s, min_runs=10 if ctx.s.quick else 40)
    key = {
        "chatmemory": "chatmemory",
        "community KafkaChatMessageHistory": "peer",
        "raw produce x2 + flush": "raw",
        diag: "diag",
    }
    reqs: dict[str, float | None] = {}
    for n, fn in cands.items():
        rq = reqs[n] = counters[key[n]].per_op(fn)
        st[n] = st[n].with_(server=f"{rq:g} Produce req" if rq is not None else "Produce req: no stats")
    ours = st.get("chatmemory")
    checks: list[Check] = []
    if ours_h is not None:
        before = _high_watermarks(boot, shared)
        ours_h.add_messages(turn)
        after = _high_watermarks(boot, shared)
        checks.append(
            Check("acknowledged", after - before == 2, f"+{after - before} at the broker on return")
        )
        rq = reqs.get("chatmemory")
        detail = f"{rq:g} Produce requests/turn" if rq is not None else "no statistics from the client"
        checks.append(Check("one flush", rq == 1, detail))
    why = "" if ours else missing("KafkaChatMessageHistory")
    rows.append(
        Row(
            AREA,
            "add one turn (2 msgs)",
            ours,
            st["community KafkaChatMessageHistory"],
            None,
            "1 flush, acked",
            checks=checks,
            skipped=why,
        )
    )
    if diag in st:
        rows.append(
            Row(
                AREA,
                "add one turn (2 msgs)",
                st[diag],
                st["community KafkaChatMessageHistory"],
                None,
                "info (where the time goes)",
                note="chatmemory with its default linger.ms=5 (sent at once by its flush) lowered to 0",
            )
        )
    rows.append(
        Row(
            AREA,
            "add one turn (2 msgs)",
            ours,
            st["raw produce x2 + flush"],
            None,
            "info (floor)",
            skipped=why,
        )
    )


def _memory(boot: str, topic: str) -> Any:
    """A chatmemory memory on a shared topic (one producer and reader pool for every session)."""
    connect_url = cm("connect_url")
    if connect_url is None:
        return None
    return connect_url(f"kafka://{boot}", topic=topic)


def _raw_scan(ctx: Ctx, boot: str, topic: str, key: bytes) -> Callable[[], int]:
    """The floor of a cold read: one connected librdkafka consumer fetches the key's partition from
    the low to the high watermark and compares keys, nothing else (no decode)."""
    from chatmemory.histories.kafka import partition_for
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": boot,
            "group.id": "bench-raw",
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 10,
        }
    )
    ctx.cleanups.append(c.close)
    partitions = len(c.list_topics(topic, timeout=10).topics[topic].partitions)
    p = partition_for(key, partitions)

    def scan() -> int:
        low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)
        c.assign([TopicPartition(topic, p, low)])
        n = found = 0
        while n < high - low:
            for m in c.consume(num_messages=min(high - low - n, 10_000), timeout=0.5):
                if m.error() is None:
                    n += 1
                    found += m.key() == key
        c.unassign()
        return found

    return scan


def _populate(memory: Any, sessions: int, target: str, msgs: list[Any]) -> float:
    """Every session gets ``PER_SESSION`` messages, written by chatmemory itself (two adds each)."""
    t0 = time.perf_counter()
    order = [f"s-{i:05d}" for i in range(sessions - 1)]
    order.insert(len(order) // 2, target)  # the session we read sits among the others
    # Write each session's messages in two halves, so sessions interleave along the log.
    hs = [memory.history(sid) for sid in order]

    async def write() -> None:
        for half in (msgs[: PER_SESSION // 2], msgs[PER_SESSION // 2 :]):
            # Concurrent adds (one delivery wait each, batched by librdkafka); halves in order.
            for i in range(0, len(hs), 200):
                await asyncio.gather(*(h.aadd_messages(half) for h in hs[i : i + 200]))

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(write())
    finally:
        loop.close()
    return time.perf_counter() - t0


def _read(ctx: Ctx, rows: list[Row], boot: str, topics: list[str]) -> None:
    from langchain_community.chat_message_histories import KafkaChatMessageHistory as Peer

    msgs = data.history(PER_SESSION)
    sessions = max(10, ctx.scale)
    shared = ctx.name("kafka_sessions").replace("_", "-")
    peer_topic = ctx.name("kafka_peer_read").replace("_", "-")
    topics.extend([shared, peer_topic])
    cands: dict[str, Callable[[], Any]] = {}
    counts: dict[str, Any] = {"messages in the session": PER_SESSION}
    ours_h = None
    if cm("KafkaChatMessageHistory") is not None and cm("connect_url") is not None:
        _create_topic(boot, shared)
        memory = _memory(boot, shared)
        ctx.cleanups.append(memory.close)
        took = _populate(memory, sessions, "target", msgs)
        print(f"  wrote {sessions} sessions x {PER_SESSION} messages into {shared} in {took:.1f} s")
        counts["sessions in chatmemory's topic"] = sessions
        counts["records in chatmemory's topic"] = _high_watermarks(boot, shared)
        ours_h = memory.history("target")
        got = ours_h.messages
        counts["chatmemory"] = len(got)
        counts["chatmemory identical"] = data.same(got, msgs)
        cands["chatmemory, warm"] = lambda: ours_h.messages
        # Cold: a memory that has not read this session yet must scan the session's partition
        # (its client already connected, by reading another session first).
        runs = 5 if ctx.s.quick else 15
        fresh = []
        for _ in range(runs + 1):
            m = _memory(boot, shared)
            ctx.cleanups.append(m.close)
            _ = m.history("s-00000").messages
            fresh.append(m)
        cold_counts: list[int] = []

        def cold() -> None:
            cold_counts.append(len(fresh.pop().history("target").messages))

        cands["chatmemory"] = cold
        cands["raw scan of the session's partition"] = _raw_scan(ctx, boot, shared, b"target")
    peer = Peer(peer_topic, boot)
    peer.add_messages(msgs)
    got_default = peer.messages_from_beginning()
    got_big = peer.messages_from_beginning(max_message_count=PER_SESSION, max_time_sec=30)
    counts["peer messages_from_beginning() (defaults)"] = len(got_default)
    counts["peer messages_from_beginning(max_message_count=20)"] = len(got_big)
    counts["peer (max_message_count=20) in order"] = data.same(got_big, msgs)
    counts["peer .messages (2nd call, last consumed)"] = len(peer.messages)
    ctx.extra["kafka_counts"] = counts
    print(f"  counts: {counts}")
    cands["community messages_from_beginning()"] = peer.messages_from_beginning
    cands["community messages_from_beginning(max_message_count=20)"] = lambda: peer.messages_from_beginning(
        max_message_count=PER_SESSION, max_time_sec=30
    )
    # Interleaved; the peer's reads join a consumer group each time, so keep the run count modest.
    n_runs = 5 if ctx.s.quick else 15
    st = compare(cands, ctx.s, exact_runs=n_runs, warmup=1)
    delay = _broker_config(boot, "group.initial.rebalance.delay.ms")
    counts["broker group.initial.rebalance.delay.ms"] = delay
    if delay is not None and str(delay) != "3000":
        ctx.extra.setdefault("notes", []).append(
            f"Kafka broker group.initial.rebalance.delay.ms={delay} (Kafka's default is 3000): the "
            "community history's reads join a consumer group each time, so on a default broker "
            "each of its reads waits about 3 s more than measured here"
        )
    ours = st.get("chatmemory")
    warm = st.get("chatmemory, warm")
    if ours is not None:
        ours = ours.with_(note="cold: first read of the session by this memory")
        counts["chatmemory cold reads complete"] = all(c == PER_SESSION for c in cold_counts)
    why = "" if ours else missing("KafkaChatMessageHistory")
    c_ours = counts.get("chatmemory", 0)
    checks = (
        [
            Check(
                "complete",
                c_ours == PER_SESSION and bool(counts.get("chatmemory identical")),
                f"{c_ours}/{PER_SESSION} in order",
            )
        ]
        if ours
        else []
    )
    peer_default = st["community messages_from_beginning()"].with_(
        note=f"{len(got_default)}/{PER_SESSION} msgs (own topic)"
    )
    rows.append(
        Row(
            AREA,
            f"full history, 1 of {sessions} sessions",
            ours,
            peer_default,
            0.1,
            "≥ 10x faster, complete",
            checks=checks,
            skipped=why,
            note=(
                f"peer: {len(got_default)}/{PER_SESSION} msgs with its defaults; this broker has "
                f"group.initial.rebalance.delay.ms={delay} (Kafka's default 3000 adds ~3 s to every "
                "peer read, which joins a consumer group each time)"
            ),
        )
    )
    peer_big = st["community messages_from_beginning(max_message_count=20)"].with_(
        note=f"{len(got_big)}/{PER_SESSION} msgs, told the count (own topic)"
    )
    rows.append(
        Row(AREA, f"full history, 1 of {sessions} sessions", ours, peer_big, None, "info", skipped=why)
    )
    raw = st.get("raw scan of the session's partition")
    if raw is not None:
        rows.append(
            Row(
                AREA,
                f"full history, 1 of {sessions} sessions",
                ours,
                raw.with_(note="assign + consume the partition, keys compared (a connected consumer)"),
                None,
                "info (floor)",
                skipped=why,
                note="without an index a cold read must fetch the whole partition: this is its floor",
            )
        )
    if warm is not None:
        rows.append(
            Row(
                AREA,
                f"full history, 1 of {sessions} sessions, warm",
                warm.with_(note="warm: the memory read this session before; only new records are fetched"),
                peer_default,
                None,
                "info",
                skipped=why,
            )
        )
