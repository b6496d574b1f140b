"""An in-process durable history for the Streamlit unit tests (AppTest scripts import it)."""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage

#: session id -> stored messages; stands in for a server that outlives browser sessions.
STORE: dict[str, list[BaseMessage]] = {}
#: how often each session was read
READS: dict[str, int] = {}


class CountingHistory(BaseChatMessageHistory):
    def __init__(self, session_id: str, *, fail_writes: bool = False) -> None:
        self.session_id = session_id
        self.fail_writes = fail_writes

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        READS[self.session_id] = READS.get(self.session_id, 0) + 1
        return list(STORE.get(self.session_id, []))

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        if self.fail_writes:
            raise RuntimeError("backend down")
        STORE.setdefault(self.session_id, []).extend(messages)

    def clear(self) -> None:
        STORE.pop(self.session_id, None)
