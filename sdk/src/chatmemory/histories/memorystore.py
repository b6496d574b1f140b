"""The Memorystore seed's history, re-implemented: same signature, same keys, fewer round trips.

Used by applications moving off ``langchain_google_memorystore_redis.MemorystoreChatMessageHistory``
(which cannot be installed next to langchain-core 1.x): change the import, keep the data. The layout
is the seed's: the session id verbatim is the key of a Redis LIST, one ``message_to_dict`` JSON per
element, appended with ``RPUSH``, read with ``LRANGE 0 -1``, ``EXPIRE ttl`` refreshed on every write
(sliding), ``clear`` = ``DEL``. It is :class:`~chatmemory.histories.redis.RedisChatMessageHistory`
with an empty key prefix, so it gains what the seed lacks: one atomic round trip per
``add_messages``, ``decode_responses=True`` clients, native async with a ``redis.asyncio`` client,
and errors raised as :class:`~chatmemory.errors.BackendError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chatmemory.histories.redis import RedisChatMessageHistory

if TYPE_CHECKING:
    from chatmemory.histories.redis import AsyncClient, SyncClient


class MemorystoreChatMessageHistory(RedisChatMessageHistory):
    """A session in the Memorystore layout (key = ``session_id``), on a client you own.

    Args:
        client: ``redis.Redis`` or ``redis.cluster.RedisCluster`` (auth and TLS are yours, as in the
            seed); ``decode_responses=True`` clients work too.
        session_id: The key of the session's list.
        ttl: Seconds the session lives after its last write (sliding), or ``None``.
        async_client: Optional ``redis.asyncio`` twin for native ``a*`` methods.
    """

    def __init__(
        self,
        client: SyncClient,
        session_id: str,
        ttl: int | None = None,
        *,
        async_client: AsyncClient | None = None,
    ) -> None:
        super().__init__(
            session_id, key_prefix="", ttl=ttl, redis_client=client, async_redis_client=async_client
        )


__all__ = ["MemorystoreChatMessageHistory"]
