"""What the Redis and SQL checkpointers share: config parsing, record framing, filters, versions.

Used only by :mod:`chatmemory.checkpoint.redis` and :mod:`chatmemory.checkpoint.sql`. Nothing here
does I/O.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    CheckpointMetadata,
    PendingWrite,
    get_checkpoint_id,
    writes_sort_key,
)

#: Separator inside composite Redis field names and members; refused inside ids and namespaces.
SEP: Final = "\x00"
_LEN: Final = struct.Struct(">I")


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
