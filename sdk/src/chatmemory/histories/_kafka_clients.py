"""The Kafka clients of one memory: a producer, pooled reader consumers, an admin client, metadata.

Who calls it: :mod:`chatmemory.histories.kafka` only. A :class:`KafkaConnector` (one memory) or a
directly built :class:`KafkaChatMessageHistory` owns one :class:`KafkaClients`; every librdkafka call
of the history goes through it, so the history module holds the layout (topic, key, partition)
and LangChain's interface, and this module holds the I/O: producing with delivery reports, reading
partitions between watermarks, the seed's consumer-group cursors, topic creation and deletion, and
what was already read of each recent session.

Reads use ``assign()`` with explicit offsets and no group state; one fetch loop (:meth:`KafkaClients.
fetch`) serves the cold read of one session's partition and the seed layout's read of every
partition. The loop is the hot path of a cold read (it scans every session's records in the
partition), so its per-record work is two calls (``error()``, ``key()``) and one comparison.

**Following a rotated Secret** (a SASL memory connected from a mounted Secret or the API, whose
binding has a source): Kafka SCRAM rotates by switching the *user* (``<user>`` and ``<user>_b`` in
turn), and a broker connection stays authenticated as whoever opened it, so new credentials need
new connections. Every write and read asks the source (at most every 2 s it reads the Secret
again); when the user or password changed, the producer is replaced for the next turns and the
previous one *drains*: given the new credentials (``set_sasl_credentials``, used on its next
connection), it delivers what it already holds itself, so a message queued or in flight there keeps
its producer id and sequence number and the idempotent producer never writes it twice. Readers
and the admin client built with the old credentials are closed. When the server refuses the
credentials anyway (the Secret changed after the grace period ended, or the kubelet was late): a
failed authentication (``error_cb``) makes the source be read again and the producers get the new
credentials while the turn waits; a read refused (authentication or authorization) is retried once;
a turn whose every message the broker refused by authorization (nothing was appended) is sent once
more on a new producer, but only when no connection was lost while it was outstanding (reset, or
dropped after a request timed out, or its broker down: an earlier attempt might have been appended,
and the new producer's id would not deduplicate it; then the error says the write may have been
applied).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, NamedTuple, TypeVar

from chatmemory._connect import Timeouts, close_idle, require
from chatmemory.contract import CredentialSource
from chatmemory.errors import BackendError, BackendUnavailable

#: Header of a clear marker record (its value is empty).
CLEAR_HEADER: Final = "chatmemory-clear"
#: Seconds a metadata, watermark or admin request may take before it fails.
REQUEST_TIMEOUT: Final = 10.0
#: Seconds a topic's partition count is trusted before it is read again: a topic that grew under a
#: running client is noticed within this time, and its writes move to the live count's partition.
PARTITIONS_MAX_AGE: Final = 5.0
#: Idle reader consumers kept per connector.
READER_POOL: Final = 4
#: Sessions, and records in all, a connector keeps between reads (least recently read go first).
SESSION_CACHE: Final = 1024
SESSION_CACHE_RECORDS: Final = 50_000
_LIBRDKAFKA_LOG: Final = logging.getLogger("chatmemory.kafka.librdkafka")
#: Producer settings the history relies on: never overridden by ``client_config``.
_PRODUCER_FIXED: Final[dict[str, Any]] = {
    "enable.idempotence": True,
    "acks": "all",
    "partitioner": "murmur2_random",
}
#: linger.ms 5 (librdkafka's default): a turn's messages wait together and leave in one Produce
#: request (one batch: a reader never sees half a turn), and no turn waits the linger out: the writer
#: flushes, and librdkafka sends lingering messages at once while a flush() runs. Measured on the
#: local broker (500 turns): linger.ms 1 without a flush waited it out (1.8 ms a turn, 4x the
#: community class); linger.ms 0 sent a turn's first message alone (1.2-1.5 requests a turn).
_PRODUCER_DEFAULTS: Final[dict[str, Any]] = {"linger.ms": 5, "message.timeout.ms": 30000}
#: Longest single flush() of a waiting writer or of the delivery thread (seconds).
_FLUSH_SLICE: Final = 0.01
#: Pause of the delivery thread between its flush slices, for writers waiting to queue a turn.
_YIELD: Final = 0.001
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
_PRODUCER_ONLY: Final = (
    "linger.ms",
    "message.timeout.ms",
    "batch.size",
    "compression.type",
    "queue.",
    "request.timeout.ms",
)
#: Most records one ``consume()`` call asks for.
_BATCH: Final = 10_000
#: Where a cursor read starts: the session's start, the end, or the group's committed offsets.
CursorStart = Literal["beginning", "latest", "last_consumed"]
T = TypeVar("T")


def timeout_settings(timeouts: Timeouts) -> dict[str, Any]:
    """librdkafka settings for the memory's timeouts (a user's own librdkafka settings win).

    ``connect`` bounds a broker connection's setup: TCP, TLS, SASL and the ApiVersion exchange
    (``socket.connection.setup.timeout.ms``, ``api.version.request.timeout.ms``); ``operation``
    bounds each request (``socket.timeout.ms``, the producer's ``request.timeout.ms``) and each
    metadata or offsets lookup the SDK makes (``KafkaClients.request_timeout``).
    """
    connect_ms = max(1000, round(timeouts.connect * 1000))  # librdkafka's minimum is 1 s
    operation_ms = min(300_000, max(10, round(timeouts.operation * 1000)))
    return {
        "socket.connection.setup.timeout.ms": connect_ms,
        "api.version.request.timeout.ms": min(300_000, connect_ms),
        "socket.timeout.ms": operation_ms,
        "request.timeout.ms": operation_ms,
    }


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


class Delivery:
    """Delivery reports of one ``add_messages`` call: a threading event and, in async, a future."""

    def __init__(
        self,
        count: int,
        loop: asyncio.AbstractEventLoop | None = None,
        *,
        producer: Any = None,
        losses: int = 0,
        generation: int = 0,
    ) -> None:
        self.count = count
        #: the producer holding the turn (the writer flushes it) and its clients' connection losses
        #: when the turn was queued (see :meth:`KafkaClients.refused`)
        self.producer = producer
        self.losses = losses
        self.generation = generation
        self._remaining = count
        self._lock = threading.Lock()
        self.errors: list[str] = []
        self.codes: set[Any] = set()
        self.done = threading.Event()
        self._loop = loop
        self.future: asyncio.Future[None] | None = loop.create_future() if loop is not None else None
        self._on_done: Callable[[], None] | None = None

    def __call__(self, err: Any, _msg: Any) -> None:  # on the thread serving reports (flush, poll)
        with self._lock:
            if err is not None:
                self.errors.append(err.str() if hasattr(err, "str") else str(err))
                self.codes.add(err.code() if hasattr(err, "code") else None)
            self._remaining -= 1
            finished = self._remaining == 0
            on_done = self._on_done if finished else None
        if finished:
            self.done.set()
            if on_done is not None:
                on_done()
            if self._loop is not None and self.future is not None:
                with contextlib.suppress(RuntimeError):  # the loop may be closed already
                    self._loop.call_soon_threadsafe(self._resolve)

    def when_done(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` once every report arrived (now if they all have)."""
        with self._lock:
            if self._remaining > 0:
                self._on_done = fn
                return
        fn()

    def _resolve(self) -> None:
        if self.future is not None and not self.future.done():
            self.future.set_result(None)


class Turn(NamedTuple):
    """A turn's records for one partition of a topic, queued together (see :meth:`KafkaClients.produce`)."""

    topic: str
    partition: int
    key: bytes
    values: Sequence[bytes | None]
    headers: list[tuple[str, bytes]] | None = None
    loop: asyncio.AbstractEventLoop | None = None  # async writes: the loop awaiting the delivery


class KafkaClients:
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
        follow: CredentialSource | None = None,
    ) -> None:
        """``follow``: where the SASL user name and password are read again (a rotated Secret; see
        the module docstring); None keeps those of ``conf``."""
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
        self._partitions: dict[str, tuple[int, float]] = {}  # topic: (count, when it was read)
        self._counts_seen: dict[str, set[int]] = {}  # every count each topic had while we used it
        self._sessions: OrderedDict[tuple[str, int, bytes], _SessionCache] = OrderedDict()
        self._stop = threading.Event()
        #: async writes waiting for their reports, and sync writers serving their own (see _serve)
        self._async_pending = 0
        self._sync_waiting = 0
        self._wake = threading.Event()
        #: held while a turn is queued and while a flush() runs (see _queue)
        self._turn_lock = threading.Lock()
        self._closed = False
        self._last_error: list[str] = []
        #: librdkafka reported bad credentials: waiting longer will not help
        self.auth_failed = False
        self._follow = follow
        self._credentials = (str(conf.get("sasl.username", "")), str(conf.get("sasl.password", "")))
        #: bumped when the credentials change: readers of an older generation are closed
        self._generation = 0
        #: refusals of the credentials seen (authentication, authorization), and lost connections
        self._refusals = 0
        self._losses = 0
        #: error_cb saw a failed authentication: read the source again (see _renew_if_refused)
        self._renew_wanted = False
        #: the live producer's retirement flag, and replaced producers still delivering what they hold
        self._retired = threading.Event()
        self._draining: list[Any] = []

    # -- error reporting ----------------------------------------------------------------------------

    def _on_error(self, err: Any) -> None:
        self._last_error[:] = [err.str() if hasattr(err, "str") else str(err)]
        code = err.code() if hasattr(err, "code") else None
        ck = self._ck
        self.auth_failed = code in (ck.KafkaError._AUTHENTICATION, ck.KafkaError.SASL_AUTHENTICATION_FAILED)
        if self.auth_failed or code in self._refused_codes():
            self._refusals += 1
            self._renew_wanted = self._follow is not None
        if code in self._loss_codes():
            self._losses += 1

    def fail(
        self, what: str, e: BaseException | str, *, unavailable: bool = False, applied: bool | None = None
    ) -> BackendError:
        """A BackendError naming the cluster, the operation and librdkafka's last reason.

        ``unavailable``: the cluster did not answer in time or could not be reached
        (:class:`BackendUnavailable`, with ``applied`` saying whether a write may have happened).
        """
        text = _text(e) if isinstance(e, BaseException) else e
        reason = self._last_error.pop() if self._last_error else ""  # used once: it may be stale later
        if reason and reason not in text:
            text = f"{text} ({reason})"
        message = f"{self.where}: {what}: {text}"
        if isinstance(e, BaseException) and _code(e) in self._refused_codes():
            self._refusals += 1
        if unavailable or (isinstance(e, BaseException) and _code(e) in self._unavailable_codes()):
            return BackendUnavailable(message, applied=applied)
        return BackendError(message)

    def _leader_moving_codes(self) -> frozenset[Any]:
        """Codes a request gets while a partition's leader is moving or not known yet: retried.

        ``_DESTROY_BROKER``: the request sat on the killed leader's connection; ``OFFSET_NOT_AVAILABLE``:
        the new leader's high watermark has not caught up yet (KIP-207).
        """
        e = self._ck.KafkaError
        return frozenset(
            {
                e.NOT_LEADER_FOR_PARTITION,
                e.LEADER_NOT_AVAILABLE,
                e._UNKNOWN_PARTITION,
                e._DESTROY_BROKER,
                e.OFFSET_NOT_AVAILABLE,
            }
        )

    def _refused_codes(self) -> frozenset[Any]:
        """The broker refused the client's user: its credentials, or a right they no longer have."""
        e = self._ck.KafkaError
        return frozenset(
            {
                e._AUTHENTICATION,
                e.SASL_AUTHENTICATION_FAILED,
                e.TOPIC_AUTHORIZATION_FAILED,
                e.GROUP_AUTHORIZATION_FAILED,
                e.CLUSTER_AUTHORIZATION_FAILED,
            }
        )

    def _unavailable_codes(self) -> frozenset[Any]:
        """librdkafka's codes for a cluster that did not answer or could not be reached."""
        e = self._ck.KafkaError
        return frozenset(
            {
                e._TRANSPORT,
                e._ALL_BROKERS_DOWN,
                e._TIMED_OUT,
                e._MSG_TIMED_OUT,
                e._RESOLVE,
                e.REQUEST_TIMED_OUT,
                e.NETWORK_EXCEPTION,
            }
        )

    def _loss_codes(self) -> frozenset[Any]:
        """Codes of a connection dropped or given up on, which may have taken a written request's answer
        with it: a ProduceRequest appended whose acknowledgement never came (``_TIMED_OUT`` is
        librdkafka's "N request(s) timed out: disconnect"). Any of them blocks a resend (:meth:`refused`)."""
        return self._unavailable_codes() | {self._ck.KafkaError._DESTROY_BROKER}

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
                self._retired = threading.Event()
                self._poller = threading.Thread(
                    target=self._serve,
                    args=(self._producer, self._retired),
                    name="chatmemory-kafka-delivery",
                    daemon=True,
                )
                self._poller.start()
            return self._producer

    # -- following a rotated Secret (see the module docstring) --------------------------------------

    def follow_credentials(self, *, reread: bool = False) -> bool:
        """Take the credentials the source holds now (``reread``: read it again at once, the
        server refused the current ones); True when they changed and the clients were renewed."""
        if self._follow is None:
            return False
        if reread:
            self._follow.refresh()
        creds = self._follow.credentials()
        if creds == self._credentials:
            return False
        with self._turn_lock, self._lock:  # no turn is being queued on the producer replaced here
            if creds == self._credentials or self._closed:
                return False
            self._credentials = creds
            self._conf["sasl.username"], self._conf["sasl.password"] = creds
            self._generation += 1
            old, self._producer = self._producer, None
            if old is not None:
                self._retired.set()
                self._draining.append(old)
            draining = list(self._draining)
            self._admin = None
        for producer in draining:  # what they hold leaves on their next connection, as the new user
            with contextlib.suppress(Exception):
                producer.set_sasl_credentials(*creds)
        close_idle(self._readers)
        self._wake.set()
        return True

    def _renew_if_refused(self) -> None:
        """error_cb saw a failed authentication: the Secret may hold new credentials already."""
        if self._renew_wanted:
            self._renew_wanted = False
            self.follow_credentials(reread=True)

    def refused(self, delivery: Delivery) -> bool:
        """The broker refused every message of ``delivery`` by authorization, so none was appended,
        and no connection of these clients was lost while it was outstanding (a lost connection
        leaves an earlier attempt possibly appended, whether it was reset, given up on after a request
        timed out or its broker went down: :meth:`_loss_codes`): sending the turn again cannot write
        it twice."""
        codes = {
            self._ck.KafkaError.TOPIC_AUTHORIZATION_FAILED,
            self._ck.KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        }
        return (
            delivery.done.is_set()
            and len(delivery.errors) == delivery.count
            and delivery.codes <= codes
            and delivery.losses == self._losses
        )

    def following(self, fn: Callable[[], T], *, safe: Callable[[BackendError], bool] | None = None) -> T:
        """``fn()`` (a read), once more with the source's new credentials when the server refused
        the current ones (``safe``: whether the failure allows another try at all)."""
        self.follow_credentials()
        mark, generation = self._refusals, self._generation
        try:
            return fn()
        except BackendError as e:
            if (safe is not None and not safe(e)) or self._refusals == mark:
                raise
            self.follow_credentials(reread=True)
            if self._generation == generation:  # the same credentials would be refused again
                raise
        return fn()

    def renewed_since(self, delivery: Delivery) -> bool:
        """Read the source again: do the clients hold other credentials than when ``delivery``'s
        turn was queued?"""
        self.follow_credentials(reread=True)
        return self._generation != delivery.generation

    def queue(self, turn: Turn) -> Delivery:
        """:meth:`produce`, once more with new credentials when nothing was queued because the
        broker refused the current ones (the producer knows the topic as not authorized)."""
        return self.following(lambda: self.produce(turn), safe=lambda e: getattr(e, "nothing_queued", False))

    def write(self, turn: Callable[[], Turn], timeout: float) -> None:
        """Queue ``turn()`` and wait until it is acknowledged (``check``), sending it once more on
        new credentials when the broker refused it whole (see :meth:`refused`)."""
        made = self.following(turn)
        delivery = self.queue(made)
        if not self.wait(delivery, timeout):
            self.check(delivery, made.topic, 0, waited=timeout)
        if self.refused(delivery) and self.renewed_since(delivery):
            delivery = self.produce(made)
            self.wait(delivery, timeout)
        self.check(delivery, made.topic, 0, waited=timeout)

    def _serve(self, producer: Any, retired: threading.Event) -> None:
        """The delivery thread: it flushes for async writes, which wait without a thread.

        A sync writer flushes on its own thread (:meth:`check`), which both sends its turn at once
        and serves its reports as they arrive; this thread keeps out of the way then (a report it
        took would leave the writer's flush() waiting for its slice to end). Idle, it serves what
        nobody waits for (reports of a write that timed out, error and statistics callbacks).
        A replaced producer's thread delivers what the producer still holds, then ends.
        """
        while not self._stop.is_set():
            self._renew_if_refused()
            if retired.is_set():
                if not len(producer):
                    producer.poll(0)
                    with self._lock:  # drained: its connections close with it
                        self._draining = [p for p in self._draining if p is not producer]
                    return
                with self._turn_lock:
                    producer.flush(_FLUSH_SLICE)
                time.sleep(_YIELD)
                continue
            if self._async_pending and len(producer):
                with self._turn_lock:
                    producer.flush(_FLUSH_SLICE)
                time.sleep(_YIELD)  # let writers waiting for the turn lock queue their turns
                continue
            self._wake.wait(0.5)
            self._wake.clear()
            if not self._async_pending and not self._sync_waiting:
                producer.poll(0)

    def _async_done(self) -> None:
        with self._lock:
            self._async_pending -= 1

    def admin(self) -> Any:
        self._check_open()
        with self._lock:
            if self._admin is None:
                from confluent_kafka.admin import AdminClient

                conf: dict[str, Any] = {
                    k: v for k, v in self._conf.items() if not k.startswith(_PRODUCER_ONLY)
                }  # under the lock: follow_credentials changes the SASL keys
                conf["error_cb"] = self._on_error
                self._admin = AdminClient(conf)
            return self._admin

    def consumer(self, group_id: str, **extra: Any) -> Any:
        with self._lock:
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
        generation = self._generation
        try:
            c = self._readers.get_nowait()
        except queue.Empty:
            c = self.consumer(f"{self.group_prefix}chatmemory-reader")
        ok = False
        try:
            yield c
            ok = True
        finally:
            if ok and not self._closed and generation == self._generation:
                try:
                    self._readers.put_nowait(c)
                except queue.Full:
                    c.close()
            else:
                with contextlib.suppress(Exception):
                    c.close()

    # -- topics -----------------------------------------------------------------------------------

    def partitions(self, topic: str, *, create: tuple[int, int, int] | None = None) -> int:
        """The topic's live partition count, read again once the cached one is older than
        :data:`PARTITIONS_MAX_AGE`. ``create``: (partitions, replication, retention.ms)."""
        cached = self.cached_partitions(topic)
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
        self._partitions[topic] = (count, time.monotonic())
        with self._lock:
            self._counts_seen.setdefault(topic, set()).add(count)
        return count

    def cached_partitions(self, topic: str) -> int | None:
        """The topic's partition count if it was read within :data:`PARTITIONS_MAX_AGE` (no I/O)."""
        cached = self._partitions.get(topic)
        if cached is None or time.monotonic() - cached[1] >= PARTITIONS_MAX_AGE:
            return None
        return cached[0]

    def counts_seen(self, topic: str) -> frozenset[int]:
        """Every partition count this client has read for the topic (a topic it saw grow: 3 and 5)."""
        with self._lock:
            return frozenset(self._counts_seen.get(topic, ()))

    def forget(self, topic: str) -> None:
        """Drop what is known of a deleted topic (a recreated one starts with its own counts)."""
        self._partitions.pop(topic, None)
        with self._lock:
            self._counts_seen.pop(topic, None)

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
                    if self.auth_failed:
                        raise self.fail(f"reading topic {topic!r} metadata", e) from e
                    if time.monotonic() >= deadline:
                        raise self.fail(
                            f"reading topic {topic!r} metadata",
                            f"no answer within {self.request_timeout:g} s (timeout): {_text(e)}",
                            unavailable=True,
                            applied=False,
                        ) from e
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

    def produce(self, turn: Turn) -> Delivery:
        """Queue a turn's records (in order) to one partition; the delivery tracks their reports."""
        self.producer()
        with self._turn_lock:  # the producer is replaced under this lock only (follow_credentials)
            return self._queue(self.producer(), turn)

    def _queue(self, producer: Any, turn: Turn) -> Delivery:
        """Queue a turn's records, under the turn lock: no flush() runs meanwhile, so linger.ms
        holds them together and they leave in one Produce request."""
        values = turn.values
        delivery = Delivery(
            len(values), turn.loop, producer=producer, losses=self._losses, generation=self._generation
        )
        send = functools.partial(
            producer.produce,
            turn.topic,
            key=turn.key,
            partition=turn.partition,
            headers=turn.headers,
            on_delivery=delivery,
        )
        for i, value in enumerate(values):
            try:
                try:
                    send(value=value)
                except self._ck.KafkaException as e:
                    if i or _code(e) != self._ck.KafkaError._UNKNOWN_PARTITION:
                        raise
                    # the topic grew and the producer's metadata is older than ours: refresh it, retry
                    producer.list_topics(turn.topic, timeout=self.request_timeout)
                    send(value=value)
            except (BufferError, self._ck.KafkaException) as e:
                err = self.fail(
                    f"queueing message {i + 1} of {len(values)} to {turn.topic!r}"
                    + (" (the earlier ones may still be delivered)" if i else ""),
                    e,
                )
                if not i:  # nothing of the turn was queued: it may be sent again
                    err.nothing_queued = True  # type: ignore[attr-defined]
                raise err from e
        if turn.loop is not None:  # the delivery thread flushes until the reports are in
            with self._lock:
                self._async_pending += 1
            delivery.when_done(self._async_done)
            self._wake.set()
        return delivery

    def wait(self, delivery: Delivery, timeout: float | None) -> bool:
        """Flush until ``delivery`` is reported or ``timeout`` (seconds) passed; True if reported.

        flush() sends lingering messages at once and serves reports on this thread. It runs under
        the turn lock, so no turn is being queued meanwhile (one queued while a flush runs could
        leave without its last message), and in slices: it returns when nothing of the producer's
        is outstanding, or after a slice when older writes are still unanswered. A writer whose
        reports another writer's flush served stops as soon as it gets the lock.
        """
        producer = delivery.producer if delivery.producer is not None else self._producer
        if delivery.done.is_set() or timeout == 0 or producer is None:
            return delivery.done.is_set()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._sync_waiting += 1
        try:
            while not delivery.done.is_set():
                self._renew_if_refused()  # the turn waits in its producer for credentials that work
                left = _FLUSH_SLICE if deadline is None else min(_FLUSH_SLICE, deadline - time.monotonic())
                if left <= 0:
                    break
                if not self._turn_lock.acquire(timeout=left):
                    continue
                try:
                    if not delivery.done.is_set():
                        producer.flush(left)
                finally:
                    self._turn_lock.release()
        finally:
            with self._lock:
                self._sync_waiting -= 1
        return delivery.done.is_set()

    def check(self, delivery: Delivery, topic: str, timeout: float | None, *, waited: float = 0.0) -> None:
        """Raise unless every message of ``delivery`` was acknowledged (waiting up to ``timeout``;
        ``waited``: seconds the caller already waited, for the message)."""
        if not self.wait(delivery, timeout):
            raise self.fail(
                f"writing to {topic!r}",
                f"not all messages were acknowledged within {(timeout or 0) + waited:g} s (they may "
                "still be delivered)",
                unavailable=True,
            )
        if delivery.errors:
            lost = ""
            if delivery.losses != self._losses:  # an earlier attempt may be in the log (see refused)
                lost = (
                    " (a connection was dropped while the turn was outstanding, so the write may have been "
                    "applied: read the session before sending it again)"
                )
            raise self.fail(
                f"writing to {topic!r}",
                "delivery failed: " + "; ".join(delivery.errors) + lost,
                unavailable=bool(delivery.codes & self._unavailable_codes()),
            )

    # -- reading ----------------------------------------------------------------------------------

    def watermarks(self, c: Any, topic: str, partitions: Sequence[int]) -> dict[int, tuple[int, int]]:
        """Each partition's low and high watermarks. A retriable answer (a leader moving, a topic
        just recreated whose leader the client does not know yet) is asked again with backoff."""
        TopicPartition = self._ck.TopicPartition
        out: dict[int, tuple[int, int]] = {}
        deadline = time.monotonic() + self.request_timeout
        for p in partitions:
            pause = 0.05
            while True:
                left = max(0.1, deadline - time.monotonic())
                try:
                    low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=left, cached=False)
                    break
                except self._ck.KafkaException as e:
                    c.poll(0)
                    err = e.args[0] if e.args else None
                    retriable = not self.auth_failed and (
                        _code(e) in self._leader_moving_codes()
                        or (err is not None and hasattr(err, "retriable") and err.retriable())
                    )
                    if not retriable or time.monotonic() + pause >= deadline:
                        raise self.fail(f"reading the offsets of {topic!r} [{p}]", e) from e
                    time.sleep(pause)
                    pause = min(pause * 2, 1.0)
            out[p] = (low, high)
        return out

    def read_to_end(self, topic: str, partitions: Sequence[int], key: bytes) -> list[Record]:
        """The records of ``partitions`` keyed ``key`` or unkeyed (the seed layout), up to their
        current high watermarks, merged in order."""
        with self.reader() as c:
            ranges = {p: lh for p, lh in self.watermarks(c, topic, partitions).items() if lh[1] > lh[0]}
            per_partition = self.fetch(c, topic, ranges, key, unkeyed=True) if ranges else {}
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
                new = self.fetch(c, topic, {partition: (entry.next, high)}, key)[partition]
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

    def fetch(
        self,
        c: Any,
        topic: str,
        ranges: dict[int, tuple[int, int]],
        key: bytes,
        *,
        unkeyed: bool = False,
    ) -> dict[int, list[Record]]:
        """Records keyed ``key`` (and unkeyed ones with ``unkeyed``) of each partition ``p`` in
        ``[ranges[p][0], ranges[p][1])``, on the assigned consumer ``c``.

        A cold read scans every session's records, so the loop over a batch does only what each
        record needs (``error()``, ``key()``, one comparison: no local variable and no second
        test, which measurably cost at this rate); offsets are read for matching records only, and
        the progress of each partition once per batch from its last record.
        """
        eof = self._ck.KafkaError._PARTITION_EOF
        match = _KeyOrNone(key) if unkeyed else key
        out: dict[int, list[Record]] = {p: [] for p in ranges}
        ends = {p: end for p, (_first, end) in ranges.items()}
        position = {p: first for p, (first, _end) in ranges.items()}
        pending = dict(ends)  # partitions not read to their end yet
        c.assign([self._ck.TopicPartition(topic, p, first) for p, first in position.items()])
        try:
            deadline = time.monotonic() + max(self.request_timeout, 30.0)
            while pending:
                if time.monotonic() > deadline:
                    raise self.fail(
                        f"reading {topic!r}", "timed out before the end of the partition", unavailable=True
                    )
                # ask for exactly what is left: consume() returns as soon as that many arrived
                left = sum(end - position[p] for p, end in pending.items())
                batch = c.consume(num_messages=max(1, min(left, _BATCH)), timeout=0.5)
                for m in batch:
                    if m.error() is not None:
                        if m.error().code() == eof:  # at the end (the range may end in transaction markers)
                            pending.pop(m.partition(), None)
                            continue
                        if m.error().code() in self._refused_codes():
                            self._refusals += 1
                        raise self.fail(f"reading {topic!r} [{m.partition()}]", m.error().str())
                    if m.key() == match:
                        p, offset = m.partition(), m.offset()
                        if offset < ends[p]:
                            out[p].append(_record(m, p, offset, m.key()))
                if batch:
                    _advance(batch, position, pending)
        finally:
            with contextlib.suppress(Exception):
                c.unassign()
        return out

    def read_cursor(
        self,
        topic: str,
        partitions: Sequence[int],
        group: str,
        key: bytes,
        *,
        unkeyed: bool,
        start: CursorStart,
        max_count: int | None,
        max_time: float | None,
    ) -> list[Record]:
        """The seed class's cursor reads: records after ``start`` in consumer group ``group``.

        Stops after ``max_count`` messages, after ``max_time`` seconds, or (except from "latest")
        at the end of the partitions; the group's offsets are committed past what was read.
        """
        ck = self._ck
        TopicPartition = ck.TopicPartition
        match = _KeyOrNone(key) if unkeyed else key
        c = self.consumer(group)
        try:
            marks = self.watermarks(c, topic, partitions)
            positions: dict[int, int] = {}
            if start == "beginning":
                positions = {p: low for p, (low, _h) in marks.items()}
            elif start == "latest":
                positions = {p: high for p, (_l, high) in marks.items()}
            else:
                try:
                    committed = c.committed(
                        [TopicPartition(topic, p) for p in partitions], timeout=self.request_timeout
                    )
                except ck.KafkaException as e:
                    c.poll(0)
                    raise self.fail(f"reading consumer group {group!r}", e) from e
                for tp in committed:
                    low, high = marks[tp.partition]
                    positions[tp.partition] = min(max(tp.offset, low), high) if tp.offset >= 0 else low
            stop_at_end = start != "latest"
            pending = {p for p in partitions if not (stop_at_end and positions[p] >= marks[p][1])}
            c.assign([TopicPartition(topic, p, positions[p]) for p in partitions])
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
                    raise self.fail(f"reading {topic!r} [{p}]", err.str())
                offset = m.offset()
                positions[p] = offset + 1
                if m.key() == match:
                    rec = _record(m, p, offset, m.key())
                    collected.append(rec)
                    if rec.clear:
                        count = 0
                    elif rec.value is not None:
                        count += 1
                if stop_at_end and positions[p] >= marks[p][1]:
                    pending.discard(p)
            commits = [TopicPartition(topic, p, off) for p, off in positions.items() if off >= 0]
            if commits:
                try:
                    c.commit(offsets=commits, asynchronous=False)
                except ck.KafkaException as e:
                    raise self.fail(f"committing consumer group {group!r}", e) from e
        finally:
            with contextlib.suppress(Exception):
                c.close()
        return collected

    def close(self, timeout: float = 5.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake.set()
        if self._poller is not None:
            self._poller.join(timeout)
        if self._producer is not None:
            self._producer.flush(timeout)
        for producer in self._draining:
            producer.flush(timeout)
        close_idle(self._readers)


class _KeyOrNone:
    """Equal to ``key`` and to None: the seed layout's record match (its own writes are keyed, the
    seed class's are not). ``record.key() == match`` tries ``bytes.__eq__`` first and then this,
    so a fetch loop makes one comparison per record for either layout."""

    __slots__ = ("key",)

    def __init__(self, key: bytes) -> None:
        self.key = key

    def __eq__(self, other: object) -> bool:
        return other is None or other == self.key

    __hash__ = None  # type: ignore[assignment]


def _record(m: Any, partition: int, offset: int, key: bytes | None) -> Record:
    return Record(partition, offset, m.timestamp()[1], key, m.value(), _is_clear(m.headers()))


def _advance(batch: Sequence[Any], position: dict[int, int], pending: dict[int, int]) -> None:
    """Move each pending partition past its last record in ``batch``; drop those at their end.

    A batch keeps each partition's order, so its last record per partition is found from the back:
    one step when a single partition is read.
    """
    seen: set[int] = set()
    todo = len(pending)
    for m in reversed(batch):
        p = m.partition()
        if p in seen:
            continue
        seen.add(p)
        end = pending.get(p)
        if end is None:
            continue
        following = m.offset() + 1
        if following >= end:
            del pending[p]
        else:
            position[p] = max(position[p], following)
        todo -= 1
        if not todo:
            return


def _code(e: BaseException) -> Any:
    """The librdkafka error code of a KafkaException (None for anything else)."""
    err = e.args[0] if e.args else None
    return err.code() if err is not None and hasattr(err, "code") else None


def _text(e: BaseException) -> str:
    err = e.args[0] if e.args else None
    if err is not None and hasattr(err, "str"):
        return str(err.str())
    return str(e)
