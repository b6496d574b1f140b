"""Chat history on Kafka: one record per message, keyed by session id, read back in full.

Who calls it: applications, directly (``chatmemory.KafkaChatMessageHistory(session_id,
bootstrap_servers)``, a drop-in for ``langchain_community``'s class of the same name), and
:mod:`chatmemory.memory` through :class:`KafkaConnector` (``ChatMemory.history(session_id)`` for a
binding of kind ``kafka``).

Two layouts:

- **Shared topic** (``topic=...``, or a binding): one topic per memory; every record's key is the
  session id, so a session lives in one partition and keeps its order. The partition is Java's
  ``murmur2(key) % partitions`` (librdkafka's ``murmur2_random``), the mapping every Kafka client
  uses. ``clear()`` never deletes the shared topic: it appends a *clear marker* (a record for the
  session with a ``chatmemory-clear`` header and no value) and reads return what follows the last
  marker. The topic's ``retention.ms`` (set by the operator) is the TTL.
- **Seed layout** (no ``topic``): the topic is the session id, created on first use with
  ``partition`` partitions, ``replication_factor`` and ``retention.ms = ttl_ms``, as the seed class
  does; ``clear()`` deletes it. Records are keyed too, so the order holds; unkeyed records written
  by the seed class are still read (merged by timestamp across partitions).

Reading (``messages``) is the session's **complete** ordered history on every call: the session's
partition is read with ``assign()`` from the low to the high watermark (``get_watermark_offsets``),
filtered by key, with no consumer group state. On a shared topic a connector remembers what it
read of each recent session (the log is append-only), so the next read fetches only the records
written since; retention and a recreated topic are detected from the watermarks. The seed's cursor
methods (``messages_from_beginning``, ``messages_from_latest``, ``messages_from_last_consumed``)
keep their meaning with the consumer group ``{consumer_group_prefix}{session_id}`` and explicit
offset commits.

Writing: an idempotent producer with ``acks=all``; ``add_messages`` waits for every delivery report
and raises :class:`~chatmemory.errors.BackendError` on a failure or after ``flush_timeout_seconds``.
One producer (with a delivery thread), a small pool of reader consumers and, for the seed layout,
an AdminClient serve every session of a connector.

Async: ``aadd_messages`` (and ``aclear`` on a shared topic) await delivery reports directly (no
thread is held while waiting). Reads go through ``asyncio.to_thread``: ``confluent_kafka.aio``
exists in confluent-kafka 2.16, but its consumer is itself a thread-pool wrapper around the blocking
consumer, bound to one event loop, so it brings nothing over a plain thread here.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import queue
import re
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage

from chatmemory._codec import decode_all, encode
from chatmemory._connect import close_idle, kafka_config, require
from chatmemory.contract import BackendKind, Binding
from chatmemory.errors import BackendError, BindingError

__all__ = ["CLEAR_HEADER", "KafkaChatMessageHistory", "KafkaConnector", "murmur2", "partition_for"]

DEFAULT_TTL_MS: Final = 604800000  # 7 days, the seed's default
DEFAULT_REPLICATION_FACTOR: Final = 1
DEFAULT_PARTITION: Final = 3
#: Header of a clear marker record (its value is empty).
CLEAR_HEADER: Final = "chatmemory-clear"
#: Seconds a metadata, watermark or admin request may take before it fails.
REQUEST_TIMEOUT: Final = 10.0
#: Idle reader consumers kept per connector.
READER_POOL: Final = 4
#: Sessions, and records in all, a connector keeps between reads (least recently read go first).
SESSION_CACHE: Final = 1024
SESSION_CACHE_RECORDS: Final = 50_000
_LIBRDKAFKA_LOG: Final = logging.getLogger("chatmemory.kafka.librdkafka")
_TOPIC_RE: Final = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
#: Producer settings the history relies on: never overridden by ``client_config``.
_PRODUCER_FIXED: Final[dict[str, Any]] = {
    "enable.idempotence": True,
    "acks": "all",
    "partitioner": "murmur2_random",
}
#: linger.ms 1: the messages of one add_messages call leave in one Produce request (one round
#: trip); with 0 the first message often goes alone (measured: 1.3 requests per turn).
_PRODUCER_DEFAULTS: Final[dict[str, Any]] = {"linger.ms": 1, "message.timeout.ms": 30000}
_CONSUMER_DEFAULTS: Final[dict[str, Any]] = {
    "fetch.wait.max.ms": 10,  # an idle partition answers fast: reads end at the high watermark
    # a cold read scans a whole partition: fewer, larger fetches (librdkafka's default is 1 MiB)
    "max.partition.fetch.bytes": 16 << 20,
    "auto.offset.reset": "earliest",
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "enable.partition.eof": True,
}
_CALLBACK_KEYS: Final = frozenset({"logger", "error_cb", "throttle_cb", "stats_cb", "oauth_cb"})
_PRODUCER_ONLY: Final = ("linger.ms", "message.timeout.ms", "batch.size", "compression.type", "queue.")


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (``org.apache.kafka.common.utils.Utils.murmur2``) as a signed 32-bit int."""
    m = 0x5BD1E995
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    n4 = length // 4
    for i in range(n4):
        k = int.from_bytes(data[i * 4 : i * 4 + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> 24
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
    tail = data[n4 * 4 :]
    if len(tail) == 3:
        h ^= tail[2] << 16
    if len(tail) >= 2:
        h ^= tail[1] << 8
    if tail:
        h ^= tail[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: bytes, partitions: int) -> int:
    """The partition of a keyed record: Java's default partitioner and librdkafka's murmur2_random."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def client_settings(client_config: dict[str, Any]) -> dict[str, Any]:
    """librdkafka settings from keyword arguments: ``security_protocol`` becomes ``security.protocol``.

    Keys that already contain a dot and Python callbacks (``error_cb``, ``logger``, ...) are kept.
    """
    out: dict[str, Any] = {}
    for key, value in client_config.items():
        name = key if "." in key or key in _CALLBACK_KEYS else key.replace("_", ".")
        out[name] = value
    return out


@dataclass(frozen=True)
class Record:
    """What a read keeps of one Kafka record."""

    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    clear: bool


def fold(records: Sequence[Record]) -> list[bytes]:
    """Message values in order, starting after the last clear marker."""
    values: list[bytes] = []
    for r in records:
        if r.clear:
            values.clear()
        elif r.value is not None:
            values.append(r.value)
    return values


def merge_partitions(per_partition: dict[int, list[Record]]) -> list[Record]:
    """One sequence from several partitions: each partition's order kept, interleaved by timestamp."""
    if len(per_partition) == 1:
        return next(iter(per_partition.values()))
    return list(heapq.merge(*per_partition.values(), key=lambda r: (r.timestamp, r.partition)))


def _is_clear(headers: list[tuple[str, bytes | None]] | None) -> bool:
    return bool(headers) and any(k == CLEAR_HEADER for k, _ in headers or ())


class _SessionCache:
    """What was read of one session on a shared topic: its records from ``start`` to ``next``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.start = -1
        self.next = -1
        self.records: list[Record] = []


class _Delivery:
    """Delivery reports of one ``add_messages`` call: a threading event and, in async, a future."""

    def __init__(self, count: int, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._remaining = count
        self._lock = threading.Lock()
        self.errors: list[str] = []
        self.done = threading.Event()
        self._loop = loop
        self.future: asyncio.Future[None] | None = loop.create_future() if loop is not None else None

    def __call__(self, err: Any, _msg: Any) -> None:  # runs on the delivery thread
        with self._lock:
            if err is not None:
                self.errors.append(err.str() if hasattr(err, "str") else str(err))
            self._remaining -= 1
            finished = self._remaining == 0
        if finished:
            self.done.set()
            if self._loop is not None and self.future is not None:
                with contextlib.suppress(RuntimeError):  # the loop may be closed already
                    self._loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_result(None)


class _Clients:
    """The Kafka clients of one memory (or of one directly built history), created on first use.

    Thread-safe: the producer is shared (librdkafka's producer is thread-safe) with one thread
    serving delivery reports; reader consumers come from a small pool, one per concurrent read.
    """

    def __init__(
        self,
        conf: dict[str, Any],
        *,
        group_prefix: str,
        may_create: bool,
        request_timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        self._ck = require("confluent_kafka", "kafka")
        # ours reports the reason; librdkafka's own log lines go to Python logging, not stderr
        self._conf = {"logger": _LIBRDKAFKA_LOG, **{k: v for k, v in conf.items() if k != "error_cb"}}
        self.group_prefix = group_prefix
        self.may_create = may_create
        self.request_timeout = request_timeout
        self.where = f"kafka {conf.get('bootstrap.servers', '?')}"
        self._lock = threading.Lock()
        self._producer: Any = None
        self._poller: threading.Thread | None = None
        self._admin: Any = None
        self._readers: queue.LifoQueue[Any] = queue.LifoQueue(maxsize=READER_POOL)
        self._partitions: dict[str, int] = {}
        self._sessions: OrderedDict[tuple[str, int, bytes], _SessionCache] = OrderedDict()
        self._stop = threading.Event()
        self._closed = False
        self._last_error: list[str] = []
        #: librdkafka reported bad credentials: waiting longer will not help
        self.auth_failed = False

    # -- error reporting ----------------------------------------------------------------------------

    def _on_error(self, err: Any) -> None:
        self._last_error[:] = [err.str() if hasattr(err, "str") else str(err)]
        code = err.code() if hasattr(err, "code") else None
        ck = self._ck
        self.auth_failed = code in (ck.KafkaError._AUTHENTICATION, ck.KafkaError.SASL_AUTHENTICATION_FAILED)

    def fail(self, what: str, e: BaseException | str) -> BackendError:
        """A BackendError naming the cluster, the operation and librdkafka's last reason."""
        text = _text(e) if isinstance(e, BaseException) else e
        reason = self._last_error.pop() if self._last_error else ""  # used once: it may be stale later
        if reason and reason not in text:
            text = f"{text} ({reason})"
        return BackendError(f"{self.where}: {what}: {text}")

    def _check_open(self) -> None:
        if self._closed:
            raise BackendError(f"{self.where}: the history's Kafka clients are closed")

    # -- clients ----------------------------------------------------------------------------------

    def producer(self) -> Any:
        self._check_open()
        with self._lock:
            if self._producer is None:
                conf = {**_PRODUCER_DEFAULTS, **self._conf, **_PRODUCER_FIXED, "error_cb": self._on_error}
                try:
                    self._producer = self._ck.Producer(conf)
                except (self._ck.KafkaException, ValueError, TypeError) as e:
                    raise self.fail("bad producer settings", e) from e
                self._poller = threading.Thread(
                    target=self._serve, args=(self._producer,), name="chatmemory-kafka-delivery", daemon=True
                )
                self._poller.start()
            return self._producer

    def _serve(self, producer: Any) -> None:
        while not self._stop.is_set():
            producer.poll(0.05)

    def admin(self) -> Any:
        self._check_open()
        with self._lock:
            if self._admin is None:
                from confluent_kafka.admin import AdminClient

                conf: dict[str, Any] = {
                    k: v for k, v in self._conf.items() if not k.startswith(_PRODUCER_ONLY)
                }
                conf["error_cb"] = self._on_error
                self._admin = AdminClient(conf)
            return self._admin

    def consumer(self, group_id: str, **extra: Any) -> Any:
        conf = {k: v for k, v in self._conf.items() if not k.startswith(_PRODUCER_ONLY)}
        try:
            return self._ck.Consumer(
                {**conf, **_CONSUMER_DEFAULTS, **extra, "group.id": group_id, "error_cb": self._on_error}
            )
        except (self._ck.KafkaException, ValueError, TypeError) as e:
            raise self.fail("bad consumer settings", e) from e

    @contextlib.contextmanager
    def reader(self) -> Iterator[Any]:
        """A pooled consumer that only ever uses ``assign()`` (no group join, no commits)."""
        self._check_open()
        try:
            c = self._readers.get_nowait()
        except queue.Empty:
            c = self.consumer(f"{self.group_prefix}chatmemory-reader")
        ok = False
        try:
            yield c
            ok = True
        finally:
            if ok and not self._closed:
                try:
                    self._readers.put_nowait(c)
                except queue.Full:
                    c.close()
            else:
                with contextlib.suppress(Exception):
                    c.close()

    # -- topics -----------------------------------------------------------------------------------

    def partitions(self, topic: str, *, create: tuple[int, int, int] | None = None) -> int:
        """The topic's partition count (cached). ``create``: (partitions, replication, retention.ms)."""
        cached = self._partitions.get(topic)
        if cached is not None:
            return cached
        count = self._describe(topic)
        if count is None:
            if create is None or not self.may_create:
                raise BackendError(
                    f"{self.where}: topic {topic!r} does not exist (the ChatMemory's operator creates it: "
                    "is the memory ready?)"
                )
            count = self._create(topic, *create)
        self._partitions[topic] = count
        return count

    def forget(self, topic: str) -> None:
        self._partitions.pop(topic, None)

    def _describe(self, topic: str) -> int | None:
        ck = self._ck
        deadline = time.monotonic() + self.request_timeout
        self.auth_failed = False
        with self.reader() as c:
            while True:
                # short slices: bad credentials fail at once instead of after the whole timeout
                try:
                    md = c.list_topics(topic, timeout=min(1.0, max(0.1, deadline - time.monotonic())))
                    break
                except ck.KafkaException as e:
                    c.poll(0)  # serve error_cb: librdkafka's reason (refused, bad credentials)
                    if self.auth_failed or time.monotonic() >= deadline:
                        raise self.fail(f"reading topic {topic!r} metadata", e) from e
        t = md.topics.get(topic)
        if t is None:
            return None
        if t.error is not None:
            if t.error.code() in (ck.KafkaError.UNKNOWN_TOPIC_OR_PART, ck.KafkaError._UNKNOWN_TOPIC):
                return None
            raise self.fail(f"topic {topic!r}", t.error.str())
        return len(t.partitions) or None

    def _create(self, topic: str, partitions: int, replication: int, retention_ms: int) -> int:
        from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]  # re-exported

        ck = self._ck
        new = NewTopic(
            topic,
            num_partitions=partitions,
            replication_factor=replication,
            config={"retention.ms": str(retention_ms)},
        )
        deadline = time.monotonic() + self.request_timeout
        while True:
            fut = self.admin().create_topics(
                [new], operation_timeout=self.request_timeout, request_timeout=self.request_timeout
            )[topic]
            try:
                fut.result(timeout=self.request_timeout + 5)
                break
            except ck.KafkaException as e:
                code = e.args[0].code() if e.args and hasattr(e.args[0], "code") else None
                if code != ck.KafkaError.TOPIC_ALREADY_EXISTS:
                    raise self.fail(f"creating topic {topic!r}", e) from e
                existing = self._describe(topic)
                if existing is not None:
                    return existing
                # still being deleted (a clear() just before): try again shortly
                if time.monotonic() > deadline:
                    raise self.fail(f"creating topic {topic!r}", e) from e
                time.sleep(0.1)
        # wait until the new topic's leaders are known, so the first read or write finds it
        while time.monotonic() < deadline:
            if self._describe(topic) is not None:
                break
            time.sleep(0.05)
        return partitions

    def delete_topic(self, topic: str) -> None:
        ck = self._ck
        fut = self.admin().delete_topics([topic], operation_timeout=self.request_timeout)[topic]
        self.forget(topic)
        try:
            fut.result(timeout=self.request_timeout + 5)
        except ck.KafkaException as e:
            code = e.args[0].code() if e.args and hasattr(e.args[0], "code") else None
            if code != ck.KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise self.fail(f"deleting topic {topic!r}", e) from e

    # -- writing ----------------------------------------------------------------------------------

    def produce(
        self,
        topic: str,
        partition: int,
        key: bytes,
        values: Sequence[bytes | None],
        *,
        headers: list[tuple[str, bytes]] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> _Delivery:
        """Queue records (in order) to one partition; the returned delivery tracks their reports."""
        producer = self.producer()
        delivery = _Delivery(len(values), loop)
        for i, value in enumerate(values):
            try:
                producer.produce(
                    topic, value=value, key=key, partition=partition, headers=headers, on_delivery=delivery
                )
            except (BufferError, self._ck.KafkaException) as e:
                raise self.fail(
                    f"queueing message {i + 1} of {len(values)} to {topic!r}"
                    + (" (the earlier ones may still be delivered)" if i else ""),
                    e,
                ) from e
        return delivery

    def check(self, delivery: _Delivery, topic: str, timeout: float | None) -> None:
        if not delivery.done.wait(timeout):
            raise self.fail(
                f"writing to {topic!r}",
                f"not all messages were acknowledged within {timeout} s (they may still be delivered)",
            )
        if delivery.errors:
            raise self.fail(f"writing to {topic!r}", "delivery failed: " + "; ".join(delivery.errors))

    # -- reading ----------------------------------------------------------------------------------

    def watermarks(self, c: Any, topic: str, partitions: Sequence[int]) -> dict[int, tuple[int, int]]:
        TopicPartition = self._ck.TopicPartition
        out: dict[int, tuple[int, int]] = {}
        for p in partitions:
            try:
                low, high = c.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=self.request_timeout, cached=False
                )
            except self._ck.KafkaException as e:
                c.poll(0)
                raise self.fail(f"reading the offsets of {topic!r} [{p}]", e) from e
            out[p] = (low, high)
        return out

    def read_to_end(
        self, topic: str, partitions: Sequence[int], match: Callable[[bytes | None], bool]
    ) -> list[Record]:
        """Every matching record of ``partitions`` up to their current high watermarks, in order."""
        with self.reader() as c:
            ranges = {p: lh for p, lh in self.watermarks(c, topic, partitions).items() if lh[1] > lh[0]}
            per_partition = self._fetch(c, topic, ranges, match) if ranges else {}
        return merge_partitions({p: rs for p, rs in per_partition.items() if rs} or {0: []})

    def read_session(self, topic: str, partition: int, key: bytes) -> list[Record]:
        """A session's records on a shared topic: only what is new since the last read is fetched.

        The log is append-only, so the records read before stay valid; they are pruned when
        retention moves the low watermark past them, and dropped when the partition's end moves
        backwards (the topic was recreated). Reads of one session are serialized; others run freely.
        """
        entry = self._session_cache(topic, partition, key)
        with entry.lock, self.reader() as c:
            low, high = self.watermarks(c, topic, [partition])[partition]
            if entry.next < 0 or high < entry.next:
                entry.start, entry.next, entry.records = low, low, []
            if low > entry.start:
                entry.records = [r for r in entry.records if r.offset >= low]
                entry.start, entry.next = low, max(entry.next, low)
            if high > entry.next:
                new = self._fetch_session(c, topic, partition, (entry.next, high), key)
                records = entry.records + new
                cleared = [i for i, r in enumerate(records) if r.clear]
                entry.records = records[cleared[-1] :] if cleared else records  # fold() applies the marker
                entry.next = high
            result = list(entry.records)
        self._trim_cache()
        return result

    def _trim_cache(self) -> None:
        with self._lock:
            total = sum(len(e.records) for e in self._sessions.values())
            while len(self._sessions) > 1 and (
                total > SESSION_CACHE_RECORDS or len(self._sessions) > SESSION_CACHE
            ):
                _ident, dropped = self._sessions.popitem(last=False)
                total -= len(dropped.records)

    def _session_cache(self, topic: str, partition: int, key: bytes) -> _SessionCache:
        with self._lock:
            ident = (topic, partition, key)
            entry = self._sessions.get(ident)
            if entry is None:
                entry = self._sessions[ident] = _SessionCache()
            else:
                self._sessions.move_to_end(ident)
            return entry

    def _fetch_session(
        self, c: Any, topic: str, partition: int, offsets: tuple[int, int], key: bytes
    ) -> list[Record]:
        """One session's records of one partition in ``[first, end)``: :meth:`_fetch`'s loop cut to
        two calls per record (error, key), since a cold read scans every session's records."""
        ck = self._ck
        eof = ck.KafkaError._PARTITION_EOF
        first, end = offsets
        out: list[Record] = []
        c.assign([ck.TopicPartition(topic, partition, first)])
        try:
            position = first
            deadline = time.monotonic() + max(self.request_timeout, 30.0)
            while position < end:
                if time.monotonic() > deadline:
                    raise self.fail(f"reading {topic!r}", "timed out before the end of the partition")
                batch = c.consume(num_messages=max(1, min(end - position, 10_000)), timeout=0.5)
                last = -1
                for m in batch:
                    err = m.error()
                    if err is not None:
                        if err.code() == eof:
                            last = max(last, end - 1)  # nothing more (gaps: transaction markers)
                            continue
                        raise self.fail(f"reading {topic!r} [{partition}]", err.str())
                    if m.key() == key:
                        offset = m.offset()
                        if offset < end:
                            out.append(_record(m, key))
                if batch and last < 0:
                    last = batch[-1].offset()
                position = max(position, last + 1)
        finally:
            with contextlib.suppress(Exception):
                c.unassign()
        return out

    def _fetch(
        self,
        c: Any,
        topic: str,
        ranges: dict[int, tuple[int, int]],
        match: Callable[[bytes | None], bool],
    ) -> dict[int, list[Record]]:
        """Matching records of each partition from ``ranges[p][0]`` up to (excluding) ``ranges[p][1]``."""
        ck = self._ck
        out: dict[int, list[Record]] = {p: [] for p in ranges}
        c.assign([ck.TopicPartition(topic, p, first) for p, (first, _end) in ranges.items()])
        try:
            pending = set(ranges)
            next_offset = {p: first for p, (first, _end) in ranges.items()}
            deadline = time.monotonic() + max(self.request_timeout, 30.0)
            while pending:
                if time.monotonic() > deadline:
                    raise self.fail(f"reading {topic!r}", "timed out before the end of the partition")
                # ask for exactly what is left: consume() returns as soon as that many arrived
                left = sum(ranges[p][1] - next_offset[p] for p in pending)
                for m in c.consume(num_messages=max(1, min(left, 10_000)), timeout=0.5):
                    p = m.partition()
                    err = m.error()
                    if err is not None:
                        if err.code() == ck.KafkaError._PARTITION_EOF:
                            pending.discard(p)
                            continue
                        raise self.fail(f"reading {topic!r} [{p}]", err.str())
                    if p not in pending:
                        continue
                    offset = m.offset()
                    end = ranges[p][1]
                    if offset >= end:
                        pending.discard(p)
                        continue
                    next_offset[p] = offset + 1
                    key = m.key()
                    if match(key):
                        out[p].append(_record(m, key))
                    if offset >= end - 1:
                        pending.discard(p)
        finally:
            with contextlib.suppress(Exception):
                c.unassign()
        return out

    def close(self, timeout: float = 5.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout)
        if self._producer is not None:
            self._producer.flush(timeout)
        close_idle(self._readers)


def _record(m: Any, key: bytes | None) -> Record:
    return Record(m.partition(), m.offset(), m.timestamp()[1], key, m.value(), _is_clear(m.headers()))


def _text(e: BaseException) -> str:
    err = e.args[0] if e.args else None
    if err is not None and hasattr(err, "str"):
        return str(err.str())
    return str(e)


class KafkaChatMessageHistory(BaseChatMessageHistory):
    """A session's messages in Kafka: the seed class's API, with complete ordered reads.

    Args:
        session_id: the chat session. Without ``topic`` it is also the topic name
            (``[A-Za-z0-9._-]``, at most 249 characters), as in the seed class.
        bootstrap_servers: ``host:port[,host:port...]``.
        ttl_ms: ``retention.ms`` of a topic this history creates (-1: keep forever).
        replication_factor: replication factor of a topic this history creates.
        partition: partition count of a topic this history creates.
        topic: a shared topic for many sessions (the session id becomes the record key).
        **client_config: librdkafka settings for every client, either dotted
            (``**{"security.protocol": "SASL_SSL"}``) or with underscores
            (``security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username=...``).
            Also ``consumer_group_prefix`` (prefix of the cursor methods' consumer groups) and
            ``max_messages`` (``messages`` returns only the newest N).
    """

    def __init__(
        self,
        session_id: str,
        bootstrap_servers: str,
        ttl_ms: int = DEFAULT_TTL_MS,
        replication_factor: int = DEFAULT_REPLICATION_FACTOR,
        partition: int = DEFAULT_PARTITION,
        *,
        topic: str | None = None,
        **client_config: Any,
    ) -> None:
        group_prefix = str(client_config.pop("consumer_group_prefix", "") or "")
        max_messages = client_config.pop("max_messages", None)
        conf = {**client_settings(client_config), "bootstrap.servers": bootstrap_servers}
        clients = _Clients(conf, group_prefix=group_prefix, may_create=True)
        self._setup(session_id, clients, topic, (partition, replication_factor, ttl_ms), max_messages)
        self._owns_clients = True
        self._finalizer = weakref.finalize(self, clients.close)
        self.bootstrap_servers = bootstrap_servers

    @classmethod
    def _shared(
        cls,
        session_id: str,
        clients: _Clients,
        topic: str,
        max_messages: int | None,
        create: tuple[int, int, int] | None = None,
        past_partition_counts: Sequence[int] = (),
    ) -> KafkaChatMessageHistory:
        """A history on a connector's clients (no I/O until used; a topic only with ``create``).

        ``past_partition_counts``: the counts the topic had before it grew (the binding's
        ``partition_history``); the session's older records stay in the partitions those mapped to.
        """
        self = cls.__new__(cls)
        self._setup(session_id, clients, topic, create, max_messages)
        self._past_partitions = frozenset(partition_for(self._key, n) for n in past_partition_counts)
        self._owns_clients = False
        self.bootstrap_servers = str(clients.where.removeprefix("kafka "))
        return self

    def _setup(
        self,
        session_id: str,
        clients: _Clients,
        topic: str | None,
        create: tuple[int, int, int] | None,
        max_messages: int | None,
    ) -> None:
        if not isinstance(session_id, str) or not session_id:
            raise ValueError("session_id must be a non-empty string")
        name = topic or session_id
        if not _TOPIC_RE.match(name) or name in (".", ".."):
            what = "topic" if topic else "session id (the seed layout uses it as the topic name)"
            raise ValueError(
                f"{what} {name!r} is not a valid Kafka topic name: use 1-249 characters from "
                "[A-Za-z0-9._-], or pass topic= to share one topic between sessions"
            )
        if max_messages is not None and int(max_messages) < 1:
            raise ValueError(f"max_messages must be at least 1 (got {max_messages})")
        self.session_id = session_id
        self.topic = name
        self.shared_topic = topic is not None
        self._clients = clients
        self._create = create
        self._key = session_id.encode("utf-8")
        self._past_partitions: frozenset[int] = frozenset()
        self.max_messages = int(max_messages) if max_messages is not None else None
        self.consumer_group = f"{clients.group_prefix}{session_id}"

    # -- layout -----------------------------------------------------------------------------------

    def _partition_count(self) -> int:
        return self._clients.partitions(self.topic, create=self._create)

    def _my_partition(self) -> int:
        return partition_for(self._key, self._partition_count())

    def _read_partitions(self) -> list[int]:
        if self.shared_topic:
            return [self._my_partition()]
        return list(range(self._partition_count()))  # the seed wrote unkeyed records anywhere

    def _matches(self, key: bytes | None) -> bool:
        return key == self._key or (key is None and not self.shared_topic)

    # -- reading ----------------------------------------------------------------------------------

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The session's complete history in order (after its last ``clear()``), on every call."""
        if self.shared_topic:
            partitions = self._past_partitions | {self._my_partition()}
            records = merge_partitions(
                {p: self._clients.read_session(self.topic, p, self._key) for p in sorted(partitions)}
            )
        else:
            records = self._clients.read_to_end(self.topic, self._read_partitions(), self._matches)
        values = fold(records)
        if self.max_messages is not None:
            values = values[-self.max_messages :]
        return decode_all(values)

    async def aget_messages(self) -> list[BaseMessage]:
        return await asyncio.to_thread(lambda: self.messages)

    def messages_from_beginning(
        self, max_message_count: int | None = 5, max_time_sec: float | None = 5.0
    ) -> list[BaseMessage]:
        """Up to ``max_message_count`` messages from the start of the session (seed semantics).

        The session's consumer group is moved past what is returned. Unlike the seed, the call
        returns as soon as it reaches the end of the session instead of waiting ``max_time_sec``.
        """
        return self._cursor_read("beginning", max_message_count, max_time_sec)

    def messages_from_latest(
        self, max_message_count: int | None = 5, max_time_sec: float | None = 5.0
    ) -> list[BaseMessage]:
        """Messages written after this call starts, waiting up to ``max_time_sec`` for them."""
        return self._cursor_read("latest", max_message_count, max_time_sec)

    def messages_from_last_consumed(
        self, max_message_count: int | None = 5, max_time_sec: float | None = 5.0
    ) -> list[BaseMessage]:
        """Messages after the consumer group's committed position (from the start when it has none)."""
        return self._cursor_read("last_consumed", max_message_count, max_time_sec)

    def _cursor_read(self, start: str, max_count: int | None, max_time: float | None) -> list[BaseMessage]:
        clients = self._clients
        ck = clients._ck
        TopicPartition = ck.TopicPartition
        partitions = self._read_partitions()
        c = clients.consumer(self.consumer_group)
        try:
            marks = clients.watermarks(c, self.topic, partitions)
            positions: dict[int, int] = {}
            if start == "beginning":
                positions = {p: low for p, (low, _h) in marks.items()}
            elif start == "latest":
                positions = {p: high for p, (_l, high) in marks.items()}
            else:
                try:
                    committed = c.committed(
                        [TopicPartition(self.topic, p) for p in partitions], timeout=clients.request_timeout
                    )
                except ck.KafkaException as e:
                    c.poll(0)
                    raise clients.fail(f"reading consumer group {self.consumer_group!r}", e) from e
                for tp in committed:
                    low, high = marks[tp.partition]
                    positions[tp.partition] = min(max(tp.offset, low), high) if tp.offset >= 0 else low
            stop_at_end = start != "latest"
            pending = {p for p in partitions if not (stop_at_end and positions[p] >= marks[p][1])}
            c.assign([TopicPartition(self.topic, p, positions[p]) for p in partitions])
            collected: list[Record] = []
            count = 0
            deadline = None if max_time is None else time.monotonic() + max_time
            while pending and (max_count is None or count < max_count):
                wait = 0.2 if deadline is None else min(0.2, deadline - time.monotonic())
                if wait <= 0:
                    break
                m = c.poll(wait)
                if m is None:
                    continue
                p = m.partition()
                err = m.error()
                if err is not None:
                    if err.code() == ck.KafkaError._PARTITION_EOF:
                        if stop_at_end:
                            pending.discard(p)
                        continue
                    raise clients.fail(f"reading {self.topic!r} [{p}]", err.str())
                positions[p] = m.offset() + 1
                key = m.key()
                if self._matches(key):
                    rec = _record(m, key)
                    collected.append(rec)
                    if rec.clear:
                        count = 0
                    elif rec.value is not None:
                        count += 1
                if stop_at_end and positions[p] >= marks[p][1]:
                    pending.discard(p)
            commits = [TopicPartition(self.topic, p, off) for p, off in positions.items() if off >= 0]
            if commits:
                try:
                    c.commit(offsets=commits, asynchronous=False)
                except ck.KafkaException as e:
                    raise clients.fail(f"committing consumer group {self.consumer_group!r}", e) from e
        finally:
            with contextlib.suppress(Exception):
                c.close()
        return decode_all(fold(collected))

    # -- writing ----------------------------------------------------------------------------------

    def add_message(self, message: BaseMessage) -> None:
        """Append one message (waits for its acknowledgement)."""
        self.add_messages([message])

    def add_messages(self, messages: Sequence[BaseMessage], flush_timeout_seconds: float = 5.0) -> None:
        """Append messages in order and wait until Kafka acknowledged all of them.

        Raises:
            BackendError: a delivery failed, or not every message was acknowledged within
                ``flush_timeout_seconds`` (the seed only logged a warning).
        """
        if not messages:
            return
        values = [encode(m).encode("utf-8") for m in messages]
        delivery = self._clients.produce(self.topic, self._my_partition(), self._key, values)
        self._clients.check(delivery, self.topic, flush_timeout_seconds)

    async def aadd_messages(
        self, messages: Sequence[BaseMessage], flush_timeout_seconds: float = 5.0
    ) -> None:
        """Async ``add_messages``: awaits the delivery reports without holding a thread."""
        if not messages:
            return
        values: list[bytes | None] = [encode(m).encode("utf-8") for m in messages]
        await self._aproduce(values, None, flush_timeout_seconds)

    async def _aproduce(
        self, values: list[bytes | None], headers: list[tuple[str, bytes]] | None, timeout: float
    ) -> None:
        if self.topic not in self._clients._partitions:
            await asyncio.to_thread(self._partition_count)  # metadata (and topic creation) once
        loop = asyncio.get_running_loop()
        delivery = self._clients.produce(
            self.topic, self._my_partition(), self._key, values, headers=headers, loop=loop
        )
        assert delivery.future is not None
        with contextlib.suppress(TimeoutError):  # check() below raises, naming the timeout
            await asyncio.wait_for(asyncio.shield(delivery.future), timeout)
        self._clients.check(delivery, self.topic, 0)

    def clear(self) -> None:
        """Forget the session: a clear marker on a shared topic; the seed layout deletes its topic."""
        if self.shared_topic:
            delivery = self._clients.produce(
                self.topic, self._my_partition(), self._key, [None], headers=[(CLEAR_HEADER, b"1")]
            )
            self._clients.check(delivery, self.topic, REQUEST_TIMEOUT)
        else:
            self._clients.delete_topic(self.topic)

    async def aclear(self) -> None:
        if self.shared_topic:
            await self._aproduce([None], [(CLEAR_HEADER, b"1")], REQUEST_TIMEOUT)
        else:
            await asyncio.to_thread(self.clear)

    def close(self) -> None:
        """Release the history's own clients (a connector's shared clients stay open)."""
        if self._owns_clients:
            self._finalizer()


class KafkaConnector:
    """One Kafka memory's clients (producer, reader consumers), shared by all its sessions.

    Built by :func:`chatmemory.histories.connector_for` from a binding of kind ``kafka``. Creates no
    topic: the operator made it, with ``retention.ms`` from the memory's TTL. Options:
    ``create=True`` (for a binding made from a URL, without an operator) creates a missing topic
    with ``partitions`` (3), ``replication_factor`` (1) and ``retention.ms`` from the binding's TTL;
    any other option is a librdkafka setting (dotted or with underscores).
    """

    def __init__(
        self,
        binding: Binding,
        *,
        create: bool = False,
        partitions: int = DEFAULT_PARTITION,
        replication_factor: int = DEFAULT_REPLICATION_FACTOR,
        **options: Any,
    ) -> None:
        if binding.backend is not BackendKind.KAFKA:
            raise BindingError(f"a {binding.backend.value} binding cannot build a Kafka connector")
        if not _TOPIC_RE.match(binding.topic):
            raise BindingError(f"topic {binding.topic!r} is not a valid Kafka topic name", key="topic")
        self._binding = binding
        conf = {**kafka_config(binding), **client_settings(options)}
        self._clients = _Clients(conf, group_prefix=binding.consumer_group_prefix, may_create=create)
        retention = binding.ttl_seconds * 1000 if binding.ttl_seconds else -1
        self._create = (partitions, replication_factor, retention) if create else None

    @classmethod
    def from_binding(cls, binding: Binding, **options: Any) -> KafkaConnector:
        return cls(binding, **options)

    def history(self, session_id: str) -> KafkaChatMessageHistory:
        return KafkaChatMessageHistory._shared(
            session_id,
            self._clients,
            self._binding.topic,
            self._binding.max_messages,
            self._create,
            self._binding.partition_counts,
        )

    def close(self) -> None:
        self._clients.close()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)
