"""The Redis driver shared by the LangGraph checkpointer and store (private to the SDK).

Both write each primitive once as an *operation* yielding :class:`~chatmemory.checkpoint.redis.Batch`
es; the saver (``chatmemory.checkpoint._redis_saver``) and the store
(``chatmemory.store._redis_store``) run those batches through the functions here: how a batch
splits into pipelines on a standalone server or a cluster (:func:`round_trips`), how one pipeline
is sent by the sync and the asyncio clients (:func:`send`, :func:`asend`, with a hand-made
MULTI/EXEC on the asyncio cluster client), two checks on the clients users pass in, and the
client pair and lifecycle both own when built from a URL (:func:`url_clients`, :class:`OwnedClients`).
The Redis chat history (:mod:`chatmemory.histories.redis`) sends its asyncio cluster turns, a
hand-made MULTI/EXEC (and WAIT), through :func:`aslot_pipeline`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from chatmemory._connect import Timeouts, no_retry
from chatmemory.checkpoint.redis import Batch

if TYPE_CHECKING:
    import redis
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.cluster

__all__ = [
    "Command",
    "OwnedClients",
    "asend",
    "aslot_pipeline",
    "decodes_responses",
    "is_cluster",
    "round_trips",
    "send",
    "url_clients",
]

Command = tuple[Any, ...]


def url_clients(url: str) -> tuple[redis.Redis, redis.asyncio.Redis]:
    """A sync and an asyncio client for ``redis://`` / ``rediss://`` ``url``, with the SDK's
    timeouts and no redis-py retry, as every client it builds (the URL's own
    ``socket_timeout`` / ``socket_connect_timeout`` query options win)."""
    import redis as _redis
    import redis.asyncio as _aredis

    t = Timeouts()
    return (
        _redis.Redis.from_url(
            url, retry=no_retry(), socket_connect_timeout=t.connect, socket_timeout=t.operation
        ),
        _aredis.Redis.from_url(
            url, retry=no_retry(True), socket_connect_timeout=t.connect, socket_timeout=t.operation
        ),
    )


class OwnedClients:
    """close/aclose of a saver or store that holds ``client``/``aclient`` and closes them only if it
    built them (``_owns_clients``); setup has nothing to create on Redis."""

    client: Any
    aclient: Any
    _owns_clients: bool

    def close(self) -> None:
        """Close the sync client if this object created it."""
        if self._owns_clients and self.client is not None:
            self.client.close()

    async def aclose(self) -> None:
        """Close both clients if this object created them."""
        if self._owns_clients:
            if self.aclient is not None:
                await self.aclient.aclose()
            self.close()

    def setup(self) -> None:
        """Nothing to create on Redis (keys appear on first write); kept for parity with LangGraph."""

    async def asetup(self) -> None:
        """See :meth:`setup`."""


def round_trips(batch: Batch, *, cluster: bool) -> tuple[list[tuple[list[Command], bool]], int]:
    """The (commands, atomic) pipelines that carry ``batch``, and which one holds its replies."""
    if not batch.commands:
        return [], 0
    if not batch.index:
        return [(batch.commands, batch.atomic)], 0
    if not cluster:  # one slot space: the index changes in the same transaction
        return [(batch.commands + batch.index, True)], 0
    if batch.index_after:
        return [(batch.commands, batch.atomic), (batch.index, False)], 0
    return [(batch.index, False), (batch.commands, batch.atomic)], 1


def send(
    client: redis.Redis | redis.cluster.RedisCluster, commands: Sequence[Command], atomic: bool
) -> list[Any]:
    """Send one pipeline with a sync client (one command alone: no pipeline), return its replies."""
    if len(commands) == 1 and not atomic:
        return [client.execute_command(*commands[0])]  # type: ignore[no-untyped-call]
    pipe = client.pipeline(transaction=atomic)
    for cmd in commands:
        pipe.execute_command(*cmd)
    return list(pipe.execute())


async def asend(
    client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster,
    commands: Sequence[Command],
    atomic: bool,
) -> list[Any]:
    """:func:`send` with an asyncio client."""
    import redis.asyncio.cluster as _acluster

    if atomic and isinstance(client, _acluster.RedisCluster):
        return await _acluster_transaction(client, commands)
    if len(commands) == 1 and not atomic:
        return [await client.execute_command(*commands[0])]
    pipe = client.pipeline(transaction=atomic)
    for cmd in commands:
        pipe.execute_command(*cmd)
    return list(await pipe.execute())


def is_cluster(client: Any) -> bool:
    """Whether ``client`` is a (sync or asyncio) Redis Cluster client."""
    if client is None:
        return False
    import redis.asyncio.cluster
    import redis.cluster

    return isinstance(client, redis.cluster.RedisCluster | redis.asyncio.cluster.RedisCluster)


async def _acluster_transaction(
    client: redis.asyncio.cluster.RedisCluster, commands: Sequence[tuple[Any, ...]]
) -> list[Any]:
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


async def aslot_pipeline(
    client: redis.asyncio.cluster.RedisCluster, key: Any, commands: Sequence[Command]
) -> list[Any]:
    """``commands`` written together on one connection to the primary of ``key``'s slot (as the
    client's slot map says): one round trip, and each reply, or the error the server answered, in
    order, for the caller to judge.

    Unlike the cluster client's own pipeline, nothing here follows a redirection or resends a
    command, so a hand-made ``MULTI ... EXEC`` stays one transaction the server applies whole or
    discards whole. Raises (nothing sent) ``SlotNotCoveredError`` when no node serves the slot and
    redis-py's ``ConnectionError`` when the connection cannot be opened; a connection that breaks
    while writing raises too, one that breaks while reading leaves its error as the replies.
    """
    from redis.asyncio.cluster import PipelineCommand
    from redis.exceptions import SlotNotCoveredError

    await client.initialize()  # a no-op once the slot map is known
    node = client.get_node_from_key(key)  # raises SlotNotCoveredError when no node serves it
    if node is None:
        raise SlotNotCoveredError(f"no cluster node serves the slot of {key!r}")
    block = [PipelineCommand(i, *c) for i, c in enumerate(commands)]
    await node.execute_pipeline(block)
    return [c.result for c in block]


def decodes_responses(client: Any) -> bool:
    """Whether ``client`` decodes replies to str (the saver and the store need bytes)."""
    try:
        if hasattr(client, "get_connection_kwargs"):
            return bool(client.get_connection_kwargs().get("decode_responses"))
        pool = getattr(client, "connection_pool", None)
        if pool is not None:
            return bool(pool.connection_kwargs.get("decode_responses"))
    except (AttributeError, TypeError):
        return False
    return False
