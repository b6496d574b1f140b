"""LangGraph ``BaseStore`` conformance: every op and option, on every backend that serves a store.

The same tests run against LangGraph's own ``InMemoryStore``, which proves they encode LangGraph's
semantics. Where the reference stores disagree (/work/shared/notes/langgraph-store.md) we chose on
purpose (docs/store.md) and the case InMemoryStore fails is marked for it alone, with the reason,
as a strict xfail: if InMemoryStore ever changes, the mark fails and says so.

Expiry is tested by polling (a generous deadline only stops a broken store from hanging the run);
nothing here asserts how fast anything is.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from langgraph.store.base import (
    BaseStore,
    GetOp,
    InvalidNamespaceError,
    ListNamespacesOp,
    MatchCondition,
    PutOp,
    SearchOp,
)

from tests.integration.store.conftest import StoreFactory, word_index

#: Seconds a polling loop may wait for an expiry before the test gives up.
DEADLINE = 60.0
#: A TTL short enough to wait out (minutes, as LangGraph's ``ttl``): 0.6 seconds.
SHORT_TTL = 0.01


def deviates(
    request: pytest.FixtureRequest, backend: str, store: str, reason: str, *, strict: bool = True
) -> None:
    """Mark this case as failing on ``store`` alone, for ``reason`` (strict: it must fail there;
    not strict for a race, which fails only when the threads meet)."""
    if backend == store:
        request.applymarker(pytest.mark.xfail(reason=reason, strict=strict))


def no_ttl_in_memory(request: pytest.FixtureRequest, backend: str) -> None:
    deviates(request, backend, "inmemory", "InMemoryStore has no TTL (supports_ttl is False)")


def keys(items: list[Any]) -> list[str]:
    return [i.key for i in items]


def eventually(check: Callable[[], bool]) -> bool:
    """Poll ``check`` until it holds (True) or the deadline passes (False)."""
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.05)
    return False


def tick() -> None:
    """Let the clock move past the millisecond the stores stamp writes with."""
    time.sleep(0.003)


# -- get / put / delete ---------------------------------------------------------------------------


def test_put_then_get_returns_the_item(store: BaseStore) -> None:
    store.put(("users", "u1"), "prefs", {"theme": "dark", "n": 3})
    item = store.get(("users", "u1"), "prefs")
    assert item is not None
    assert (item.namespace, item.key, item.value) == (("users", "u1"), "prefs", {"theme": "dark", "n": 3})
    assert isinstance(item.created_at, datetime) and item.created_at.tzinfo is not None
    assert item.updated_at >= item.created_at


def test_get_of_a_missing_item_is_none(store: BaseStore) -> None:
    assert store.get(("users",), "nobody") is None
    store.put(("users",), "a", {"x": 1})
    assert store.get(("users",), "b") is None
    assert store.get(("other",), "a") is None


def test_put_overwrites_the_value_and_moves_updated_at(store: BaseStore) -> None:
    store.put(("ns",), "k", {"v": 1})
    first = store.get(("ns",), "k")
    tick()
    store.put(("ns",), "k", {"w": 2})
    second = store.get(("ns",), "k")
    assert first is not None and second is not None
    assert second.value == {"w": 2}
    assert second.updated_at > first.updated_at


def test_overwrite_keeps_created_at(request: pytest.FixtureRequest, backend: str, store: BaseStore) -> None:
    deviates(request, backend, "inmemory", "InMemoryStore resets created_at on overwrite; we keep it")
    store.put(("ns",), "k", {"v": 1})
    first = store.get(("ns",), "k")
    tick()
    store.put(("ns",), "k", {"v": 2})
    second = store.get(("ns",), "k")
    assert first is not None and second is not None
    assert second.created_at == first.created_at
    assert second.updated_at > second.created_at


def test_delete_removes_the_item_everywhere(store: BaseStore) -> None:
    store.put(("ns",), "k", {"v": 1})
    store.put(("ns",), "other", {"v": 2})
    store.delete(("ns",), "k")
    assert store.get(("ns",), "k") is None
    assert keys(store.search(("ns",))) == ["other"]
    store.delete(("ns",), "never-written")  # deleting nothing is fine


def test_put_after_delete_starts_a_new_item(store: BaseStore) -> None:
    store.put(("ns",), "k", {"v": 1})
    store.delete(("ns",), "k")
    tick()
    store.put(("ns",), "k", {"v": 2})
    item = store.get(("ns",), "k")
    assert item is not None and item.value == {"v": 2}


def test_namespaces_are_checked(store: BaseStore) -> None:
    for bad in [(), ("a.b",), ("",), ("langgraph", "x")]:
        with pytest.raises(InvalidNamespaceError):
            store.put(bad, "k", {"v": 1})
    with pytest.raises(InvalidNamespaceError):
        store.get(("a.b",), "k")
    with pytest.raises(InvalidNamespaceError):
        store.search(("a.b",))


def test_a_batch_answers_each_op_in_order_and_reads_see_the_store_before_its_writes(
    store: BaseStore,
) -> None:
    store.put(("ns",), "k", {"v": 1})
    results = store.batch(
        [
            PutOp(("ns",), "k", {"v": 2}),
            GetOp(("ns",), "k"),
            SearchOp(("ns",)),
            ListNamespacesOp(),
            PutOp(("ns2",), "j", {"v": 3}),
        ]
    )
    assert results[0] is None and results[4] is None
    assert results[1] is not None and results[1].value == {"v": 1}  # type: ignore[union-attr]
    assert [i.value for i in results[2]] == [{"v": 1}]  # type: ignore[union-attr]
    assert results[3] == [("ns",)]
    assert store.get(("ns",), "k").value == {"v": 2}  # type: ignore[union-attr]
    assert store.get(("ns2",), "j") is not None


# -- search: namespaces, order, pagination --------------------------------------------------------


def test_search_matches_whole_namespace_labels(store: BaseStore) -> None:
    store.put(("docs",), "a", {"v": 1})
    store.put(("docs", "sub"), "b", {"v": 2})
    store.put(("docsx",), "c", {"v": 3})
    store.put(("other", "docs"), "d", {"v": 4})
    assert sorted(keys(store.search(("docs",)))) == ["a", "b"]
    assert keys(store.search(("docs", "sub"))) == ["b"]
    assert sorted(keys(store.search(()))) == ["a", "b", "c", "d"]
    assert store.search(("doc",)) == []


def test_search_items_carry_their_fields_and_no_score_without_query(store: BaseStore) -> None:
    store.put(("a", "b"), "k", {"text": "hello"})
    [found] = store.search(("a",))
    assert (found.namespace, found.key, found.value, found.score) == (
        ("a", "b"),
        "k",
        {"text": "hello"},
        None,
    )
    got = store.get(("a", "b"), "k")
    assert got is not None and (found.created_at, found.updated_at) == (got.created_at, got.updated_at)


def test_search_without_query_lists_the_newest_update_first(
    request: pytest.FixtureRequest, backend: str, store: BaseStore
) -> None:
    deviates(
        request, backend, "inmemory", "InMemoryStore lists by insertion; we list newest updated_at first"
    )
    for k in ["a", "b", "c"]:
        store.put(("ns",), k, {"k": k})
        tick()
    store.put(("ns",), "a", {"k": "a2"})
    assert keys(store.search(("ns",))) == ["a", "c", "b"]


def test_limit_and_offset_page_through_every_item_once(store: BaseStore) -> None:
    for i in range(23):
        store.put(("ns", str(i % 3)), f"k{i:02}", {"i": i})
    pages = [store.search(("ns",), limit=5, offset=o) for o in range(0, 30, 5)]
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3, 0]
    seen = [k for p in pages for k in keys(p)]
    assert sorted(seen) == [f"k{i:02}" for i in range(23)]
    assert len(store.search(("ns",), limit=100)) == 23
    assert keys(store.search(("ns",), limit=10)) == keys(store.search(("ns",), limit=100))[:10]


def test_search_default_limit_is_ten(store: BaseStore) -> None:
    for i in range(12):
        store.put(("ns",), str(i), {"i": i})
    assert len(store.search(("ns",))) == 10


# -- search: filters ------------------------------------------------------------------------------


@pytest.fixture
def numbers(store: BaseStore) -> BaseStore:
    for n in [1, 5, 9, 10, 20]:
        store.put(("nums",), f"n{n}", {"n": n, "kind": "odd" if n % 2 else "even", "half": n / 2})
    return store


def _filtered(store: BaseStore, filter: dict[str, Any]) -> list[str]:
    return sorted(keys(store.search(("nums",), filter=filter, limit=100)))


def test_filter_equality(numbers: BaseStore) -> None:
    assert _filtered(numbers, {"kind": "even"}) == ["n10", "n20"]
    assert _filtered(numbers, {"n": 5}) == ["n5"]
    assert _filtered(numbers, {"n": {"$eq": 9}}) == ["n9"]
    assert _filtered(numbers, {"kind": "odd", "n": 9}) == ["n9"]
    assert _filtered(numbers, {"kind": "nothing"}) == []


def test_filter_comparisons_compare_numbers_as_numbers(numbers: BaseStore) -> None:
    assert _filtered(numbers, {"n": {"$gt": 9}}) == ["n10", "n20"]
    assert _filtered(numbers, {"n": {"$gte": 9}}) == ["n10", "n20", "n9"]
    assert _filtered(numbers, {"n": {"$lt": 9}}) == ["n1", "n5"]
    assert _filtered(numbers, {"n": {"$lte": 9}}) == ["n1", "n5", "n9"]
    assert _filtered(numbers, {"n": {"$gt": 1, "$lt": 20}}) == ["n10", "n5", "n9"]
    assert _filtered(numbers, {"half": {"$gte": 4.5}}) == ["n10", "n20", "n9"]


def test_filter_comparison_never_matches_an_item_without_the_field(
    request: pytest.FixtureRequest, backend: str, numbers: BaseStore
) -> None:
    deviates(request, backend, "inmemory", "InMemoryStore raises comparing a missing field; we skip the item")
    numbers.put(("nums",), "none", {"kind": "none"})
    assert "none" not in _filtered(numbers, {"n": {"$lt": 100}})
    assert _filtered(numbers, {"n": {"$gte": 0}}) == ["n1", "n10", "n20", "n5", "n9"]


def test_filter_ne_is_not_eq_and_includes_items_without_the_field(numbers: BaseStore) -> None:
    numbers.put(("nums",), "none", {"kind": "none"})
    assert _filtered(numbers, {"n": {"$ne": 9}}) == ["n1", "n10", "n20", "n5", "none"]
    assert _filtered(numbers, {"kind": {"$ne": "odd"}}) == ["n10", "n20", "none"]


def test_filter_on_nested_values_is_nested_equality(store: BaseStore) -> None:
    store.put(("p",), "ann", {"user": {"name": "ann", "age": 30}, "tags": ["a", "b"]})
    store.put(("p",), "bob", {"user": {"name": "bob", "age": 40}, "tags": ["b"]})
    assert keys(store.search(("p",), filter={"user": {"name": "ann"}})) == ["ann"]
    assert keys(store.search(("p",), filter={"user": {"name": "ann", "age": 30}})) == ["ann"]
    assert store.search(("p",), filter={"user": {"name": "ann", "age": 40}}) == []
    assert keys(store.search(("p",), filter={"tags": ["b"]})) == ["bob"]


def test_filter_combines_with_pagination(numbers: BaseStore) -> None:
    odd = [numbers.search(("nums",), filter={"kind": "odd"}, limit=1, offset=o) for o in range(4)]
    assert [len(p) for p in odd] == [1, 1, 1, 0]
    assert sorted(k for p in odd for k in keys(p)) == ["n1", "n5", "n9"]


# -- semantic search ------------------------------------------------------------------------------


@pytest.fixture
def indexed(make_store: StoreFactory) -> BaseStore:
    store = make_store(index=word_index())
    store.put(("docs",), "cat", {"text": "the cat sat", "kind": "pet"})
    store.put(("docs",), "dog", {"text": "a dog ran", "kind": "pet"})
    store.put(("docs",), "car", {"text": "a red car", "kind": "thing"})
    store.put(("docs", "deep"), "fish", {"text": "fish fish", "kind": "pet"})
    store.put(("elsewhere",), "cat2", {"text": "cat cat cat", "kind": "pet"})
    return store


def test_query_ranks_the_nearest_item_first_with_scores(indexed: BaseStore) -> None:
    found = indexed.search(("docs",), query="cat")
    assert keys(found)[0] == "cat"
    assert sorted(keys(found)) == ["car", "cat", "dog", "fish"]
    scores = [f.score for f in found]
    assert all(isinstance(s, float) for s in scores)
    assert scores == sorted(scores, reverse=True)  # type: ignore[type-var]
    assert keys(indexed.search(("docs",), query="dog"))[0] == "dog"
    assert keys(indexed.search(("docs",), query="fish"))[0] == "fish"


def test_query_search_stays_within_the_namespace_prefix(indexed: BaseStore) -> None:
    assert "cat2" not in keys(indexed.search(("docs",), query="cat cat", limit=10))
    assert keys(indexed.search((), query="cat", limit=1)) in (["cat2"], ["cat"])
    assert keys(indexed.search(("elsewhere",), query="cat")) == ["cat2"]


def test_query_with_a_filter_ranks_only_matching_items(indexed: BaseStore) -> None:
    found = indexed.search(("docs",), query="car", filter={"kind": "pet"})
    assert "car" not in keys(found)
    assert sorted(keys(found)) == ["cat", "dog", "fish"]


def test_query_pages_follow_the_ranking(indexed: BaseStore) -> None:
    ranked = keys(indexed.search(("docs",), query="cat", limit=10))
    pages = [keys(indexed.search(("docs",), query="cat", limit=1, offset=o)) for o in range(4)]
    assert [k for p in pages for k in p] == ranked


def test_query_lists_unindexed_items_after_the_ranked_ones(make_store: StoreFactory) -> None:
    store = make_store(index=word_index())
    store.put(("n",), "plain", {"text": "cat cat"}, index=False)
    store.put(("n",), "cat", {"text": "cat"})
    store.put(("n",), "dog", {"text": "dog"})
    found = store.search(("n",), query="cat", limit=10)
    assert keys(found) == ["cat", "dog", "plain"]
    assert found[-1].score is None and found[0].score is not None


def test_index_fields_and_per_put_index_paths(make_store: StoreFactory) -> None:
    store = make_store(index=word_index(["title"]))
    store.put(("n",), "a", {"title": "dog", "body": "cat cat cat"})
    store.put(("n",), "b", {"title": "cat", "body": "dog"})
    store.put(("n",), "c", {"title": "tree", "body": "cat"}, index=["body"])
    assert keys(store.search(("n",), query="cat", limit=2)) in (["b", "c"], ["c", "b"])
    assert keys(store.search(("n",), query="dog", limit=1)) == ["a"]


def test_overwriting_an_item_replaces_its_vectors(make_store: StoreFactory) -> None:
    store = make_store(index=word_index())
    store.put(("n",), "a", {"text": "cat"})
    store.put(("n",), "b", {"text": "dog"})
    store.put(("n",), "a", {"text": "bird"})
    assert keys(store.search(("n",), query="bird", limit=1)) == ["a"]
    scores = {f.key: f.score for f in store.search(("n",), query="cat")}
    assert scores["a"] is not None and scores["a"] < 0.5  # no trace of the old "cat" vector


def test_without_an_index_a_query_is_ignored(store: BaseStore) -> None:
    store.put(("n",), "a", {"text": "cat"})
    [found] = store.search(("n",), query="cat")
    assert found.key == "a" and found.score is None


# -- list_namespaces ------------------------------------------------------------------------------


@pytest.fixture
def tree(store: BaseStore) -> BaseStore:
    for ns in [
        ("a", "b", "c"),
        ("a", "b", "d"),
        ("a", "e"),
        ("x", "b", "c"),
        ("x", "y"),
        ("users", "u1", "prefs"),
        ("users", "u2", "prefs"),
    ]:
        store.put(ns, "k", {"v": 1})
    return store


def test_list_namespaces_sorted(tree: BaseStore) -> None:
    assert tree.list_namespaces() == [
        ("a", "b", "c"),
        ("a", "b", "d"),
        ("a", "e"),
        ("users", "u1", "prefs"),
        ("users", "u2", "prefs"),
        ("x", "b", "c"),
        ("x", "y"),
    ]


def test_list_namespaces_by_prefix_and_suffix(tree: BaseStore) -> None:
    assert tree.list_namespaces(prefix=("a", "b")) == [("a", "b", "c"), ("a", "b", "d")]
    assert tree.list_namespaces(prefix=("a",)) == [("a", "b", "c"), ("a", "b", "d"), ("a", "e")]
    assert tree.list_namespaces(suffix=("c",)) == [("a", "b", "c"), ("x", "b", "c")]
    assert tree.list_namespaces(prefix=("a",), suffix=("c",)) == [("a", "b", "c")]
    assert tree.list_namespaces(prefix=("ab",)) == []


def test_list_namespaces_with_wildcards(tree: BaseStore) -> None:
    assert tree.list_namespaces(prefix=("*", "b")) == [("a", "b", "c"), ("a", "b", "d"), ("x", "b", "c")]
    assert tree.list_namespaces(prefix=("users", "*", "prefs")) == [
        ("users", "u1", "prefs"),
        ("users", "u2", "prefs"),
    ]
    assert tree.list_namespaces(suffix=("b", "*")) == [("a", "b", "c"), ("a", "b", "d"), ("x", "b", "c")]


def test_list_namespaces_max_depth_truncates_and_dedups(tree: BaseStore) -> None:
    assert tree.list_namespaces(max_depth=1) == [("a",), ("users",), ("x",)]
    assert tree.list_namespaces(prefix=("a",), max_depth=2) == [("a", "b"), ("a", "e")]


def test_list_namespaces_limit_and_offset(tree: BaseStore) -> None:
    every = tree.list_namespaces()
    assert tree.list_namespaces(limit=3) == every[:3]
    assert tree.list_namespaces(limit=3, offset=3) == every[3:6]
    assert tree.list_namespaces(limit=3, offset=6) == every[6:]
    assert tree.list_namespaces(offset=100) == []
    assert tree.batch([ListNamespacesOp((MatchCondition("prefix", ("x",)),), limit=1, offset=1)]) == [
        [("x", "y")]
    ]


def test_a_namespace_whose_items_are_all_deleted_is_not_listed(
    request: pytest.FixtureRequest, backend: str, store: BaseStore
) -> None:
    deviates(
        request, backend, "inmemory", "InMemoryStore keeps listing emptied namespaces; we list live ones"
    )
    store.put(("gone",), "k", {"v": 1})
    store.put(("kept",), "k", {"v": 1})
    store.delete(("gone",), "k")
    assert store.list_namespaces() == [("kept",)]


# -- TTL ------------------------------------------------------------------------------------------


def test_an_item_expires_after_its_ttl_and_is_never_returned_after(
    request: pytest.FixtureRequest, backend: str, store: BaseStore
) -> None:
    no_ttl_in_memory(request, backend)
    assert store.supports_ttl
    store.put(("t",), "short", {"v": 1}, ttl=SHORT_TTL)
    store.put(("t",), "forever", {"v": 2})
    assert eventually(lambda: store.get(("t",), "short", refresh_ttl=False) is None)
    assert keys(store.search(("t",))) == ["forever"]
    store.delete(("t",), "forever")
    assert store.list_namespaces() == []


def test_reads_refresh_the_ttl_and_reads_told_not_to_do_not(
    request: pytest.FixtureRequest, backend: str, make_store: StoreFactory
) -> None:
    """Two items with the same TTL, read in turns, one refreshing and one not: when the second has
    expired, the first (refreshed a moment before) is still there."""
    no_ttl_in_memory(request, backend)
    store = make_store(ttl={"refresh_on_read": True})
    ttl = 2 / 60  # two seconds
    store.put(("t",), "refreshed", {"v": 1}, ttl=ttl)
    store.put(("t",), "searched", {"v": 1}, ttl=ttl)
    store.put(("t",), "left", {"v": 2}, ttl=ttl)
    alive = True
    while alive:
        assert store.get(("t",), "refreshed") is not None  # refreshes (the store's default)
        store.search(("t",), filter={"v": 1}, limit=5)  # refreshes "refreshed" and "searched"
        alive = store.get(("t",), "left", refresh_ttl=False) is not None
        time.sleep(0.1)
    assert store.get(("t",), "refreshed") is not None
    assert store.get(("t",), "searched") is not None


def test_refresh_on_read_false_makes_reads_leave_the_ttl(
    request: pytest.FixtureRequest, backend: str, make_store: StoreFactory
) -> None:
    no_ttl_in_memory(request, backend)
    store = make_store(ttl={"refresh_on_read": False})
    assert store.supports_ttl
    store.put(("t",), "k", {"v": 1}, ttl=SHORT_TTL)
    assert eventually(lambda: store.get(("t",), "k") is None and store.search(("t",)) == [])


def test_default_ttl_applies_to_puts_without_one(
    request: pytest.FixtureRequest, backend: str, make_store: StoreFactory
) -> None:
    no_ttl_in_memory(request, backend)
    store = make_store(ttl={"default_ttl": SHORT_TTL, "refresh_on_read": False})
    assert store.supports_ttl
    store.put(("t",), "default", {"v": 1})
    store.put(("t",), "forever", {"v": 1}, ttl=None)
    assert eventually(lambda: store.get(("t",), "default") is None)
    assert store.get(("t",), "forever") is not None


def test_an_overwrite_without_ttl_makes_an_item_permanent(
    request: pytest.FixtureRequest, backend: str, store: BaseStore
) -> None:
    no_ttl_in_memory(request, backend)
    store.put(("t",), "k", {"v": 1}, ttl=SHORT_TTL)
    store.put(("t",), "k", {"v": 2})
    store.put(("t",), "marker", {"v": 3}, ttl=SHORT_TTL)
    assert eventually(lambda: store.get(("t",), "marker", refresh_ttl=False) is None)
    item = store.get(("t",), "k")
    assert item is not None and item.value == {"v": 2}


def test_an_expired_namespace_is_no_longer_listed(
    request: pytest.FixtureRequest, backend: str, store: BaseStore
) -> None:
    no_ttl_in_memory(request, backend)
    store.put(("brief", "x"), "k", {"v": 1}, ttl=SHORT_TTL)
    store.put(("kept",), "k", {"v": 1})
    assert eventually(lambda: store.list_namespaces() == [("kept",)])


# -- concurrency, unicode, size -------------------------------------------------------------------


def test_concurrent_writers_and_readers_lose_nothing(
    request: pytest.FixtureRequest, backend: str, store: BaseStore
) -> None:
    reason = "InMemoryStore's search may raise 'dictionary changed size during iteration' under writers"
    deviates(request, backend, "inmemory", reason, strict=False)
    errors: list[BaseException] = []
    writers, per_writer = 6, 20
    done = threading.Event()

    def write(w: int) -> None:
        try:
            for i in range(per_writer):
                store.put(("c", f"w{w % 3}"), f"{w}-{i}", {"w": w, "i": i})
                store.put(("c", "shared"), "same", {"w": w, "i": i})
        except BaseException as e:
            errors.append(e)

    def read() -> None:
        try:
            while not done.is_set():
                store.search(("c",), filter={"w": {"$gte": 0}}, limit=5)
                store.list_namespaces(prefix=("c",))
        except BaseException as e:
            errors.append(e)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    for t in readers:
        t.join()
    assert errors == []
    found = store.search(("c",), limit=1000)
    assert len(found) == writers * per_writer + 1
    assert sorted(k for k in keys(found) if k != "same") == sorted(
        f"{w}-{i}" for w in range(writers) for i in range(per_writer)
    )
    same = store.get(("c", "shared"), "same")
    assert same is not None and same.value["i"] == per_writer - 1  # the last write is a writer's last
    assert store.list_namespaces(prefix=("c",)) == [("c", "shared"), ("c", "w0"), ("c", "w1"), ("c", "w2")]


def test_unicode_namespaces_keys_and_values(store: BaseStore) -> None:
    ns = ("用户", "ünïcödé", "emoji 🎉")
    value = {"text": "héllo wörld 世界 🌍", "ключ": ["значение", "✓"], "nested": {"日本": "語"}}
    for key in ["键 🔑", "{brace}", "%25 percent", "a:b:c", " spaced key ", "*?[glob]"]:
        store.put(ns, key, value)
        got = store.get(ns, key)
        assert got is not None and got.value == value and got.key == key
    assert len(store.search(("用户",), limit=100)) == 6
    assert keys(store.search(ns, filter={"ключ": ["значение", "✓"]}, limit=1)) != []
    assert store.list_namespaces(prefix=("用户",)) == [ns]
    assert store.list_namespaces(suffix=("emoji 🎉",)) == [ns]


def test_large_values_round_trip(store: BaseStore) -> None:
    big = {"blob": "x" * 3_000_000, "list": list(range(50_000)), "text": "é" * 100_000}
    store.put(("big",), "k", big)
    got = store.get(("big",), "k")
    assert got is not None and got.value == big
    [found] = store.search(("big",))
    assert found.value == big


# -- async ----------------------------------------------------------------------------------------


async def test_async_put_get_delete(store: BaseStore) -> None:
    await store.aput(("as", "ns"), "k", {"v": 1})
    got = await store.aget(("as", "ns"), "k")
    assert got is not None and got.value == {"v": 1}
    await store.adelete(("as", "ns"), "k")
    assert await store.aget(("as", "ns"), "k") is None


async def test_async_search_filters_and_pages(numbers: BaseStore) -> None:
    found = await numbers.asearch(("nums",), filter={"n": {"$gt": 5}}, limit=100)
    assert sorted(keys(found)) == ["n10", "n20", "n9"]
    pages = [await numbers.asearch(("nums",), limit=2, offset=o) for o in (0, 2, 4, 6)]
    assert sorted(k for p in pages for k in keys(p)) == ["n1", "n10", "n20", "n5", "n9"]


async def test_async_query_search(indexed: BaseStore) -> None:
    found = await indexed.asearch(("docs",), query="dog")
    assert keys(found)[0] == "dog"


async def test_async_list_namespaces(tree: BaseStore) -> None:
    assert await tree.alist_namespaces(prefix=("a",), max_depth=2) == [("a", "b"), ("a", "e")]


async def test_async_ttl_expiry(request: pytest.FixtureRequest, backend: str, store: BaseStore) -> None:
    no_ttl_in_memory(request, backend)
    await store.aput(("t",), "k", {"v": 1}, ttl=SHORT_TTL)
    end = time.monotonic() + DEADLINE
    while await store.aget(("t",), "k", refresh_ttl=False) is not None:
        assert time.monotonic() < end, "the item never expired"
        await asyncio.sleep(0.05)
    assert await store.asearch(("t",)) == []


async def test_async_concurrent_writers(store: BaseStore) -> None:
    await asyncio.gather(*(store.aput(("ac",), f"k{i}", {"i": i}) for i in range(40)))
    found = await store.asearch(("ac",), limit=100)
    assert sorted(keys(found)) == sorted(f"k{i}" for i in range(40))


async def test_async_batch_mixes_ops(store: BaseStore) -> None:
    await store.aput(("ab",), "k", {"v": 1})
    got, found, listed, _ = await store.abatch(
        [GetOp(("ab",), "k"), SearchOp(("ab",)), ListNamespacesOp(), PutOp(("ab",), "j", {"v": 2})]
    )
    assert got is not None and got.value == {"v": 1}  # type: ignore[union-attr]
    assert keys(found) == ["k"]  # type: ignore[arg-type]
    assert listed == [("ab",)]
    assert await store.aget(("ab",), "j") is not None
