"""What the Redis and SQL checkpointers share: config parsing, record framing, filters, versions,
paging, (de)serialization and their base class :class:`Saver`, which holds LangGraph's whole API.

Each saver writes an operation once (a generator that yields its I/O steps and receives their
results, see :data:`Op`) and says how to run one step synchronously and asynchronously; the
public method pairs (``put``/``aput``, ``list``/``alist``, ...) are made from the operations by
:func:`synchronous`, :func:`asynchronous` and :func:`listing`.

Used only by :mod:`chatmemory.checkpoint._redis_saver` and :mod:`chatmemory.checkpoint._sql_saver`.
Nothing here does I/O.
"""

from __future__ import annotations

import asyncio
import builtins
import inspect
import random
import struct
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Generator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from itertools import islice
from typing import Any, Concatenate, Final, ParamSpec, Self, TypeVar

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    PendingWrite,
    get_checkpoint_id,
    get_checkpoint_metadata,
    writes_sort_key,
)

#: Separator inside composite Redis field names and members; refused inside ids and namespaces.
SEP: Final = "\x00"
_LEN: Final = struct.Struct(">I")
#: Checkpoints read per query (SQL) or ZRANGE (Redis) when listing.
PAGE: Final = 100

T = TypeVar("T")
Y = TypeVar("Y")
R = TypeVar("R")
P = ParamSpec("P")
S = TypeVar("S", bound="Saver")

#: An operation: yields I/O steps (a saver's own kind), receives each step's result, returns a T.
Op = Generator[Any, Any, T]


def drive(op: Generator[Y, R, T], execute: Callable[[Y], R]) -> T:
    """Run ``op`` to its result, executing each step it yields with ``execute``."""
    try:
        step = next(op)
        while True:
            step = op.send(execute(step))
    except StopIteration as stop:
        result: T = stop.value
        return result


async def adrive(op: Generator[Y, R, T], execute: Callable[[Y], Awaitable[R]]) -> T:
    """:func:`drive` with an asyncio ``execute``."""
    try:
        step = next(op)
        while True:
            step = op.send(await execute(step))
    except StopIteration as stop:
        result: T = stop.value
        return result


def result(value: T) -> Op[T]:
    """An operation that needs no I/O."""
    yield from ()
    return value


@dataclass(frozen=True)
class Address:
    """Which checkpoint (or the latest one when ``checkpoint_id`` is None) a config points at."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str | None


def check_part(value: str, what: str) -> str:
    """Refuse NUL in an id or namespace (it separates the parts of a stored name)."""
    if SEP in value:
        raise ValueError(f"{what} {value!r} contains a NUL character")
    return value


def thread_id_of(thread_id: Any) -> str:
    """LangGraph thread ids may be any scalar; they are stored as text and must not be empty."""
    text = str(thread_id)
    if not text:
        raise ValueError("a checkpoint needs a non-empty thread_id in config['configurable']")
    return check_part(text, "thread_id")


def address(config: RunnableConfig) -> Address:
    """The thread, namespace and (optional) checkpoint id of a config."""
    conf = config.get("configurable") or {}
    if "thread_id" not in conf:
        raise ValueError("a checkpoint needs config['configurable']['thread_id']")
    cid = get_checkpoint_id(config)
    return Address(
        thread_id=thread_id_of(conf["thread_id"]),
        checkpoint_ns=check_part(str(conf.get("checkpoint_ns") or ""), "checkpoint_ns"),
        checkpoint_id=check_part(str(cid), "checkpoint_id") if cid else None,
    )


def checkpoint_config(thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> RunnableConfig:
    return {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": checkpoint_ns,
            "checkpoint_id": checkpoint_id,
        }
    }


def parent_config(thread_id: str, checkpoint_ns: str, parent_id: str | None) -> RunnableConfig | None:
    return checkpoint_config(thread_id, checkpoint_ns, parent_id) if parent_id else None


def pack(*parts: bytes) -> bytes:
    """Length-prefixed concatenation: a record of several byte strings in one value."""
    return b"".join(_LEN.pack(len(p)) + p for p in parts)


def unpack(data: bytes) -> list[bytes]:
    """The inverse of :func:`pack`."""
    out: list[bytes] = []
    pos = 0
    while pos < len(data):
        (n,) = _LEN.unpack_from(data, pos)
        pos += _LEN.size
        out.append(data[pos : pos + n])
        pos += n
    return out


def matches(metadata: Mapping[str, Any], filter: Mapping[str, Any] | None) -> bool:
    """LangGraph's metadata filter: every key present with an equal value."""
    return not filter or all(k in metadata and metadata[k] == v for k, v in filter.items())


def run_id_of(metadata: CheckpointMetadata) -> str | None:
    run_id = metadata.get("run_id")
    return str(run_id) if run_id not in (None, "") else None


def uses_delta_channels(metadata: CheckpointMetadata) -> bool:
    """Whether a checkpoint belongs to a graph with DeltaChannels (beta): such a chain is not pruned.

    A DeltaChannel rebuilds its value from ancestor checkpoints' writes back to a snapshot, so
    dropping ancestors would silently empty it (see ``BaseCheckpointSaver.prune``).
    """
    return bool(metadata.get("counters_since_delta_snapshot"))


def sort_writes(rows: Sequence[tuple[str, int, str, str, Any]]) -> list[PendingWrite]:
    """(task_id, idx, task_path, channel, value) rows to pending writes in ``writes_sort_key`` order."""
    ordered = sorted(rows, key=lambda r: writes_sort_key(r[2], r[0], r[1]))
    return [(task_id, channel, value) for task_id, _idx, _path, channel, value in ordered]


def next_version(current: str | int | float | None) -> str:
    """Monotonic string versions that sort as text (LangGraph's own savers use the same form)."""
    if current is None:
        n = 0
    elif isinstance(current, int | float):
        n = int(current)
    else:
        n = int(str(current).split(".")[0])
    return f"{n + 1:032}.{random.random():016}"  # noqa: S311 - a tie-breaker, not a secret


def version_text(version: str | int | float) -> str:
    return str(version)


def checkpoint_tuple(
    thread_id: str,
    checkpoint_ns: str,
    checkpoint_id: str,
    parent_id: str | None,
    checkpoint: Checkpoint,
    metadata: CheckpointMetadata,
    values: dict[str, Any],
    writes: Sequence[tuple[str, int, str, str, Any]],
) -> CheckpointTuple:
    """A loaded checkpoint with its channel values and (unsorted) pending-write rows."""
    return CheckpointTuple(
        config=checkpoint_config(thread_id, checkpoint_ns, checkpoint_id),
        checkpoint={**checkpoint, "channel_values": values},
        metadata=metadata,
        parent_config=parent_config(thread_id, checkpoint_ns, parent_id),
        pending_writes=sort_writes(writes),
    )


def check_strategy(strategy: str) -> None:
    if strategy not in ("keep_latest", "delete"):
        raise ValueError(f"unknown prune strategy {strategy!r}: use 'keep_latest' or 'delete'")


def paged(fetch: Callable[[int], tuple[Sequence[T], bool]]) -> Iterator[T]:
    """The items of the pages ``fetch(offset)`` returns (offsets ``PAGE`` apart), read lazily until
    a page says no more follow."""
    offset, more = 0, True
    while more:
        page, more = fetch(offset)
        offset += PAGE
        yield from page


async def apaged(fetch: Callable[[int], Awaitable[tuple[Sequence[T], bool]]]) -> AsyncIterator[T]:
    """The asyncio twin of :func:`paged`."""
    offset, more = 0, True
    while more:
        page, more = await fetch(offset)
        offset += PAGE
        for item in page:
            yield item


def first(items: Iterable[T], limit: int | None) -> Iterator[T]:
    """At most ``limit`` items (every item with None); nothing past the limit is read."""
    return islice(items, None if limit is None else max(limit, 0))


async def afirst(items: AsyncIterator[T], limit: int | None) -> AsyncIterator[T]:
    """The asyncio twin of :func:`first`."""
    if limit is not None and limit <= 0:
        return
    n = 0
    async for item in items:
        yield item
        n += 1
        if n == limit:
            return


@dataclass(frozen=True)
class DumpedCheckpoint:
    """A checkpoint serialized for :meth:`~BaseCheckpointSaver.put`."""

    addr: Address
    checkpoint_id: str
    metadata: CheckpointMetadata
    checkpoint_typed: tuple[str, bytes]
    metadata_typed: tuple[str, bytes]
    #: (channel, version text, type, data) of each new version; type "empty" and no data: no value.
    blobs: list[tuple[str, str, str, bytes | None]]


@dataclass(frozen=True)
class DumpedWrites:
    """Pending writes serialized for :meth:`~BaseCheckpointSaver.put_writes`."""

    addr: Address
    checkpoint_id: str
    #: (index, channel, type, data) of each write.
    writes: list[tuple[int, str, str, bytes]]
    task_id: str
    task_path: str


@dataclass(frozen=True)
class Listing:
    """The arguments of one ``list`` / ``alist`` call."""

    config: RunnableConfig | None
    filter: dict[str, Any] | None
    before: RunnableConfig | None
    limit: int | None

    @property
    def before_id(self) -> str | None:
        before = self.before
        return before.get("configurable", {}).get("checkpoint_id") if before else None


def _named(method: Callable[..., Any], op: Callable[..., Any], name: str, returns: str | None = None) -> None:
    """Give a method made from ``op`` its public name, and ``op``'s docstring and parameters; it
    returns what the operation results in (``T`` of ``Op[T]``) unless ``returns`` says otherwise."""
    sig = inspect.signature(op)
    if returns is None:
        returns = str(sig.return_annotation).removeprefix("Op[").removesuffix("]")
    method.__signature__ = sig.replace(return_annotation=returns)  # type: ignore[attr-defined]
    method.__doc__ = op.__doc__
    method.__module__ = op.__module__
    method.__name__ = name
    method.__qualname__ = f"{op.__qualname__.rpartition('.')[0]}.{name}"


def synchronous(op: Callable[Concatenate[S, P], Op[T]]) -> Callable[Concatenate[S, P], T]:
    """The sync method that runs the operation ``_<name>_op`` of the saver (``put`` for ``_put_op``)."""
    name = op.__name__

    def method(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        bound: Callable[P, Op[T]] = getattr(self, name)  # the saver's own operation
        return self._run(bound(*args, **kwargs))

    _named(method, op, name.removeprefix("_").removesuffix("_op"))
    return method


def asynchronous(
    op: Callable[Concatenate[S, P], Op[T]],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]:
    """The async twin of :func:`synchronous` (``aput`` for ``_put_op``)."""
    name = op.__name__

    async def method(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
        bound: Callable[P, Op[T]] = getattr(self, name)
        return await self._arun(bound(*args, **kwargs))

    _named(method, op, "a" + name.removeprefix("_").removesuffix("_op"))
    return method


def twins(
    op: Callable[Concatenate[S, P], Op[T]],
) -> tuple[Callable[Concatenate[S, P], T], Callable[Concatenate[S, P], Coroutine[Any, Any, T]]]:
    """The sync and async methods of one operation: ``put, aput = twins(_put_op)``."""
    return synchronous(op), asynchronous(op)


def listing(
    args: Callable[Concatenate[S, P], Listing],
) -> tuple[
    Callable[Concatenate[S, P], Iterator[CheckpointTuple]],
    Callable[Concatenate[S, P], AsyncIterator[CheckpointTuple]],
]:
    """``list`` and ``alist``: the pages of each source of :meth:`Saver._list_sources_op`, up to the limit."""

    def sync(self: S, /, *a: P.args, **kw: P.kwargs) -> Iterator[CheckpointTuple]:
        q = args(self, *a, **kw)

        def items() -> Iterator[CheckpointTuple]:
            for source in self._run(self._list_sources_op(q)):
                yield from paged(lambda offset: self._run(self._list_page_op(q, source, offset)))  # noqa: B023

        return first(items(), q.limit)

    async def asynchronous(self: S, /, *a: P.args, **kw: P.kwargs) -> AsyncIterator[CheckpointTuple]:
        q = args(self, *a, **kw)

        async def items() -> AsyncIterator[CheckpointTuple]:
            for source in await self._arun(self._list_sources_op(q)):
                async for tup in apaged(lambda offset: self._arun(self._list_page_op(q, source, offset))):  # noqa: B023
                    yield tup

        async for tup in afirst(items(), q.limit):
            yield tup

    _named(sync, args, "list", "Iterator[CheckpointTuple]")
    _named(asynchronous, args, "alist", "AsyncIterator[CheckpointTuple]")
    return sync, asynchronous


class Saver(BaseCheckpointSaver[str]):
    """LangGraph's checkpointer API, once for both savers and both flavours.

    A saver implements the operations that raise ``NotImplementedError`` here (``_get_tuple_op``,
    ``_store_checkpoint_op``, ...) and :meth:`_run` (sync); :meth:`_arun` defaults to :meth:`_run`
    in a worker thread.
    """

    def close(self) -> None:
        """Release what the saver holds (each saver says what)."""

    async def aclose(self) -> None:
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def get_next_version(self, current: str | None, channel: None = None) -> str:
        return next_version(current)

    # -- drivers ----------------------------------------------------------------------------------

    def _run(self, op: Op[T]) -> T:
        raise NotImplementedError

    async def _arun(self, op: Op[T]) -> T:
        return await asyncio.to_thread(self._run, op)

    # -- LangGraph's methods: each pair is one operation, run by the sync or the async driver ---

    def _get_tuple_op(self, config: RunnableConfig) -> Op[CheckpointTuple | None]:
        """The checkpoint the config names, or its namespace's latest (the saver implements it)."""
        raise NotImplementedError

    get_tuple, aget_tuple = twins(_get_tuple_op)

    def _list_op(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Listing:
        return Listing(config, filter, before, limit)

    list, alist = listing(_list_op)

    def _list_sources_op(self, q: Listing) -> Op[Sequence[str | None]]:
        """What :meth:`_list_page_op` pages through one after the other (default: one listing)."""
        return result([None])

    def _list_page_op(
        self, q: Listing, source: str | None, offset: int
    ) -> Op[tuple[builtins.list[CheckpointTuple], bool]]:
        """One page (newest first) of a source's checkpoints, filtered; and whether more exist."""
        raise NotImplementedError

    def _put_op(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> Op[RunnableConfig]:
        d = self._dump_checkpoint(config, checkpoint, metadata, new_versions)
        yield from self._store_checkpoint_op(d)
        return checkpoint_config(d.addr.thread_id, d.addr.checkpoint_ns, d.checkpoint_id)

    put, aput = twins(_put_op)

    def _store_checkpoint_op(self, d: DumpedCheckpoint) -> Op[None]:
        """Write a serialized checkpoint and its new channel values."""
        raise NotImplementedError

    def _put_writes_op(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> Op[None]:
        yield from self._store_writes_op(self._dump_writes(config, writes, task_id, task_path))

    put_writes, aput_writes = twins(_put_writes_op)

    def _store_writes_op(self, w: DumpedWrites) -> Op[None]:
        """Write serialized pending writes (a regular one is never replaced, a special one is)."""
        raise NotImplementedError

    def _delete_thread_op(self, thread_id: str) -> Op[None]:
        """Delete every checkpoint, value and write of a thread."""
        raise NotImplementedError

    delete_thread, adelete_thread = twins(_delete_thread_op)

    def _delete_for_runs_op(self, run_ids: Sequence[str]) -> Op[None]:
        """Delete the checkpoints (and their writes) that these runs made, in every thread."""
        raise NotImplementedError

    delete_for_runs, adelete_for_runs = twins(_delete_for_runs_op)

    def _copy_thread_op(self, source_thread_id: str, target_thread_id: str) -> Op[None]:
        """Copy a thread's checkpoints, values and writes to another thread id."""
        raise NotImplementedError

    copy_thread, acopy_thread = twins(_copy_thread_op)

    def _keep_latest_op(self, thread_id: str) -> Op[None]:
        """Prune one thread to its latest checkpoint per namespace (DeltaChannel chains kept)."""
        raise NotImplementedError

    def _prune_op(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> Op[None]:
        check_strategy(strategy)
        for thread_id in thread_ids:
            tid = thread_id_of(thread_id)
            yield from self._delete_thread_op(tid) if strategy == "delete" else self._keep_latest_op(tid)

    prune, aprune = twins(_prune_op)

    # -- serialization ----------------------------------------------------------------------------

    def _dump_checkpoint(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> DumpedCheckpoint:
        addr = address(config)
        cid = check_part(str(checkpoint["id"]), "checkpoint id")
        c = checkpoint.copy()
        values: dict[str, Any] = c.pop("channel_values")  # type: ignore[misc]
        md = get_checkpoint_metadata(config, metadata)
        ctyped = self.serde.dumps_typed(c)
        mtyped = self.serde.dumps_typed(md)
        blobs: list[tuple[str, str, str, bytes | None]] = []
        for channel, version in new_versions.items():
            btype, bdata = self.serde.dumps_typed(values[channel]) if channel in values else ("empty", None)
            blobs.append((channel, version_text(version), btype, bdata))
        return DumpedCheckpoint(addr, cid, md, ctyped, mtyped, blobs)

    def _dump_writes(
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str, task_path: str
    ) -> DumpedWrites:
        """The address, checkpoint id and (index, channel, type, data) of each write for put_writes."""
        addr = address(config)
        if addr.checkpoint_id is None:
            raise ValueError("put_writes needs config['configurable']['checkpoint_id']")
        dumped = []
        for idx, (channel, value) in enumerate(writes):
            wtype, wdata = self.serde.dumps_typed(value)
            dumped.append((WRITES_IDX_MAP.get(channel, idx), channel, wtype, wdata))
        return DumpedWrites(addr, addr.checkpoint_id, dumped, str(task_id), task_path)
