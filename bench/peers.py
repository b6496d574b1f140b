"""Peers that cannot be installed as packages, re-created from their published source.

Used by :mod:`bench.redis_history` and :mod:`bench.agent`.

``MemorystoreLayoutHistory`` re-creates ``langchain-google-memorystore-redis`` 0.3.0's
``MemorystoreChatMessageHistory`` (it pins ``langchain-core<1.0`` and ``redis<6``, so it cannot be
installed beside langchain-core 1.x): the key is the session id with no prefix, ``RPUSH`` of
``json.dumps(message_to_dict(m))`` then ``EXPIRE`` per message (two round trips each, not atomic),
``LRANGE 0 -1`` to read, ``DEL`` to clear.
"""

from __future__ import annotations

import json
from typing import Any

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage, message_to_dict, messages_from_dict


class MemorystoreLayoutHistory(BaseChatMessageHistory):
    def __init__(self, client: Any, session_id: str, ttl: int | None = None) -> None:
        self._redis = client
        self.key = session_id
        self.ttl = ttl

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        raw = self._redis.lrange(self.key, 0, -1)
        return messages_from_dict([json.loads(m.decode("utf-8")) for m in raw])

    def add_message(self, message: BaseMessage) -> None:
        self._redis.rpush(self.key, json.dumps(message_to_dict(message)))
        if self.ttl:
            self._redis.expire(self.key, self.ttl)

    def clear(self) -> None:
        self._redis.delete(self.key)
