"""LangGraph stores (long-term memory, ``BaseStore``): put, get, search with a filter, vector search.

Called by :mod:`bench.__main__` (``--only store``). chatmemory's store (``store_for(binding,
index=...)``) against ``langgraph-checkpoint-redis``'s ``RedisStore`` on Redis 8 with the modules
(``REDIS_SEARCH_URL``, the platform's redis-search target; it cannot run on plain Redis) and against
LangGraph's ``InMemoryStore`` (no server: the floor of the ``BaseStore`` machinery). Goals against
RedisStore: faster on ``put`` and ``get`` (``<= 1.0x``), within 2x on vector search (ours ranks
with Redis 8's vector sets, RedisStore with its search index). chatmemory's store on Redis 7 (no
vector sets: vectors ranked in the client) is shown for information.

Every store holds the same :data:`ITEMS` items (10,000; ``--quick``: 1,000) in one namespace, with
the same vectors: :class:`HashEmbeddings` derives a unit vector from each text's hash, so no model
and no network are involved and every side ranks the same numbers. Rows:

- ``put``: a new item (indexed on its ``text`` field, as a memory tool writes it) in another
  namespace of the same store;
- ``get``: an item by key, a different one each call;
- ``search (filter)``: ``filter={"topic": ...}`` (1 item in 100 matches), ``limit=10``, no query;
  the check says whether the 10 matches came back (RedisStore filters after paging);
- ``vector search``: ``query=...``, ``limit=10`` over the namespace; the check compares the top 10
  with ``InMemoryStore``'s exact cosine ranking.

Round trips are counted at redis-py's socket writes, as in the other areas.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import math
import random
from collections.abc import Callable
from typing import Any

from langchain_core.embeddings import Embeddings

from bench.env import Ctx, cm, missing
from bench.harness import Check, RoundTrips, Row, Stat, compare, guarded

AREA = "store"
#: Vector dimensions of :class:`HashEmbeddings`.
DIMS = 64
#: ours / RedisStore: faster on put and get, within 2x on vector search.
PUT_GET_GOAL = 1.0
VECTOR_GOAL = 2.0
#: One label each: RedisStore (0.5.2 on Redis 8) finds no item by ``get`` in a namespace of two or
#: more labels (its text-indexed prefix does not match the dotted form); the run notes it.
DOCS = ("docs",)
PUTS = ("puts",)
TOPICS = 100
LIMIT = 10


class HashEmbeddings(Embeddings):
    """A deterministic unit vector per text (seeded by its BLAKE2 hash): the same on every side."""

    def __init__(self, dims: int = DIMS) -> None:
        self.dims = dims

    def _vector(self, text: str) -> list[float]:
        rng = random.Random(hashlib.blake2b(text.encode(), digest_size=8).digest())
        v = [rng.gauss(0.0, 1.0) for _ in range(self.dims)]
        norm = math.sqrt(sum(x * x for x in v)) or 1.0
        return [x / norm for x in v]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._vector(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vector(text)


def _index() -> dict[str, Any]:
    return {"dims": DIMS, "embed": HashEmbeddings(), "fields": ["text"]}


def _item(i: int) -> dict[str, Any]:
    return {"text": f"memory {i}: the user mentioned subject {i % 997}", "topic": f"t{i % TOPICS}", "n": i}


def items_count(ctx: Ctx) -> int:
    return 1_000 if ctx.s.quick else 10_000


def _load(store: Any, n: int) -> None:
    from langgraph.store.base import PutOp

    for start in range(0, n, 500):
        store.batch([PutOp(DOCS, f"k{i}", _item(i)) for i in range(start, min(n, start + 500))])


class Driver:
    """The four operations on one store, each call a little different (keys, topics, queries)."""

    def __init__(self, store: Any, n: int) -> None:
        self.store = store
        self.n = n
        self._puts = itertools.count()
        self._gets = itertools.count(7)
        self._topics = itertools.count(3)
        self._queries = itertools.count()

    def put(self) -> None:
        i = next(self._puts)
        self.store.put(PUTS, f"p{i}", _item(i))

    def get(self) -> Any:
        key = f"k{(next(self._gets) * 7919) % self.n}"
        out = self.store.get(DOCS, key)
        if out is None:
            raise RuntimeError(f"{type(self.store).__name__}: no item {key}")
        return out

    def filter_search(self) -> list[Any]:
        topic = f"t{next(self._topics) % TOPICS}"
        return list(self.store.search(DOCS, filter={"topic": topic}, limit=LIMIT))

    def vector_search(self) -> list[Any]:
        q = f"what did the user say about subject {next(self._queries) % 997}?"
        return list(self.store.search(DOCS, query=q, limit=LIMIT))


def run(ctx: Ctx) -> list[Row]:
    rows: list[Row] = []
    guarded(AREA, "put / get / search", rows)(lambda: _run(ctx, rows))
    return rows


def _run(ctx: Ctx, rows: list[Row]) -> None:
    from langgraph.store.memory import InMemoryStore

    n = items_count(ctx)
    prefix = ctx.name("store")
    stores: dict[str, Any] = {"InMemoryStore": InMemoryStore(index=_index())}  # type: ignore[arg-type]
    notes: dict[str, str] = {}
    redis_clients: list[Any] = []

    def cleanup() -> None:
        import redis

        for key in ("REDIS_SEARCH_URL", "REDIS_URL"):
            if not ctx.env.get(key):
                continue
            c = redis.Redis.from_url(ctx.env[key], protocol=2)
            if key == "REDIS_SEARCH_URL":
                with contextlib.suppress(Exception):
                    for idx in c.execute_command("FT._LIST"):
                        name = idx.decode() if isinstance(idx, bytes) else str(idx)
                        if prefix in name:
                            c.execute_command("FT.DROPINDEX", name)
            with contextlib.suppress(Exception):
                keys = list(c.scan_iter(match=f"{prefix}*", count=1000))
                for i in range(0, len(keys), 500):
                    c.unlink(*keys[i : i + 500])
            c.close()
        for s in stores.values():
            with contextlib.suppress(Exception):
                getattr(s, "close", lambda: None)()
        for c in redis_clients:
            with contextlib.suppress(Exception):
                c.close()

    ctx.cleanups.append(cleanup)
    peer_n = "RedisStore (Redis 8)"
    ours8, ours7 = "chatmemory (Redis 8)", "chatmemory (Redis 7)"
    if url8 := ctx.env.get("REDIS_SEARCH_URL"):
        import redis
        from langgraph.store.redis import RedisStore

        client = redis.Redis.from_url(url8)
        redis_clients.append(client)
        peer = RedisStore(client, index=_index(), store_prefix=f"{prefix}_lgs", vector_prefix=f"{prefix}_lgv")  # type: ignore[arg-type]
        try:
            peer.setup()
            stores[peer_n] = peer
        except Exception as e:  # noqa: BLE001 - a server without the modules
            notes[peer_n] = f"RedisStore setup failed: {type(e).__name__}: {str(e)[:120]}"
        else:
            peer.put(("bench", "probe"), "k", {"text": "probe"})
            if peer.get(("bench", "probe"), "k") is None:
                ctx.extra.setdefault("notes", []).append(
                    "langgraph-checkpoint-redis RedisStore: get() finds no item in a namespace of two "
                    "labels (('bench', 'probe')) on this Redis 8; the store rows use one-label namespaces"
                )
    store_for, binding_from_url = cm("store", "store_for"), cm("memory", "binding_from_url")
    why_ours = "" if store_for is not None and binding_from_url is not None else missing("store", "store_for")
    if not why_ours:
        for name, key in ((ours8, "REDIS_SEARCH_URL"), (ours7, "REDIS_URL")):
            if ctx.env.get(key):
                binding, _ = binding_from_url(ctx.env[key], key_prefix=f"{prefix}_cm:")
                stores[name] = store_for(binding, index=_index())
    for store in stores.values():
        _load(store, n)
    drivers = {name: Driver(s, n) for name, s in stores.items()}
    _check_loaded(drivers)

    def timed(op: str, exact: int | None = None) -> dict[str, Stat]:
        fns: dict[str, Callable[[], Any]] = {name: getattr(d, op) for name, d in drivers.items()}
        stats = compare(fns, ctx.s, exact_runs=exact)
        for name, fn in fns.items():
            if name != "InMemoryStore":
                stats[name] = stats[name].with_(round_trips=RoundTrips.per_op("redis", fn, ops=5))
        return stats

    put = timed("put", exact=30 if ctx.s.quick else 200)
    get = timed("get")
    filt = timed("filter_search")
    vec = timed("vector_search")
    checks = _checks(drivers)
    for op, st, goal in (
        ("put", put, PUT_GET_GOAL),
        ("get", get, PUT_GET_GOAL),
        ("search (filter, limit 10)", filt, None),
        (f"vector search ({n:,} items, limit 10)", vec, VECTOR_GOAL),
    ):
        kind = "filter" if "filter" in op else ("vector" if "vector" in op else "")
        # A check joins a row's goal only where the row has one (the vector ranking); elsewhere
        # what the checks found is a note, so the goal count stays the issue's.
        mine = checks.get((ours8, kind), [])
        theirs = "; ".join(c.detail for c in checks.get((peer_n, kind), []))
        note = [notes.get(peer_n, "")]
        if goal is None:
            note.append("; ".join(f"ours: {c.detail}" for c in mine))
        if theirs:
            note.append(f"peer: {theirs}")
        gtxt = "info" if goal is None else ("faster (<= 1.0x)" if goal == PUT_GET_GOAL else f"<= {goal:g}x")
        rows.append(
            Row(
                AREA,
                f"{op}, Redis 8",
                st.get(ours8),
                st.get(peer_n),
                goal,
                gtxt,
                checks=mine if goal is not None else [],
                note="; ".join(x for x in note if x),
                skipped=why_ours or ("" if peer_n in st else notes.get(peer_n, "REDIS_SEARCH_URL not set")),
            )
        )
        for ours, where in ((ours8, "Redis 8"), (ours7, "Redis 7")):
            if ours in st:
                found = "; ".join(c.detail for c in checks.get((ours, kind), []))
                if kind == "vector":
                    how = "ranked in the client" if ours == ours7 else "ranked on the server (vector sets)"
                    found = how + (f"; {found}" if found else "")
                rows.append(
                    Row(
                        AREA,
                        f"{op}, ours on {where} vs in-memory",
                        st[ours],
                        st["InMemoryStore"],
                        None,
                        "info",
                        note=found,
                    )
                )


def _check_loaded(drivers: dict[str, Driver]) -> None:
    for name, d in drivers.items():
        got = d.get()
        if got.value.get("topic") is None:
            print(f"  ! {name}: get returned {got.value!r}")


def _checks(drivers: dict[str, Driver]) -> dict[tuple[str, str], list[Check]]:
    """Completeness of a filtered search and agreement of the vector ranking with the exact one."""
    out: dict[tuple[str, str], list[Check]] = {}
    topic = "t42"
    query = "what did the user say about subject 42?"
    exact = [it.key for it in drivers["InMemoryStore"].store.search(DOCS, query=query, limit=LIMIT)]
    for name, d in drivers.items():
        found = list(d.store.search(DOCS, filter={"topic": topic}, limit=LIMIT))
        ok = len(found) == LIMIT and all(it.value.get("topic") == topic for it in found)
        out[(name, "filter")] = [Check("10 matches", ok, f"{len(found)} of {LIMIT} matching items returned")]
        top = [it.key for it in d.store.search(DOCS, query=query, limit=LIMIT)]
        same = len(set(top) & set(exact))
        out[(name, "vector")] = [
            Check("exact top 10", same >= LIMIT - 1, f"{same} of the exact top {LIMIT} (InMemoryStore)")
        ]
    return out
