"""The Redis checkpointer itself (see :mod:`chatmemory.checkpoint.redis` for the key layout and the
command list). Separate so that the layout imports without langgraph; users reach the class through
:mod:`chatmemory.checkpoint` (``checkpointer_for`` or the lazy ``ChatMemoryRedisSaver`` export)."""

from __future__ import annotations

import builtins
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import Checkpoint, CheckpointMetadata, CheckpointTuple
from langgraph.checkpoint.serde.base import SerializerProtocol

from chatmemory._redis_driver import OwnedClients, url_clients
from chatmemory._redis_driver import asend as _asend
from chatmemory._redis_driver import decodes_responses as _decodes_responses
from chatmemory._redis_driver import is_cluster as _is_cluster
from chatmemory._redis_driver import round_trips as _round_trips
from chatmemory._redis_driver import send as _send
from chatmemory.checkpoint._common import (
    PAGE,
    SEP,
    DumpedCheckpoint,
    DumpedWrites,
    Listing,
    Saver,
    address,
    adrive,
    check_part,
    checkpoint_tuple,
    drive,
    matches,
    pack,
    run_id_of,
    thread_id_of,
    unpack,
    uses_delta_channels,
    version_text,
)
from chatmemory.checkpoint.redis import (
    INDEX_GRACE_SECONDS,
    WRITES_WINDOW,
    Batch,
    Op,
    ThreadKeys,
    glob_escape,
    index_key,
    latest_field,
    thread_keys,
    thread_of_key,
)
from chatmemory.errors import BackendError

if TYPE_CHECKING:
    import redis
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.cluster

T = TypeVar("T")
Command = tuple[Any, ...]


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _members(reply: Any) -> builtins.list[str]:
    return [_text(m) for m in reply or []]


class ChatMemoryRedisSaver(OwnedClients, Saver):
    """A LangGraph checkpointer on Redis, Valkey or Redis Cluster, without modules or scripts.

    Args:
        client: a sync ``redis.Redis`` or ``redis.cluster.RedisCluster`` (``decode_responses``
            off), for the sync methods.
        aclient: a ``redis.asyncio.Redis`` or ``redis.asyncio.cluster.RedisCluster``, for the
            async methods (native asyncio, no threads). At least one of the two is needed; a
            missing async client makes the async methods run the sync ones in a worker thread.
        prefix: every key starts with it (a ChatMemory's ``key_prefix``; the ACL allows ``~<prefix>*``).
        ttl_seconds: a thread's keys expire this long after its last write; None or 0: never.
        serde: LangGraph serializer (default: the base class's ``JsonPlusSerializer``); pass an
            ``EncryptedSerializer`` to encrypt checkpoints, metadata, values and writes at rest.
        owns_clients: close the clients in :meth:`close` / :meth:`aclose`.
    """

    def __init__(
        self,
        client: redis.Redis | redis.cluster.RedisCluster | None = None,
        *,
        aclient: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster | None = None,
        prefix: str = "chatmemory:",
        ttl_seconds: int | None = None,
        serde: SerializerProtocol | None = None,
        owns_clients: bool = False,
    ) -> None:
        super().__init__(serde=serde)
        if client is None and aclient is None:
            raise ValueError("ChatMemoryRedisSaver needs a redis client, an asyncio client, or both")
        for c in (client, aclient):
            if c is not None and _decodes_responses(c):
                raise ValueError("the saver stores bytes: pass a client with decode_responses=False")
        if SEP in prefix:
            raise ValueError("the key prefix must not contain a NUL character")
        self.client = client
        self.aclient = aclient
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds if ttl_seconds and ttl_seconds > 0 else None
        self.index = index_key(prefix)
        self._owns_clients = owns_clients
        self._cluster = _is_cluster(client)
        self._acluster = _is_cluster(aclient)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "chatmemory:",
        ttl_seconds: int | None = None,
        serde: SerializerProtocol | None = None,
    ) -> ChatMemoryRedisSaver:
        """A saver owning a sync and an asyncio client for ``redis://`` / ``rediss://`` ``url``."""
        client, aclient = url_clients(url)
        return cls(
            client,
            aclient=aclient,
            prefix=prefix,
            ttl_seconds=ttl_seconds,
            serde=serde,
            owns_clients=True,
        )

    def keys(self, thread_id: str) -> ThreadKeys:
        """The key names of a thread (for inspection, e.g. ``PTTL``)."""
        return thread_keys(self.prefix, thread_id_of(thread_id))

    def index_existing_threads(self, scan_client: redis.Redis | redis.cluster.RedisCluster) -> int:
        """Add the threads written before the thread index existed (chatmemory 0.1) to it, once.

        ``scan_client`` must be allowed to ``SCAN`` (the memory's own user is not): the store's
        admin, for example. Finds ``<prefix>{*}:cx`` keys (every primary of a cluster) and adds
        their threads as if written now. Returns how many threads it found. Safe to run again and
        while apps write.
        """
        import redis as _redis

        pattern = f"{glob_escape(self.prefix)}{{*}}:cx"
        try:
            found = {thread_of_key(self.prefix, k) for k in scan_client.scan_iter(match=pattern, count=1000)}
            threads = sorted(t for t in found if t is not None)
            for i in range(0, len(threads), 1000):
                now = int(time.time() * 1000)
                pairs = (x for t in threads[i : i + 1000] for x in (now, t))
                scan_client.execute_command("ZADD", self.index, "NX", *pairs)  # type: ignore[no-untyped-call]
            if threads and self.ttl_seconds is not None:
                scan_client.expire(self.index, self.ttl_seconds + INDEX_GRACE_SECONDS)
        except _redis.RedisError as e:
            raise BackendError(f"redis checkpoint index backfill failed: {e}") from e
        return len(threads)

    # -- operations (no I/O: they yield command batches) ------------------------------------------

    def _expire(self, keys: ThreadKeys) -> builtins.list[Command]:
        if self.ttl_seconds is None:
            return []
        return [("EXPIRE", k, self.ttl_seconds) for k in keys.all]

    def _index_written(self, thread_id: str) -> builtins.list[Command]:
        """The thread index after a write of ``thread_id``: its entry, old entries dropped, expiry."""
        now = int(time.time() * 1000)
        cmds: builtins.list[Command] = [("ZADD", self.index, "GT", now, thread_id)]
        if self.ttl_seconds is not None:
            keep = self.ttl_seconds + INDEX_GRACE_SECONDS
            cmds += [
                ("ZREMRANGEBYSCORE", self.index, "-inf", f"({now - keep * 1000}"),
                ("EXPIRE", self.index, keep),
            ]
        return cmds

    def _threads_op(self) -> Op[builtins.list[str]]:
        """The memory's threads, most recently written first (from the index: no SCAN)."""
        low: Any = "-inf"
        if self.ttl_seconds is not None:
            low = int(time.time() * 1000) - (self.ttl_seconds + INDEX_GRACE_SECONDS) * 1000
        (members,) = yield Batch([("ZRANGE", self.index, "+inf", low, "BYSCORE", "REV")])
        return _members(members)

    def _store_checkpoint_op(self, d: DumpedCheckpoint) -> Op[None]:
        addr, cid = d.addr, d.checkpoint_id
        (ctype, cdata), (mtype, mdata) = d.checkpoint_typed, d.metadata_typed
        keys = thread_keys(self.prefix, addr.thread_id)
        ns = addr.checkpoint_ns
        member = ns + SEP + cid
        record = pack(ctype.encode(), cdata, mtype.encode(), mdata, (addr.checkpoint_id or "").encode())
        cmds: builtins.list[Command] = [
            # The record, and its copy under the namespace's "latest" field (read by get_tuple
            # without an id in the same round trip as the lookup of the latest id).
            ("HSET", keys.cp, member, record, latest_field(ns), pack(cid.encode()) + record),
            ("ZADD", keys.cx, 0, member),
        ]
        blob_args: builtins.list[Any] = []
        for channel, version, btype, bdata in d.blobs:
            fname = SEP.join((ns, check_part(channel, "channel"), version))
            blob_args += [fname, pack(btype.encode(), bdata or b"")]
        if blob_args:
            cmds.append(("HSET", keys.bl, *blob_args))
        run_id = run_id_of(d.metadata)
        if run_id is not None:
            cmds.append(("ZADD", keys.rx, 0, check_part(run_id, "run_id") + SEP + member))
        cmds += self._expire(keys)
        yield Batch(cmds, atomic=True, index=self._index_written(addr.thread_id))

    def _store_writes_op(self, w: DumpedWrites) -> Op[None]:
        addr = w.addr
        keys = thread_keys(self.prefix, addr.thread_id)
        member = addr.checkpoint_ns + SEP + w.checkpoint_id
        task = check_part(w.task_id, "task_id")
        cmds: builtins.list[Command] = []
        fields: builtins.list[str] = []
        for widx, channel, wtype, wdata in w.writes:
            fname = SEP.join((member, task, str(widx)))
            record = pack(task.encode(), channel.encode(), wtype.encode(), wdata, w.task_path.encode())
            # A regular write is never replaced (a retried task writes the same thing); a special
            # one (error, interrupt, ...) is.
            cmds.append(("HSETNX" if widx >= 0 else "HSET", keys.wr, fname, record))
            fields.append(fname)
        if not fields:
            return
        zadd: builtins.list[Any] = []
        for f in fields:
            zadd += [0, f]
        cmds.append(("ZADD", keys.wx, *zadd))
        cmds += self._expire(keys)
        yield Batch(cmds, atomic=True, index=self._index_written(addr.thread_id))

    def _get_tuple_op(self, config: RunnableConfig) -> Op[CheckpointTuple | None]:
        addr = address(config)
        keys = thread_keys(self.prefix, addr.thread_id)
        ns = addr.checkpoint_ns
        cid = addr.checkpoint_id
        if cid is not None:
            tuples = yield from self._load_op(addr.thread_id, [ns + SEP + cid], prefetch_writes=True)
            return tuples[0] if tuples else None
        # The latest: its id, the copy of its record ``put`` keeps under the namespace's latest
        # field, and the newest pending-write fields of the namespace, in one round trip; the
        # blobs and the writes' values in a second. A stale copy (a later put won the race, or
        # the thread was written before the copy existed) or more than WRITES_WINDOW writes on the
        # latest checkpoint cost a third round trip, never a wrong answer.
        hi, lo = f"({ns}\x01", f"[{ns}{SEP}"
        latest, (copy,), window = yield Batch(
            [
                ("ZRANGE", keys.cx, hi, lo, "BYLEX", "REV", "LIMIT", 0, 1),
                ("HMGET", keys.cp, latest_field(ns)),
                ("ZRANGE", keys.wx, hi, lo, "BYLEX", "REV", "LIMIT", 0, WRITES_WINDOW),
            ]
        )
        found = _members(latest)
        if not found:
            return None
        member = found[0]
        first = _prefetched(member, copy, _members(window))
        tuples = yield from self._load_op(addr.thread_id, [member], prefetch_writes=True, first=first)
        return tuples[0] if tuples else None

    def _list_sources_op(self, q: Listing) -> Op[Sequence[str | None]]:
        """The thread of the config, or every thread of the memory."""
        if q.config is not None:
            return [thread_id_of(q.config["configurable"]["thread_id"])]
        return (yield from self._threads_op())

    def _list_page_op(
        self, q: Listing, source: str | None, offset: int
    ) -> Op[tuple[builtins.list[CheckpointTuple], bool]]:
        """One page (newest first) of a thread's checkpoints, filtered; and whether more exist."""
        thread_id, config, filter, before_id = str(source), q.config, q.filter, q.before_id
        keys = thread_keys(self.prefix, thread_id)
        conf = (config or {}).get("configurable") or {}
        ns: str | None = conf.get("checkpoint_ns")
        if ns is not None:
            ns = check_part(str(ns), "checkpoint_ns")
        only_id = conf.get("checkpoint_id") if config is not None else None
        if only_id is not None:
            if offset:
                return [], False
            if ns is not None:
                members = [ns + SEP + str(only_id)]
            else:  # any namespace: find the id among the thread's members
                (every,) = yield Batch([("ZRANGE", keys.cx, 0, -1)])
                members = [m for m in _members(every) if m.split(SEP)[1] == str(only_id)]
            tuples = yield from self._load_op(thread_id, members, filter=filter, before_id=before_id)
            return tuples, False
        if ns is not None:
            hi = f"({ns}{SEP}{before_id}" if before_id else f"({ns}\x01"
            lo = f"[{ns}{SEP}"
        else:
            hi, lo = "+", "-"
        (page,) = yield Batch([("ZRANGE", keys.cx, hi, lo, "BYLEX", "REV", "LIMIT", offset, PAGE)])
        members = _members(page)
        tuples = yield from self._load_op(thread_id, members, filter=filter, before_id=before_id)
        return tuples, len(members) == PAGE

    def _load_op(
        self,
        thread_id: str,
        members: builtins.list[str],
        *,
        prefetch_writes: bool = False,
        filter: dict[str, Any] | None = None,
        before_id: str | None = None,
        first: tuple[builtins.list[Any], builtins.list[Any]] | None = None,
    ) -> Op[builtins.list[CheckpointTuple]]:
        """Checkpoint tuples for ``<ns>\\0<id>`` members, in the given order (missing ones skipped).

        ``first``: the replies of the first round trip (the records, and with ``prefetch_writes``
        the write ranges), when the caller already holds them.
        """
        if not members:
            return []
        keys = thread_keys(self.prefix, thread_id)
        if first is None:
            cmds: builtins.list[tuple[Any, ...]] = [("HMGET", keys.cp, *members)]
            if prefetch_writes:
                cmds += [_write_range(keys, m) for m in members]
            replies = yield Batch(cmds)
            records, write_ranges = replies[0], replies[1:]
        else:
            records, write_ranges = first
        loaded: builtins.list[tuple[str, str, Checkpoint, CheckpointMetadata, str | None]] = []
        kept: builtins.list[int] = []
        for i, (member, raw) in enumerate(zip(members, records, strict=True)):
            if raw is None:
                continue
            ns, cid = member.split(SEP)
            if before_id is not None and cid >= before_id:
                continue
            ctype, cdata, mtype, mdata, parent_raw = unpack(raw)
            metadata: CheckpointMetadata = self.serde.loads_typed((mtype.decode(), mdata))
            if not matches(metadata, filter):
                continue
            ckpt: Checkpoint = self.serde.loads_typed((ctype.decode(), cdata))
            loaded.append((ns, cid, ckpt, metadata, parent_raw.decode() or None))
            kept.append(i)
        if not loaded:
            return []
        if not prefetch_writes:
            write_ranges = yield Batch([_write_range(keys, members[i]) for i in kept])
        else:
            write_ranges = [write_ranges[i] for i in kept]
        write_fields = [_members(r) for r in write_ranges]
        blob_fields: builtins.list[builtins.list[str]] = []
        for ns, _cid, ckpt, _md, _parent in loaded:
            blob_fields.append(
                [SEP.join((ns, ch, version_text(v))) for ch, v in ckpt["channel_versions"].items()]
            )
        flat_blobs = [f for fs in blob_fields for f in fs]
        flat_writes = [f for fs in write_fields for f in fs]
        cmds = []
        if flat_blobs:
            cmds.append(("HMGET", keys.bl, *flat_blobs))
        if flat_writes:
            cmds.append(("HMGET", keys.wr, *flat_writes))
        replies = (yield Batch(cmds)) if cmds else []
        blob_values = iter(replies[0] if flat_blobs else [])
        write_values = iter(replies[-1] if flat_writes else [])
        out: builtins.list[CheckpointTuple] = []
        for (ns, cid, ckpt, metadata, parent), bfields, wfields in zip(
            loaded, blob_fields, write_fields, strict=True
        ):
            values: dict[str, Any] = {}
            for bf in bfields:
                raw = next(blob_values)
                if raw is None:
                    continue
                btype, bdata = unpack(raw)
                if btype == b"empty":
                    continue
                values[bf.split(SEP)[1]] = self.serde.loads_typed((btype.decode(), bdata))
            rows: builtins.list[tuple[str, int, str, str, Any]] = []
            for wf in wfields:
                raw = next(write_values)
                if raw is None:
                    continue
                task, channel, wtype, wdata, path = unpack(raw)
                rows.append(
                    (
                        task.decode(),
                        int(wf.split(SEP)[3]),
                        path.decode(),
                        channel.decode(),
                        self.serde.loads_typed((wtype.decode(), wdata)),
                    )
                )
            out.append(checkpoint_tuple(thread_id, ns, cid, parent, ckpt, metadata, values, rows))
        return out

    def _delete_thread_op(self, thread_id: str) -> Op[None]:
        tid = thread_id_of(thread_id)
        keys = thread_keys(self.prefix, tid)
        yield Batch([("UNLINK", *keys.all)], index=[("ZREM", self.index, tid)], index_after=True)

    def _delete_for_runs_op(self, run_ids: Sequence[str]) -> Op[None]:
        runs = [check_part(str(r), "run_id") for r in run_ids]
        if not runs:
            return
        for thread_id in (yield from self._threads_op()):
            yield from self._delete_runs_op(thread_id, runs)

    def _copy_thread_op(self, source: str, target: str) -> Op[None]:
        src = thread_keys(self.prefix, thread_id_of(source))
        dst = thread_keys(self.prefix, thread_id_of(target))
        cp, bl, wr, cx, wx, rx = yield Batch(
            [
                ("HGETALL", src.cp),
                ("HGETALL", src.bl),
                ("HGETALL", src.wr),
                ("ZRANGE", src.cx, 0, -1),
                ("ZRANGE", src.wx, 0, -1),
                ("ZRANGE", src.rx, 0, -1),
            ]
        )
        if not cp:
            return
        cmds: builtins.list[tuple[Any, ...]] = []
        for key, mapping in ((dst.cp, cp), (dst.bl, bl), (dst.wr, wr)):
            if mapping:
                cmds.append(("HSET", key, *(x for kv in _pairs(mapping) for x in kv)))
        for key, members in ((dst.cx, cx), (dst.wx, wx), (dst.rx, rx)):
            if members:
                cmds.append(("ZADD", key, *(x for m in members for x in (0, m))))
        cmds += self._expire(dst)
        yield Batch(cmds, atomic=True, index=self._index_written(thread_id_of(target)))

    def _delete_runs_op(self, thread_id: str, runs: builtins.list[str]) -> Op[None]:
        keys = thread_keys(self.prefix, thread_id)
        replies = yield Batch([("ZRANGE", keys.rx, f"[{r}{SEP}", f"({r}\x01", "BYLEX") for r in runs])
        run_entries = [m for reply in replies for m in _members(reply)]
        if not run_entries:
            return
        members = sorted({e.split(SEP, 1)[1] for e in run_entries})
        namespaces = sorted({m.split(SEP)[0] for m in members})
        *ranges, copies = yield Batch(
            [
                *(_write_range(keys, m) for m in members),
                ("HMGET", keys.cp, *(latest_field(n) for n in namespaces)),
            ]
        )
        write_fields = [f for r in ranges for f in _members(r)]
        gone = set(members)
        stale = [latest_field(n) for n, c in zip(namespaces, copies, strict=True) if _copy_of(n, c) in gone]
        cmds: builtins.list[tuple[Any, ...]] = [
            ("HDEL", keys.cp, *members, *stale),
            ("ZREM", keys.cx, *members),
            ("ZREM", keys.rx, *run_entries),
        ]
        if write_fields:
            cmds += [("HDEL", keys.wr, *write_fields), ("ZREM", keys.wx, *write_fields)]
        yield Batch(cmds, atomic=True)

    def _keep_latest_op(self, thread_id: str) -> Op[None]:
        keys = thread_keys(self.prefix, thread_id)
        cx, wx, rx, bl = yield Batch(
            [
                ("ZRANGE", keys.cx, 0, -1),
                ("ZRANGE", keys.wx, 0, -1),
                ("ZRANGE", keys.rx, 0, -1),
                ("HKEYS", keys.bl),
            ]
        )
        members = _members(cx)
        if not members:
            return
        latest: dict[str, str] = {}
        for m in members:  # text order: the last member of a namespace is its newest checkpoint
            latest[m.split(SEP)[0]] = m
        records, copies = yield Batch(
            [("HMGET", keys.cp, *latest.values()), ("HMGET", keys.cp, *map(latest_field, latest))]
        )
        keep_ns: set[str] = set()  # namespaces left whole (DeltaChannel chains)
        keep_members: set[str] = set()
        keep_blobs: set[str] = set()
        for (ns, member), raw in zip(latest.items(), records, strict=True):
            if raw is None:
                keep_ns.add(ns)  # written meanwhile: leave it alone
                continue
            ctype, cdata, mtype, mdata, _parent = unpack(raw)
            metadata: CheckpointMetadata = self.serde.loads_typed((mtype.decode(), mdata))
            if uses_delta_channels(metadata):
                keep_ns.add(ns)
                continue
            keep_members.add(member)
            ckpt: Checkpoint = self.serde.loads_typed((ctype.decode(), cdata))
            keep_blobs.update(
                SEP.join((ns, ch, version_text(v))) for ch, v in ckpt["channel_versions"].items()
            )

        def dropped(member: str) -> bool:
            return member.split(SEP)[0] not in keep_ns and member not in keep_members

        drop = [m for m in members if dropped(m)]
        # A copy of a dropped checkpoint (puts out of id order) goes with it.
        drop_copies = [
            latest_field(ns)
            for ns, c in zip(latest, copies, strict=True)
            if (copied := _copy_of(ns, c)) and dropped(copied)
        ]
        drop_writes = [f for f in _members(wx) if dropped(SEP.join(f.split(SEP)[:2]))]
        drop_runs = [e for e in _members(rx) if dropped(e.split(SEP, 1)[1])]
        drop_blobs = [f for f in _members(bl) if f.split(SEP)[0] not in keep_ns and f not in keep_blobs]
        cmds: builtins.list[tuple[Any, ...]] = []
        if drop or drop_copies:
            cmds.append(("HDEL", keys.cp, *drop, *drop_copies))
        if drop:
            cmds.append(("ZREM", keys.cx, *drop))
        if drop_writes:
            cmds += [("HDEL", keys.wr, *drop_writes), ("ZREM", keys.wx, *drop_writes)]
        if drop_runs:
            cmds.append(("ZREM", keys.rx, *drop_runs))
        if drop_blobs:
            cmds.append(("HDEL", keys.bl, *drop_blobs))
        if cmds:
            yield Batch(cmds, atomic=True)

    # -- drivers ----------------------------------------------------------------------------------

    def _run(self, op: Op[T]) -> T:
        if self.client is None:
            raise TypeError(
                "this ChatMemoryRedisSaver has only an asyncio client: use the async methods "
                "(ainvoke/astream), or build it with a sync client too"
            )
        client = self.client
        return drive(op, lambda batch: self._execute(client, batch))

    def _execute(self, client: redis.Redis | redis.cluster.RedisCluster, batch: Batch) -> builtins.list[Any]:
        import redis as _redis

        trips, main = _round_trips(batch, cluster=self._cluster)
        try:
            replies = [_send(client, commands, atomic) for commands, atomic in trips]
        except _redis.RedisError as e:
            raise BackendError(f"redis checkpoint operation failed: {e}") from e
        return replies[main][: len(batch.commands)] if trips else []

    async def _arun(self, op: Op[T]) -> T:
        if self.aclient is None:
            return await super()._arun(op)
        return await adrive(op, self._aexecute)

    async def _aexecute(self, batch: Batch) -> builtins.list[Any]:
        import redis as _redis

        assert self.aclient is not None
        trips, main = _round_trips(batch, cluster=self._acluster)
        replies = []
        try:
            for commands, atomic in trips:
                replies.append(await _asend(self.aclient, commands, atomic))
        except _redis.RedisError as e:
            raise BackendError(f"redis checkpoint operation failed: {e}") from e
        return replies[main][: len(batch.commands)] if trips else []


def _prefetched(
    member: str, copy: bytes | None, window: builtins.list[str]
) -> tuple[builtins.list[Any], builtins.list[Any]] | None:
    """The latest checkpoint's record and write fields from the first round trip of a "latest"
    read (as :meth:`ChatMemoryRedisSaver._load_op` would read them), or None when that round trip
    cannot tell: the copy is of another checkpoint, or the window may have cut its writes short."""
    header = pack(member.split(SEP)[1].encode())
    if copy is None or not copy.startswith(header):
        return None
    prefix = member + SEP
    # ``window`` is newest first: it holds every write of ``member`` when it was not full or
    # reached below them (fields of newer ids, from a put racing this read, are skipped).
    if len(window) >= WRITES_WINDOW and window[-1] >= prefix:
        return None
    mine = [f for f in reversed(window) if f.startswith(prefix)]
    return [copy[len(header) :]], [mine]


def _copy_of(ns: str, copy: bytes | None) -> str | None:
    """The member (``<ns>\\0<id>``) whose record a namespace's latest field holds, if any."""
    return None if copy is None else ns + SEP + unpack(copy)[0].decode()


def _write_range(keys: ThreadKeys, member: str) -> tuple[Any, ...]:
    """ZRANGE of the pending-write fields of one checkpoint (``<member>\\0...``)."""
    return ("ZRANGE", keys.wx, f"[{member}{SEP}", f"({member}\x01", "BYLEX")


def _pairs(mapping: Any) -> builtins.list[tuple[Any, Any]]:
    if isinstance(mapping, dict):
        return list(mapping.items())
    flat = list(mapping)  # RESP2 without a callback: a flat list
    return list(zip(flat[::2], flat[1::2], strict=True))
