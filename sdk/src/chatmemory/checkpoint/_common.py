"""What the Redis and SQL checkpointers share: config parsing, record framing, filters, versions,
paging, (de)serialization and their base class :class:`Saver`.

Used only by :mod:`chatmemory.checkpoint._redis_saver` and :mod:`chatmemory.checkpoint._sql_saver`.
Nothing here does I/O.
"""

from __future__ import annotations

import random
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, Final, Self, TypeVar

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


class Saver(BaseCheckpointSaver[str]):
    """What both savers do alike: context managers, versions, serializing puts and writes."""

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
        self, config: RunnableConfig, writes: Sequence[tuple[str, Any]]
    ) -> tuple[Address, str, list[tuple[int, str, str, bytes]]]:
        """The address, checkpoint id and (index, channel, type, data) of each write for put_writes."""
        addr = address(config)
        if addr.checkpoint_id is None:
            raise ValueError("put_writes needs config['configurable']['checkpoint_id']")
        dumped = []
        for idx, (channel, value) in enumerate(writes):
            wtype, wdata = self.serde.dumps_typed(value)
            dumped.append((WRITES_IDX_MAP.get(channel, idx), channel, wtype, wdata))
        return addr, addr.checkpoint_id, dumped
