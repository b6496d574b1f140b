"""The backend-neutral core of ChatMemory's LangGraph stores (Redis and SQL share it).

LangGraph's :class:`~langgraph.store.base.BaseStore` funnels everything through ``batch(ops)``;
:class:`StoreBase` implements ``batch`` / ``abatch`` once: it validates the ops, answers the reads
first (gets, then searches, then namespace listings: a batch's reads see the store as it was
before the batch's writes, as in LangGraph's own stores), embeds what the puts index, then hands
the writes over. A backend implements four primitives, each in a sync and an async form:

``_get_items(gets) -> list[Item | None]`` / ``_aget_items``
    The items of ``GetOp`` s, in order; None for a missing or expired one. Refreshes the TTL of
    the found items whose op says ``refresh_ttl``.
``_search_items(op, query_vector) -> list[SearchItem]`` / ``_asearch_items``
    One ``SearchOp``: the live items under ``op.namespace_prefix`` (whole labels) that match
    ``op.filter``, ranked and paged. ``query_vector`` is the embedded ``op.query`` (None without a
    query or an index). :func:`select_items` does the filtering, ordering, ranking and paging on
    candidates a backend has loaded; a backend that can do part of it on the server (a vector
    index) must give the same answer. Refreshes the TTL of the returned items if
    ``op.refresh_ttl``.
``_list_namespaces(op) -> list[tuple[str, ...]]`` / ``_alist_namespaces``
    The namespaces that hold live items, through :func:`select_namespaces`.
``_write_items(writes) -> None`` / ``_awrite_items``
    Apply :class:`Write` s (one per namespace and key, the batch's last put wins): upsert or
    delete, keeping ``created_at`` of an overwritten item, storing the vectors (``[]``: not
    indexed) and the expiry.

The async forms default to the sync ones in a worker thread; a backend with a native asyncio
client overrides them. The rest of this module is pure: namespace checks and matching, the filter
evaluator, the index's text extraction and embedding, cosine ranking, and TTL arithmetic.

Semantics chosen where LangGraph's reference stores disagree (docs/store.md says why):
``created_at`` survives an overwrite; a search without a query returns the newest ``updated_at``
first; comparison filters compare numbers as numbers and strings as strings, and a missing field
(or a value of another type) never matches ``$gt`` / ``$gte`` / ``$lt`` / ``$lte``, while ``$ne``
is exactly ``not $eq``; a dict filter value without ``$`` keys is nested equality; a namespace is
listed while it holds a live item; a query search ranks the indexed items by their best field's
cosine similarity and then lists the unindexed ones (score None), paging over the whole list;
expired items are never returned (millisecond clock).
"""

from __future__ import annotations

import asyncio
import math
import time
from abc import abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from langgraph.store.base import (
    BaseStore,
    Embeddings,
    GetOp,
    IndexConfig,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    ensure_embeddings,
    get_text_at_path,
    tokenize_path,
    validate_op_namespace,
)

__all__ = [
    "OPERATORS",
    "Candidate",
    "Embedder",
    "StoreBase",
    "Write",
    "check_namespace",
    "cosine",
    "decode_value",
    "encode_value",
    "expires_at",
    "from_ms",
    "matches_filter",
    "namespace_matches",
    "namespace_of",
    "namespace_text",
    "now_ms",
    "prefix_matches",
    "resolve_ttl",
    "scored_item",
    "select_items",
    "select_namespaces",
    "ttl_seconds",
]

#: The comparison operators a filter may use (LangGraph's set).
OPERATORS: Final = frozenset({"$eq", "$ne", "$gt", "$gte", "$lt", "$lte"})


# -- namespaces -----------------------------------------------------------------------------------


def check_namespace(namespace: tuple[str, ...]) -> None:
    """The rules of a namespace an item is written to (LangGraph's ``put`` rules, for raw ops too).

    Non-empty; labels are non-empty strings without ``.`` or NUL; the root is not ``langgraph``.
    Raises ``InvalidNamespaceError``.
    """
    if not namespace:
        raise InvalidNamespaceError("namespace cannot be empty")
    validate_op_namespace(GetOp(namespace, ""))
    if namespace[0] == "langgraph":
        raise InvalidNamespaceError(f'the root label of a namespace cannot be "langgraph": {namespace!r}')


def namespace_text(namespace: tuple[str, ...]) -> str:
    """The namespace as one string (labels joined by ``.``, which no label contains)."""
    return ".".join(namespace)


def namespace_of(text: str) -> tuple[str, ...]:
    """Inverse of :func:`namespace_text`."""
    return tuple(text.split(".")) if text else ()


def prefix_matches(namespace: tuple[str, ...], prefix: tuple[str, ...]) -> bool:
    """Whether ``namespace`` starts with the whole labels of ``prefix`` (``("a",)`` is not ``("ab",)``)."""
    return namespace[: len(prefix)] == prefix


def _labels_match(labels: Iterable[str], pattern: Iterable[str]) -> bool:
    return all(p == "*" or p == label for label, p in zip(labels, pattern, strict=False))


def namespace_matches(namespace: tuple[str, ...], conditions: Iterable[MatchCondition] | None) -> bool:
    """Whether ``namespace`` meets every prefix / suffix condition (``"*"`` matches any one label)."""
    for cond in conditions or ():
        path = tuple(cond.path)
        if len(namespace) < len(path):
            return False
        if cond.match_type == "prefix":
            if not _labels_match(namespace, path):
                return False
        elif cond.match_type == "suffix":
            if not _labels_match(reversed(namespace), reversed(path)):
                return False
        else:
            raise ValueError(f"unknown namespace match_type {cond.match_type!r} (prefix or suffix)")
    return True


def select_namespaces(namespaces: Iterable[tuple[str, ...]], op: ListNamespacesOp) -> list[tuple[str, ...]]:
    """The answer to ``op`` from every namespace that holds a live item (any order, duplicates ok).

    Matching namespaces, cut to ``max_depth`` labels, without duplicates, sorted, then paged.
    """
    _check_page(op.limit, op.offset)
    if op.max_depth is not None and op.max_depth < 1:
        raise ValueError(f"max_depth must be at least 1, got {op.max_depth}")
    found = {
        ns if op.max_depth is None else ns[: op.max_depth]
        for ns in namespaces
        if namespace_matches(ns, op.match_conditions)
    }
    return sorted(found)[op.offset : op.offset + op.limit]


def _check_page(limit: int, offset: int) -> None:
    if limit < 0:
        raise ValueError(f"limit must not be negative, got {limit}")
    if offset < 0:
        raise ValueError(f"offset must not be negative, got {offset}")


# -- filters --------------------------------------------------------------------------------------


_MISSING: Final = object()


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _equal(actual: Any, expected: Any) -> bool:
    """Equality as JSON sees it: dicts (nested, operators allowed inside), lists, scalars."""
    if isinstance(expected, Mapping):
        if any(str(k).startswith("$") for k in expected):
            return all(_operator(actual, op, v) for op, v in expected.items())
        if not isinstance(actual, Mapping):
            return False
        return all(_equal(actual.get(k, _MISSING), v) for k, v in expected.items())
    if isinstance(expected, list | tuple):
        return (
            isinstance(actual, list | tuple)
            and len(actual) == len(expected)
            and all(_equal(a, e) for a, e in zip(actual, expected, strict=True))
        )
    if _is_number(expected) and _is_number(actual):
        return bool(actual == expected)
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(actual) is type(expected) and actual == expected
    if actual is _MISSING:
        return False
    return bool(actual == expected)


def _operator(actual: Any, op: Any, expected: Any) -> bool:
    if op == "$eq":
        return _equal(actual, expected)
    if op == "$ne":
        return not _equal(actual, expected)
    if op not in OPERATORS:
        raise ValueError(f"unsupported filter operator {op!r} (supported: {', '.join(sorted(OPERATORS))})")
    if _is_number(actual) and _is_number(expected):
        a, e = float(actual), float(expected)
    elif isinstance(actual, str) and isinstance(expected, str):
        a, e = actual, expected  # type: ignore[assignment]
    else:
        return False  # missing field, None, or another type: never ordered against the operand
    if op == "$gt":
        return a > e
    if op == "$gte":
        return a >= e
    if op == "$lt":
        return a < e
    return a <= e


def matches_filter(value: Mapping[str, Any], filter: Mapping[str, Any] | None) -> bool:
    """Whether an item's value meets every condition of a LangGraph search filter.

    Keys are top-level fields of the value. A condition is a plain value (equality; a dict is
    nested equality on the keys it names), or a dict of operators (``$eq $ne $gt $gte $lt
    $lte``, all must hold). Numbers compare as numbers (``10 > 9``), strings as strings; a missing
    field never meets ``$eq`` / ordering operators and always meets ``$ne``. Unknown operators raise
    ``ValueError`` naming them.
    """
    if not filter:
        return True
    return all(_equal(value.get(key, _MISSING), expected) for key, expected in filter.items())


# -- values and time ------------------------------------------------------------------------------


def encode_value(value: Mapping[str, Any], *, namespace: tuple[str, ...] = (), key: str = "") -> bytes:
    """An item's value as JSON bytes (UTF-8). Raises ``TypeError`` naming the item if it is not JSON."""
    try:
        return orjson.dumps(dict(value))
    except TypeError as e:
        raise TypeError(f"the value of item {key!r} in namespace {namespace!r} is not JSON: {e}") from e


def decode_value(data: bytes | str) -> dict[str, Any]:
    decoded: dict[str, Any] = orjson.loads(data)
    return decoded


def now_ms() -> int:
    """The store's clock: milliseconds since the epoch (UTC)."""
    return time.time_ns() // 1_000_000


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def ttl_seconds(ttl_minutes: float | None) -> float | None:
    """A PutOp's ``ttl`` (minutes; None: never expires) in seconds; a TTL must be positive."""
    if ttl_minutes is None:
        return None
    if not ttl_minutes > 0:
        raise ValueError(f"ttl must be a positive number of minutes or None, got {ttl_minutes!r}")
    return float(ttl_minutes) * 60.0


def expires_at(now: int, ttl: float | None) -> int | None:
    """The expiry (ms since the epoch) of an item written or read at ``now`` with ``ttl`` seconds."""
    return None if ttl is None else now + max(1, math.ceil(ttl * 1000))


def resolve_ttl(ttl: TTLConfig | None) -> TTLConfig | None:
    """A checked copy of a store's ``TTLConfig`` (``default_ttl`` in minutes, ``refresh_on_read``).

    ``sweep_interval_minutes`` is accepted and ignored: expired items are never returned and the
    backends expire them themselves (Redis key expiry, SQL reads and sweeps).
    """
    if ttl is None:
        return None
    out: TTLConfig = {**ttl}
    default = out.get("default_ttl")
    if default is not None:
        ttl_seconds(default)
    out.setdefault("refresh_on_read", True)
    return out


# -- index and ranking ----------------------------------------------------------------------------


class Embedder:
    """A store's ``IndexConfig``: which texts of a value are embedded, and the embedding calls.

    ``fields`` are LangGraph JSON paths (default ``["$"]``: the whole value); a path that selects
    several texts (``"tags[*]"``) yields one vector per text, named ``<path>.<i>``.
    """

    def __init__(self, config: IndexConfig) -> None:
        if "dims" not in config or "embed" not in config:
            raise ValueError("an index needs 'dims' and 'embed'")
        self.dims: int = int(config["dims"])
        if self.dims < 1:
            raise ValueError(f"index 'dims' must be positive, got {self.dims}")
        self.embeddings: Embeddings = ensure_embeddings(config["embed"])
        self.fields: list[str] = list(config.get("fields") or ["$"])
        self._paths = [(f, f if f == "$" else tokenize_path(f)) for f in self.fields]

    def texts(self, value: Mapping[str, Any], index: bool | list[str] | None) -> list[tuple[str, str]]:
        """The ``(field name, text)`` pairs a put embeds (``index=False``: none; a list: those paths)."""
        if index is False:
            return []
        paths = self._paths if index is None or index is True else [(p, tokenize_path(p)) for p in index]
        out: list[tuple[str, str]] = []
        for name, path in paths:
            found = get_text_at_path(value, path)
            if len(found) == 1:
                out.append((name, found[0]))
            else:
                out += [(f"{name}.{i}", text) for i, text in enumerate(found)]
        return out

    def _check(self, vectors: Sequence[Sequence[float]], n: int) -> list[list[float]]:
        if len(vectors) != n:
            raise ValueError(f"the embeddings returned {len(vectors)} vectors for {n} texts")
        out = [[float(x) for x in v] for v in vectors]
        for v in out:
            if len(v) != self.dims:
                raise ValueError(f"the embeddings returned {len(v)} dims, the index says {self.dims}")
        return out

    def embed_texts(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        return self._check(self.embeddings.embed_documents(list(texts)), len(texts))

    async def aembed_texts(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        return self._check(await self.embeddings.aembed_documents(list(texts)), len(texts))

    def embed_query(self, query: str) -> list[float]:
        return self._check([self.embeddings.embed_query(query)], 1)[0]

    async def aembed_query(self, query: str) -> list[float]:
        return self._check([await self.embeddings.aembed_query(query)], 1)[0]


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    """Cosine similarity (0.0 when either vector is all zeros)."""
    dot = math.fsum(x * y for x, y in zip(a, b, strict=True))
    na = math.sqrt(math.fsum(x * x for x in a))
    nb = math.sqrt(math.fsum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


def _best_scores(query: Sequence[float], vectors: Sequence[Sequence[Sequence[float]]]) -> list[float | None]:
    """For each candidate's vectors, the best cosine with ``query`` (None: no vectors).

    Vectors of another length than the query (written under a model of other dimensions) count as
    unindexed, as in the SQL store. numpy when installed (one matrix product; LangGraph's own
    InMemoryStore does the same), else plain Python.
    """
    dims = len(query)
    vectors = [[v for v in vs if len(v) == dims] for vs in vectors]
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy comes with langchain-core's usual installs
        return [max((cosine(query, v) for v in vs), default=None) for vs in vectors]
    flat = [v for vs in vectors for v in vs]
    if not flat:
        return [None] * len(vectors)
    first: Any = flat[0]  # the Redis store hands numpy arrays over its bytes, the SQL one lists
    m = (np.vstack(flat) if isinstance(first, np.ndarray) else np.asarray(flat)).astype(np.float64)
    q = np.asarray(query, dtype=np.float64)
    norms = np.linalg.norm(m, axis=1) * np.linalg.norm(q)
    dots = m @ q
    sims = np.divide(dots, norms, out=np.zeros_like(dots), where=norms != 0)
    counts = [len(vs) for vs in vectors]
    starts = np.cumsum([0, *counts[:-1]])[np.asarray(counts) > 0]
    best = iter(np.maximum.reduceat(sims, starts).tolist())  # each candidate's best vector
    return [next(best) if n else None for n in counts]


@dataclass
class Candidate:
    """A live item a backend loaded for a search, with its vectors (``[]``: not indexed; any
    sequences of floats, numpy arrays included)."""

    item: Item
    vectors: list[Sequence[float]] = field(default_factory=list)


def _recency(item: Item) -> tuple[float, tuple[str, ...], str]:
    return (-item.updated_at.timestamp(), item.namespace, item.key)


def select_items(
    candidates: Iterable[Candidate], op: SearchOp, query_vector: Sequence[float] | None
) -> list[SearchItem]:
    """The page of ``op`` from the candidates a backend loaded (which may include non-matches).

    Keeps the items under the prefix that match the filter. Without ``query_vector``: newest
    ``updated_at`` first (ties by namespace, key), score None. With it: indexed items by their best
    field's cosine similarity, highest first, then the unindexed ones newest first (score None).
    Then ``[offset : offset + limit]``. Cost: O(candidates x vectors x dims).
    """
    _check_page(op.limit, op.offset)
    kept = [
        c
        for c in candidates
        if prefix_matches(c.item.namespace, op.namespace_prefix) and matches_filter(c.item.value, op.filter)
    ]
    if query_vector is None:
        kept.sort(key=lambda c: _recency(c.item))
        return [scored_item(c.item, None) for c in kept[op.offset : op.offset + op.limit]]
    scores = _best_scores(query_vector, [c.vectors for c in kept])
    scored = [(s, c.item) for s, c in zip(scores, kept, strict=True) if s is not None]
    unscored = [c.item for s, c in zip(scores, kept, strict=True) if s is None]
    scored.sort(key=lambda si: (-si[0], *_recency(si[1])))
    unscored.sort(key=_recency)
    ranked: list[tuple[float | None, Item]] = [*scored, *((None, it) for it in unscored)]
    return [scored_item(it, s) for s, it in ranked[op.offset : op.offset + op.limit]]


def scored_item(item: Item, score: float | None) -> SearchItem:
    """The item as a search result with its score (None: unranked)."""
    return SearchItem(
        namespace=item.namespace,
        key=item.key,
        value=item.value,
        created_at=item.created_at,
        updated_at=item.updated_at,
        score=score,
    )


# -- the base class -------------------------------------------------------------------------------


@dataclass
class Write:
    """One put to apply: ``value`` None deletes. ``ttl`` in seconds (None: never expires);
    ``vectors`` are ``(field name, vector)`` pairs (``[]``: not indexed, or no index)."""

    namespace: tuple[str, ...]
    key: str
    value: dict[str, Any] | None
    ttl: float | None = None
    vectors: list[tuple[str, list[float]]] = field(default_factory=list)


@dataclass
class _Plan:
    gets: list[tuple[int, GetOp]] = field(default_factory=list)
    searches: list[tuple[int, SearchOp]] = field(default_factory=list)
    listings: list[tuple[int, ListNamespacesOp]] = field(default_factory=list)
    puts: dict[tuple[tuple[str, ...], str], PutOp] = field(default_factory=dict)
    texts: list[tuple[tuple[tuple[str, ...], str], str, str]] = field(default_factory=list)


class StoreBase(BaseStore):
    """A ``BaseStore`` whose ``batch`` / ``abatch`` run on four backend primitives (module docs).

    Args:
        index: LangGraph ``IndexConfig`` (``dims``, ``embed``, ``fields``) for semantic search;
            None: ``query`` and ``index`` are ignored, as in LangGraph's stores.
        ttl: LangGraph ``TTLConfig``: ``default_ttl`` (minutes) for puts without ``ttl``,
            ``refresh_on_read`` (default True).
    """

    supports_ttl: bool = True

    def __init__(self, *, index: IndexConfig | None = None, ttl: TTLConfig | None = None) -> None:
        self.index_config: IndexConfig | None = dict(index) if index else None  # type: ignore[assignment]
        self.embedder: Embedder | None = Embedder(index) if index else None
        self.ttl_config = resolve_ttl(ttl)

    # -- primitives -------------------------------------------------------------------------------

    @abstractmethod
    def _get_items(self, gets: Sequence[GetOp]) -> list[Item | None]: ...

    @abstractmethod
    def _search_items(self, op: SearchOp, query_vector: list[float] | None) -> list[SearchItem]: ...

    @abstractmethod
    def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]: ...

    @abstractmethod
    def _write_items(self, writes: Sequence[Write]) -> None: ...

    async def _aget_items(self, gets: Sequence[GetOp]) -> list[Item | None]:
        return await asyncio.to_thread(self._get_items, gets)

    async def _asearch_items(self, op: SearchOp, query_vector: list[float] | None) -> list[SearchItem]:
        return await asyncio.to_thread(self._search_items, op, query_vector)

    async def _alist_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        return await asyncio.to_thread(self._list_namespaces, op)

    async def _awrite_items(self, writes: Sequence[Write]) -> None:
        await asyncio.to_thread(self._write_items, writes)

    # -- batch ------------------------------------------------------------------------------------

    def _plan(self, ops: Iterable[Op]) -> tuple[_Plan, list[Result]]:
        plan = _Plan()
        results: list[Result] = []
        for i, op in enumerate(ops):
            results.append(None)
            if isinstance(op, GetOp):
                validate_op_namespace(op)
                plan.gets.append((i, op))
            elif isinstance(op, SearchOp):
                validate_op_namespace(op)
                _check_page(op.limit, op.offset)
                plan.searches.append((i, op))
            elif isinstance(op, ListNamespacesOp):
                validate_op_namespace(op)
                _check_page(op.limit, op.offset)
                plan.listings.append((i, op))
            elif isinstance(op, PutOp):
                check_namespace(op.namespace)
                if op.value is not None:
                    ttl_seconds(op.ttl)
                plan.puts.pop((op.namespace, op.key), None)  # the last put of a key wins
                plan.puts[(op.namespace, op.key)] = op
            else:
                raise ValueError(f"unknown store operation {type(op).__name__}")
        if self.embedder is not None:
            for where, op in plan.puts.items():
                if op.value is not None:
                    index = op.index if op.index is not None else None
                    for name, text in self.embedder.texts(op.value, index):
                        plan.texts.append((where, name, text))
        return plan, results

    def _queries(self, plan: _Plan) -> list[str]:
        if self.embedder is None:
            return []
        return sorted({op.query for _, op in plan.searches if op.query})

    def _writes(self, plan: _Plan, vectors: list[list[float]]) -> list[Write]:
        named: dict[tuple[tuple[str, ...], str], list[tuple[str, list[float]]]] = {}
        for (where, name, _text), vector in zip(plan.texts, vectors, strict=True):
            named.setdefault(where, []).append((name, vector))
        return [
            Write(
                op.namespace,
                op.key,
                None if op.value is None else dict(op.value),
                None if op.value is None else ttl_seconds(op.ttl),
                named.get(where, []),
            )
            for where, op in plan.puts.items()
        ]

    def _unique_texts(self, plan: _Plan) -> tuple[list[str], list[int]]:
        """The distinct texts to embed, and for each planned text the position of its vector."""
        order: dict[str, int] = {}
        positions = [order.setdefault(text, len(order)) for _, _, text in plan.texts]
        return list(order), positions

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        plan, results = self._plan(ops)
        if plan.gets:
            for (i, _), item in zip(plan.gets, self._get_items([op for _, op in plan.gets]), strict=True):
                results[i] = item
        if plan.searches:
            qv = {q: self.embedder.embed_query(q) for q in self._queries(plan)} if self.embedder else {}
            for i, op in plan.searches:
                results[i] = self._search_items(op, qv.get(op.query) if op.query else None)
        for i, lop in plan.listings:
            results[i] = self._list_namespaces(lop)
        if plan.puts:
            texts, positions = self._unique_texts(plan)
            vectors = self.embedder.embed_texts(texts) if self.embedder and texts else []
            self._write_items(self._writes(plan, [vectors[p] for p in positions]))
        return results

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        plan, results = self._plan(ops)
        if plan.gets:
            items = await self._aget_items([op for _, op in plan.gets])
            for (i, _), item in zip(plan.gets, items, strict=True):
                results[i] = item
        if plan.searches:
            qv: dict[str, list[float]] = {}
            if self.embedder is not None:
                queries = self._queries(plan)
                embedded = await asyncio.gather(*(self.embedder.aembed_query(q) for q in queries))
                qv = dict(zip(queries, embedded, strict=True))
            for i, op in plan.searches:
                results[i] = await self._asearch_items(op, qv.get(op.query) if op.query else None)
        for i, lop in plan.listings:
            results[i] = await self._alist_namespaces(lop)
        if plan.puts:
            texts, positions = self._unique_texts(plan)
            vectors = await self.embedder.aembed_texts(texts) if self.embedder and texts else []
            await self._awrite_items(self._writes(plan, [vectors[p] for p in positions]))
        return results
