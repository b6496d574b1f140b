"""The pure parts of the stores' shared core (chatmemory.store._common): namespaces, filters,
ranking, TTL arithmetic and the batch planning of StoreBase (on a dict-backed toy backend)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import pytest

pytest.importorskip("langgraph.store.base")

from chatmemory.store._common import (
    Candidate,
    Embedder,
    StoreBase,
    Write,
    check_namespace,
    cosine,
    decode_value,
    encode_value,
    expires_at,
    from_ms,
    matches_filter,
    namespace_matches,
    namespace_of,
    namespace_text,
    prefix_matches,
    resolve_ttl,
    select_items,
    select_namespaces,
    ttl_seconds,
)
from langchain_core.embeddings import Embeddings
from langgraph.store.base import (
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    PutOp,
    SearchItem,
    SearchOp,
)


def _item(ns: tuple[str, ...], key: str, value: dict[str, Any], updated: int = 0) -> Item:
    t = datetime.fromtimestamp(updated, tz=UTC)
    return Item(value=value, key=key, namespace=ns, created_at=t, updated_at=t)


class WordEmbeddings(Embeddings):
    """Deterministic embeddings: counts of three marker words."""

    WORDS = ("cat", "dog", "fish")

    def _vec(self, text: str) -> list[float]:
        return [float(text.count(w)) for w in self.WORDS]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._vec(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._vec(text)

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.embed_documents(texts)

    async def aembed_query(self, text: str) -> list[float]:
        return self._vec(text)


# -- namespaces -----------------------------------------------------------------------------------


def test_prefix_matches_whole_labels_only() -> None:
    assert prefix_matches(("foo", "bar"), ("foo",))
    assert prefix_matches(("foo",), ())
    assert not prefix_matches(("foobar",), ("foo",))
    assert not prefix_matches(("foo",), ("foo", "bar"))


def test_namespace_text_round_trips_unicode_labels() -> None:
    ns = ("用户", "ünïcode", "a b")
    assert namespace_of(namespace_text(ns)) == ns


@pytest.mark.parametrize(
    "namespace",
    [(), ("",), ("a.b",), ("a", "b\x00"), ("langgraph", "x")],
)
def test_check_namespace_rejects_what_langgraph_rejects(namespace: tuple[str, ...]) -> None:
    with pytest.raises(InvalidNamespaceError):
        check_namespace(namespace)


def test_prefix_and_suffix_conditions_with_wildcards() -> None:
    pre = MatchCondition("prefix", ("a", "*", "c"))
    suf = MatchCondition("suffix", ("*", "z"))
    assert namespace_matches(("a", "b", "c", "d"), [pre])
    assert not namespace_matches(("a", "b"), [pre])
    assert namespace_matches(("x", "y", "z"), [suf])
    assert not namespace_matches(("z",), [suf])
    assert namespace_matches(("a", "q", "c", "z"), [pre, suf])
    assert not namespace_matches(("a", "q", "c", "y"), [pre, suf])


def test_select_namespaces_truncates_dedups_sorts_and_pages() -> None:
    found = [("b", "x", "1"), ("a", "x", "1"), ("a", "x", "2"), ("a", "y"), ("a",)]
    op = ListNamespacesOp(max_depth=2)
    assert select_namespaces(found, op) == [("a",), ("a", "x"), ("a", "y"), ("b", "x")]
    paged = ListNamespacesOp(max_depth=2, limit=2, offset=1)
    assert select_namespaces(found, paged) == [("a", "x"), ("a", "y")]
    only_a = ListNamespacesOp((MatchCondition("prefix", ("a",)),))
    assert select_namespaces(found, only_a) == [("a",), ("a", "x", "1"), ("a", "x", "2"), ("a", "y")]


def test_select_namespaces_refuses_a_negative_limit() -> None:
    with pytest.raises(ValueError, match="limit"):
        select_namespaces([("a",)], ListNamespacesOp(limit=-1))


# -- filters --------------------------------------------------------------------------------------


def test_numbers_compare_as_numbers_not_text() -> None:
    assert matches_filter({"n": 10}, {"n": {"$gt": 9}})
    assert not matches_filter({"n": 9}, {"n": {"$gt": 10}})
    assert matches_filter({"n": 2.5}, {"n": {"$gte": 2, "$lt": 3}})
    assert matches_filter({"n": 3}, {"n": {"$lte": 3.0}})


def test_strings_compare_as_strings_and_mixed_types_never_match() -> None:
    assert matches_filter({"s": "b"}, {"s": {"$gt": "a"}})
    assert not matches_filter({"s": "10"}, {"s": {"$gt": 9}})
    assert not matches_filter({"n": 10}, {"n": {"$gt": "9"}})
    assert not matches_filter({"n": True}, {"n": {"$gt": 0}})


def test_a_missing_field_never_matches_a_comparison_but_matches_ne() -> None:
    for op in ("$gt", "$gte", "$lt", "$lte", "$eq"):
        assert not matches_filter({}, {"n": {op: 1}})
    assert not matches_filter({}, {"n": 1})
    assert matches_filter({}, {"n": {"$ne": 1}})
    assert not matches_filter({"n": None}, {"n": {"$gt": 0}})


def test_ne_is_the_negation_of_eq() -> None:
    assert matches_filter({"a": 1}, {"a": {"$ne": 2}})
    assert not matches_filter({"a": 1}, {"a": {"$ne": 1}})
    assert not matches_filter({"a": 1}, {"a": {"$ne": 1.0}})


def test_a_dict_filter_value_is_nested_equality() -> None:
    value = {"user": {"name": "ann", "age": 30, "tags": ["x", "y"]}}
    assert matches_filter(value, {"user": {"name": "ann"}})
    assert matches_filter(value, {"user": {"age": {"$gt": 20}}})
    assert not matches_filter(value, {"user": {"name": "bob"}})
    assert not matches_filter(value, {"user": {"missing": "x"}})
    assert matches_filter(value, {"user": {"tags": ["x", "y"]}})
    assert not matches_filter(value, {"user": {"tags": ["x"]}})


def test_equality_tells_booleans_from_numbers() -> None:
    assert not matches_filter({"a": True}, {"a": 1})
    assert matches_filter({"a": True}, {"a": True})
    assert matches_filter({"a": 1}, {"a": 1.0})


def test_every_condition_must_hold() -> None:
    assert matches_filter({"a": 1, "b": 2}, {"a": 1, "b": {"$gte": 2}})
    assert not matches_filter({"a": 1, "b": 2}, {"a": 1, "b": {"$gt": 2}})


def test_an_unknown_operator_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match=r"\$regex"):
        matches_filter({"a": "x"}, {"a": {"$regex": "x"}})


# -- ranking --------------------------------------------------------------------------------------


def test_cosine() -> None:
    assert cosine([1, 0], [2, 0]) == pytest.approx(1.0)
    assert cosine([1, 0], [0, 3]) == pytest.approx(0.0)
    assert cosine([0, 0], [1, 1]) == 0.0


def test_select_items_without_query_is_newest_first_then_paged() -> None:
    cands = [Candidate(_item(("a",), k, {"i": i}, updated=i)) for i, k in enumerate("xyz")]
    cands.append(Candidate(_item(("ab",), "w", {"i": 9}, updated=9)))
    got = select_items(cands, SearchOp(("a",), limit=2), None)
    assert [r.key for r in got] == ["z", "y"]
    assert [r.key for r in select_items(cands, SearchOp(("a",), offset=2), None)] == ["x"]
    assert all(r.score is None for r in got)


def test_select_items_ranks_by_best_field_then_lists_unindexed() -> None:
    cands = [
        Candidate(_item(("a",), "far", {}), [[0.0, 1.0]]),
        Candidate(_item(("a",), "near", {}), [[0.0, 1.0], [1.0, 0.1]]),
        Candidate(_item(("a",), "plain", {})),
    ]
    got = select_items(cands, SearchOp(("a",), query="q"), [1.0, 0.0])
    assert [r.key for r in got] == ["near", "far", "plain"]
    assert got[0].score == pytest.approx(cosine([1.0, 0.1], [1.0, 0.0]))
    assert got[2].score is None
    page = select_items(cands, SearchOp(("a",), query="q", offset=1, limit=1), [1.0, 0.0])
    assert [r.key for r in page] == ["far"]


def test_select_items_applies_the_filter() -> None:
    cands = [Candidate(_item(("a",), str(n), {"n": n}, updated=n)) for n in range(5)]
    got = select_items(cands, SearchOp(("a",), filter={"n": {"$gte": 3}}), None)
    assert [r.key for r in got] == ["4", "3"]


# -- index ----------------------------------------------------------------------------------------


def test_embedder_extracts_fields_and_numbers_multi_text_paths() -> None:
    e = Embedder({"dims": 3, "embed": WordEmbeddings(), "fields": ["text", "tags[*]"]})
    value = {"text": "cat", "tags": ["dog", "fish"], "other": "x"}
    assert e.texts(value, None) == [("text", "cat"), ("tags[*].0", "dog"), ("tags[*].1", "fish")]
    assert e.texts(value, False) == []
    assert e.texts(value, ["other"]) == [("other", "x")]
    assert e.texts({"nothing": 1}, None) == []


def test_embedder_defaults_to_the_whole_value_and_checks_dims() -> None:
    e = Embedder({"dims": 3, "embed": WordEmbeddings()})
    [(name, text)] = e.texts({"a": "cat"}, None)
    assert name == "$" and "cat" in text
    wrong = Embedder({"dims": 4, "embed": WordEmbeddings()})
    with pytest.raises(ValueError, match="dims"):
        wrong.embed_query("cat")


# -- values and TTL -------------------------------------------------------------------------------


def test_values_round_trip_unicode_and_name_the_item_when_not_json() -> None:
    value = {"t": "héllo 世界 🎉", "n": [1, 2.5, None, True]}
    assert decode_value(encode_value(value)) == value
    with pytest.raises(TypeError, match="'k'"):
        encode_value({"x": object()}, namespace=("a",), key="k")


def test_ttl_is_minutes_in_and_positive() -> None:
    assert ttl_seconds(None) is None
    assert ttl_seconds(0.5) == 30.0
    with pytest.raises(ValueError, match="ttl"):
        ttl_seconds(0)
    assert expires_at(1000, None) is None
    assert expires_at(1000, 0.0001) == 1001
    assert expires_at(1000, 2.0) == 3000
    assert from_ms(1500).timestamp() == 1.5


def test_resolve_ttl_defaults_refresh_on_read_and_checks_default() -> None:
    assert resolve_ttl(None) is None
    assert resolve_ttl({"default_ttl": 1.0}) == {"default_ttl": 1.0, "refresh_on_read": True}
    assert resolve_ttl({"refresh_on_read": False}) == {"refresh_on_read": False}
    with pytest.raises(ValueError, match="ttl"):
        resolve_ttl({"default_ttl": -1})


# -- StoreBase planning ---------------------------------------------------------------------------


class DictStore(StoreBase):
    """A toy backend: records what the base class hands to the primitives."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.data: dict[tuple[tuple[str, ...], str], Write] = {}
        self.writes: list[list[Write]] = []

    def _get_items(self, gets: Sequence[GetOp]) -> list[Item | None]:
        out: list[Item | None] = []
        for g in gets:
            w = self.data.get((g.namespace, g.key))
            out.append(None if w is None or w.value is None else _item(g.namespace, g.key, w.value))
        return out

    def _search_items(self, op: SearchOp, query_vector: list[float] | None) -> list[SearchItem]:
        cands = [
            Candidate(_item(ns, k, w.value), [v for _, v in w.vectors])
            for (ns, k), w in self.data.items()
            if w.value is not None
        ]
        return select_items(cands, op, query_vector)

    def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        return select_namespaces((ns for ns, _ in self.data), op)

    def _write_items(self, writes: Sequence[Write]) -> None:
        self.writes.append(list(writes))
        for w in writes:
            self.data[(w.namespace, w.key)] = w


def test_reads_in_a_batch_see_the_store_before_its_writes() -> None:
    s = DictStore()
    s.put(("a",), "k", {"v": 1})
    got, _ = s.batch([GetOp(("a",), "k"), PutOp(("a",), "k", {"v": 2})])
    assert isinstance(got, Item) and got.value == {"v": 1}
    assert s.get(("a",), "k").value == {"v": 2}  # type: ignore[union-attr]


def test_the_last_put_of_a_key_in_a_batch_wins() -> None:
    s = DictStore()
    s.batch([PutOp(("a",), "k", {"v": 1}), PutOp(("a",), "k", None), PutOp(("a",), "k", {"v": 3})])
    assert [[(w.key, w.value) for w in ws] for ws in s.writes] == [[("k", {"v": 3})]]


def test_puts_carry_ttl_seconds_and_the_default_ttl() -> None:
    s = DictStore(ttl={"default_ttl": 2})
    s.put(("a",), "k", {"v": 1})
    s.put(("a",), "n", {"v": 1}, ttl=None)
    s.put(("a",), "m", {"v": 1}, ttl=0.5)
    assert [w.ttl for ws in s.writes for w in ws] == [120.0, None, 30.0]


def test_puts_are_embedded_once_per_distinct_text_and_queries_used() -> None:
    calls: list[list[str]] = []

    class Counting(WordEmbeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            calls.append(list(texts))
            return super().embed_documents(texts)

    s = DictStore(index={"dims": 3, "embed": Counting(), "fields": ["text"]})
    s.batch(
        [
            PutOp(("a",), "1", {"text": "cat"}),
            PutOp(("a",), "2", {"text": "cat"}),
            PutOp(("a",), "3", {"text": "dog"}, index=False),
        ]
    )
    assert calls == [["cat"]]
    assert [len(w.vectors) for ws in s.writes for w in ws] == [1, 1, 0]
    assert [r.key for r in s.search(("a",), query="dog cat")][:2] in (["1", "2"], ["2", "1"])


async def test_abatch_answers_like_batch() -> None:
    s = DictStore(index={"dims": 3, "embed": WordEmbeddings(), "fields": ["text"]})
    await s.aput(("a", "b"), "1", {"text": "fish"})
    await s.aput(("a", "c"), "2", {"text": "dog"})
    found = await s.asearch(("a",), query="fish")
    assert [r.key for r in found] == ["1", "2"]
    assert await s.alist_namespaces(prefix=("a",)) == [("a", "b"), ("a", "c")]


def test_raw_ops_get_their_namespaces_checked() -> None:
    s = DictStore()
    with pytest.raises(InvalidNamespaceError):
        s.batch([PutOp(("a.b",), "k", {"v": 1})])
    with pytest.raises(InvalidNamespaceError):
        s.batch([SearchOp(("a.b",))])
    with pytest.raises(ValueError, match="offset"):
        s.batch([SearchOp(("a",), offset=-1)])
