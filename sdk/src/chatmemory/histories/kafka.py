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
  marker. The topic's ``retention.ms`` (set by the operator) is the TTL. A topic that grew keeps
  a session's older records where the key mapped before: reads look in the partition of every
  count the binding's ``partition_history`` names and every count the client saw the topic have
  (its count is read again every ``PARTITIONS_MAX_AGE`` seconds), writes go to the live count's.
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
and raises :class:`~chatmemory.errors.BackendError` on a failure, and its subclass
:class:`~chatmemory.errors.BackendUnavailable` after ``flush_timeout_seconds`` or when the cluster
does not answer. ``timeout=`` (the memory's :class:`~chatmemory.memory.Timeouts`) becomes librdkafka's
connection-setup and socket timeouts and bounds every metadata and offsets lookup. A turn leaves
in one Produce request without waiting out ``linger.ms`` (5): its messages are queued together,
then the writer flushes, and librdkafka sends lingering messages at once during a flush (see
:meth:`~chatmemory.histories._kafka_clients.KafkaClients.wait`).
One producer (with a delivery thread), a small pool of reader consumers and, for the seed layout,
an AdminClient serve every session of a connector: they live in
:mod:`chatmemory.histories._kafka_clients`, which does all of this module's Kafka I/O.

Rotation: a connector built from a SASL binding that follows its Secret (``chatmemory.connect``
from a mounted Secret or the API) gives its clients the user and password the Secret holds,
checked on every call and read again at most every 2 s; a read or a turn the broker refuses is
tried once more with the Secret read again. A write is never applied twice: messages a replaced
producer holds are delivered by that producer (idempotent), and a turn is sent again only when
the broker refused all of it (see :mod:`chatmemory.histories._kafka_clients`).

Async: ``aadd_messages`` (and ``aclear`` on a shared topic) await delivery reports directly (no
thread is held while waiting). Reads go through ``asyncio.to_thread``: ``confluent_kafka.aio``
exists in confluent-kafka 2.16, but its consumer is itself a thread-pool wrapper around the blocking
consumer, bound to one event loop, so it brings nothing over a plain thread here.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import weakref
from collections.abc import Sequence
from typing import Any, Final

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage

from chatmemory._codec import decode_all, encode
from chatmemory._connect import Timeouts, TimeoutSpec, kafka_config
from chatmemory.contract import BackendKind, Binding, retention_ms
from chatmemory.errors import BindingError
from chatmemory.histories._kafka_clients import (
    CLEAR_HEADER,
    CursorStart,
    Delivery,
    KafkaClients,
    Record,
    Turn,
    client_settings,
    fold,
    merge_partitions,
    timeout_settings,
)

__all__ = ["CLEAR_HEADER", "KafkaChatMessageHistory", "KafkaConnector", "murmur2", "partition_for"]

DEFAULT_TTL_MS: Final = 604800000  # 7 days, the seed's default
DEFAULT_REPLICATION_FACTOR: Final = 1
DEFAULT_PARTITION: Final = 3
_TOPIC_RE: Final = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


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
        timeout: seconds for a broker connection's setup and for each request (or
            ``chatmemory.memory.Timeouts(connect=, operation=)``); default 5 s and 10 s. A cluster that
            does not answer raises :class:`~chatmemory.errors.BackendUnavailable`.
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
        timeout: TimeoutSpec = None,
        **client_config: Any,
    ) -> None:
        group_prefix = str(client_config.pop("consumer_group_prefix", "") or "")
        max_messages = client_config.pop("max_messages", None)
        timeouts = Timeouts.of(timeout)
        conf = {
            **timeout_settings(timeouts),
            **client_settings(client_config),
            "bootstrap.servers": bootstrap_servers,
        }
        clients = KafkaClients(
            conf, group_prefix=group_prefix, may_create=True, request_timeout=timeouts.operation
        )
        self._setup(session_id, clients, topic, (partition, replication_factor, ttl_ms), max_messages)
        self._owns_clients = True
        self._finalizer = weakref.finalize(self, clients.close)
        self.bootstrap_servers = bootstrap_servers

    @classmethod
    def _shared(
        cls,
        session_id: str,
        clients: KafkaClients,
        topic: str,
        max_messages: int | None,
        create: tuple[int, int, int] | None = None,
        past_partition_counts: Sequence[int] = (),
    ) -> KafkaChatMessageHistory:
        """A history on a connector's clients (no I/O until used; a topic only with ``create``).

        ``past_partition_counts``: the counts the topic has had (the binding's
        ``partition_history``); the session's older records stay in the partitions those mapped to.
        """
        self = cls.__new__(cls)
        self._setup(session_id, clients, topic, create, max_messages)
        self._known_counts = frozenset(past_partition_counts)
        self._owns_clients = False
        self.bootstrap_servers = str(clients.where.removeprefix("kafka "))
        return self

    def _setup(
        self,
        session_id: str,
        clients: KafkaClients,
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
        self._known_counts: frozenset[int] = frozenset()
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

    def _session_partitions(self) -> list[int]:
        """Every partition the session's key has mapped to on a shared topic: under the live count
        (where it writes), each count of the binding's ``partition_history`` and each count these
        clients saw the topic have. A binding from before the topic grew (it does not know the live
        count) still finds the records written before the growth, and a client that saw the topic
        grow finds those written after it by clients with the new binding."""
        live = self._partition_count()
        counts = {live, *self._known_counts, *self._clients.counts_seen(self.topic)}
        return sorted({partition_for(self._key, n) for n in counts if n <= live})

    # -- reading ----------------------------------------------------------------------------------

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """The session's complete history in order (after its last ``clear()``), on every call."""
        values = fold(self._clients.following(self._read_records))
        if self.max_messages is not None:
            values = values[-self.max_messages :]
        return decode_all(values)

    def _read_records(self) -> list[Record]:
        if self.shared_topic:
            return merge_partitions(
                {p: self._clients.read_session(self.topic, p, self._key) for p in self._session_partitions()}
            )
        return self._clients.read_to_end(self.topic, self._read_partitions(), self._key)

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

    def _cursor_read(
        self, start: CursorStart, max_count: int | None, max_time: float | None
    ) -> list[BaseMessage]:
        records = self._clients.following(
            lambda: self._clients.read_cursor(
                self.topic,
                self._read_partitions(),
                self.consumer_group,
                self._key,
                unkeyed=not self.shared_topic,
                start=start,
                max_count=max_count,
                max_time=max_time,
            )
        )
        return decode_all(fold(records))

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
        self._clients.write(
            lambda: Turn(self.topic, self._my_partition(), self._key, values), flush_timeout_seconds
        )

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
        clients = self._clients
        if clients.cached_partitions(self.topic) is None:  # metadata (and topic creation) when stale
            await asyncio.to_thread(clients.following, self._partition_count)
        loop = asyncio.get_running_loop()
        turn = Turn(self.topic, self._my_partition(), self._key, values, headers=headers, loop=loop)
        # queueing waits for the turn lock (a flush holds it for at most a slice): in a thread, so
        # the event loop never spins for it; the delivery itself is awaited without a thread
        delivery = await asyncio.to_thread(clients.queue, turn)
        await self._await_delivery(delivery, timeout)
        if clients.refused(delivery) and await asyncio.to_thread(clients.renewed_since, delivery):
            delivery = await asyncio.to_thread(clients.produce, turn)  # refused whole: nothing written
            await self._await_delivery(delivery, timeout)
        clients.check(delivery, self.topic, 0, waited=timeout)

    @staticmethod
    async def _await_delivery(delivery: Delivery, timeout: float) -> None:
        assert delivery.future is not None
        with contextlib.suppress(TimeoutError):  # check() raises afterwards, naming the timeout
            await asyncio.wait_for(asyncio.shield(delivery.future), timeout)

    def clear(self) -> None:
        """Forget the session: a clear marker on a shared topic; the seed layout deletes its topic."""
        if self.shared_topic:
            self._clients.write(
                lambda: Turn(
                    self.topic, self._my_partition(), self._key, [None], headers=[(CLEAR_HEADER, b"1")]
                ),
                self._clients.request_timeout,
            )
        else:
            self._clients.delete_topic(self.topic)

    async def aclear(self) -> None:
        if self.shared_topic:
            await self._aproduce([None], [(CLEAR_HEADER, b"1")], self._clients.request_timeout)
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
    ``timeout`` (seconds or ``chatmemory.memory.Timeouts``; :func:`chatmemory.connect` passes its own) bounds
    a broker connection's setup and each request; any other option is a librdkafka setting (dotted
    or with underscores), which wins over what ``timeout`` sets.
    """

    def __init__(
        self,
        binding: Binding,
        *,
        create: bool = False,
        partitions: int = DEFAULT_PARTITION,
        replication_factor: int = DEFAULT_REPLICATION_FACTOR,
        timeout: TimeoutSpec = None,
        **options: Any,
    ) -> None:
        if binding.backend is not BackendKind.KAFKA:
            raise BindingError(f"a {binding.backend.value} binding cannot build a Kafka connector")
        if not _TOPIC_RE.match(binding.topic):
            raise BindingError(f"topic {binding.topic!r} is not a valid Kafka topic name", key="topic")
        self._binding = binding
        timeouts = Timeouts.of(timeout)
        settings = client_settings(options)
        conf = {**timeout_settings(timeouts), **kafka_config(binding), **settings}
        # a SASL user from a Secret that can change is followed, unless the options name their own
        own_user = "sasl.username" in settings or "sasl.password" in settings
        sasl = binding.security_protocol.upper().startswith("SASL")
        self._clients = KafkaClients(
            conf,
            group_prefix=binding.consumer_group_prefix,
            may_create=create,
            request_timeout=timeouts.operation,
            follow=binding.source if sasl and not own_user else None,
        )
        retention = retention_ms(binding.ttl_seconds) if binding.ttl_seconds else -1
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
