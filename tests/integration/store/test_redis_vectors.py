"""The Redis store's server-side ranking with Redis 8 vector sets, and its fallbacks.

A memory here is provisioned as the operator provisions it on a server with vector sets: its ACL
user is allowed the operator's command list plus ``VECTOR_SET_COMMANDS`` (the operator adds them
only where every node has them). Checked: the ranking equals the core's exact one (the same store
forced to rank in the client) on a few hundred items with ties, filters and deep pages; expired
and deleted items are never returned and their elements go; a namespace written without vector
sets is still searched completely; the vector set shares its namespace's cluster slot; the round
trips are those of the brute-force path; and the whole conformance module passes on this path.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import pytest_asyncio
from chatmemory.store import ChatMemoryRedisStore, astore_for, store_for
from chatmemory.store.redis import item_key, keys_key, meta_key, vector_element, vector_set_key
from chatmemory_operator.backends.redis import VECTOR_SET_COMMANDS
from langgraph.store.base import BaseStore, PutOp
from redis.crc import key_slot

from tests.integration.checkpoint.conftest import Memory, redis_memory
from tests.integration.checkpoint.test_round_trips import Sends, sends  # noqa: F401 - the fixture
from tests.integration.store.conftest import VOCABULARY, StoreFactory, word_index
from tests.integration.store.test_conformance import *  # noqa: F403 - the conformance module, rerun here
from tests.support.platform import Platform

REDIS8 = "REDIS_SEARCH_URL"
NS = ("docs", "a")


def grant_vector_sets(mem: Memory) -> None:
    """What the operator adds to the memory's user on a server with vector sets."""
    rules = [f"+{c}" for c in VECTOR_SET_COMMANDS]
    mem.admin.execute_command("ACL", "SETUSER", mem.binding.username, *rules)


@pytest.fixture
def memories() -> Iterator[list[Memory]]:
    made: list[Memory] = []
    yield made
    for mem in made:
        for fn in mem.cleanups:
            fn()


def vector_memory(platform: Platform, memories: list[Memory]) -> Memory:
    mem = redis_memory(platform, REDIS8, None)
    memories.append(mem)
    grant_vector_sets(mem)
    return mem


def _redis(store: BaseStore) -> ChatMemoryRedisStore:
    assert isinstance(store, ChatMemoryRedisStore)
    return store


def _fill(store: BaseStore, n: int, seed: int = 7) -> int:
    """``n`` items over two namespaces: texts of 1-4 vocabulary words (many exact ties), a number
    for filters, every 11th unindexed. Returns how many are indexed."""
    rng = random.Random(seed)
    ops = []
    for i in range(n):
        text = " ".join(rng.choice(VOCABULARY) for _ in range(rng.randint(1, 4)))
        ns = ("docs", "a" if i % 3 else "b")
        ops.append(PutOp(ns, f"k{i}", {"text": text, "n": i % 7}, index=False if i % 11 == 0 else None))
    for start in range(0, n, 100):
        store.batch(ops[start : start + 100])
    return sum(1 for i in range(n) if i % 11)


def _page(items: list[Any]) -> list[tuple[tuple[str, ...], str, float | None, Any]]:
    return [(it.namespace, it.key, it.score, it.value) for it in items]


CASES = [
    dict(limit=10),
    dict(limit=25, offset=7),
    dict(limit=10, filter={"n": 3}),
    dict(limit=5, offset=3, filter={"n": {"$gte": 5}}),
    dict(limit=40, offset=250),  # reaches the unindexed items, listed after the ranked ones
    dict(limit=400),
]


def test_the_ranking_on_the_server_equals_the_cores_exact_ranking(
    platform: Platform, memories: list[Memory]
) -> None:
    mem = vector_memory(platform, memories)
    store = _redis(store_for(mem.binding, index=word_index()))
    exact = _redis(store_for(mem.binding, index=word_index()))
    try:
        indexed = _fill(store, 300)
        assert store.vector_sets is True
        cards = sum(
            mem.admin.execute_command("VCARD", vector_set_key(mem.binding.key_prefix, t))
            for t in ("docs.a", "docs.b")
        )
        assert cards == indexed  # one element per indexed item
        exact.vector_sets = False  # the same store ranking every item in the client (the core)
        for query in ("cat", "dog fish", "rain sun sun", "tree car bird"):
            for prefix in (("docs",), NS):
                for case in CASES:
                    ours = store.search(prefix, query=query, **case)  # type: ignore[arg-type]
                    assert _page(ours) == _page(exact.search(prefix, query=query, **case)), (query, case)  # type: ignore[arg-type]
    finally:
        store.close()
        exact.close()


async def test_the_async_ranking_on_the_server_equals_the_cores_exact_ranking(
    platform: Platform, memories: list[Memory]
) -> None:
    mem = vector_memory(platform, memories)
    store = _redis(await astore_for(mem.binding, index=word_index()))
    exact = _redis(await astore_for(mem.binding, index=word_index()))
    try:
        _fill(store, 120, seed=11)
        exact.vector_sets = False
        for case in CASES:
            ours = await store.asearch(("docs",), query="cat dog", **case)  # type: ignore[arg-type]
            assert _page(ours) == _page(await exact.asearch(("docs",), query="cat dog", **case))  # type: ignore[arg-type]
        assert store.vector_sets is True
    finally:
        await store.aclose()
        await exact.aclose()


def test_an_expired_item_is_never_returned_and_its_element_is_pruned(
    platform: Platform, memories: list[Memory]
) -> None:
    mem = vector_memory(platform, memories)
    store = store_for(mem.binding, index=word_index())
    vset = vector_set_key(mem.binding.key_prefix, "docs.a")
    try:
        store.put(NS, "old", {"text": "cat cat"}, ttl=0.002)  # 120 ms
        store.put(NS, "live", {"text": "cat dog"})
        assert mem.admin.execute_command("VCARD", vset) == 2
        while mem.admin.exists(item_key(mem.binding.key_prefix, "docs.a", "old")):
            time.sleep(0.02)
        assert [it.key for it in store.search(NS, query="cat")] == ["live"]
        assert mem.admin.execute_command("VCARD", vset) == 1  # the search pruned the expired one
        assert [it.key for it in store.search(NS, query="cat")] == ["live"]
    finally:
        store.close()


def test_a_delete_or_an_unindexed_overwrite_removes_the_element(
    platform: Platform, memories: list[Memory]
) -> None:
    mem = vector_memory(platform, memories)
    store = store_for(mem.binding, index=word_index())
    vset = vector_set_key(mem.binding.key_prefix, "docs.a")
    admin = mem.admin
    try:
        store.put(NS, "a", {"text": "cat"})
        store.put(NS, "b", {"text": "dog"})
        assert admin.execute_command("VISMEMBER", vset, vector_element("text", "a")) == 1
        store.delete(NS, "a")
        assert admin.execute_command("VISMEMBER", vset, vector_element("text", "a")) == 0
        store.put(NS, "b", {"text": "dog"}, index=False)
        assert admin.execute_command("VCARD", vset) == 0 or not admin.exists(vset)
        found = store.search(NS, query="dog")
        assert [(it.key, it.score) for it in found] == [("b", None)]  # listed, unranked
    finally:
        store.close()


def test_a_prune_racing_a_put_gives_the_item_its_element_back(
    platform: Platform, memories: list[Memory]
) -> None:
    """A search saw an item missing and prunes its element while a put brings the item back: the
    prune's MULTI reads the item and adds its vectors again, so the live item stays ranked."""
    mem = vector_memory(platform, memories)
    store = _redis(store_for(mem.binding, index=word_index()))
    vset = vector_set_key(mem.binding.key_prefix, "docs.a")
    try:
        store.put(NS, "back", {"text": "cat"})
        store._run(store._prune_op([(NS, "back", "text")]))  # the element as a stale search saw it
        assert mem.admin.execute_command("VISMEMBER", vset, vector_element("text", "back")) == 1
        assert [it.key for it in store.search(NS, query="cat")] == ["back"]
    finally:
        store.close()


def test_a_namespace_written_without_vector_sets_is_still_searched_completely(
    platform: Platform, memories: list[Memory]
) -> None:
    """A writer not allowed the vector-set commands (an operator not yet upgraded, or a server
    upgraded to Redis 8 under the data) flags the namespace; searches of it then read every item."""
    mem = redis_memory(platform, REDIS8, None)
    memories.append(mem)
    before = store_for(mem.binding, index=word_index())
    try:
        before.put(NS, "cat", {"text": "cat"})
        assert _redis(before).vector_sets is False  # NOPERM on the probe: brute force
    finally:
        before.close()
    assert mem.admin.hget(meta_key(mem.binding.key_prefix, "docs.a"), "flat") == b"1"
    grant_vector_sets(mem)
    after = _redis(store_for(mem.binding, index=word_index()))
    try:
        after.batch([PutOp(NS, f"dog{i}", {"text": "dog"}) for i in range(40)])
        assert after.vector_sets is True
        found = after.search(NS, query="cat", limit=5)
        assert found[0].key == "cat"  # the vector set alone lacks it: it would rank 5 dogs
    finally:
        after.close()


@pytest.mark.parametrize("labels", [("docs", "a"), ("we{ird}", "%7B"), ("ünï", "cödé")])
def test_the_vector_set_lives_in_its_namespaces_cluster_slot(labels: tuple[str, ...]) -> None:
    text = ".".join(labels)
    slots = {key_slot(k.encode()) for k in (item_key("p:", text, "k"), keys_key("p:", text))}
    slots |= {key_slot(vector_set_key("p:", text).encode()), key_slot(meta_key("p:", text).encode())}
    assert len(slots) == 1


def test_round_trips_of_the_server_ranking_are_at_most_the_brute_force_paths(
    platform: Platform,
    memories: list[Memory],
    sends: Sends,  # noqa: F811 - the imported fixture
) -> None:
    """After the one-time probe: a put is one MULTI; a query search is the namespace index, the
    namespaces' VSIM, the candidates' hashes (3, as the brute-force path on Redis 7), and 2 when
    the prefix is a namespace (its VSIM rides along with the index read)."""
    mem = vector_memory(platform, memories)
    store = store_for(mem.binding, index=word_index())
    try:
        _fill(store, 60)
        store.search(NS, query="cat", limit=3)
        sends.count = 0
        store.put(NS, "x", {"text": "cat"})
        assert sends.count == 1
        sends.count = 0
        found = store.search(("docs",), query="cat", limit=3)  # two namespaces under the prefix
        assert sends.count == 3 and len(found) == 3
        sends.count = 0
        found = store.search(NS, query="cat", limit=3)  # the prefix is the namespace
        assert sends.count == 2 and len(found) == 3
        sends.count = 0
        assert store.get(NS, "x") is not None
        assert sends.count == 1
    finally:
        store.close()


# -- the conformance module, rerun on the vector-set path ------------------------------------------


@pytest.fixture(params=["redis8-vector-sets"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest_asyncio.fixture
async def make_store(platform: Platform) -> AsyncIterator[StoreFactory]:
    """Stores on Redis 8 as a user allowed the vector-set commands (conftest's ``make_store``
    grants the operator's base list only, so the conformance there runs the brute-force path)."""
    made: list[tuple[Any, Memory]] = []

    def make(**kwargs: Any) -> BaseStore:
        mem = redis_memory(platform, REDIS8, None)
        grant_vector_sets(mem)
        store = store_for(mem.binding, **kwargs)
        made.append((store, mem))
        return store

    try:
        yield make
    finally:
        for store, mem in made:
            # a store that probed must have found the vector sets (else this reran brute force)
            assert store.vector_sets is not False, "the store fell back to brute force"
            await store.aclose()
            for fn in mem.cleanups:
                fn()
