"""LangGraph store on plain Redis data structures (Redis 7/8, Valkey, Redis Cluster): layout.

Built by :func:`chatmemory.store.store_for` from a Redis binding, or directly from a redis-py
client. No module and no script is needed. An item is one hash, and a namespace has one sorted
set of its keys; both carry the hash tag ``{<namespace>}`` (labels joined by ``.``; ``{``, ``}``
and ``%`` percent-escaped), so a namespace lives in one cluster slot::

    <prefix>store:{<ns>}:i:<key>   HASH  v: value (JSON)  c: created  u: updated (ms since the epoch)
                                         t: TTL (ms; absent: never expires)
                                         d: dims of its vectors in a ``:w`` set (TTL items only)
                                         e: vectors ("<field>" + float32 array, repeated; absent:
                                            not indexed)
    <prefix>store:{<ns>}:k         ZSET  "<key>" of the items that never expire (score +inf)
    <prefix>store:{<ns>}:x         ZSET  "<key>" of the items with a TTL (score: their expiry, ms);
                                         the set expires 10 minutes after the last of them

On a server with vector sets (Redis 8+) and a user allowed their commands, an indexed namespace
also has::

    <prefix>store:{<ns>}:v:<dims>  VSET  "<field>\\0<key>": the vector of that field of an item that
                                         never expires (float32, NOQUANT), one set per dimensions
    <prefix>store:{<ns>}:w:<dims>  VSET  the same for items with a TTL; expires 10 minutes after the
                                         last of them (as ``:x``)
    <prefix>store:{<ns>}:m         HASH  flat: "1" once a writer without vector sets stored a vector
                                         here (the vector set may lack it: searches rank in the client)

and the memory has one index of its namespaces (its own slot on a cluster)::

    <prefix>store:namespaces       ZSET  "<ns>"   (score: the latest expiry of its items; +inf)

An item's hash expires with the item (``PEXPIRE``: the server's clock decides, to the
millisecond, and an expired item is never returned); a refreshing read (``refresh_on_read``) sets
its expiry again (``PEXPIRE ... XX``, so it never adds an expiry a concurrent rewrite removed) and
raises the scores (``ZADD ... GT``). A put is one ``MULTI``/``EXEC`` on the namespace's slot
(``HSET``, ``HSETNX`` of ``c`` so ``created_at`` survives overwrites, ``PEXPIRE`` or ``PERSIST``,
``ZADD``); on a standalone server the same ``MULTI`` adds the namespace to the index
(``ZADD GT``); on a cluster that goes to the index's slot in a round trip just before (a failure
leaves an index entry without data, never data without an entry). Entries whose score is older
than :data:`~chatmemory.checkpoint.redis.INDEX_GRACE_SECONDS` (writers' clocks may differ) are
dropped by score on every write, so entries of expired items and namespaces go away without a
read-then-delete race. A delete is ``UNLINK`` + ``ZREM``.

Reads: ``get`` is one ``HMGET`` per item (pipelined); ``search`` reads the namespace index, keeps
the namespaces under the prefix (whole labels), reads their key sets and then the items, in three
pipelined round trips: it costs O(namespaces of the memory + items in the namespaces searched),
whatever ``limit`` is. ``list_namespaces`` reads the index and counts each candidate's live keys.
The memory's user needs no ``SCAN`` (an ACL cannot confine it to a prefix).

A query search on a server with vector sets ranks on the server: ``VSIM ... WITHSCORES COUNT n
TRUTH`` (an exact linear scan in the server, no HNSW approximation) per namespace, then reads the
candidates' hashes; the scores are computed again in the client from the hash's vectors (the
core's ranking, bit for bit), expired or deleted items are dropped (their elements pruned), and
``n`` doubles until the page is certain. Cost: O(vectors of the namespaces) in the server, O(n)
over the network. Elsewhere (Redis 7, Valkey, a user not allowed the commands) it is brute force.

This module holds only the layout and the command list, importable without langgraph: the
operator reads :data:`STORE_REDIS_COMMANDS` for the memory user's ACL. The store class
(``chatmemory.store._redis_store.ChatMemoryRedisStore``) is exported, lazily, by
:mod:`chatmemory.store`.
"""

from __future__ import annotations

from typing import Final

from chatmemory.checkpoint.redis import escape_thread

__all__ = [
    "STORE_REDIS_COMMANDS",
    "STORE_VECTOR_SET_COMMANDS",
    "expiring_key",
    "item_key",
    "keys_key",
    "meta_key",
    "namespace_index_key",
    "namespace_tag",
    "vector_element",
    "vector_set_key",
]

#: Every command the store sends (lower case, as in ``ACL SETUSER +<cmd>``), besides the cluster
#: client's own metadata commands. The operator's Redis ACL must allow all of them.
STORE_REDIS_COMMANDS: Final[tuple[str, ...]] = (
    "ping",
    "hello",
    "auth",
    "multi",
    "exec",
    "discard",
    "hset",
    "hsetnx",
    "hmget",
    "hdel",
    "pexpire",
    "persist",
    "unlink",
    "zadd",
    "zrange",
    "zrem",
    "zcount",
    "zremrangebyscore",
)

#: The vector-set commands the store sends where the server has them (Redis 8+). Granted by the
#: operator only on such servers: Redis 7 and Valkey refuse an ACL rule naming an unknown command.
#: VCARD is the SDK's probe (a memory's user may not run ``COMMAND``).
STORE_VECTOR_SET_COMMANDS: Final[tuple[str, ...]] = ("vadd", "vrem", "vsim", "vcard")


def namespace_tag(namespace_text: str) -> str:
    """The hash tag of a namespace (its ``.``-joined text, ``{``, ``}`` and ``%`` percent-escaped)."""
    return "{" + escape_thread(namespace_text) + "}"


def keys_key(prefix: str, namespace_text: str) -> str:
    """The sorted set of a namespace's item keys."""
    return f"{prefix}store:{namespace_tag(namespace_text)}:k"


def item_key(prefix: str, namespace_text: str, key: str) -> str:
    """The hash of one item."""
    return f"{prefix}store:{namespace_tag(namespace_text)}:i:{key}"


def expiring_key(prefix: str, namespace_text: str) -> str:
    """The sorted set of the keys of a namespace's items that have a TTL, scored by expiry."""
    return f"{prefix}store:{namespace_tag(namespace_text)}:x"


def namespace_index_key(prefix: str) -> str:
    """The memory's namespace index (no hash tag: its own slot)."""
    return f"{prefix}store:namespaces"


def vector_set_key(prefix: str, namespace_text: str, dims: int, *, expiring: bool = False) -> str:
    """The vector set of a namespace's vectors of ``dims`` dimensions (Redis 8+): ``:v:<dims>`` for
    items that never expire, ``:w:<dims>`` for items with a TTL (that one expires after them)."""
    return f"{prefix}store:{namespace_tag(namespace_text)}:{'w' if expiring else 'v'}:{dims}"


def meta_key(prefix: str, namespace_text: str) -> str:
    """A namespace's flags (``flat``: its vector set may be incomplete)."""
    return f"{prefix}store:{namespace_tag(namespace_text)}:m"


def vector_element(field: str, key: str) -> str:
    """The vector set element of one item's vector of one field (the field never holds NUL)."""
    return f"{field}\0{key}"
