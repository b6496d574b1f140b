"""LangGraph checkpointer on plain Redis data structures (Redis 7/8, Valkey, Redis Cluster): layout.

Built by :func:`chatmemory.checkpoint.checkpointer_for` from a Redis binding, or directly from a
redis-py client. No module (RedisJSON, RediSearch) and no script is needed: a thread is six keys,
all sharing the hash tag ``{<thread_id>}`` so that a thread lives in one cluster slot::

    <prefix>{<thread>}:cp   HASH  "<ns>\\0<checkpoint_id>"                -> checkpoint record
                                  "<ns>\\0" -> the id and record of the namespace's last put
    <prefix>{<thread>}:cx   ZSET  "<ns>\\0<checkpoint_id>"                 (score 0: ordered by text)
    <prefix>{<thread>}:bl   HASH  "<ns>\\0<channel>\\0<version>"            -> channel value
    <prefix>{<thread>}:wr   HASH  "<ns>\\0<checkpoint_id>\\0<task>\\0<idx>"  -> pending write
    <prefix>{<thread>}:wx   ZSET  the pending-write fields, ordered by text
    <prefix>{<thread>}:rx   ZSET  "<run_id>\\0<ns>\\0<checkpoint_id>"      (for delete_for_runs)

and the memory has one index of its threads (its own slot on a cluster)::

    <prefix>threads         ZSET  "<thread>" (score: its last write, ms since the epoch, writer's clock)

``{``, ``}`` and ``%`` in a thread id are percent-escaped in key names. Every write (``put``,
``put_writes``, ``copy_thread``'s target) is one ``MULTI``/``EXEC`` on the thread's slot that also
sets ``EXPIRE <ttl>`` on all six keys, so a thread expires ``ttl`` after its last write, pending
writes included. On a standalone server the same ``MULTI`` adds the thread to the index
(``ZADD GT``), drops entries older than ``ttl`` + :data:`INDEX_GRACE_SECONDS` and refreshes the
index's own expiry; on a cluster these go to the index's slot in a round trip just before the
write. ``delete_thread`` is one ``UNLINK`` (and ``ZREM`` from the index: in the same ``MULTI``, or
right after on a cluster). ``get_tuple`` takes two round trips, "latest" included: ``put`` copies
the record under the namespace's ``"<ns>\\0"`` field of ``cp``, so the first round trip reads the
latest id, that copy and the newest :data:`WRITES_WINDOW` pending-write fields of the namespace
together (pipelined, no script); a copy that does not match the latest id (a thread written before
the copy existed, or puts racing out of id order) or a latest checkpoint with more pending writes
than the window costs one more round trip, never a wrong answer. ``delete_for_runs`` and ``prune``
drop a copy whose checkpoint they delete. Only ``delete_for_runs`` and listing without a thread
(``list(None)``) look across threads, by reading the index: the memory's user needs no ``SCAN``
(which an ACL cannot confine to a prefix: it lists every key of the server).

The saver (``chatmemory.checkpoint._redis_saver``) is written once, as *operations* that yield
batches of commands and receive their replies; a sync driver (``redis.Redis`` / ``RedisCluster``)
and a native asyncio driver (``redis.asyncio``) run the same operations. This module holds only
the layout and the command list, importable without langgraph: the operator reads
:data:`REDIS_COMMANDS` for the memory user's ACL. The saver class itself is exported, lazily, by
:mod:`chatmemory.checkpoint`.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from chatmemory.contract import glob_escape

__all__ = [
    "EXTRA_REDIS_COMMANDS",
    "INDEX_GRACE_SECONDS",
    "REDIS_COMMANDS",
    "WRITES_WINDOW",
    "Batch",
    "ThreadKeys",
    "escape_thread",
    "glob_escape",
    "index_key",
    "latest_field",
    "thread_keys",
    "thread_of_key",
    "unescape_thread",
]

#: The commands the saver sends that the chat histories do not already need (the operator's ACL
#: grants the union of the histories' commands and :data:`REDIS_COMMANDS`).
EXTRA_REDIS_COMMANDS: Final[tuple[str, ...]] = (
    "hset",
    "hsetnx",
    "hmget",
    "hgetall",
    "hkeys",
    "hdel",
    "zadd",
    "zrange",
    "zrem",
    "zremrangebyscore",
)
#: Every command the saver sends (lower case, as in ``ACL SETUSER +<cmd>``), besides the cluster
#: client's own metadata commands. The operator's Redis ACL must allow all of them.
REDIS_COMMANDS: Final[tuple[str, ...]] = (
    "ping",
    "hello",
    "auth",
    "multi",
    "exec",
    "discard",
    "expire",
    "unlink",
    *EXTRA_REDIS_COMMANDS,
)

_SUFFIXES: Final = ("cp", "cx", "bl", "wr", "wx", "rx")
#: An index entry outlives its thread's expiry by this much before it is dropped: the entries'
#: scores come from the writers' clocks, which may differ from the server's (and each other's).
INDEX_GRACE_SECONDS: Final = 600

#: Pending-write fields of a namespace read, newest first, beside the latest checkpoint's id: enough
#: for the writes of any checkpoint with fewer than this many (more cost one more round trip).
WRITES_WINDOW: Final = 32

T = TypeVar("T")


@dataclass
class Batch:
    """One round trip: a pipeline of raw commands, wrapped in MULTI/EXEC when ``atomic``."""

    commands: list[tuple[Any, ...]] = field(default_factory=list)
    atomic: bool = False
    #: Commands on the memory's thread index (another slot): inside the MULTI on a standalone
    #: server; on a cluster a round trip of their own, before the batch (a write: a failure leaves
    #: an entry without data, never data without an entry) or after it (``index_after``: deletes).
    #: The operation receives the replies of ``commands`` only.
    index: list[tuple[Any, ...]] = field(default_factory=list)
    index_after: bool = False


#: An operation: yields batches, receives each batch's replies, returns its result.
Op = Generator[Batch, list[Any], T]


def escape_thread(thread_id: str) -> str:
    """The thread id as it appears inside the hash tag (``{``, ``}``, ``%`` percent-escaped)."""
    return thread_id.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


def unescape_thread(text: str) -> str:
    return text.replace("%7D", "}").replace("%7B", "{").replace("%25", "%")


@dataclass(frozen=True)
class ThreadKeys:
    """The six key names of one thread."""

    cp: str
    cx: str
    bl: str
    wr: str
    wx: str
    rx: str

    @property
    def all(self) -> tuple[str, ...]:
        return (self.cp, self.cx, self.bl, self.wr, self.wx, self.rx)


def thread_keys(prefix: str, thread_id: str) -> ThreadKeys:
    base = f"{prefix}{{{escape_thread(thread_id)}}}:"
    return ThreadKeys(*(base + s for s in _SUFFIXES))


def latest_field(ns: str) -> str:
    """The field of ``cp`` holding a copy of the namespace's last put (its id, then its record)."""
    return ns + "\0"


def index_key(prefix: str) -> str:
    """The memory's thread index (no hash tag: never a history's ``<prefix>{<session>}`` key)."""
    return prefix + "threads"


def thread_of_key(prefix: str, key: bytes | str) -> str | None:
    """The thread id of a key found by SCAN (``<prefix>{<thread>}:<suffix>``), or None."""
    text = key.decode() if isinstance(key, bytes) else key
    if not text.startswith(prefix + "{") or "}:" not in text[len(prefix) :]:
        return None
    inner = text[len(prefix) + 1 : text.rindex("}:")]
    return unescape_thread(inner)
