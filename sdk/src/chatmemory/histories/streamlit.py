"""A history for Streamlit apps: cached in ``st.session_state``, written through to durable memory.

Used by Streamlit apps (see ``examples/streamlit_chat.py``) in place of
``langchain_community``'s ``StreamlitChatMessageHistory``, with the same signature plus
``history=``: a durable history, typically ``memory.history(session_id)`` from
:func:`chatmemory.connect`. The messages are then

- read from the durable history once per browser session and kept in ``st.session_state[key]``,
  so a Streamlit rerun (every widget interaction) does not refetch them;
- written to the durable history first, then to the cache, so a write that fails raises and leaves
  the cache as it was, and what the user sees has been stored;
- there after a server restart, in a new browser tab and on other replicas (they read the durable
  history on their first run). Call :meth:`reload` to pick up another replica's writes.

Without ``history=`` it behaves like the seed: the messages live only in the browser session.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage, BaseMessageChunk, message_chunk_to_message

from chatmemory._connect import require

require("streamlit", "streamlit")
import streamlit as st  # noqa: E402  (after the MissingExtra check)


class StreamlitChatMessageHistory(BaseChatMessageHistory):
    """Messages in ``st.session_state[key]``, optionally backed by a durable ``history``.

    Args:
        key: The ``st.session_state`` key holding the list of messages.
        history: A durable history to read once and write through to (for example
            ``memory.history(session_id)``). If ``key`` was filled from another history (another
            session id), it is refetched from this one.
    """

    def __init__(
        self, key: str = "langchain_messages", *, history: BaseChatMessageHistory | None = None
    ) -> None:
        self._key = key
        self._source_key = f"{key}.__chatmemory_source__"
        self.history = history
        source = _identity(history)
        state: Any = st.session_state
        if key not in state or (history is not None and state.get(self._source_key) != source):
            state[key] = list(history.messages) if history is not None else []
            state[self._source_key] = source
        # The list object itself is kept: LangChain may call us from worker threads (for example
        # RunnableWithMessageHistory), where st.session_state is not reachable. Mutating it in place
        # updates the session state too.
        self._messages: list[BaseMessage] = state[key]

    @property
    def key(self) -> str:
        return self._key

    @property
    def messages(self) -> list[BaseMessage]:
        """The cached messages (the durable history is read only on the first run of a session)."""
        return self._messages

    @messages.setter
    def messages(self, value: list[BaseMessage]) -> None:
        """Replace the messages: the durable history is cleared and rewritten, then the cache."""
        if self.history is not None:
            self.history.clear()
            self.history.add_messages(value)
        self._messages[:] = list(value)

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        """Write ``messages`` to the durable history (one round trip), then to the cache."""
        batch = [message_chunk_to_message(m) if isinstance(m, BaseMessageChunk) else m for m in messages]
        if not batch:
            return
        if self.history is not None:
            self.history.add_messages(batch)
        self._messages.extend(batch)

    def clear(self) -> None:
        """Clear the durable history (this session only), then the cache."""
        if self.history is not None:
            self.history.clear()
        self._messages.clear()

    def reload(self) -> list[BaseMessage]:
        """Refetch from the durable history (for example after another replica wrote)."""
        if self.history is not None:
            self._messages[:] = self.history.messages
        return self._messages


def _identity(history: BaseChatMessageHistory | None) -> tuple[str, str] | None:
    """What the cache was filled from: the history's class and its key or session id."""
    if history is None:
        return None
    ident = getattr(history, "key", None) or getattr(history, "session_id", None) or str(id(history))
    return (type(history).__qualname__, str(ident))


__all__ = ["StreamlitChatMessageHistory"]
