"""``chatmemory.RedisChatMessageHistory`` as a drop-in for ``langchain_redis.RedisChatMessageHistory``.

The shared tests run the same assertions against our class on the platform's Redis 7 (``REDIS_URL``,
no search module: we send no ``FT.*``) and against langchain-redis 0.2.6's class on Redis 8
(``REDIS_SEARCH_URL``), so they encode its semantics, not ours. Where the two deliberately differ
(``delete()``, a negative ``ttl``) each side has its own test, named for what it does.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from chatmemory import RedisChatMessageHistory
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from redis.cluster import RedisCluster
from redisvl.exceptions import RedisSearchError

from tests.integration.sdk.conftest import uid

Make = Callable[..., Any]
IMPLS = ["chatmemory", "langchain_redis"]


def _langchain_redis_class() -> Any:
    from langchain_redis import RedisChatMessageHistory as LangChainRedisHistory

    return LangChainRedisHistory


@pytest.fixture(params=IMPLS)
def impl(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def target(impl: str) -> str:
    """Ours on Redis 7 (no search module), langchain-redis's on Redis 8 (it needs the module)."""
    return "REDIS_URL" if impl == "chatmemory" else "REDIS_SEARCH_URL"


@pytest.fixture
def make(
    platform: Any, impl: str, target: str, prefix: str, admin: redis.Redis | RedisCluster
) -> Iterator[Make]:
    """``make(session_id, *positional_after_redis_url, **kwargs)``: a history of ``impl`` under the
    test's prefix. langchain-redis's histories get an index of their own, dropped afterwards."""
    made: list[Any] = []
    index = f"idx:{prefix}"

    def build(session_id: str | None = None, *args: Any, **kwargs: Any) -> Any:
        session = session_id or f"s-{uid()}"
        if impl == "chatmemory":
            h = RedisChatMessageHistory(session, platform[target], prefix, *args, **kwargs)
        else:
            rest = list(args) + [None] * (2 - len(args))  # ttl, index_name
            ttl = kwargs.pop("ttl", rest[0])
            with warnings.catch_warnings():  # its class is deprecated since 0.2.6
                warnings.simplefilter("ignore")
                # An existing index makes 0.2.6 read FT.INFO as a list and fail on Redis 8's dict
                # reply unless overwrite_index=True (which keeps the documents).
                h = _langchain_redis_class()(
                    session, platform[target], prefix, ttl, index, None, bool(made), **kwargs
                )
        made.append(h)
        return h

    yield build
    for h in made:
        if impl == "chatmemory":
            h.close()
    if impl == "langchain_redis" and made:
        with contextlib.suppress(redis.ResponseError):  # delete() may have dropped it
            admin.ft(index).dropindex()


def turn() -> list[Any]:
    return [
        HumanMessage("Tell me about the WEATHER in Paris"),
        AIMessage("Paris is mild; I'm learning the forecast."),
        HumanMessage("And Redis?"),
    ]


# -- the shared public surface: same assertions on both classes --------------------------------------


def test_id_is_the_session_id(make: Make) -> None:
    h = make("user-42")
    assert h.id == "user-42" == h.session_id


def test_len_counts_this_sessions_messages_only(make: Make) -> None:
    h, other = make(), make()
    assert len(h) == 0
    h.add_messages(turn())
    other.add_messages([HumanMessage("x")])
    assert len(h) == 3
    assert len(other) == 1


def test_clear_removes_this_session_only(make: Make) -> None:
    h, other = make(), make()
    h.add_messages(turn())
    other.add_messages([HumanMessage("kept")])
    h.clear()
    assert h.messages == [] and len(h) == 0
    assert [m.content for m in other.messages] == ["kept"]


def test_positional_arguments_follow_langchain_redis_order(make: Make, admin: Any, prefix: str) -> None:
    h = make(f"s-{uid()}", 60)  # session_id, redis_url, key_prefix, ttl
    h.add_messages(turn())
    keys = list(admin.scan_iter(match=f"{prefix}*"))
    assert keys and all(0 < admin.ttl(k) <= 60 for k in keys)
    assert h.key_prefix == prefix and h.ttl == 60


def test_no_ttl_keeps_messages_forever(make: Make, admin: Any, prefix: str) -> None:
    make().add_messages(turn())
    assert [admin.ttl(k) for k in admin.scan_iter(match=f"{prefix}*")] != []
    assert all(admin.ttl(k) == -1 for k in admin.scan_iter(match=f"{prefix}*"))


def test_search_with_an_empty_query_finds_nothing(make: Make) -> None:
    h = make()
    h.add_messages(turn())
    assert h.search_messages("") == []
    assert h.search_messages("", limit=100) == []


def test_search_with_limit_zero_finds_nothing(make: Make) -> None:
    h = make()
    h.add_messages(turn())
    assert h.search_messages("paris", limit=0) == []


def test_search_limit_caps_the_results_and_a_large_limit_returns_every_match(make: Make) -> None:
    h = make()
    h.add_messages([HumanMessage(f"paris note {i}") for i in range(15)])
    assert len(h.search_messages("paris")) == 10  # the default limit
    assert len(h.search_messages("paris", limit=3)) == 3
    assert len(h.search_messages("paris", limit=100_000)) == 15


def test_search_with_a_negative_limit_is_refused(make: Make) -> None:
    h = make()
    h.add_messages(turn())
    with pytest.raises((ValueError, RedisSearchError), match=r"(?i)limit"):
        h.search_messages("paris", limit=-1)


def test_search_ignores_case(make: Make) -> None:
    h = make()
    h.add_messages(turn())
    for query in ("weather", "WEATHER", "Weather"):
        assert [r["content"] for r in h.search_messages(query)] == ["Tell me about the WEATHER in Paris"]


def test_search_matches_any_word_of_the_query(make: Make) -> None:
    h = make()
    h.add_messages(turn())
    found = {r["content"] for r in h.search_messages("redis weather")}
    assert found == {"Tell me about the WEATHER in Paris", "And Redis?"}
    assert len(h.search_messages("redis weather", limit=1)) == 1


def test_search_matches_words_and_their_suffixed_forms_not_fragments(make: Make) -> None:
    h = make()
    h.add_messages(turn())
    for query in ("learn", "learned", "learns"):  # "learning"
        assert [r["type"] for r in h.search_messages(query)] == ["ai"]
    assert h.search_messages("par") == []  # a fragment of "Paris"
    assert h.search_messages("eather") == []
    assert {r["type"] for r in h.search_messages("Paris,")} == {"human", "ai"}  # punctuation dropped


def test_search_results_carry_content_type_and_additional_kwargs(make: Make) -> None:
    h = make()
    h.add_messages(
        [
            HumanMessage("weather please", additional_kwargs={"locale": "nb"}),
            ToolMessage("weather: -3", tool_call_id="call-1"),
        ]
    )
    by_type = {r["type"]: r for r in h.search_messages("weather")}
    assert by_type["human"]["content"] == "weather please"
    assert by_type["human"]["additional_kwargs"] == {"locale": "nb"}
    assert by_type["tool"]["content"] == "weather: -3"
    assert by_type["tool"]["tool_call_id"] == "call-1"
    assert by_type["tool"]["status"] == "success"


def test_it_is_a_langchain_chat_history(make: Make) -> None:
    h = make()
    assert isinstance(h, BaseChatMessageHistory)
    h.add_user_message("hi")
    h.add_ai_message("hello")
    assert [m.type for m in h.messages] == ["human", "ai"]


# -- where the two differ on purpose ---------------------------------------------------------------


@pytest.mark.parametrize("impl", ["langchain_redis"], indirect=True)
def test_langchain_redis_delete_drops_every_session_under_its_prefix(make: Make) -> None:
    h, other = make(), make()
    h.add_messages(turn())
    other.add_messages([HumanMessage("x")])
    h.delete()
    assert len(other.redis_client.keys(f"{h.key_prefix}*")) == 0


@pytest.mark.parametrize("impl", ["chatmemory"], indirect=True)
def test_delete_removes_this_session_and_warns_that_other_sessions_stay(make: Make) -> None:
    h, other = make(), make()
    h.add_messages(turn())
    other.add_messages([HumanMessage("kept")])
    with pytest.warns(UserWarning, match="this session only"):
        h.delete()
    assert len(h) == 0
    assert [m.content for m in other.messages] == ["kept"]


def test_ttl_zero_keeps_the_session_forever(make: Make, admin: Any, prefix: str) -> None:
    forever = make(None, 0)
    forever.add_messages([HumanMessage("a")])
    assert len(forever) == 1
    keys = list(admin.scan_iter(match=f"{prefix}*"))
    assert keys and all(admin.ttl(k) == -1 for k in keys)


@pytest.mark.parametrize("impl", ["langchain_redis"], indirect=True)
def test_langchain_redis_negative_ttl_keeps_nothing(make: Make) -> None:
    gone = make(None, -1)
    gone.add_messages([HumanMessage("b")])
    assert gone.messages == [] and len(gone) == 0


@pytest.mark.parametrize("impl", ["chatmemory"], indirect=True)
def test_a_negative_ttl_is_refused_rather_than_losing_every_message(make: Make) -> None:
    with pytest.raises(ValueError, match="0 and None keep the session forever"):
        make(None, -1)


@pytest.mark.parametrize("impl", ["chatmemory"], indirect=True)
def test_redis_py_options_in_kwargs_reach_the_client(make: Make) -> None:
    h = make(None, None, decode_responses=True, client_name="dropin")
    h.add_messages(turn())
    assert [m.type for m in h.messages] == ["human", "ai", "human"]
    assert h.redis_client.client_getname() == "dropin"
