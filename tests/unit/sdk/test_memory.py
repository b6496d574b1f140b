"""ChatMemory without a server: URLs to bindings, one pooled client per memory, checkpointer errors."""

from __future__ import annotations

import sys
from pathlib import Path

import chatmemory
import pytest
from chatmemory import BackendKind, BindingError, ChatMemory, MissingExtra, NotSupported
from chatmemory.histories.redis import RedisChatMessageHistory, RedisConnector
from chatmemory.memory import binding_from_url


def test_redis_url_becomes_a_binding_with_options() -> None:
    binding, rest = binding_from_url("redis://bob:p%40ss@h.example:6390", key_prefix="bot:", ttl=60, extra=1)
    assert binding.backend is BackendKind.REDIS
    assert (binding.host, binding.port, binding.username, binding.password) == (
        "h.example",
        6390,
        "bob",
        "p@ss",
    )
    assert (binding.key_prefix, binding.ttl_seconds, binding.tls) == ("bot:", 60, False)
    assert rest == {"extra": 1}
    assert binding_from_url("redis://h", ttl=None, max_messages=None)[0].ttl_seconds is None


def test_rediss_url_turns_tls_on_and_reads_the_ca_file(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("PEM")
    binding, _ = binding_from_url(f"rediss://h:1?max_messages=5&cluster=true&ca_file={ca}")
    assert (binding.tls, binding.ca_cert, binding.max_messages, binding.cluster) == (True, "PEM", 5, True)


def test_kafka_url_keeps_every_bootstrap_server_and_uses_sasl_with_credentials() -> None:
    binding, _ = binding_from_url("kafka://u:pw@k1:9092,k2:9093?topic=bot.chat")
    assert binding.backend is BackendKind.KAFKA
    assert (binding.bootstrap_servers, binding.topic) == ("k1:9092,k2:9093", "bot.chat")
    assert (binding.security_protocol, binding.username, binding.password) == ("SASL_PLAINTEXT", "u", "pw")


def test_tidb_url_defaults_to_the_seed_table() -> None:
    binding, _ = binding_from_url("tidb://root@db:4000/app")
    assert (binding.backend, binding.host, binding.port, binding.database) == (
        BackendKind.TIDB,
        "db",
        4000,
        "app",
    )
    assert binding.table == "langchain_message_store"
    assert binding_from_url("mysql://u:p@db/app", table_name="t")[0].table == "t"


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("mongodb://x", "type"),
        ("kafka://k:1", "topic"),
        ("redis://h:1/3", "uri"),
        ("mysql://u@db:1", "database"),
    ],
)
def test_bad_urls_name_the_key(url: str, key: str) -> None:
    with pytest.raises(BindingError) as err:
        binding_from_url(url)
    assert err.value.key == key
    assert err.value.source.startswith("url:")


def test_url_password_stays_out_of_errors() -> None:
    with pytest.raises(BindingError) as err:
        binding_from_url("redis://u:topsecret@h:1/3")
    assert "topsecret" not in str(err.value)


async def test_connect_url_pools_one_client_shared_by_every_session() -> None:
    memory = chatmemory.connect_url("redis://127.0.0.1:1", key_prefix="p:", ttl=5, max_messages=9)
    try:
        assert isinstance(memory, ChatMemory) and memory.backend is BackendKind.REDIS
        a, b = memory.history("a"), memory.history("b")
        assert isinstance(a, RedisChatMessageHistory) and isinstance(b, RedisChatMessageHistory)
        assert a.redis_client is b.redis_client
        assert isinstance(memory.connector, RedisConnector)
        assert a._aclient() is b._aclient()
        assert (a.key, b.key, a.ttl, a.max_messages) == ("p:{a}", "p:{b}", 5, 9)
    finally:
        await memory.aclose()


def test_history_serves_as_get_session_history() -> None:
    import inspect

    with chatmemory.connect_url("redis://127.0.0.1:1") as memory:
        assert list(inspect.signature(memory.history).parameters) == ["session_id"]


def test_checkpointer_without_the_module_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "chatmemory.checkpoint", None)
    with chatmemory.connect_url("redis://127.0.0.1:1") as memory, pytest.raises((MissingExtra, NotSupported)):
        memory.checkpointer()


def fake_module(
    monkeypatch: pytest.MonkeyPatch, name: str, sync_name: str, async_name: str
) -> list[tuple[str, object]]:
    """Install a stand-in for ``name`` whose two factories record their keyword arguments."""
    import types

    calls: list[tuple[str, object]] = []
    fake = types.ModuleType(name)

    def sync_factory(binding: object, **kw: object) -> str:
        calls.append(("sync", kw))
        return "sync"

    async def async_factory(binding: object, **kw: object) -> str:
        calls.append(("async", kw))
        return "async"

    setattr(fake, sync_name, sync_factory)
    setattr(fake, async_name, async_factory)
    monkeypatch.setitem(sys.modules, name, fake)
    return calls


async def test_acheckpointer_delegates_to_the_checkpoint_module(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_module(monkeypatch, "chatmemory.checkpoint", "checkpointer_for", "acheckpointer_for")
    with chatmemory.connect_url("redis://127.0.0.1:1") as memory:
        assert memory.checkpointer(x=1) == "sync"
        assert await memory.acheckpointer(y=2) == "async"
    assert calls == [("sync", {"x": 1}), ("async", {"y": 2})]


async def test_store_and_astore_delegate_to_the_store_module_with_the_memorys_timeouts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = fake_module(monkeypatch, "chatmemory.store", "store_for", "astore_for")
    with chatmemory.connect_url("redis://127.0.0.1:1?timeout=2") as memory:
        assert memory.store(index={"dims": 3}) == "sync"
        assert await memory.astore(ttl={"default_ttl": 1}) == "async"
    timeouts = memory.timeouts
    assert calls == [
        ("sync", {"index": {"dims": 3}, "ttl": None, "timeout": timeouts}),
        ("async", {"index": None, "ttl": {"default_ttl": 1}, "timeout": timeouts}),
    ]


def test_a_store_module_without_the_function_is_not_supported(monkeypatch: pytest.MonkeyPatch) -> None:
    import types

    monkeypatch.setitem(sys.modules, "chatmemory.store", types.ModuleType("chatmemory.store"))
    with chatmemory.connect_url("redis://127.0.0.1:1") as memory, pytest.raises(NotSupported, match="store"):
        memory.store()


def test_redis_history_rejects_empty_session_ids_and_bad_settings() -> None:
    with pytest.raises(ValueError, match="session_id"):
        RedisChatMessageHistory("", redis_url="redis://127.0.0.1:1")
    with pytest.raises(ValueError, match="ttl"):
        RedisChatMessageHistory("s", redis_url="redis://127.0.0.1:1", ttl=-1)
    assert RedisChatMessageHistory("s", redis_url="redis://127.0.0.1:1", ttl=0).ttl is None
    with pytest.raises(ValueError, match="max_messages"):
        RedisChatMessageHistory("s", redis_url="redis://127.0.0.1:1", max_messages=0)


def test_session_keys_are_hash_tagged_except_in_the_memorystore_layout() -> None:
    from chatmemory.histories.redis import session_key

    assert session_key("chat:", "u-42") == "chat:{u-42}"
    assert session_key("", "u-42") == "u-42"
    h = chatmemory.MemorystoreChatMessageHistory(
        RedisChatMessageHistory("x", redis_url="redis://127.0.0.1:1").redis_client, "sess", ttl=3
    )
    assert (h.key, h.ttl) == ("sess", 3)
