"""The Redis checkpointer itself (see :mod:`chatmemory.checkpoint.redis` for the key layout and the
command list). Separate so that the layout imports without langgraph; users reach the class through
:mod:`chatmemory.checkpoint` (``checkpointer_for`` or the lazy ``ChatMemoryRedisSaver`` export)."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Final, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from chatmemory.checkpoint._common import (
    PAGE,
    SEP,
    Saver,
    address,
    afirst,
    apaged,
    check_part,
    check_strategy,
    checkpoint_config,
    checkpoint_tuple,
    first,
    matches,
    pack,
    paged,
    run_id_of,
    thread_id_of,
    unpack,
    uses_delta_channels,
    version_text,
)
from chatmemory.checkpoint.redis import (
    Batch,
    Op,
    ThreadKeys,
    thread_keys,
    thread_of_key,
)
from chatmemory.contract import glob_escape
from chatmemory.errors import BackendError

if TYPE_CHECKING:
    import redis
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.cluster

_SCAN_COUNT: Final = 1000

T = TypeVar("T")


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _members(reply: Any) -> builtins.list[str]:
    return [_text(m) for m in reply or []]


class ChatMemoryRedisSaver(Saver):
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
        self._owns_clients = owns_clients

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
        import redis as _redis
        import redis.asyncio as _aredis

        return cls(
            _redis.Redis.from_url(url),
            aclient=_aredis.Redis.from_url(url),
            prefix=prefix,
            ttl_seconds=ttl_seconds,
            serde=serde,
            owns_clients=True,
        )

    # -- lifecycle --------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the sync client if the saver created it."""
        if self._owns_clients and self.client is not None:
            self.client.close()

    async def aclose(self) -> None:
        """Close both clients if the saver created them."""
        if self._owns_clients:
            if self.aclient is not None:
                await self.aclient.aclose()
            self.close()

    def setup(self) -> None:
        """Nothing to create on Redis (keys appear on first write); kept for parity with LangGraph."""

    async def asetup(self) -> None:
        """See :meth:`setup`."""

    def keys(self, thread_id: str) -> ThreadKeys:
        """The key names of a thread (for inspection, e.g. ``PTTL``)."""
        return thread_keys(self.prefix, thread_id_of(thread_id))

    # -- sync API ---------------------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._run(self._get_tuple_op(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        threads: Iterable[str] = (
            [thread_id_of(config["configurable"]["thread_id"])]
            if config is not None
            else self._scan_threads("cx")
        )

        def page(thread_id: str, offset: int) -> tuple[builtins.list[CheckpointTuple], bool]:
            return self._run(self._list_page_op(thread_id, config, filter, before, offset))

        yield from first((tup for t in threads for tup in paged(partial(page, t))), limit)

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self._run(self._put_op(config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._run(self._put_writes_op(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._run(self._delete_thread_op(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        runs = [check_part(str(r), "run_id") for r in run_ids]
        if not runs:
            return
        for thread_id in self._scan_threads("rx"):
            self._run(self._delete_runs_op(thread_id, runs))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._run(self._copy_thread_op(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        check_strategy(strategy)
        for thread_id in thread_ids:
            self._run(self._prune_op(thread_id, strategy))

    # -- async API --------------------------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await self._arun(self._get_tuple_op(config))

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        if config is not None:
            threads = [thread_id_of(config["configurable"]["thread_id"])]
        else:
            threads = [t async for t in self._ascan_threads("cx")]

        async def page(thread_id: str, offset: int) -> tuple[builtins.list[CheckpointTuple], bool]:
            return await self._arun(self._list_page_op(thread_id, config, filter, before, offset))

        async for tup in afirst((tup for t in threads async for tup in apaged(partial(page, t))), limit):
            yield tup

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await self._arun(self._put_op(config, checkpoint, metadata, new_versions))

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await self._arun(self._put_writes_op(config, writes, task_id, task_path))

    async def adelete_thread(self, thread_id: str) -> None:
        await self._arun(self._delete_thread_op(thread_id))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        runs = [check_part(str(r), "run_id") for r in run_ids]
        if not runs:
            return
        threads = [t async for t in self._ascan_threads("rx")]
        for thread_id in threads:
            await self._arun(self._delete_runs_op(thread_id, runs))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._arun(self._copy_thread_op(source_thread_id, target_thread_id))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        check_strategy(strategy)
        for thread_id in thread_ids:
            await self._arun(self._prune_op(thread_id, strategy))

    # -- operations (no I/O: they yield command batches) ------------------------------------------

    def _expire(self, keys: ThreadKeys) -> builtins.list[tuple[Any, ...]]:
        if self.ttl_seconds is None:
            return []
        return [("EXPIRE", k, self.ttl_seconds) for k in keys.all]

    def _put_op(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> Op[RunnableConfig]:
        d = self._dump_checkpoint(config, checkpoint, metadata, new_versions)
        addr, cid = d.addr, d.checkpoint_id
        (ctype, cdata), (mtype, mdata) = d.checkpoint_typed, d.metadata_typed
        keys = thread_keys(self.prefix, addr.thread_id)
        ns = addr.checkpoint_ns
        member = ns + SEP + cid
        record = pack(ctype.encode(), cdata, mtype.encode(), mdata, (addr.checkpoint_id or "").encode())
        cmds: builtins.list[tuple[Any, ...]] = [
            ("HSET", keys.cp, member, record),
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
        yield Batch(cmds, atomic=True)
        return checkpoint_config(addr.thread_id, ns, cid)

    def _put_writes_op(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
    ) -> Op[None]:
        addr, cid, dumped = self._dump_writes(config, writes)
        keys = thread_keys(self.prefix, addr.thread_id)
        member = addr.checkpoint_ns + SEP + cid
        task = check_part(str(task_id), "task_id")
        cmds: builtins.list[tuple[Any, ...]] = []
        fields: builtins.list[str] = []
        for widx, channel, wtype, wdata in dumped:
            fname = SEP.join((member, task, str(widx)))
            record = pack(task.encode(), channel.encode(), wtype.encode(), wdata, task_path.encode())
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
        yield Batch(cmds, atomic=True)

    def _get_tuple_op(self, config: RunnableConfig) -> Op[CheckpointTuple | None]:
        addr = address(config)
        keys = thread_keys(self.prefix, addr.thread_id)
        ns = addr.checkpoint_ns
        cid = addr.checkpoint_id
        if cid is None:
            (latest,) = yield Batch(
                [("ZRANGE", keys.cx, f"({ns}\x01", f"[{ns}{SEP}", "BYLEX", "REV", "LIMIT", 0, 1)]
            )
            found = _members(latest)
            if not found:
                return None
            cid = found[0].split(SEP)[1]
        tuples = yield from self._load_op(addr.thread_id, [ns + SEP + cid], prefetch_writes=True)
        return tuples[0] if tuples else None

    def _list_page_op(
        self,
        thread_id: str,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        offset: int,
    ) -> Op[tuple[builtins.list[CheckpointTuple], bool]]:
        """One page (newest first) of a thread's checkpoints, filtered; and whether more exist."""
        keys = thread_keys(self.prefix, thread_id)
        conf = (config or {}).get("configurable") or {}
        ns: str | None = conf.get("checkpoint_ns")
        if ns is not None:
            ns = check_part(str(ns), "checkpoint_ns")
        only_id = conf.get("checkpoint_id") if config is not None else None
        before_id = (before or {}).get("configurable", {}).get("checkpoint_id") if before else None
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
    ) -> Op[builtins.list[CheckpointTuple]]:
        """Checkpoint tuples for ``<ns>\\0<id>`` members, in the given order (missing ones skipped)."""
        if not members:
            return []
        keys = thread_keys(self.prefix, thread_id)
        cmds: builtins.list[tuple[Any, ...]] = [("HMGET", keys.cp, *members)]
        if prefetch_writes:
            cmds += [_write_range(keys, m) for m in members]
        replies = yield Batch(cmds)
        records, write_ranges = replies[0], replies[1:]
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
        keys = thread_keys(self.prefix, thread_id_of(thread_id))
        yield Batch([("UNLINK", *keys.all)])

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
        yield Batch(cmds, atomic=True)

    def _delete_runs_op(self, thread_id: str, runs: builtins.list[str]) -> Op[None]:
        keys = thread_keys(self.prefix, thread_id)
        replies = yield Batch([("ZRANGE", keys.rx, f"[{r}{SEP}", f"({r}\x01", "BYLEX") for r in runs])
        run_entries = [m for reply in replies for m in _members(reply)]
        if not run_entries:
            return
        members = sorted({e.split(SEP, 1)[1] for e in run_entries})
        ranges = yield Batch([_write_range(keys, m) for m in members])
        write_fields = [f for r in ranges for f in _members(r)]
        cmds: builtins.list[tuple[Any, ...]] = [
            ("HDEL", keys.cp, *members),
            ("ZREM", keys.cx, *members),
            ("ZREM", keys.rx, *run_entries),
        ]
        if write_fields:
            cmds += [("HDEL", keys.wr, *write_fields), ("ZREM", keys.wx, *write_fields)]
        yield Batch(cmds, atomic=True)

    def _prune_op(self, thread_id: str, strategy: str) -> Op[None]:
        if strategy == "delete":
            yield from self._delete_thread_op(thread_id)
            return
        keys = thread_keys(self.prefix, thread_id_of(thread_id))
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
        (records,) = yield Batch([("HMGET", keys.cp, *latest.values())])
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
        drop_writes = [f for f in _members(wx) if dropped(SEP.join(f.split(SEP)[:2]))]
        drop_runs = [e for e in _members(rx) if dropped(e.split(SEP, 1)[1])]
        drop_blobs = [f for f in _members(bl) if f.split(SEP)[0] not in keep_ns and f not in keep_blobs]
        cmds: builtins.list[tuple[Any, ...]] = []
        if drop:
            cmds += [("HDEL", keys.cp, *drop), ("ZREM", keys.cx, *drop)]
        if drop_writes:
            cmds += [("HDEL", keys.wr, *drop_writes), ("ZREM", keys.wx, *drop_writes)]
        if drop_runs:
            cmds.append(("ZREM", keys.rx, *drop_runs))
        if drop_blobs:
            cmds.append(("HDEL", keys.bl, *drop_blobs))
        if cmds:
            yield Batch(cmds, atomic=True)

    # -- drivers ----------------------------------------------------------------------------------

    def _sync_client(self) -> redis.Redis | redis.cluster.RedisCluster:
        if self.client is None:
            raise TypeError(
                "this ChatMemoryRedisSaver has only an asyncio client: use the async methods "
                "(ainvoke/astream), or build it with a sync client too"
            )
        return self.client

    def _run(self, op: Op[T]) -> T:
        client = self._sync_client()
        try:
            batch = next(op)
            while True:
                batch = op.send(self._execute(client, batch))
        except StopIteration as stop:
            result: T = stop.value
            return result

    @staticmethod
    def _execute(client: redis.Redis | redis.cluster.RedisCluster, batch: Batch) -> builtins.list[Any]:
        import redis as _redis

        if not batch.commands:
            return []
        try:
            if len(batch.commands) == 1 and not batch.atomic:
                return [client.execute_command(*batch.commands[0])]  # type: ignore[no-untyped-call]
            pipe = client.pipeline(transaction=batch.atomic)
            for cmd in batch.commands:
                pipe.execute_command(*cmd)
            return list(pipe.execute())
        except _redis.RedisError as e:
            raise BackendError(f"redis checkpoint operation failed: {e}") from e

    async def _arun(self, op: Op[T]) -> T:
        if self.aclient is None:
            import asyncio

            return await asyncio.to_thread(self._run, op)
        try:
            batch = next(op)
            while True:
                batch = op.send(await self._aexecute(self.aclient, batch))
        except StopIteration as stop:
            result: T = stop.value
            return result

    @staticmethod
    async def _aexecute(
        client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster, batch: Batch
    ) -> builtins.list[Any]:
        import redis as _redis
        import redis.asyncio.cluster as _acluster

        if not batch.commands:
            return []
        try:
            if len(batch.commands) == 1 and not batch.atomic:
                return [await client.execute_command(*batch.commands[0])]
            if batch.atomic and isinstance(client, _acluster.RedisCluster):
                return await _acluster_transaction(client, batch.commands)
            pipe = client.pipeline(transaction=batch.atomic)
            for cmd in batch.commands:
                pipe.execute_command(*cmd)
            return list(await pipe.execute())
        except _redis.RedisError as e:
            raise BackendError(f"redis checkpoint operation failed: {e}") from e

    def _scan_pattern(self, suffix: str) -> str:
        return f"{glob_escape(self.prefix)}{{*}}:{suffix}"

    def _scan_threads(self, suffix: str) -> Iterator[str]:
        import redis as _redis

        client = self._sync_client()
        seen: set[str] = set()
        try:
            for key in client.scan_iter(match=self._scan_pattern(suffix), count=_SCAN_COUNT):
                thread = thread_of_key(self.prefix, key)
                if thread is not None and thread not in seen:
                    seen.add(thread)
                    yield thread
        except _redis.RedisError as e:
            raise BackendError(f"redis checkpoint scan failed: {e}") from e

    async def _ascan_threads(self, suffix: str) -> AsyncIterator[str]:
        import redis as _redis

        if self.aclient is None:
            for t in self._scan_threads(suffix):
                yield t
            return
        seen: set[str] = set()
        try:
            async for key in self.aclient.scan_iter(match=self._scan_pattern(suffix), count=_SCAN_COUNT):
                thread = thread_of_key(self.prefix, key)
                if thread is not None and thread not in seen:
                    seen.add(thread)
                    yield thread
        except _redis.RedisError as e:
            raise BackendError(f"redis checkpoint scan failed: {e}") from e


async def _acluster_transaction(
    client: redis.asyncio.cluster.RedisCluster, commands: Sequence[tuple[Any, ...]]
) -> builtins.list[Any]:
    """MULTI/EXEC on the primary of the commands' (single) slot, as one round trip.

    redis-py 8.1's asyncio ``ClusterPipeline(transaction=True)`` runs every queued command through
    ``asyncio.run`` in a new thread (~0.5 ms each) and, before the client is initialized, opens
    connections on those short-lived loops; so the saver sends the block to the node itself.
    """
    from redis.asyncio.cluster import PipelineCommand
    from redis.exceptions import ResponseError

    await client.initialize()  # a no-op once the slot map is known
    node = client.get_node_from_key(commands[0][1])
    if node is None:
        raise ResponseError(f"no cluster node serves the slot of {commands[0][1]!r}")
    block = [
        PipelineCommand(0, "MULTI"),
        *(PipelineCommand(i + 1, *c) for i, c in enumerate(commands)),
        PipelineCommand(len(commands) + 1, "EXEC"),
    ]
    await node.execute_pipeline(block)
    for cmd in block:
        if isinstance(cmd.result, Exception):
            raise cmd.result
    replies: Any = block[-1].result
    if replies is None:
        raise ResponseError("the transaction was aborted (EXEC returned nil)")
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return list(replies)


def _write_range(keys: ThreadKeys, member: str) -> tuple[Any, ...]:
    """ZRANGE of the pending-write fields of one checkpoint (``<member>\\0...``)."""
    return ("ZRANGE", keys.wx, f"[{member}{SEP}", f"({member}\x01", "BYLEX")


def _pairs(mapping: Any) -> builtins.list[tuple[Any, Any]]:
    if isinstance(mapping, dict):
        return list(mapping.items())
    flat = list(mapping)  # RESP2 without a callback: a flat list
    return list(zip(flat[::2], flat[1::2], strict=True))


def _decodes_responses(client: Any) -> bool:
    try:
        if hasattr(client, "get_connection_kwargs"):
            return bool(client.get_connection_kwargs().get("decode_responses"))
        pool = getattr(client, "connection_pool", None)
        if pool is not None:
            return bool(pool.connection_kwargs.get("decode_responses"))
    except (AttributeError, TypeError):
        return False
    return False
