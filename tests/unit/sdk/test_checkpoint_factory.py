"""checkpointer_for: which saver a binding gives, with which settings; Kafka's refusal. No sockets."""

from __future__ import annotations

import pytest
from chatmemory import BackendKind, Binding, BindingError, NotSupported
from chatmemory.checkpoint import (
    ChatMemoryRedisSaver,
    ChatMemorySQLSaver,
    acheckpointer_for,
    checkpointer_for,
)


def _redis(**kw: object) -> Binding:
    return Binding(
        backend=BackendKind.REDIS,
        provider="redis",
        host="127.0.0.1",
        port=6390,
        username="mem-user",
        password="pw",
        key_prefix="cm:ns:mem:",
        ttl_seconds=120,
        **kw,  # type: ignore[arg-type]
    )


def test_a_redis_binding_gives_a_redis_saver_on_its_prefix_with_its_ttl_and_acl_user() -> None:
    saver = checkpointer_for(_redis())
    assert isinstance(saver, ChatMemoryRedisSaver)
    assert saver.prefix == "cm:ns:mem:"
    assert saver.ttl_seconds == 120
    assert saver.client is not None and saver.aclient is not None
    kwargs = saver.client.get_connection_kwargs()  # type: ignore[union-attr]
    assert (kwargs["username"], kwargs["password"]) == ("mem-user", "pw")
    saver.close()


def test_a_custom_serializer_reaches_the_saver() -> None:
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    serde = JsonPlusSerializer(pickle_fallback=False)
    saver = checkpointer_for(_redis(), serde=serde)
    assert saver.serde is serde or getattr(saver.serde, "serde", None) is serde
    saver.close()


def test_a_tidb_binding_gives_a_sql_saver_on_the_operators_tables() -> None:
    binding = Binding(
        backend=BackendKind.TIDB,
        provider="tidb",
        host="127.0.0.1",
        port=4000,
        username="u",
        password="p",
        database="mem_db",
        table="messages",
        checkpoint_table_prefix="chatmemory_",
        ttl_seconds=3600,
    )
    saver = checkpointer_for(binding)
    assert isinstance(saver, ChatMemorySQLSaver)
    assert (saver.t_cp, saver.ttl_seconds) == ("`chatmemory_checkpoints`", 3600)
    saver.close()


def test_a_tidb_binding_without_checkpoint_tables_names_the_missing_key() -> None:
    binding = Binding(
        backend=BackendKind.TIDB,
        provider="mariadb",
        host="h",
        port=3306,
        username="u",
        database="d",
        table="t",
    )
    with pytest.raises(BindingError, match="checkpoint_table_prefix") as err:
        checkpointer_for(binding)
    assert err.value.key == "checkpoint_table_prefix"


async def test_a_kafka_binding_is_refused_with_the_alternatives_named() -> None:
    binding = Binding(backend=BackendKind.KAFKA, provider="kafka", bootstrap_servers="b:9092", topic="t")
    for call in (lambda: checkpointer_for(binding),):
        with pytest.raises(NotSupported) as err:
            call()
        text = str(err.value)
        assert "Redis or TiDB ChatMemory" in text
        assert "chat history" in text
    with pytest.raises(NotSupported):
        await acheckpointer_for(binding)


async def test_a_saver_built_from_a_url_owns_both_clients_and_closes_them() -> None:
    saver = ChatMemoryRedisSaver.from_url("redis://u:p@127.0.0.1:6390/0", prefix="app:", ttl_seconds=60)
    assert (saver.prefix, saver.ttl_seconds) == ("app:", 60)
    assert saver.client is not None and saver.aclient is not None
    assert saver.client.get_connection_kwargs()["username"] == "u"  # type: ignore[union-attr]
    async with saver:
        pass
