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

import contextlib
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
from tests.integration.store.conftest import VOCABULARY, StoreFactory, WordEmbeddings, word_index
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
            mem.admin.execute_command("VCARD", vector_set_key(mem.binding.key_prefix, t, WordEmbeddings.dims))
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
    try:
        store.put(NS, "old", {"text": "cat cat"}, ttl=0.002)  # 120 ms
        store.put(NS, "live", {"text": "cat dog"})
        assert sum(vector_sets(mem).values()) == 2
        while mem.admin.exists(item_key(mem.binding.key_prefix, "docs.a", "old")):
            time.sleep(0.02)
        assert [it.key for it in store.search(NS, query="cat")] == ["live"]
        assert sum(vector_sets(mem).values()) == 1  # the search pruned the expired one
        assert [it.key for it in store.search(NS, query="cat")] == ["live"]
    finally:
        store.close()


def test_a_delete_or_an_unindexed_overwrite_removes_the_element(
    platform: Platform, memories: list[Memory]
) -> None:
    mem = vector_memory(platform, memories)
    store = store_for(mem.binding, index=word_index())
    vset = vector_set_key(mem.binding.key_prefix, "docs.a", WordEmbeddings.dims)
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
    vset = vector_set_key(mem.binding.key_prefix, "docs.a", WordEmbeddings.dims)
    try:
        store.put(NS, "back", {"text": "cat"})
        store._run(
            store._prune_op([("docs.a", "back", vset, vector_element("text", "back"))])
        )  # the element as a stale search saw it
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


class WiderEmbeddings(WordEmbeddings):
    """The word embedding with one more dimension: a model whose dimensions changed."""

    dims = WordEmbeddings.dims + 1

    def _vector(self, text: str) -> list[float]:
        return [*super()._vector(text), 0.5]


def wider_index() -> dict[str, Any]:
    return {"dims": WiderEmbeddings.dims, "embed": WiderEmbeddings(), "fields": ["text"]}


def vector_sets(mem: Memory) -> dict[bytes, int]:
    """Every vector set under the memory's prefix, with its number of elements."""
    keys = mem.admin.scan_iter(match=mem.binding.key_prefix + "*", _type="vectorset", count=1000)
    return {k: mem.admin.execute_command("VCARD", k) for k in keys}


def sets_holding(mem: Memory, element: str) -> list[bytes]:
    return [k for k in vector_sets(mem) if mem.admin.execute_command("VISMEMBER", k, element) == 1]


def test_a_delete_by_a_store_without_index_removes_every_vector_of_the_item(
    platform: Platform, memories: list[Memory]
) -> None:
    """An erase job runs ``memory.store()`` without ``index``: the items' embeddings go with them,
    the configured field's, a per-put ``index=[...]`` field's and ``tags[*]`` expansions alike."""
    mem = vector_memory(platform, memories)
    indexed = store_for(mem.binding, index=word_index())
    plain = store_for(mem.binding)
    try:
        indexed.put(NS, "a", {"text": "cat", "tags": ["dog", "fish"]}, index=["text", "tags[*]"])
        indexed.put(NS, "b", {"text": "dog", "note": "bird"}, index=["note"])
        indexed.put(NS, "c", {"text": "sun"}, ttl=10)
        assert sum(vector_sets(mem).values()) == 5
        plain.delete(NS, "a")
        plain.delete(NS, "c")
        assert sum(vector_sets(mem).values()) == 1  # b's "note" only
        plain.put(NS, "b", {"text": "dog", "note": "bird"})  # an unindexed overwrite
        assert sum(vector_sets(mem).values()) == 0
        assert [(it.key, it.score) for it in indexed.search(NS, query="dog")] == [("b", None)]
    finally:
        indexed.close()
        plain.close()


def test_an_overwrite_removes_the_vectors_of_fields_the_item_no_longer_has(
    platform: Platform, memories: list[Memory]
) -> None:
    mem = vector_memory(platform, memories)
    store = store_for(mem.binding, index=word_index(["tags[*]"]))
    try:
        store.put(NS, "a", {"tags": ["cat", "dog", "fish"]})
        assert sum(vector_sets(mem).values()) == 3
        store.put(NS, "a", {"tags": ["cat"]})
        assert sum(vector_sets(mem).values()) == 1
        assert [(it.key, it.score is not None) for it in store.search(NS, query="cat")] == [("a", True)]
    finally:
        store.close()


def test_vectors_of_items_with_a_ttl_expire_with_them_and_a_permanent_items_never(
    platform: Platform, memories: list[Memory]
) -> None:
    """The vectors of expiring items live in a set that expires the grace (10 min) after its last
    item, raised by every put and refresh; a permanent item's vector is in a set without expiry,
    whatever expiring items the namespace also has."""
    mem = vector_memory(platform, memories)
    store = store_for(mem.binding, index=word_index(), ttl={"refresh_on_read": True})
    grace = 10 * 60 * 1000
    try:
        store.put(("t", "only"), "a", {"text": "cat"}, ttl=1)
        (expiring,) = sets_holding(mem, vector_element("text", "a"))
        assert grace < mem.admin.pttl(expiring) <= grace + 60_000
        store.put(("t", "only"), "b", {"text": "dog"}, ttl=30)  # a later item raises the expiry
        assert grace + 60_000 < mem.admin.pttl(expiring) <= grace + 30 * 60_000
        store.put(NS, "perm", {"text": "cat"})
        store.put(NS, "brief", {"text": "dog"}, ttl=1)
        (lasting,) = sets_holding(mem, vector_element("text", "perm"))
        assert mem.admin.pttl(lasting) == -1
        (brief,) = sets_holding(mem, vector_element("text", "brief"))
        assert 0 < mem.admin.pttl(brief) <= grace + 60_000
        mem.admin.pexpire(brief, 1000)  # a refreshing read raises it again (GT)
        assert store.get(NS, "brief") is not None
        assert mem.admin.pttl(brief) > grace
        store.put(NS, "brief", {"text": "dog"})  # made permanent: its vector moves to the lasting set
        assert sets_holding(mem, vector_element("text", "brief")) == [lasting]
    finally:
        store.close()


def test_a_model_with_other_dimensions_leaves_earlier_vectors_unindexed_and_searches_work(
    platform: Platform, memories: list[Memory]
) -> None:
    """As the SQL store does: vectors of other dimensions count as unindexed, a put never fails on
    them and no search errors."""
    mem = vector_memory(platform, memories)
    old = _redis(store_for(mem.binding, index=word_index()))
    new = _redis(store_for(mem.binding, index=wider_index()))
    try:
        old.put(NS, "old", {"text": "cat"})
        new.put(NS, "new", {"text": "cat dog"})
        assert new.get(NS, "new") is not None
        assert [(it.key, it.score is None) for it in new.search(NS, query="cat")] == [
            ("new", False),
            ("old", True),
        ]
        assert [(it.key, it.score is None) for it in old.search(NS, query="cat")] == [
            ("old", False),
            ("new", True),
        ]
        assert [it.key for it in new.search(("docs",), query="dog", limit=1)] == ["new"]
        assert old.vector_sets is True and new.vector_sets is True
    finally:
        old.close()
        new.close()


def test_a_prune_racing_a_put_of_a_new_vector_leaves_the_new_vector(
    platform: Platform, memories: list[Memory]
) -> None:
    """A prune reads the item, then a put gives it a new vector before the prune's re-add: the
    vector set must hold the put's vector (VSIM ranks by it), not the one the prune read."""
    mem = vector_memory(platform, memories)
    store = _redis(store_for(mem.binding, index=word_index()))
    try:
        store.put(NS, "back", {"text": "cat"})
        vset = vector_set_key(mem.binding.key_prefix, "docs.a", WordEmbeddings.dims)
        op = store._prune_op([("docs.a", "back", vset, vector_element("text", "back"))])
        batch = next(op)
        replies = store._execute(store.client, batch)  # type: ignore[arg-type]
        store.put(NS, "back", {"text": "dog"})  # between the prune's read and its re-add
        with contextlib.suppress(StopIteration):
            while True:
                batch = op.send(replies)
                replies = store._execute(store.client, batch)  # type: ignore[arg-type]
        (vset,) = sets_holding(mem, vector_element("text", "back"))
        dog = WordEmbeddings().embed_query("dog")
        reply = mem.admin.execute_command("VSIM", vset, "VALUES", len(dog), *dog, "WITHSCORES")
        scores = dict(zip(reply[0::2], reply[1::2], strict=True)) if isinstance(reply, list) else reply
        assert float(scores[vector_element("text", "back").encode()]) > 0.99
    finally:
        store.close()


@pytest.mark.parametrize("labels", [("docs", "a"), ("we{ird}", "%7B"), ("ünï", "cödé")])
def test_the_vector_set_lives_in_its_namespaces_cluster_slot(labels: tuple[str, ...]) -> None:
    text = ".".join(labels)
    slots = {key_slot(k.encode()) for k in (item_key("p:", text, "k"), keys_key("p:", text))}
    slots |= {key_slot(vector_set_key("p:", text, 8).encode()), key_slot(meta_key("p:", text).encode())}
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
        sends.count = 0
        store.delete(NS, "x")  # its elements are this index's: removed in the MULTI, no prune
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
