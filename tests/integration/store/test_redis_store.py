"""The Redis store beyond the BaseStore contract: its layout under the memory's prefix, tenant
isolation under the operator's ACL, the native asyncio path, cluster slots, and why semantic search
does not use Redis 8's search module (a tenant allowed FT.CREATE reads another tenant's data).

Memories are provisioned as in the checkpointer tests: an ACL user confined to a fresh prefix with
exactly the operator's command list (``SDK_COMMANDS``; plus the cluster metadata on a cluster).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from chatmemory.contract import BackendKind, Binding
from chatmemory.errors import BackendError, NotSupported
from chatmemory.store import ChatMemoryRedisStore, astore_for, store_for
from chatmemory.store.redis import (
    STORE_REDIS_COMMANDS,
    STORE_VECTOR_SET_COMMANDS,
    expiring_key,
    item_key,
    keys_key,
    meta_key,
    namespace_index_key,
    vector_set_key,
)
from chatmemory_operator.backends.redis import SDK_COMMANDS, VECTOR_SET_COMMANDS
from langgraph.store.base import PutOp, SearchItem
from redis.cluster import RedisCluster

from tests.integration.checkpoint.conftest import Memory, redis_memory
from tests.integration.store.conftest import REDIS_BACKENDS, WordEmbeddings, word_index
from tests.support.platform import Platform


@pytest.fixture(params=list(REDIS_BACKENDS.values()), ids=list(REDIS_BACKENDS))
def target(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def memories(platform: Platform) -> Iterator[list[Memory]]:
    """Memories made by the test (``memories.append(redis_memory(...))``), removed after it."""
    made: list[Memory] = []
    yield made
    for mem in made:
        for fn in mem.cleanups:
            fn()


def _memory(platform: Platform, target: str, memories: list[Memory]) -> Memory:
    mem = redis_memory(platform, target, None)
    memories.append(mem)
    return mem


def test_the_operator_grants_every_command_the_store_sends() -> None:
    assert set(STORE_REDIS_COMMANDS) <= set(SDK_COMMANDS)
    assert set(STORE_VECTOR_SET_COMMANDS) <= set(VECTOR_SET_COMMANDS)  # where the server has them


def test_a_kafka_memory_has_no_store_and_says_which_backends_serve_one() -> None:
    binding = Binding(backend=BackendKind.KAFKA, provider="kafka", bootstrap_servers="k:9092", topic="t")
    with pytest.raises(NotSupported) as err:
        store_for(binding)
    message = str(err.value)
    assert "Redis" in message and "TiDB" in message


async def test_a_kafka_memory_has_no_async_store_either() -> None:
    binding = Binding(backend=BackendKind.KAFKA, provider="kafka", bootstrap_servers="k:9092", topic="t")
    with pytest.raises(NotSupported, match="Redis"):
        await astore_for(binding)


def test_every_key_lives_under_the_memory_prefix_and_a_namespace_in_one_slot(
    platform: Platform, target: str, memories: list[Memory]
) -> None:
    mem = _memory(platform, target, memories)
    prefix = mem.binding.key_prefix
    store = store_for(mem.binding, index=word_index())
    try:
        store.put(("users", "u1"), "a", {"text": "cat"})
        store.put(("users", "u1"), "b", {"text": "dog"}, ttl=10)
        store.put(("users", "u2"), "c", {"text": "fish"}, index=False)
    finally:
        store.close()
    admin = mem.admin
    ia, ib, ic = (
        item_key(prefix, "users.u1", "a"),
        item_key(prefix, "users.u1", "b"),
        item_key(prefix, "users.u2", "c"),
    )
    expected = {ia, ib, ic, keys_key(prefix, "users.u1"), keys_key(prefix, "users.u2")}
    expected.add(expiring_key(prefix, "users.u1"))  # b has a TTL
    expected.add(namespace_index_key(prefix))
    # this user is allowed no vector-set command (tests/integration/store/test_redis_vectors.py has
    # those): the namespace with vectors is flagged for client-side ranking, and has no vector set
    expected.add(meta_key(prefix, "users.u1"))
    assert all(k.startswith(prefix + "store:") for k in expected)
    assert sum(admin.exists(k) for k in expected) == len(expected)
    assert not admin.exists(vector_set_key(prefix, "users.u1", 9), meta_key(prefix, "users.u2"))
    assert set(admin.hkeys(ia)) == {b"v", b"c", b"u", b"e"}
    assert set(admin.hkeys(ic)) == {b"v", b"c", b"u"}  # not indexed: no vectors
    assert admin.pttl(ia) == -1  # no TTL: never expires
    assert 0 < admin.pttl(ib) <= 10 * 60 * 1000
    assert not admin.exists(expiring_key(prefix, "users.u2"))  # no item with a TTL there
    # the set of expiring keys goes 10 minutes (the grace) after its last item: nothing stays behind
    assert 10 * 60 * 1000 < admin.pttl(expiring_key(prefix, "users.u1")) <= 20 * 60 * 1000
    if isinstance(admin, RedisCluster):
        slots = {
            admin.keyslot(k) for k in (ia, ib, keys_key(prefix, "users.u1"), meta_key(prefix, "users.u1"))
        }
        assert len(slots) == 1


def test_a_model_with_other_dimensions_leaves_earlier_vectors_unindexed_in_the_client_ranking(
    platform: Platform, target: str, memories: list[Memory]
) -> None:
    """Brute force (this user has no vector-set command): vectors whose length is not the query's
    count as unindexed, as in the SQL store, instead of failing the ranking."""
    mem = _memory(platform, target, memories)
    old = store_for(mem.binding, index=word_index())
    wider = {"dims": 10, "embed": lambda texts: [[*v, 0.5] for v in word_embed(texts)], "fields": ["text"]}
    new = store_for(mem.binding, index=wider)  # type: ignore[arg-type]
    try:
        old.put(("docs",), "old", {"text": "cat"})
        new.put(("docs",), "new", {"text": "cat dog"})
        assert [(it.key, it.score is None) for it in new.search(("docs",), query="cat")] == [
            ("new", False),
            ("old", True),
        ]
        assert [(it.key, it.score is None) for it in old.search(("docs",), query="cat")] == [
            ("old", False),
            ("new", True),
        ]
    finally:
        old.close()
        new.close()


def word_embed(texts: list[str]) -> list[list[float]]:
    return WordEmbeddings().embed_documents(texts)


def test_a_memory_user_cannot_read_another_memorys_items(
    platform: Platform, target: str, memories: list[Memory]
) -> None:
    a = _memory(platform, target, memories)
    b = _memory(platform, target, memories)
    store_a = store_for(a.binding)
    # B's credentials aimed at A's prefix: every read and write is refused by the server's ACL.
    intruder = store_for(b.binding.model_copy(update={"key_prefix": a.binding.key_prefix}))
    store_b = store_for(b.binding)
    try:
        store_a.put(("secrets",), "k", {"v": "A's"})
        with pytest.raises(BackendError, match=r"(?i)no permissions"):
            intruder.get(("secrets",), "k")
        with pytest.raises(BackendError, match=r"(?i)no permissions"):
            intruder.search(("secrets",))
        with pytest.raises(BackendError, match=r"(?i)no permissions"):
            intruder.list_namespaces()
        with pytest.raises(BackendError, match=r"(?i)no permissions"):
            intruder.put(("secrets",), "k", {"v": "B's"})
        assert store_b.get(("secrets",), "k") is None
        assert store_b.search(()) == [] and store_b.list_namespaces() == []
        item = store_a.get(("secrets",), "k")
        assert item is not None and item.value == {"v": "A's"}
    finally:
        for s in (store_a, intruder, store_b):
            s.close()


def test_the_redis8_search_module_would_let_a_tenant_read_another_tenants_items(
    platform: Platform, memories: list[Memory]
) -> None:
    """Why semantic search is brute force even on Redis 8: the ACL checks the *index name* of
    FT.SEARCH against the user's key pattern, not the documents it returns; a user allowed
    FT.CREATE (needed to create a vector index of the app's dimensions) names an index inside its
    own prefix over another memory's keys and reads them. The memory user the operator makes is
    allowed no FT command at all."""
    a = _memory(platform, "REDIS_SEARCH_URL", memories)
    b = _memory(platform, "REDIS_SEARCH_URL", memories)
    store_a = store_for(a.binding)
    try:
        store_a.put(("secrets",), "k", {"v": "A's secret"})
    finally:
        store_a.close()
    admin = a.admin
    pb = b.binding.key_prefix
    hole_user, password = f"cmtest-ft-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    index = f"{pb}idx"
    admin.execute_command(  # type: ignore[no-untyped-call]
        "ACL", "SETUSER", hole_user, "reset", "on", f">{password}", f"~{pb}*", "resetchannels", "-@all",
        *(f"+{c}" for c in (*SDK_COMMANDS, "ft.create", "ft.search", "ft.dropindex")),
    )  # fmt: skip
    conn = admin.connection_pool.connection_kwargs
    host, port = conn["host"], conn["port"]
    as_b = redis.Redis(host=host, port=port, username=b.binding.username, password=b.binding.password)
    widened = redis.Redis(host=host, port=port, username=hole_user, password=password)
    try:
        a_prefix = a.binding.key_prefix
        with pytest.raises(redis.exceptions.NoPermissionError):
            as_b.execute_command(
                "FT.CREATE", index, "ON", "HASH", "PREFIX", 1, a_prefix, "SCHEMA", "v", "TEXT"
            )
        widened.execute_command(
            "FT.CREATE", index, "ON", "HASH", "PREFIX", 1, a_prefix, "SCHEMA", "v", "TEXT"
        )
        leaked = b""
        for _ in range(100):  # the index fills in the background
            reply = widened.execute_command("FT.SEARCH", index, "*", "RETURN", 1, "v", "DIALECT", 2)
            leaked = repr(reply).encode()
            if b"secret" in leaked:
                break
            time.sleep(0.05)
        assert b"secret" in leaked and a_prefix.encode() in leaked
    finally:
        widened.execute_command("FT.DROPINDEX", index)
        admin.execute_command("ACL", "DELUSER", hole_user)  # type: ignore[no-untyped-call]
        as_b.close()
        widened.close()


def test_a_batch_of_puts_across_namespaces_is_one_write_per_slot_and_all_land(
    platform: Platform, target: str, memories: list[Memory]
) -> None:
    mem = _memory(platform, target, memories)
    store = store_for(mem.binding)
    try:
        store.batch(
            [PutOp(("multi", f"n{i}"), f"k{j}", {"i": i, "j": j}) for i in range(20) for j in range(3)]
        )
        assert len(store.search(("multi",), limit=100)) == 60
        assert len(store.list_namespaces(prefix=("multi",))) == 20
        store.batch([PutOp(("multi", f"n{i}"), "k0", None) for i in range(20)])
        assert len(store.search(("multi",), limit=100)) == 40
    finally:
        store.close()


async def test_the_async_path_runs_on_the_event_loop_without_threads(
    platform: Platform, target: str, memories: list[Memory]
) -> None:
    mem = _memory(platform, target, memories)
    store = await astore_for(mem.binding, index=word_index())
    try:
        await store.aput(("warm",), "up", {"text": "cat"})  # connections and slot map, first use
        before = threading.active_count()
        await store.aput(("a",), "k", {"text": "cat"}, ttl=5)
        got = await store.aget(("a",), "k")
        found = await store.asearch(("a",), query="cat")
        listed = await store.alist_namespaces()
        await store.adelete(("a",), "k")
        assert threading.active_count() == before  # asyncio.to_thread would have started a worker
        assert got is not None and [f.key for f in found] == ["k"] and listed == [("a",), ("warm",)]
    finally:
        await store.aclose()  # type: ignore[attr-defined]


async def test_a_store_with_only_an_asyncio_client_refuses_sync_calls_by_name(
    platform: Platform, memories: list[Memory]
) -> None:
    mem = _memory(platform, "REDIS_URL", memories)
    import redis.asyncio

    b = mem.binding
    aclient = redis.asyncio.Redis(host=b.host, port=b.port, username=b.username, password=b.password)
    store = ChatMemoryRedisStore(aclient=aclient, prefix=b.key_prefix, owns_clients=True)
    try:
        await store.aput(("a",), "k", {"v": 1})
        assert (await store.aget(("a",), "k")) is not None
        with pytest.raises(TypeError, match="async methods"):
            store.get(("a",), "k")
    finally:
        await store.aclose()


def test_a_client_that_decodes_responses_is_refused() -> None:
    with pytest.raises(ValueError, match="decode_responses"):
        ChatMemoryRedisStore(redis.Redis(decode_responses=True))


def test_a_prefix_with_braces_is_refused() -> None:
    with pytest.raises(ValueError, match="prefix"):
        ChatMemoryRedisStore(redis.Redis(), prefix="app:{x}:")


def test_langmem_memory_tools_create_update_search_and_delete_on_the_store(
    platform: Platform, target: str, memories: list[Memory]
) -> None:
    langmem = pytest.importorskip("langmem")
    mem = _memory(platform, target, memories)
    store = store_for(mem.binding, index=word_index(["content"]))
    ns = ("memories", "user-1")
    manage = langmem.create_manage_memory_tool(ns, store=store)
    search = langmem.create_search_memory_tool(ns, store=store, response_format="content_and_artifact")
    try:
        manage.invoke({"content": "the user has a cat", "action": "create"})
        manage.invoke({"content": "the user drives a car", "action": "create"})
        _, found = _search(search, "cat")
        assert found[0].value["content"] == "the user has a cat"
        cat_id = found[0].key
        manage.invoke({"content": "the user has a dog", "action": "update", "id": cat_id})
        _, found = _search(search, "dog")
        assert (found[0].key, found[0].value["content"]) == (cat_id, "the user has a dog")
        manage.invoke({"action": "delete", "id": cat_id})
        _, found = _search(search, "dog")
        assert [f.value["content"] for f in found] == ["the user drives a car"]
    finally:
        store.close()


def _search(tool: Any, query: str) -> tuple[str, list[SearchItem]]:
    """The search tool's (content, artifact): the memories found, best first."""
    message = tool.invoke({"type": "tool_call", "id": "1", "name": tool.name, "args": {"query": query}})
    return message.content, message.artifact
