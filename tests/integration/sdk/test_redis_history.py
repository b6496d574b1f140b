"""The Redis history against real servers: Redis 7, Valkey, Redis 8, TLS Redis and a Redis Cluster.

Everything is checked on the server itself (LRANGE, TTL, CLUSTER KEYSLOT) as well as through the API.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import redis
import redis.asyncio.cluster
from chatmemory import BackendError, ChatMemory, RedisChatMessageHistory
from chatmemory.histories.redis import session_key
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from redis.cluster import RedisCluster

from tests.integration.sdk.conftest import run_threads, uid

Admin = redis.Redis | RedisCluster

TOOL_TURN: list[BaseMessage] = [
    SystemMessage("be exact", id="s-1"),
    HumanMessage("weather in Oslo?", id="h-1", name="alice", additional_kwargs={"locale": "nb"}),
    AIMessage(
        "",
        id="a-1",
        name="bot",
        tool_calls=[
            {"name": "weather", "args": {"city": "Oslo", "days": [1, 2]}, "id": "call-1", "type": "tool_call"}
        ],
        response_metadata={"model_name": "fake-1", "finish_reason": "tool_calls"},
        usage_metadata={"input_tokens": 10, "output_tokens": 3, "total_tokens": 13},
    ),
    ToolMessage('{"temp": -3}', tool_call_id="call-1", name="weather", id="t-1", artifact={"raw": [1]}),
    AIMessage("It is -3 °C in Oslo.", id="a-2", response_metadata={"finish_reason": "stop"}),
]


def test_tool_call_turn_round_trips_with_ids_names_and_metadata(
    make_memory: Callable[..., ChatMemory],
) -> None:
    history = make_memory().history(f"tools-{uid()}")
    history.add_messages(TOOL_TURN)
    back = history.messages
    assert back == TOOL_TURN
    assert [type(m) for m in back] == [type(m) for m in TOOL_TURN]
    ai = back[2]
    assert isinstance(ai, AIMessage)
    assert ai.tool_calls[0]["args"] == {"city": "Oslo", "days": [1, 2]}
    assert ai.usage_metadata == {"input_tokens": 10, "output_tokens": 3, "total_tokens": 13}


def test_ten_thousand_messages_come_back_complete_and_in_order(
    make_memory: Callable[..., ChatMemory],
) -> None:
    history = make_memory().history(f"long-{uid()}")
    for start in range(0, 10_000, 1_000):
        history.add_messages([HumanMessage(f"m{i}", id=str(i)) for i in range(start, start + 1_000)])
    back = history.messages
    assert len(back) == 10_000
    assert [m.text for m in back] == [f"m{i}" for i in range(10_000)]


def test_eight_concurrent_writers_lose_nothing_and_keep_their_order(
    make_memory: Callable[..., ChatMemory],
) -> None:
    memory = make_memory()
    session = f"race-{uid()}"
    per_writer = 60
    barrier = threading.Barrier(8)

    def writer(w: int) -> None:
        history = memory.history(session)  # a history per thread, one pooled client underneath
        barrier.wait()
        for j in range(0, per_writer, 2):
            history.add_messages([HumanMessage(f"w{w}:{j}"), AIMessage(f"w{w}:{j + 1}")])

    run_threads(8, writer)
    texts = [m.text for m in memory.history(session).messages]
    assert len(texts) == 8 * per_writer
    for w in range(8):
        mine = [int(t.split(":")[1]) for t in texts if t.startswith(f"w{w}:")]
        assert mine == list(range(per_writer))
    # a turn (one add_messages call) is atomic: its two messages are adjacent
    for i in range(0, len(texts), 2):
        assert texts[i].split(":")[0] == texts[i + 1].split(":")[0]


def test_ttl_is_set_and_slides_on_every_write(make_memory: Callable[..., ChatMemory], admin: Admin) -> None:
    history = make_memory(ttl_seconds=500).history(f"ttl-{uid()}")
    key = history.key  # type: ignore[attr-defined]
    history.add_messages([HumanMessage("one")])
    assert 0 < admin.ttl(key) <= 500
    admin.expire(key, 20)  # as if 480 s had passed
    assert admin.ttl(key) <= 20
    history.add_messages([HumanMessage("two")])
    assert admin.ttl(key) > 20  # the write refreshed the session's TTL
    assert [m.text for m in history.messages] == ["one", "two"]


@pytest.mark.parametrize("target", ["REDIS_URL", "REDIS_CLUSTER_NODES"], indirect=True)
def test_session_expires_on_the_server_after_its_ttl(
    make_memory: Callable[..., ChatMemory], admin: Admin
) -> None:
    import time

    history = make_memory(ttl_seconds=1).history(f"expire-{uid()}")
    history.add_messages([HumanMessage("short-lived")])
    key = history.key  # type: ignore[attr-defined]
    assert admin.pttl(key) > 0
    for _ in range(100):  # wait for the server to expire the key (a poll, not a timed assertion)
        if not admin.exists(key):
            break
        time.sleep(0.1)
    assert admin.exists(key) == 0
    assert history.messages == []


def test_without_ttl_the_session_does_not_expire(
    make_memory: Callable[..., ChatMemory], admin: Admin
) -> None:
    history = make_memory().history(f"nottl-{uid()}")
    history.add_messages([HumanMessage("x")])
    assert admin.ttl(history.key) == -1  # type: ignore[attr-defined]


def test_max_messages_keeps_the_newest_window(make_memory: Callable[..., ChatMemory], admin: Admin) -> None:
    history = make_memory(max_messages=5).history(f"trim-{uid()}")
    for i in range(0, 12, 3):
        history.add_messages([HumanMessage(str(i + k)) for k in range(3)])
    assert [m.text for m in history.messages] == ["7", "8", "9", "10", "11"]
    assert admin.llen(history.key) == 5  # type: ignore[attr-defined]
    assert isinstance(history, RedisChatMessageHistory) and history.message_count() == 5


def test_layout_is_one_rpush_list_per_session_under_the_prefix(
    make_memory: Callable[..., ChatMemory], admin: Admin, prefix: str
) -> None:
    session = f"layout-{uid()}"
    history = make_memory().history(session)
    history.add_messages([HumanMessage("first"), AIMessage("second")])
    key = f"{prefix}{{{session}}}"
    assert admin.type(key) == b"list"
    raw = admin.lrange(key, 0, -1)
    assert [b'"first"' in raw[0], b'"second"' in raw[1]] == [True, True]


def test_clear_deletes_only_its_own_session(make_memory: Callable[..., ChatMemory]) -> None:
    memory = make_memory()
    a, b = memory.history(f"a-{uid()}"), memory.history(f"b-{uid()}")
    a.add_messages([HumanMessage("a")])
    b.add_messages([HumanMessage("b")])
    a.clear()
    assert a.messages == []
    assert [m.text for m in b.messages] == ["b"]


async def test_async_methods_use_the_servers_natively(make_memory: Callable[..., ChatMemory]) -> None:
    memory = make_memory(ttl_seconds=100)
    history = memory.history(f"async-{uid()}")
    assert isinstance(history, RedisChatMessageHistory) and history._aclient() is not None
    await history.aadd_messages(TOOL_TURN[:2])
    await history.aadd_messages(TOOL_TURN[2:])
    assert await history.aget_messages() == TOOL_TURN
    assert history.messages == TOOL_TURN  # the sync view agrees
    await history.aclear()
    assert await history.aget_messages() == []
    await memory.aclose()


def test_one_memory_serves_several_event_loops(make_memory: Callable[..., ChatMemory]) -> None:
    import asyncio

    memory = make_memory()
    history = memory.history(f"loops-{uid()}")

    async def turn(text: str) -> list[str]:
        await history.aadd_messages([HumanMessage(text)])
        texts = [m.text for m in await history.aget_messages()]
        await memory.connector.async_clients.aclose()  # type: ignore[attr-defined]  # this loop's client
        return texts

    assert asyncio.run(turn("first")) == ["first"]
    assert asyncio.run(turn("second")) == ["first", "second"]  # a new loop gets its own client


@pytest.mark.parametrize("target", ["REDIS_CLUSTER_NODES"], indirect=True)
def test_cluster_keeps_each_session_in_one_slot_on_its_owner(
    make_memory: Callable[..., ChatMemory], admin: Admin, prefix: str
) -> None:
    assert isinstance(admin, RedisCluster)
    memory = make_memory()
    sessions = [f"s{i}-{uid()}" for i in range(12)]
    for s in sessions:
        memory.history(s).add_messages([HumanMessage(s)])
    nodes_used = set()
    for s in sessions:
        key = session_key(prefix, s)
        slot = admin.cluster_keyslot(key)
        assert slot == admin.cluster_keyslot(f"{{{s}}}")  # the hash tag decides the slot
        node = admin.get_node_from_key(key)
        nodes_used.add(node.name)
        direct = admin.get_redis_connection(node)
        assert direct.lrange(key, 0, -1)[0].count(s.encode()) == 1
    assert len(nodes_used) > 1  # sessions spread over the cluster


@pytest.mark.parametrize("target", ["REDIS_TLS_URL"], indirect=True)
def test_tls_without_the_ca_is_refused_with_a_backend_error(make_memory: Callable[..., ChatMemory]) -> None:
    history = make_memory(ca_cert="").history(f"tls-{uid()}")
    with pytest.raises(BackendError, match=r"unreachable|certificate|SSL") as err:
        history.add_messages([HumanMessage("x")])
    assert isinstance(err.value.__cause__, redis.RedisError)


def test_wrong_password_gives_a_clear_backend_error(make_memory: Callable[..., ChatMemory]) -> None:
    def read_with_a_wrong_password() -> None:
        _ = make_memory(password="not-the-password").history(f"auth-{uid()}").messages

    with pytest.raises(BackendError, match="authentication failed") as err:
        read_with_a_wrong_password()  # a cluster client fails while connecting, others on the read
    assert "not-the-password" not in str(err.value)
    assert isinstance(err.value.__cause__, redis.RedisError | redis.exceptions.RedisClusterException)


def nodes_of(admin: Admin) -> list[redis.Redis]:
    """Each server an ACL lives on: the one server, or every node of the cluster."""
    if isinstance(admin, RedisCluster):
        return [admin.get_redis_connection(n) for n in admin.get_nodes()]
    return [admin]


def test_acl_user_limited_to_its_prefix_works_there_and_is_denied_elsewhere(
    make_memory: Callable[..., ChatMemory], admin: Admin, prefix: str
) -> None:
    """The user gets exactly the operator's rules (sync, asyncio and cluster clients all fit in them)."""
    import asyncio

    from chatmemory_operator.backends.redis import acl_rules

    user, password = f"cmtest-{uid()}", uid() + uid()
    cluster = isinstance(admin, RedisCluster)
    rules = acl_rules(prefix, password, cluster=cluster)
    for node in nodes_of(admin):
        node.execute_command("ACL", "SETUSER", user, *rules)
    try:
        memory = make_memory(username=user, password=password, ttl_seconds=60, max_messages=50)
        history = memory.history(f"acl-{uid()}")
        history.add_messages(TOOL_TURN)
        assert history.messages == TOOL_TURN

        async def async_turn() -> list[BaseMessage]:
            await history.aadd_messages([HumanMessage("async under ACL")])
            messages = await history.aget_messages()
            await memory.connector.async_clients.aclose()  # type: ignore[attr-defined]
            return messages

        assert asyncio.run(async_turn())[-1] == HumanMessage("async under ACL")
        outside = RedisChatMessageHistory(
            f"acl-{uid()}",
            key_prefix=f"other-{uid()}:",
            redis_client=memory.connector.client,  # type: ignore[attr-defined]
        )
        with pytest.raises(BackendError, match="permission denied") as err:
            outside.add_messages([HumanMessage("nope")])
        assert isinstance(
            err.value.__cause__, redis.exceptions.NoPermissionError | redis.exceptions.ResponseError
        )
        with pytest.raises(BackendError, match="permission denied"):
            _ = outside.messages
        history.clear()
        assert history.messages == []
    finally:
        for node in nodes_of(admin):
            node.acl_deluser(user)


@pytest.mark.filterwarnings("ignore::langchain_core._api.deprecation.LangChainDeprecationWarning")
def test_runnable_with_message_history_sees_the_first_turn_in_the_second(
    make_memory: Callable[..., ChatMemory],
) -> None:
    from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
    from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
    from langchain_core.runnables import RunnableLambda
    from langchain_core.runnables.history import RunnableWithMessageHistory

    memory = make_memory()
    seen: list[int] = []

    def model(prompt: Any) -> BaseMessage:
        messages = prompt.to_messages()
        seen.append(len(messages))
        return GenericFakeChatModel(messages=iter([AIMessage(f"reply to {messages[-1].text}")])).invoke(
            prompt
        )

    prompt = ChatPromptTemplate.from_messages([MessagesPlaceholder("history"), ("human", "{question}")])
    chain = RunnableWithMessageHistory(
        prompt | RunnableLambda(model),
        memory.history,
        input_messages_key="question",
        history_messages_key="history",
    )
    session = f"rwmh-{uid()}"
    config: Any = {"configurable": {"session_id": session}}
    assert chain.invoke({"question": "one"}, config).text == "reply to one"
    assert chain.invoke({"question": "two"}, config).text == "reply to two"
    assert seen == [1, 3]
    assert [m.text for m in memory.history(session).messages] == [
        "one",
        "reply to one",
        "two",
        "reply to two",
    ]


# -- the seed documents' flows ---------------------------------------------------------------------


@pytest.mark.parametrize("target", ["REDIS_URL", "REDIS_SEARCH_URL"], indirect=True)
def test_seed_flow_custom_prefix_ttl_search_and_clear(
    platform: Any, target: str, admin: Admin, prefix: str
) -> None:
    history = RedisChatMessageHistory(
        f"user-{uid()}",
        redis_url=platform[target],
        key_prefix=prefix,
        ttl=3600,
        index_name="idx:chat_history",
    )
    try:
        history.add_user_message("Hello, AI assistant!")
        history.add_ai_message("Hello! How can I assist you today?")
        history.add_user_message("Tell me about the WEATHER in Paris")
        history.add_ai_message("Paris is mild today.")
        assert [m.type for m in history.messages] == ["human", "ai", "human", "ai"]
        assert 0 < admin.ttl(history.key) <= 3600
        found = history.search_messages("weather")
        assert [(r["type"], r["content"], r["index"]) for r in found] == [
            ("human", "Tell me about the WEATHER in Paris", 2)
        ]
        assert len(history.search_messages("paris", limit=1)) == 1
        assert len(history.search_messages("paris")) == 2
        history.clear()
        assert history.messages == []
        assert admin.exists(history.key) == 0
    finally:
        history.close()


@pytest.mark.parametrize("target", ["REDIS_URL", "VALKEY_URL"], indirect=True)
@pytest.mark.parametrize("decode_responses", [False, True])
def test_seed_flow_memorystore_client_and_session_id(
    platform: Any, target: str, admin: Admin, prefix: str, decode_responses: bool
) -> None:
    from chatmemory import MemorystoreChatMessageHistory
    from langchain_core.messages import message_to_dict

    client = redis.Redis.from_url(platform[target], decode_responses=decode_responses)
    session = f"{prefix}ms-{uid()}"  # Memorystore keys are the bare session id: ours is under the prefix
    try:
        history = MemorystoreChatMessageHistory(client, session, ttl=120)
        history.add_message(HumanMessage("hi"))
        history.add_messages([AIMessage("hello"), HumanMessage("bye")])
        assert [m.text for m in history.messages] == ["hi", "hello", "bye"]
        assert admin.type(session) == b"list"  # the seed's layout: the key is the session id
        assert 0 < admin.ttl(session) <= 120
        # a list written the seed's way (RPUSH json(message_to_dict)) reads back the same
        import json

        admin.rpush(session, json.dumps(message_to_dict(AIMessage("from the seed"))))
        assert history.messages[-1] == AIMessage("from the seed")
        # the Redis history with an empty prefix reads the same layout
        same = RedisChatMessageHistory(session, key_prefix="", redis_client=client)
        assert same.messages == history.messages
        history.clear()
        assert admin.exists(session) == 0
    finally:
        client.close()


@pytest.mark.parametrize("target", ["REDIS_URL"], indirect=True)
def test_memorystore_errors_are_raised_not_swallowed(platform: Any, target: str, prefix: str) -> None:
    from chatmemory import MemorystoreChatMessageHistory

    client = redis.Redis.from_url(platform[target])
    try:
        client.set(f"{prefix}str", "not a list")
        history = MemorystoreChatMessageHistory(client, f"{prefix}str")
        with pytest.raises(BackendError, match="WRONGTYPE"):
            history.add_messages([HumanMessage("x")])
    finally:
        client.delete(f"{prefix}str")
        client.close()


#: Commands a new connection sends before its first command, or the cluster client's slot map reads.
SETUP_COMMANDS = {"AUTH", "HELLO", "CLIENT", "SELECT", "READONLY", "CLUSTER", "COMMAND", "PING", "INFO"}


def seen_from_the_writer(admin: RedisCluster, key: str, write: Callable[[], object]) -> list[str]:
    """The commands the primary of ``key``'s slot received from the connection that wrote ``key``
    while ``write()`` ran (MONITOR on that node, read up to an ECHO sent after it)."""
    node = admin.get_redis_connection(admin.get_node_from_key(key))
    end = f"end-{uid()}"
    with node.monitor() as monitor:
        write()
        node.echo(end)
        seen = []
        while end not in (entry := monitor.next_command())["command"]:
            seen.append(entry)
    writers = {
        (e["client_address"], e["client_port"]) for e in seen if e["command"].startswith(f"RPUSH {key}")
    }
    assert len(writers) == 1, seen
    names = [
        e["command"].split(" ", 1)[0].upper()
        for e in seen
        if (e["client_address"], e["client_port"]) in writers
    ]
    return [n for n in names if n not in SETUP_COMMANDS]


@pytest.mark.parametrize("target", ["REDIS_CLUSTER_NODES"], indirect=True)
def test_async_cluster_turn_is_one_multi_exec_on_the_slots_primary(
    make_memory: Callable[..., ChatMemory], admin: Admin
) -> None:
    """A turn the server applies whole or not at all, so a retry after a redirection cannot store it
    twice (redis-py's plain cluster pipeline resends redirected commands one by one)."""
    import asyncio

    assert isinstance(admin, RedisCluster)
    memory = make_memory(ttl_seconds=100, max_messages=50)
    history = memory.history(f"multi-{uid()}")
    assert isinstance(history, RedisChatMessageHistory)

    async def turn() -> None:
        await history.aadd_messages([HumanMessage("q"), AIMessage("a")])
        await memory.connector.async_clients.aclose()  # type: ignore[attr-defined]

    assert seen_from_the_writer(admin, history.key, lambda: asyncio.run(turn())) == [
        "MULTI",
        "RPUSH",
        "LTRIM",
        "EXPIRE",
        "EXEC",
    ]
    assert [m.text for m in history.messages] == ["q", "a"]


@pytest.mark.parametrize("target", ["REDIS_CLUSTER_NODES"], indirect=True)
def test_async_cluster_turn_sent_to_a_node_that_moved_the_slot_is_stored_once(
    make_memory: Callable[..., ChatMemory], admin: Admin
) -> None:
    """A stale slot map (a failover's aftermath): the wrong node answers MOVED, discards the whole
    transaction, and the history retries on the slot's primary after reading the map again."""
    import asyncio

    memory = make_memory(ttl_seconds=100)
    history = memory.history(f"moved-{uid()}")
    assert isinstance(history, RedisChatMessageHistory)

    async def turn_via_the_wrong_node() -> tuple[str, str]:
        client = history._aclient()
        assert isinstance(client, redis.asyncio.cluster.RedisCluster)
        await client.initialize()
        slot = client.keyslot(history.key)
        owner = client.nodes_manager.slots_cache[slot][0]
        wrong = next(n for n in client.get_primaries() if n.name != owner.name)
        client.nodes_manager.slots_cache[slot] = [wrong]
        await history.aadd_messages([HumanMessage("once"), AIMessage("only")])
        followed = client.get_node_from_key(history.key)
        await memory.connector.async_clients.aclose()  # type: ignore[attr-defined]
        return owner.name, followed.name if followed is not None else "?"

    owner, followed = asyncio.run(turn_via_the_wrong_node())
    assert followed == owner  # the map was read again
    assert [m.text for m in history.messages] == ["once", "only"]
