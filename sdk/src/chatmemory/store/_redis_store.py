"""The Redis LangGraph store itself (see :mod:`chatmemory.store.redis` for the key layout and the
command list). Separate so that the layout imports without langgraph; users reach the class through
:mod:`chatmemory.store` (``store_for`` or the lazy ``ChatMemoryRedisStore`` export).

Like the checkpointer, each primitive is written once as an *operation* (a generator yielding
batches of commands and receiving their replies) and run by a sync driver (``redis.Redis`` /
``RedisCluster``) or a native asyncio one (``redis.asyncio``); the batching and the transaction on
a cluster slot are :mod:`chatmemory._redis_driver`, shared with the checkpointer.

Vector sets: at the first write or query search the store probes them once (``VCARD`` on
a key of its prefix: a reply means the server has them and the user may use them; "unknown
command" or "no permissions" means brute force). Why a probe and not ``COMMAND INFO``: the
memory's user is allowed ``COMMAND`` only on a cluster.
"""

from __future__ import annotations

import asyncio
import math
import sys
from array import array
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from langgraph.store.base import GetOp, IndexConfig, Item, ListNamespacesOp, SearchItem, SearchOp, TTLConfig

from chatmemory._redis_driver import (
    OwnedClients,
    asend,
    decodes_responses,
    is_cluster,
    round_trips,
    send,
    url_clients,
)
from chatmemory.checkpoint._common import adrive, drive, pack, unpack
from chatmemory.checkpoint.redis import INDEX_GRACE_SECONDS, Batch, Op
from chatmemory.errors import BackendError
from chatmemory.store._common import (
    Candidate,
    StoreBase,
    Write,
    decode_value,
    encode_value,
    expires_at,
    from_ms,
    namespace_matches,
    namespace_of,
    namespace_text,
    now_ms,
    prefix_matches,
    select_items,
    select_namespaces,
)
from chatmemory.store.redis import (
    expiring_key,
    item_key,
    keys_key,
    meta_key,
    namespace_index_key,
    vector_element,
    vector_set_key,
)

if TYPE_CHECKING:
    import redis
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.cluster

_np: Any
try:
    import numpy as _np
except ImportError:  # pragma: no cover - numpy comes with langchain-core's usual installs
    _np = None

#: How long a set of expiring keys (and an index entry) outlives the expiry its scores say.
GRACE_MS = INDEX_GRACE_SECONDS * 1000

T = TypeVar("T")
Command = tuple[Any, ...]

#: The fields of an item's hash a read needs (``e``, the vectors, only for a query).
_FIELDS = ("v", "c", "u", "t", "d")
#: First VSIM ``COUNT`` of a page's candidates (at least twice ``offset + limit``), then doubled.
_FIRST_COUNT = 16
#: Beyond this many candidates per namespace a search reads every item (brute force) instead.
_MAX_COUNT = 4096
#: Rounds of a prune that keeps meeting concurrent puts before it leaves the rest to a later one.
_PRUNE_ROUNDS = 8
#: Margin between a VSIM score (float32, in the server) and the client's cosine (float64).
_EPSILON = 1e-4


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def pack_vectors(vectors: Sequence[tuple[str, Sequence[float]]]) -> bytes:
    """An item's vectors as one value: field name, float32 array, repeated."""
    return pack(*(part for name, v in vectors for part in (name.encode(), array("f", v).tobytes())))


def unpack_vectors(data: bytes) -> list[Sequence[float]]:
    """The vectors of :func:`pack_vectors` (numpy arrays over the bytes when numpy is installed:
    the ranking stacks them without a Python float per dimension)."""
    raws = unpack(data)[1::2]
    if _np is None:  # pragma: no cover - numpy comes with langchain-core's usual installs
        return [array("f", raw).tolist() for raw in raws]
    return [cast("Sequence[float]", _np.frombuffer(raw, dtype=_np.float32)) for raw in raws]


class ChatMemoryRedisStore(OwnedClients, StoreBase):
    """A LangGraph ``BaseStore`` on Redis, Valkey or Redis Cluster, without modules or scripts.

    Args:
        client: a sync ``redis.Redis`` or ``redis.cluster.RedisCluster`` (``decode_responses``
            off), for the sync methods.
        aclient: a ``redis.asyncio.Redis`` or ``redis.asyncio.cluster.RedisCluster``, for the
            async methods (native asyncio, no threads). At least one of the two is needed; a
            missing async client makes the async methods run the sync ones in a worker thread.
        prefix: every key starts with it (a ChatMemory's ``key_prefix``; the ACL allows ``~<prefix>*``).
        index: LangGraph ``IndexConfig`` for semantic search (ranked on the server with vector
            sets on Redis 8+, else a brute-force cosine ranking over the namespaces searched).
        ttl: LangGraph ``TTLConfig`` (``default_ttl`` minutes, ``refresh_on_read``).
        owns_clients: close the clients in :meth:`close` / :meth:`aclose`.
    """

    def __init__(
        self,
        client: redis.Redis | redis.cluster.RedisCluster | None = None,
        *,
        aclient: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster | None = None,
        prefix: str = "chatmemory:",
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        owns_clients: bool = False,
    ) -> None:
        super().__init__(index=index, ttl=ttl)
        if client is None and aclient is None:
            raise ValueError("ChatMemoryRedisStore needs a redis client, an asyncio client, or both")
        for c in (client, aclient):
            if c is not None and decodes_responses(c):
                raise ValueError("the store reads bytes: pass a client with decode_responses=False")
        if client is not None and aclient is not None and is_cluster(client) != is_cluster(aclient):
            raise ValueError("client and aclient must both be cluster clients, or neither")
        if "{" in prefix or "}" in prefix:
            raise ValueError("the key prefix must not contain '{' or '}' (they would set the hash slot)")
        self.client = client
        self.aclient = aclient
        self.prefix = prefix
        self.namespace_index = namespace_index_key(prefix)
        self._owns_clients = owns_clients
        self._cluster = is_cluster(client if client is not None else aclient)
        #: Whether the server has vector sets and the user may use them (None: not probed yet).
        self.vector_sets: bool | None = None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "chatmemory:",
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
    ) -> ChatMemoryRedisStore:
        """A store owning a sync and an asyncio client for ``redis://`` / ``rediss://`` ``url``."""
        client, aclient = url_clients(url)
        return cls(
            client,
            aclient=aclient,
            prefix=prefix,
            index=index,
            ttl=ttl,
            owns_clients=True,
        )

    # -- operations (no I/O: they yield command batches) ------------------------------------------

    def _apply_op(self, groups: dict[str, list[Command]], index: list[Command]) -> Op[dict[str, list[Any]]]:
        """Write ``groups`` (commands per namespace, each group atomic) and the index commands;
        return each group's replies.

        One ``MULTI`` on a standalone server; on a cluster the index first (its own slot), then a
        ``MULTI`` per namespace.
        """
        groups = {t: cmds for t, cmds in groups.items() if cmds}
        out: dict[str, list[Any]] = {}
        if not groups:
            return out
        if not self._cluster:
            replies = yield Batch([c for cmds in groups.values() for c in cmds], atomic=True, index=index)
            at = 0
            for t, cmds in groups.items():
                out[t], at = replies[at : at + len(cmds)], at + len(cmds)
            return out
        if index:
            yield Batch(index)
        for t, cmds in groups.items():
            out[t] = yield Batch(cmds, atomic=True)
        return out

    def _vectors(self, text: str, key: str, ttl: Any, packed: Any) -> dict[tuple[str, str], bytes]:
        """The vector set elements an item's hash (its ``t`` and ``e``) says it has: (set, element)
        -> float32 bytes. The set follows the vector's length and whether the item expires."""
        if not packed:
            return {}
        parts = unpack(packed)
        return {
            (
                vector_set_key(self.prefix, text, len(raw) // 4, expiring=ttl is not None),
                vector_element(_text(name), key),
            ): raw
            for name, raw in zip(parts[0::2], parts[1::2], strict=True)
        }

    def _refresh_op(self, found: Sequence[tuple[tuple[str, ...], str, tuple[int, int | None]]]) -> Op[None]:
        """Set again the expiry of items read (namespace, key, (TTL in ms, dims of its vectors))."""
        if not found:
            return
        now = now_ms()
        groups: dict[str, list[Command]] = defaultdict(list)
        latest: dict[str, int] = {}
        for ns, key, (ttl_ms, dims) in found:
            text = namespace_text(ns)
            exp = now + ttl_ms
            # XX: never give an expiry to an item a concurrent put made permanent (or deleted).
            groups[text] += [
                ("PEXPIRE", item_key(self.prefix, text, key), ttl_ms, "XX"),
                ("ZADD", expiring_key(self.prefix, text), "XX", "GT", exp, key),
                ("PEXPIRE", expiring_key(self.prefix, text), ttl_ms + GRACE_MS, "GT"),
            ]
            if dims is not None:  # its vectors' set of expiring items
                vk = vector_set_key(self.prefix, text, dims, expiring=True)
                groups[text].append(("PEXPIRE", vk, ttl_ms + GRACE_MS, "GT"))
            latest[text] = max(latest.get(text, 0), exp)
        index = [("ZADD", self.namespace_index, "GT", exp, text) for text, exp in latest.items()]
        yield from self._apply_op(groups, index)

    def _get_op(self, gets: Sequence[GetOp]) -> Op[list[Item | None]]:
        cmds = [("HMGET", item_key(self.prefix, namespace_text(g.namespace), g.key), *_FIELDS) for g in gets]
        replies = yield Batch(cmds)
        items: list[Item | None] = []
        refresh: list[tuple[tuple[str, ...], str, tuple[int, int | None]]] = []
        for g, reply in zip(gets, replies, strict=True):
            item, ttl_ms = _item(g.namespace, g.key, reply)
            items.append(item)
            if item is not None and ttl_ms is not None and g.refresh_ttl:
                refresh.append((g.namespace, g.key, (ttl_ms, _dims(reply))))
        yield from self._refresh_op(refresh)
        return items

    def _namespaces_op(self, now: int) -> Op[list[tuple[str, ...]]]:
        """Every namespace of the index that may hold a live item (scores within the grace)."""
        low = f"({now - INDEX_GRACE_SECONDS * 1000}"
        (members,) = yield Batch([("ZRANGE", self.namespace_index, low, "+inf", "BYSCORE")])
        return [namespace_of(_text(m)) for m in members or []]

    def _search_op(self, op: SearchOp, query_vector: list[float] | None) -> Op[list[SearchItem]]:
        now = now_ms()
        low = f"({now - INDEX_GRACE_SECONDS * 1000}"
        cmds: list[Command] = [("ZRANGE", self.namespace_index, low, "+inf", "BYSCORE")]
        # A prefix is most often a namespace itself: its VSIM rides along with the index read.
        ahead = query_vector is not None and bool(self.vector_sets) and bool(op.namespace_prefix)
        if ahead:
            assert query_vector is not None
            blob = _fp32(query_vector)
            cmds += self._vsim_cmds(
                [namespace_text(op.namespace_prefix)], blob, _count(op), len(query_vector)
            )
        replies = yield Batch(cmds)
        namespaces = [
            ns
            for ns in (namespace_of(_text(m)) for m in replies[0] or [])
            if prefix_matches(ns, op.namespace_prefix)
        ]
        if not namespaces:
            return []
        ranked = None
        if query_vector is not None and self.vector_sets:
            first = replies[1:] if ahead and namespaces == [op.namespace_prefix] else None
            ranked = yield from self._vector_search_op(op, query_vector, namespaces, first)
        if ranked is None:
            found, ttls = yield from self._full_search_op(op, query_vector, namespaces, now)
        else:
            found, ttls = ranked
        if op.refresh_ttl:
            refresh = [
                (r.namespace, r.key, ttls[(r.namespace, r.key)])
                for r in found
                if (r.namespace, r.key) in ttls
            ]
            yield from self._refresh_op(refresh)
        return found

    def _vsim_cmds(self, texts: Sequence[str], blob: bytes, count: int, dims: int) -> list[Command]:
        """Per namespace: the ``count`` nearest elements (exact: ``TRUTH``) of its two vector sets of
        ``dims`` dimensions (items without and with a TTL), and its ``flat`` flag."""
        cmds: list[Command] = []
        for t in texts:
            for expiring in (False, True):
                vk = vector_set_key(self.prefix, t, dims, expiring=expiring)
                cmds.append(("VSIM", vk, "FP32", blob, "WITHSCORES", "COUNT", count, "TRUTH", "NOTHREAD"))
            cmds.append(("HMGET", meta_key(self.prefix, t), "flat"))
        return cmds

    def _vector_search_op(
        self,
        op: SearchOp,
        query_vector: list[float],
        namespaces: list[tuple[str, ...]],
        first: list[Any] | None = None,
    ) -> Op[tuple[list[SearchItem], dict[tuple[tuple[str, ...], str], tuple[int, int | None]]] | None]:
        """The page of a query search ranked by the namespaces' vector sets, or None when they
        cannot answer it (a namespace flagged ``flat``, a page that reaches the unindexed items, or
        more than :data:`_MAX_COUNT` candidates a namespace): the caller then reads every item.

        ``VSIM ... TRUTH`` returns each namespace's ``count`` nearest elements exactly; an item
        whose client-side score is above the lowest score a namespace cut off (``threshold``) is
        certainly ranked right, so a page of such items (filter applied) is final; else ``count``
        doubles. The hashes read give the items and their exact scores (the core's ranking);
        elements of missing items or of fields the item no longer has are pruned.
        """
        need = op.offset + op.limit
        blob = _fp32(query_vector)
        texts = [namespace_text(ns) for ns in namespaces]
        count = _count(op)
        while count <= _MAX_COUNT:
            if first is not None:  # sent with the namespace index's read, for this count
                replies, first = first, None
            else:
                replies = yield Batch(self._vsim_cmds(texts, blob, count, len(query_vector)))
            if any(flag[0] for flag in replies[2::3]):
                return None
            threshold, exhausted = -math.inf, True
            elements: list[tuple[tuple[str, ...], str, str, str]] = []  # namespace, key, set, element
            for i, ns in enumerate(namespaces):
                for expiring in (False, True):
                    pairs = _pairs(replies[3 * i + expiring])
                    if len(pairs) >= count:  # more may follow, each no nearer than the last
                        exhausted = False
                        threshold = max(threshold, 2.0 * float(pairs[-1][1]) - 1.0)
                    vk = vector_set_key(self.prefix, texts[i], len(query_vector), expiring=expiring)
                    for element, _score in pairs:
                        name = _text(element)
                        elements.append((ns, name.partition("\0")[2], vk, name))
            wanted = list(dict.fromkeys((ns, key) for ns, key, _, _ in elements))
            replies = yield Batch(
                [("HMGET", item_key(self.prefix, namespace_text(ns), k), *_FIELDS, "e") for ns, k in wanted]
            )
            candidates: list[Candidate] = []
            ttls: dict[tuple[tuple[str, ...], str], tuple[int, int | None]] = {}
            has: dict[tuple[tuple[str, ...], str], dict[tuple[str, str], bytes]] = {}
            for (ns, key), reply in zip(wanted, replies, strict=True):
                item, ttl_ms = _item(ns, key, reply)
                if item is None or not reply[5]:
                    continue
                has[(ns, key)] = self._vectors(namespace_text(ns), key, reply[3], reply[5])
                candidates.append(Candidate(item, unpack_vectors(reply[5])))
                if ttl_ms is not None:
                    ttls[(ns, key)] = (ttl_ms, _dims(reply))
            stale = [
                (namespace_text(ns), key, vk, el)
                for ns, key, vk, el in elements
                if (vk, el) not in has.get((ns, key), {})
            ]
            if stale:
                yield from self._prune_op(stale)
            ranked = select_items(candidates, op._replace(offset=0, limit=len(candidates)), query_vector)
            certain = ranked if exhausted else [r for r in ranked if (r.score or 0.0) > threshold + _EPSILON]
            if len(certain) >= need:
                return certain[op.offset : need], ttls
            if exhausted:
                return None  # the page reaches the unindexed items: they are listed after these
            count *= 2
        return None

    def _prune_op(self, stale: Sequence[tuple[str, str, str, str]]) -> Op[None]:
        """Make vector set elements (namespace text, key, set, element) agree with their items'
        hashes: remove those whose item expired, went, lost that field or moved to another set.

        Each round is one ``MULTI``: the removals (or re-adds) decided from the items as last read,
        and a read of the items. When the read inside agrees with what the round wrote, the sets
        were right at that instant (a later put writes its own elements); else a put raced the
        prune and the next round corrects with the newer read. So a prune never hides a live item
        nor leaves a vector it replaced.
        """
        groups: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
        for text, key, vk, el in stale:
            groups[text].append((key, vk, el))
        for text, elems in groups.items():
            keys = list(dict.fromkeys(k for k, _, _ in elems))
            read: dict[str, tuple[Any, Any]] = {}
            cmds = self._prune_cmds(text, elems, read)
            for _ in range(_PRUNE_ROUNDS):
                replies = yield Batch(
                    [*cmds, *(("HMGET", item_key(self.prefix, text, k), "t", "e") for k in keys)], atomic=True
                )
                read = {k: (r[0], r[1]) for k, r in zip(keys, replies[len(cmds) :], strict=True)}
                again = self._prune_cmds(text, elems, read)
                if again == cmds:
                    break
                cmds = again

    def _prune_cmds(
        self, text: str, elems: Sequence[tuple[str, str, str]], read: dict[str, tuple[Any, Any]]
    ) -> list[Command]:
        """The commands that make ``elems`` agree with the items' ``read`` (t, e); none read: remove."""
        cmds: list[Command] = []
        for key, vk, el in elems:
            ttl, packed = read.get(key, (None, None))
            raw = self._vectors(text, key, ttl, packed).get((vk, el))
            if raw is None:
                cmds.append(("VREM", vk, el))
                continue
            cmds.append(("VADD", vk, "FP32", _fp32(array("f", raw)), el, "NOQUANT"))
            if ttl is not None:
                keep = int(ttl) + GRACE_MS
                cmds += [("PEXPIRE", vk, keep, "NX"), ("PEXPIRE", vk, keep, "GT")]
        return cmds

    def _full_search_op(
        self, op: SearchOp, query_vector: list[float] | None, namespaces: list[tuple[str, ...]], now: int
    ) -> Op[tuple[list[SearchItem], dict[tuple[tuple[str, ...], str], tuple[int, int | None]]]]:
        """Read every live item of ``namespaces`` and select the page in the client."""
        low = f"({now - INDEX_GRACE_SECONDS * 1000}"
        key_sets = yield Batch(
            [
                ("ZRANGE", of(self.prefix, namespace_text(ns)), low, "+inf", "BYSCORE")
                for ns in namespaces
                for of in (keys_key, expiring_key)
            ]
        )
        pairs = zip(key_sets[::2], key_sets[1::2], strict=True)
        wanted = [
            (ns, _text(k))
            for ns, (lasting, expiring) in zip(namespaces, pairs, strict=True)
            for k in lasting + expiring
        ]
        if not wanted:
            return [], {}
        fields = (*_FIELDS, "e") if query_vector is not None else _FIELDS
        replies = yield Batch(
            [("HMGET", item_key(self.prefix, namespace_text(ns), key), *fields) for ns, key in wanted]
        )
        candidates: list[Candidate] = []
        ttls: dict[tuple[tuple[str, ...], str], tuple[int, int | None]] = {}
        for (ns, key), reply in zip(wanted, replies, strict=True):
            item, ttl_ms = _item(ns, key, reply)
            if item is None:
                continue
            vectors = unpack_vectors(reply[5]) if query_vector is not None and reply[5] else []
            candidates.append(Candidate(item, vectors))
            if ttl_ms is not None:
                ttls[(ns, key)] = (ttl_ms, _dims(reply))
        return select_items(candidates, op, query_vector), ttls

    def _list_op(self, op: ListNamespacesOp) -> Op[list[tuple[str, ...]]]:
        now = now_ms()
        namespaces = [
            ns for ns in (yield from self._namespaces_op(now)) if namespace_matches(ns, op.match_conditions)
        ]
        if not namespaces:
            return select_namespaces([], op)
        counts = yield Batch(
            [
                ("ZCOUNT", of(self.prefix, namespace_text(ns)), now, "+inf")
                for ns in namespaces
                for of in (keys_key, expiring_key)
            ]
        )
        live = [n + m for n, m in zip(counts[::2], counts[1::2], strict=True)]
        return select_namespaces([ns for ns, n in zip(namespaces, live, strict=True) if n], op)

    def _write_op(self, writes: Sequence[Write]) -> Op[None]:
        """The writes, one ``MULTI`` per slot. With vector sets each item's ``t`` and ``e`` are read
        first in the same ``MULTI``: elements the item had and the write did not remove itself
        (fields of another index, ``tags[*]``, a set it moved out of) go in a prune just after,
        whatever this store's index (one more round trip, only then)."""
        now = now_ms()
        cutoff = f"({now - INDEX_GRACE_SECONDS * 1000}"
        groups: dict[str, list[Command]] = defaultdict(list)
        latest: dict[str, float] = {}
        dims = self.embedder.dims if self.embedder is not None else None
        configured = self.embedder.fields if self.embedder is not None else []
        #: namespace text, key, position of the read of the old hash, elements the write handles
        olds: list[tuple[str, str, int, set[tuple[str, str]]]] = []
        for w in writes:
            text = namespace_text(w.namespace)
            ik, kk, xk = (
                item_key(self.prefix, text, w.key),
                keys_key(self.prefix, text),
                expiring_key(self.prefix, text),
            )
            cmds = groups[text]
            exp = expires_at(now, w.ttl) if w.value is not None else None
            vectors = w.vectors if w.value is not None else []
            if self.vector_sets:
                at = len(cmds)
                cmds.append(("HMGET", ik, "t", "e"))
                new = {
                    (
                        vector_set_key(self.prefix, text, len(v), expiring=exp is not None),
                        vector_element(n, w.key),
                    ): v
                    for n, v in vectors
                }
                # the usual elements (this index's fields, both sets) go in this MULTI already
                gone = {
                    (vector_set_key(self.prefix, text, dims, expiring=e), vector_element(f, w.key))
                    for f in {*configured, *(n for n, _ in vectors)}
                    for e in (False, True)
                    if dims is not None
                } - new.keys()
                cmds += [("VREM", vk, el) for vk, el in sorted(gone)]
                olds.append((text, w.key, at, gone | new.keys()))
            if w.value is None:
                cmds += [("UNLINK", ik), ("ZREM", kk, w.key), ("ZREM", xk, w.key)]
                continue
            fields: list[Any] = ["v", encode_value(w.value, namespace=w.namespace, key=w.key), "u", now]
            drop: list[str] = []
            if exp is not None:
                fields += ["t", exp - now]
            else:
                drop.append("t")
            if vectors:
                fields += ["e", pack_vectors(vectors)]
            else:
                drop.append("e")
            if exp is not None and vectors:  # the set of expiring items its vectors are in
                fields += ["d", len(vectors[0][1])]
            else:
                drop.append("d")
            # an item's hash always keeps v, c and u: this never empties it
            if drop:
                cmds.append(("HDEL", ik, *drop))
            cmds += [("HSET", ik, *fields), ("HSETNX", ik, "c", now)]
            if self.vector_sets:
                for (vk, el), v in new.items():
                    cmds.append(("VADD", vk, "FP32", _fp32(v), el, "NOQUANT"))
                if exp is not None and vectors:  # the set outlives its last item by the grace, as :x
                    keep = exp - now + GRACE_MS
                    for vk in {vk for vk, _ in new}:
                        cmds += [("PEXPIRE", vk, keep, "NX"), ("PEXPIRE", vk, keep, "GT")]
            elif vectors:  # this vector is in no vector set: searches of the namespace rank in the client
                cmds.append(("HSET", meta_key(self.prefix, text), "flat", 1))
            cmds.append(("PEXPIRE", ik, exp - now) if exp is not None else ("PERSIST", ik))
            if exp is None:
                cmds += [("ZADD", kk, "+inf", w.key), ("ZREM", xk, w.key)]
            else:  # the set of expiring keys outlives its last item by the grace, then goes
                keep = exp - now + GRACE_MS
                cmds += [("ZADD", xk, exp, w.key), ("ZREM", kk, w.key)]
                cmds += [("PEXPIRE", xk, keep, "NX"), ("PEXPIRE", xk, keep, "GT")]
            latest[text] = max(latest.get(text, -math.inf), math.inf if exp is None else exp)
        for text, cmds in groups.items():
            cmds.append(("ZREMRANGEBYSCORE", expiring_key(self.prefix, text), "-inf", cutoff))
        index: list[Command] = [
            ("ZADD", self.namespace_index, "GT", "+inf" if math.isinf(s) else int(s), text)
            for text, s in latest.items()
        ]
        if index:
            index.append(("ZREMRANGEBYSCORE", self.namespace_index, "-inf", cutoff))
        replies = yield from self._apply_op(groups, index)
        stale = [
            (text, key, vk, el)
            for text, key, at, handled in olds
            for vk, el in self._vectors(text, key, *replies[text][at]).keys() - handled
        ]
        if stale:
            yield from self._prune_op(stale)

    # -- primitives -------------------------------------------------------------------------------

    def _get_items(self, gets: Sequence[GetOp]) -> list[Item | None]:
        return self._run(self._get_op(gets))

    async def _aget_items(self, gets: Sequence[GetOp]) -> list[Item | None]:
        return await self._arun(self._get_op(gets))

    def _search_items(self, op: SearchOp, query_vector: list[float] | None) -> list[SearchItem]:
        if query_vector is not None:
            self._probe()
        return self._run(self._search_op(op, query_vector))

    async def _asearch_items(self, op: SearchOp, query_vector: list[float] | None) -> list[SearchItem]:
        if query_vector is not None:
            await self._aprobe()
        return await self._arun(self._search_op(op, query_vector))

    def _list_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        return self._run(self._list_op(op))

    async def _alist_namespaces(self, op: ListNamespacesOp) -> list[tuple[str, ...]]:
        return await self._arun(self._list_op(op))

    def _write_items(self, writes: Sequence[Write]) -> None:
        self._probe()  # without an index too: a delete removes the item's vectors
        self._run(self._write_op(writes))

    async def _awrite_items(self, writes: Sequence[Write]) -> None:
        await self._aprobe()  # without an index too: a delete removes the item's vectors
        await self._arun(self._write_op(writes))

    def _probe(self) -> None:
        """Find out once whether this store uses vector sets (module docstring)."""
        if self.vector_sets is not None:
            return
        import redis as _redis

        if self.client is None:
            raise TypeError("this ChatMemoryRedisStore has only an asyncio client: use the async methods")
        try:
            self.client.execute_command("VCARD", vector_set_key(self.prefix, "", 1))
        except (_redis.ConnectionError, _redis.TimeoutError) as e:
            raise BackendError(f"redis store operation failed: {e}") from e
        except _redis.RedisError as e:
            self.vector_sets = _no_vector_sets(e)
        else:
            self.vector_sets = True

    async def _aprobe(self) -> None:
        """:meth:`_probe` on the asyncio client."""
        if self.vector_sets is not None:
            return
        if self.aclient is None:
            return await asyncio.to_thread(self._probe)
        import redis as _redis

        try:
            await self.aclient.execute_command("VCARD", vector_set_key(self.prefix, "", 1))
        except (_redis.ConnectionError, _redis.TimeoutError) as e:
            raise BackendError(f"redis store operation failed: {e}") from e
        except _redis.RedisError as e:
            self.vector_sets = _no_vector_sets(e)
        else:
            self.vector_sets = True

    # -- drivers ----------------------------------------------------------------------------------

    def _run(self, op: Op[T]) -> T:
        if self.client is None:
            raise TypeError(
                "this ChatMemoryRedisStore has only an asyncio client: use the async methods "
                "(aget, asearch, aput, ...), or build it with a sync client too"
            )
        client = self.client
        return drive(op, lambda batch: self._execute(client, batch))

    def _execute(self, client: redis.Redis | redis.cluster.RedisCluster, batch: Batch) -> list[Any]:
        import redis as _redis

        trips, main = round_trips(batch, cluster=self._cluster)
        try:
            replies = [send(client, commands, atomic) for commands, atomic in trips]
        except _redis.RedisError as e:
            raise BackendError(f"redis store operation failed: {e}") from e
        return replies[main][: len(batch.commands)] if trips else []

    async def _arun(self, op: Op[T]) -> T:
        if self.aclient is None:
            return await _in_thread(self._run, op)
        return await adrive(op, self._aexecute)

    async def _aexecute(self, batch: Batch) -> list[Any]:
        import redis as _redis

        assert self.aclient is not None
        trips, main = round_trips(batch, cluster=self._cluster)
        replies = []
        try:
            for commands, atomic in trips:
                replies.append(await asend(self.aclient, commands, atomic))
        except _redis.RedisError as e:
            raise BackendError(f"redis store operation failed: {e}") from e
        return replies[main][: len(batch.commands)] if trips else []


def _no_vector_sets(error: Exception) -> bool:
    """False for the probe's "unknown command" (no vector sets; a cluster client says it from its
    command table without asking) or "no permissions" (not allowed): the store ranks in the client;
    any other error is raised."""
    import redis as _redis

    message = str(error).lower()
    unknown = "unknown command" in message or "doesn't exist in redis commands" in message  # cluster client
    if isinstance(error, _redis.exceptions.NoPermissionError) or unknown:
        return False
    raise BackendError(f"redis store: probing vector sets failed: {error}") from error


def _count(op: SearchOp) -> int:
    """The first VSIM ``COUNT`` of a search: twice its page's end, at least :data:`_FIRST_COUNT`."""
    return max(_FIRST_COUNT, 2 * (op.offset + op.limit))


def _fp32(vector: Sequence[float]) -> bytes:
    """A vector as VADD / VSIM ``FP32`` bytes (little-endian float32)."""
    if _np is not None:
        return bytes(_np.asarray(vector, dtype="<f4").tobytes())
    out = array("f", vector)  # pragma: no cover - numpy comes with langchain-core's usual installs
    if sys.byteorder == "big":  # pragma: no cover
        out.byteswap()
    return out.tobytes()  # pragma: no cover


def _pairs(reply: Any) -> list[tuple[Any, Any]]:
    """(element, score) pairs of a ``VSIM ... WITHSCORES`` reply (a map in RESP3 / redis-py's
    callback, a flat list in RESP2), nearest first."""
    if isinstance(reply, dict):
        return list(reply.items())
    flat = list(reply or [])
    return list(zip(flat[::2], flat[1::2], strict=True))


async def _in_thread(run: Any, op: Op[T]) -> T:
    import asyncio

    result: T = await asyncio.to_thread(run, op)
    return result


def _dims(reply: Sequence[Any]) -> int | None:
    """The ``d`` of an ``HMGET v c u t d ...`` reply: its vectors' set of expiring items."""
    return int(reply[4]) if reply[4] is not None else None


def _item(namespace: tuple[str, ...], key: str, reply: Sequence[Any]) -> tuple[Item | None, int | None]:
    """The item of an ``HMGET v c u t ...`` reply, and its TTL in ms (None: never expires)."""
    value, created, updated, ttl = reply[0], reply[1], reply[2], reply[3]
    if value is None:
        return None, None
    up = int(updated)
    item = Item(
        value=decode_value(value),
        key=key,
        namespace=namespace,
        created_at=from_ms(int(created) if created is not None else up),
        updated_at=from_ms(up),
    )
    return item, (int(ttl) if ttl is not None else None)
