"""A full ``RunnableWithMessageHistory`` turn with a fake model, per backend, chatmemory vs each peer.

Called by :mod:`bench.__main__` (``--only agent``). The chain is ``prompt | FakeListChatModel`` with
``history_messages_key`` (one read and one ``add_messages`` per turn). chatmemory's histories come
from a memory (``chatmemory.connect_url(...).history``, the documented ``get_session_history``);
each peer's history object is built once per session and reused (the most charitable setup for the
peers: their constructors cost round trips, DDL or new connections). Every candidate runs exactly the
same number of turns, cycling through 10 sessions that start with 20 messages each (Kafka: one
session, as the peer's session is a topic), so the histories grow alike and only a little.
An in-memory history gives the framework's own cost.
"""

from __future__ import annotations

import contextlib
import itertools
import warnings
from collections.abc import Callable
from typing import Any

from bench import data
from bench.env import Ctx, cm, missing, sqlalchemy_url, with_db
from bench.harness import RoundTrips, Row, Stat, compare, guarded, skipped

AREA = "agent"
PREFILL = 20
#: Sessions each candidate cycles through, so 150 turns grow each history by 30 messages, not 300.
SESSIONS = 10


def _chain(factory: Callable[[str], Any]) -> Callable[[str], Any]:
    from langchain_core.chat_history import InMemoryChatMessageHistory  # noqa: F401 (warm import)
    from langchain_core.language_models import FakeListChatModel
    from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
    from langchain_core.runnables.history import RunnableWithMessageHistory

    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are a support assistant."), MessagesPlaceholder("history"), ("human", "{input}")]
    )
    model = FakeListChatModel(responses=[data.turn(0)[1].text])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        chain = RunnableWithMessageHistory(
            prompt | model, factory, input_messages_key="input", history_messages_key="history"
        )

    def turn(sid: str) -> Any:
        return chain.invoke(
            {"input": "Which tickets are urgent?"}, config={"configurable": {"session_id": sid}}
        )

    return turn


def _cached(make: Callable[[str], Any]) -> Callable[[str], Any]:
    cache: dict[str, Any] = {}

    def factory(sid: str) -> Any:
        h = cache.get(sid)
        if h is None:
            h = cache[sid] = make(sid)
        return h

    return factory


def _prefill(factory: Callable[[str], Any], sid: str) -> None:
    factory(sid).add_messages(data.history(PREFILL))


def _rotate(factory: Callable[[str], Any], sessions: int = SESSIONS) -> Callable[[], Any]:
    """A turn on the next of ``sessions`` prefilled sessions in turn (bounded history growth)."""
    sids = [f"s{i}" for i in range(sessions)]
    for sid in sids:
        _prefill(factory, sid)
    turn = _chain(factory)
    it = itertools.cycle(sids)
    return lambda: turn(next(it))


def _runs(ctx: Ctx, slow: bool = False) -> int:
    if slow:
        return 2 if ctx.s.quick else 4
    return 10 if ctx.s.quick else 150


def run(ctx: Ctx) -> list[Row]:
    rows: list[Row] = []
    inmem = _inmemory(ctx)
    for name, fn in (("redis", _redis), ("kafka", _kafka), ("tidb", _tidb)):
        guarded(AREA, f"turn on {name}", rows)(lambda fn=fn: fn(ctx, rows, inmem))
    return rows


def _inmemory(ctx: Ctx) -> Stat:
    from langchain_core.chat_history import InMemoryChatMessageHistory

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = _cached(lambda sid: InMemoryChatMessageHistory())
        t = _rotate(f)
        return compare({"in-memory history": t}, ctx.s, exact_runs=_runs(ctx))["in-memory history"]


def _emit(
    rows: list[Row],
    backend: str,
    st: dict[str, Stat],
    ours_key: str,
    peers: list[tuple[str, str]],
    inmem: Stat,
) -> None:
    ours = st.get(ours_key)
    why = "" if ours else missing("connect_url")
    for peer_key, ours_alt in peers:
        o = st.get(ours_alt, ours)
        rows.append(
            Row(
                AREA,
                f"RunnableWithMessageHistory turn, {backend}" + (" 8" if "Redis 8" in ours_alt else ""),
                o,
                st[peer_key],
                1.0,
                "faster than peer",
                skipped=why if o is None else "",
                note=st[peer_key].note,
            )
        )
    if ours:
        rows.append(
            Row(
                AREA,
                f"RunnableWithMessageHistory turn, {backend}",
                ours,
                inmem,
                None,
                "info (framework cost)",
            )
        )


def _redis(ctx: Ctx, rows: list[Row], inmem: Stat) -> None:
    if reason := ctx.need("REDIS_URL"):
        rows.append(skipped(AREA, "turn on redis", reason))
        return
    import redis
    from langchain_community.chat_message_histories import RedisChatMessageHistory as Community

    from bench.peers import MemorystoreLayoutHistory

    url = ctx.env["REDIS_URL"]
    prefix = ctx.name("agent_r") + ":"
    client = redis.Redis.from_url(url)
    cleanup_clients = [client]
    turns: dict[str, Callable[[], Any]] = {}
    connect_url = cm("connect_url")
    mem = None
    if connect_url is not None:
        mem = connect_url(url, key_prefix=f"{prefix}cm:", ttl=3600)
        ctx.cleanups.append(mem.close)
        turns["chatmemory (Redis 7)"] = _rotate(mem.history)
    f_co = _cached(lambda sid: Community(sid, url=url, key_prefix=f"{prefix}co:", ttl=3600))
    turns["community Redis (Redis 7)"] = _rotate(f_co)
    f_ms = _cached(lambda sid: MemorystoreLayoutHistory(client, f"{prefix}ms:{sid}", ttl=3600))
    turns["memorystore layout (Redis 7)"] = _rotate(f_ms)
    if ctx.env.get("REDIS_SEARCH_URL"):
        from langchain_redis import RedisChatMessageHistory as LcRedis

        url8 = ctx.env["REDIS_SEARCH_URL"]
        c8 = redis.Redis.from_url(url8, protocol=2)
        cleanup_clients.append(c8)

        def drop_index() -> None:
            with contextlib.suppress(Exception):
                c8.execute_command("FT.DROPINDEX", f"{prefix}idx")

        ctx.cleanups.append(drop_index)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f_lr = _cached(
                lambda sid: LcRedis(
                    sid, key_prefix=f"{prefix}lcr:", index_name=f"{prefix}idx", ttl=3600, redis_client=c8
                )
            )
            turns["langchain-redis (Redis 8)"] = _rotate(f_lr)
        if connect_url is not None:
            mem8 = connect_url(url8, key_prefix=f"{prefix}cm:", ttl=3600)
            ctx.cleanups.append(mem8.close)
            turns["chatmemory (Redis 8)"] = _rotate(mem8.history)

    def cleanup() -> None:
        for c in cleanup_clients:
            with contextlib.suppress(Exception):
                keys = list(c.scan_iter(match=f"{prefix}*", count=1000))
                for i in range(0, len(keys), 500):
                    c.unlink(*keys[i : i + 500])

    ctx.cleanups.append(cleanup)
    st = compare(turns, ctx.s, exact_runs=_runs(ctx))
    for n, fn in turns.items():
        st[n] = st[n].with_(round_trips=RoundTrips.per_op("redis", fn, ops=3))
    peers = [("community Redis (Redis 7)", ""), ("memorystore layout (Redis 7)", "")]
    if "langchain-redis (Redis 8)" in st:
        peers.append(("langchain-redis (Redis 8)", "chatmemory (Redis 8)"))
    _emit(rows, "Redis", st, "chatmemory (Redis 7)", peers, inmem)


def _kafka(ctx: Ctx, rows: list[Row], inmem: Stat) -> None:
    if reason := ctx.need("KAFKA_BOOTSTRAP"):
        rows.append(skipped(AREA, "turn on kafka", reason))
        return
    from langchain_community.chat_message_histories import KafkaChatMessageHistory as Peer

    from bench.kafka_history import _create_topic, _delete_topics

    boot = ctx.env["KAFKA_BOOTSTRAP"]
    shared = ctx.name("agent_kafka").replace("_", "-")
    peer_topic = ctx.name("agent_kafka_peer").replace("_", "-")
    ctx.cleanups.append(lambda: _delete_topics(boot, [shared, peer_topic]))
    turns: dict[str, Callable[[], Any]] = {}
    connect_url = cm("connect_url")
    if connect_url is not None:
        _create_topic(boot, shared)
        mem = connect_url(f"kafka://{boot}", topic=shared)
        ctx.cleanups.append(mem.close)
        _prefill(mem.history, "s")
        t_cm = _chain(mem.history)
        turns["chatmemory"] = lambda: t_cm("s")
    f_pe = _cached(lambda sid: Peer(peer_topic, boot))
    _prefill(f_pe, "s")
    t_pe = _chain(f_pe)
    turns["community Kafka (.messages)"] = lambda: t_pe("s")
    st = compare({k: v for k, v in turns.items() if k == "chatmemory"}, ctx.s, exact_runs=_runs(ctx))
    st.update(
        compare(
            {k: v for k, v in turns.items() if k != "chatmemory"},
            ctx.s,
            exact_runs=_runs(ctx, slow=True),
            warmup=1,
        )
    )
    # What each history handed the model on its last turn (completeness of the context).
    if "chatmemory" in turns:
        st["chatmemory"] = st["chatmemory"].with_(note=f"context {len(mem.history('s').messages)} msgs")
    st["community Kafka (.messages)"] = st["community Kafka (.messages)"].with_(
        note=f"context {len(f_pe('s').messages)} msgs after a read (≤5 since last commit)"
    )
    _emit(rows, "Kafka", st, "chatmemory", [("community Kafka (.messages)", "")], inmem)


def _tidb(ctx: Ctx, rows: list[Row], inmem: Stat) -> None:
    if reason := ctx.need("TIDB_URL"):
        rows.append(skipped(AREA, "turn on tidb", reason))
        return
    from langchain_community.chat_message_histories import TiDBChatMessageHistory as Peer

    from bench.tidb_history import scratch_database

    url = ctx.env["TIDB_URL"]
    db = ctx.name("agent_tidb")
    scratch_database(ctx, url, db)
    turns: dict[str, Callable[[], Any]] = {}
    connect_url = cm("connect_url")
    Cm = cm("TiDBChatMessageHistory")
    if connect_url is not None and Cm is not None:
        Cm("setup", with_db(url, db), table_name="cm_messages").close()  # creates the table (no binding)
        mem = connect_url(with_db(url, db), table="cm_messages")
        ctx.cleanups.append(mem.close)
        turns["chatmemory"] = _rotate(mem.history)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f_pe = _cached(lambda sid: Peer(sid, sqlalchemy_url(url, db), table_name="lc_store"))
        turns["community TiDB"] = _rotate(f_pe)
    st = compare(turns, ctx.s, exact_runs=_runs(ctx))
    for n, fn in turns.items():
        st[n] = st[n].with_(round_trips=RoundTrips.per_op("mysql", fn, ops=3))
    st["community TiDB"] = st["community TiDB"].with_(note="serves its in-process cache (no read round trip)")
    _emit(rows, "TiDB", st, "chatmemory", [("community TiDB", "")], inmem)
