"""langchain-redis's constructor and surface on our Redis history, without a server.

The same behaviours against real servers, and against langchain-redis's own class, are in
``tests/integration/sdk/test_redis_dropin.py``.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from chatmemory import RedisChatMessageHistory
from chatmemory._codec import encode
from langchain_core.messages import AIMessage, HumanMessage

from tests.unit.sdk.test_redis_history import FakeClient

URL = "redis://127.0.0.1:1"  # never connected to


class CountingClient(FakeClient):
    def llen(self, key: str) -> int:
        self.log.append(("llen", key))
        return len(self.stored)


def test_positional_arguments_follow_langchain_redis_order() -> None:
    client = CountingClient()
    # session_id, redis_url, key_prefix, ttl, index_name, redis_client, overwrite_index
    h = RedisChatMessageHistory("s", None, "p:", 30, "idx:chat_history", client, False)  # type: ignore[arg-type]
    h.add_messages([HumanMessage("a")])
    assert client.log == [
        ("execute", True, [("rpush", "p:{s}", encode(HumanMessage("a"))), ("expire", "p:{s}", 30)])
    ]
    assert (h.key_prefix, h.ttl, h.index_name, h.redis_client, h.overwrite_index) == (
        "p:",
        30,
        "idx:chat_history",
        client,
        False,
    )


def test_our_own_options_stay_keyword_only() -> None:
    with pytest.raises(TypeError):
        RedisChatMessageHistory("s", URL, "p:", 30, None, None, False, 10)  # type: ignore[misc]


def test_id_is_the_session_id() -> None:
    assert RedisChatMessageHistory("user-42", redis_client=CountingClient()).id == "user-42"  # type: ignore[arg-type]


def test_len_is_one_llen() -> None:
    client = CountingClient()
    client.stored = [encode(HumanMessage("a")), encode(AIMessage("b"))]
    assert len(RedisChatMessageHistory("s", redis_client=client)) == 2  # type: ignore[arg-type]
    assert client.log == [("llen", "chat:{s}")]


def test_an_empty_history_is_still_true_and_costs_no_round_trip() -> None:
    client = CountingClient()
    assert RedisChatMessageHistory("s", redis_client=client)  # type: ignore[arg-type]
    assert client.log == []


def test_delete_deletes_this_session_only_with_a_warning() -> None:
    client = CountingClient()
    with pytest.warns(UserWarning, match="this session only"):
        RedisChatMessageHistory("s", redis_client=client).delete()  # type: ignore[arg-type]
    assert client.log == [("delete", "chat:{s}")]


def test_langchain_redis_default_index_name_is_accepted_silently() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RedisChatMessageHistory("s", URL, index_name="idx:chat_history")
        RedisChatMessageHistory("s", URL, index_name=None, overwrite_index=False)


def test_another_index_name_is_accepted_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="index_name='idx:mine' is ignored"):
        h = RedisChatMessageHistory("s", URL, index_name="idx:mine")
    assert h.index_name == "idx:mine"


def test_overwrite_index_is_accepted_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="overwrite_index=True is ignored"):
        h = RedisChatMessageHistory("s", URL, overwrite_index=True)
    assert h.overwrite_index is True


def test_redis_py_options_in_kwargs_configure_the_clients_we_build_and_win_over_timeout() -> None:
    h = RedisChatMessageHistory("s", URL, decode_responses=True, socket_timeout=2.5, timeout=9)
    kw = h.redis_client.connection_pool.connection_kwargs
    assert (kw["decode_responses"], kw["socket_timeout"], kw["socket_connect_timeout"]) == (True, 2.5, 9.0)


def test_kwargs_with_a_client_you_pass_are_ignored_with_a_warning() -> None:
    with pytest.warns(UserWarning, match=r"\['decode_responses'\] ignored"):
        RedisChatMessageHistory("s", redis_client=CountingClient(), decode_responses=True)  # type: ignore[arg-type]


def test_a_misspelt_keyword_argument_fails_at_construction() -> None:
    with pytest.raises(TypeError, match="max_mesages"):
        RedisChatMessageHistory("s", URL, max_mesages=5)


def test_ttl_zero_means_forever_and_a_negative_ttl_is_refused() -> None:
    assert RedisChatMessageHistory("s", URL, ttl=0).ttl is None
    with pytest.raises(ValueError, match="0 and None keep the session forever"):
        RedisChatMessageHistory("s", URL, ttl=-1)


@pytest.mark.parametrize(("query", "limit"), [("", 10), ("weather", 0), ("  ,, ", 10), (None, 10)])
def test_search_that_can_find_nothing_returns_empty_without_a_round_trip(query: Any, limit: int) -> None:
    client = CountingClient()
    client.stored = [encode(HumanMessage("weather"))]
    assert RedisChatMessageHistory("s", redis_client=client).search_messages(query, limit) == []  # type: ignore[arg-type]
    assert client.log == []


def test_search_with_a_negative_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="limit"):
        RedisChatMessageHistory("s", redis_client=CountingClient()).search_messages("x", -1)  # type: ignore[arg-type]


def test_search_matches_any_query_word_and_its_suffixed_forms_case_insensitively() -> None:
    client = CountingClient()
    texts = ["I LEARNED it", "stories", "Paris", "parade", "no match"]
    client.stored = [encode(HumanMessage(t)) for t in texts]
    h = RedisChatMessageHistory("s", redis_client=client)  # type: ignore[arg-type]
    assert [r["content"] for r in h.search_messages("learning story PARIS")] == texts[:3]
    assert h.search_messages("par") == []
    assert [r["index"] for r in h.search_messages("learning story PARIS", limit=2)] == [0, 1]


async def test_async_search_follows_the_same_rules() -> None:
    client = CountingClient()
    client.stored = [encode(HumanMessage("Weather today"))]
    h = RedisChatMessageHistory("s", redis_client=client)  # type: ignore[arg-type]
    assert await h.asearch_messages("") == []
    assert [r["content"] for r in await h.asearch_messages("WEATHER")] == ["Weather today"]
