"""The Redis history's command shape, without a server: one transaction per add, errors wrapped."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from chatmemory import BackendError, RedisChatMessageHistory
from chatmemory._codec import encode
from langchain_core.messages import AIMessage, HumanMessage


class FakePipeline:
    def __init__(self, log: list[Any], transaction: bool) -> None:
        self.log = log
        self.transaction = transaction
        self.queued: list[tuple[Any, ...]] = []

    def rpush(self, *a: Any) -> None:
        self.queued.append(("rpush", *a))

    def ltrim(self, *a: Any) -> None:
        self.queued.append(("ltrim", *a))

    def expire(self, *a: Any) -> None:
        self.queued.append(("expire", *a))

    def execute(self) -> list[Any]:
        self.log.append(("execute", self.transaction, self.queued))
        return []


class FakeClient:
    """Records calls; ``fail`` makes every call raise that redis-py error."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.log: list[Any] = []
        self.fail = fail
        self.stored: list[str] = []

    def pipeline(self, transaction: bool = False) -> FakePipeline:
        if self.fail:
            raise self.fail
        return FakePipeline(self.log, transaction)

    def lrange(self, key: str, start: int, end: int) -> list[str]:
        if self.fail:
            raise self.fail
        self.log.append(("lrange", key, start, end))
        return self.stored

    def delete(self, key: str) -> int:
        self.log.append(("delete", key))
        return 1


def history(client: FakeClient, **kw: Any) -> RedisChatMessageHistory:
    return RedisChatMessageHistory("s-1", redis_client=client, **kw)  # type: ignore[arg-type]


def test_add_messages_is_one_transaction_with_rpush_trim_and_sliding_expire() -> None:
    client = FakeClient()
    msgs = [HumanMessage("a"), AIMessage("b")]
    history(client, key_prefix="p:", ttl=30, max_messages=10).add_messages(msgs)
    assert client.log == [
        (
            "execute",
            True,
            [
                ("rpush", "p:{s-1}", *map(encode, msgs)),
                ("ltrim", "p:{s-1}", -10, -1),
                ("expire", "p:{s-1}", 30),
            ],
        )
    ]


def test_add_messages_without_ttl_or_window_only_appends_and_empty_adds_send_nothing() -> None:
    client = FakeClient()
    h = history(client)
    h.add_messages([])
    h.add_message(HumanMessage("x"))
    assert client.log == [("execute", True, [("rpush", "chat:{s-1}", encode(HumanMessage("x")))])]


def test_messages_is_a_single_full_lrange_decoding_text_or_bytes() -> None:
    client = FakeClient()
    client.stored = [encode(HumanMessage("a")), encode(AIMessage("b")).encode()]  # type: ignore[list-item]
    assert history(client).messages == [HumanMessage("a"), AIMessage("b")]
    assert client.log == [("lrange", "chat:{s-1}", 0, -1)]


def test_clear_deletes_only_the_sessions_key() -> None:
    client = FakeClient()
    history(client, key_prefix="").clear()
    assert client.log == [("delete", "s-1")]


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (redis.AuthenticationError("WRONGPASS invalid username-password pair"), "authentication failed"),
        (redis.exceptions.NoPermissionError("NOPERM no permissions to access the key"), "permission denied"),
        (redis.ConnectionError("Connection refused"), "unreachable"),
        (redis.ResponseError("WRONGTYPE Operation against a key"), "ResponseError"),
    ],
)
def test_server_errors_become_backend_errors_with_the_cause(error: Exception, words: str) -> None:
    h = history(FakeClient(fail=error))
    with pytest.raises(BackendError, match=words) as err:
        h.add_messages([HumanMessage("x")])
    assert err.value.__cause__ is error
    with pytest.raises(BackendError, match=words):
        _ = h.messages


def test_search_is_case_insensitive_limited_and_reports_positions() -> None:
    client = FakeClient()
    client.stored = [
        encode(m) for m in [HumanMessage("Find ME"), AIMessage("no"), HumanMessage("find me too")]
    ]
    found = history(client).search_messages("find me", limit=5)
    assert [(r["index"], r["content"], r["type"]) for r in found] == [
        (0, "Find ME", "human"),
        (2, "find me too", "human"),
    ]
    assert len(history(client).search_messages("find", limit=1)) == 1
    assert found[0]["data"]["content"] == "Find ME"


async def test_async_falls_back_to_threads_on_a_sync_client_you_brought() -> None:
    client = FakeClient()
    client.stored = [encode(HumanMessage("a"))]
    h = history(client)
    assert h._aclient() is None
    assert await h.aget_messages() == [HumanMessage("a")]
