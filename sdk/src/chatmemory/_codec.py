"""How a message is stored: one JSON document per message, LangChain's ``message_to_dict`` form.

Called by every history module, so all backends share one lossless layout (``tool_calls``, ids,
names and metadata round-trip) that LangChain's own histories can also read. Chunks are stored as
the whole messages they stand for.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from langchain_core.messages import (
    BaseMessage,
    BaseMessageChunk,
    message_chunk_to_message,
    message_to_dict,
    messages_from_dict,
)


def encode(message: BaseMessage) -> str:
    """One message as compact JSON text."""
    if isinstance(message, BaseMessageChunk):
        message = message_chunk_to_message(message)
    return json.dumps(message_to_dict(message), separators=(",", ":"), ensure_ascii=False)


def encode_all(messages: Sequence[BaseMessage]) -> list[str]:
    return [encode(m) for m in messages]


def decode_all(raw: Iterable[str | bytes]) -> list[BaseMessage]:
    """Stored documents back to message objects, in the order given."""
    return messages_from_dict([json.loads(r) for r in raw])
