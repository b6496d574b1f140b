"""The serializer option: an encrypting serde means no plaintext reaches the server.

pycryptodome is not installed here, so instead of ``EncryptedSerializer.from_pycryptodome_aes`` the
test passes an ``EncryptedSerializer`` with a test cipher (a custom serde): the same class
``from_pycryptodome_aes`` builds, with another ``CipherProtocol``.
"""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest
from chatmemory.checkpoint import checkpointer_for
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

from tests.integration.checkpoint.conftest import TABLE_PREFIX, Memory, MemoryFactory


class XorCipher:
    """Not a real cipher: enough to show the saver stores only what the serde produced."""

    def encrypt(self, plaintext: bytes) -> tuple[str, bytes]:
        return "xor", bytes(b ^ 0x5A for b in plaintext)

    def decrypt(self, ciphername: str, ciphertext: bytes) -> bytes:
        assert ciphername == "xor"
        return bytes(b ^ 0x5A for b in ciphertext)


def _stored_bytes(mem: Memory, thread: str) -> bytes:
    if mem.binding.backend.value == "redis":
        from chatmemory.checkpoint.redis import thread_keys

        keys = thread_keys(mem.binding.key_prefix, thread)
        return b"".join(b"".join(mem.admin.hgetall(k).values()) for k in (keys.cp, keys.bl, keys.wr))
    db = mem.binding.database
    out = b""
    for table, cols in (
        ("checkpoints", "checkpoint, metadata"),
        ("checkpoint_blobs", "COALESCE(data, '')"),
        ("checkpoint_writes", "data"),
    ):
        for row in mem.sql(
            f"SELECT {cols} FROM `{db}`.`{TABLE_PREFIX}{table}` WHERE thread_id = %s", (thread,)
        ):
            out += b"".join(bytes(c) for c in row)
    return out


def _roundtrip(mem: Memory, serde: Any) -> None:
    saver = checkpointer_for(mem.binding, serde=serde)
    secret = f"card-{uuid4()}"
    thread = f"t-{uuid4().hex[:8]}"
    cp = empty_checkpoint()
    cp["channel_values"] = {"messages": [secret]}
    cp["channel_versions"] = {"messages": "1"}
    config: Any = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    stored = saver.put(config, cp, {"step": 0, "note": secret}, {"messages": "1"})
    saver.put_writes(stored, [("messages", secret)], "task")
    raw = _stored_bytes(mem, thread)
    assert raw
    assert secret.encode() not in raw
    tup = saver.get_tuple(stored)
    assert tup is not None
    assert tup.checkpoint["channel_values"] == {"messages": [secret]}
    assert tup.metadata["note"] == secret
    assert tup.pending_writes == [("task", "messages", secret)]
    plain = checkpointer_for(mem.binding)  # without the key the values cannot be read
    with pytest.raises(NotImplementedError, match=r"msgpack\+xor"):
        plain.get_tuple(stored)
    saver.close()  # type: ignore[attr-defined]
    plain.close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("key", ["REDIS_URL", "TIDB_URL"])
def test_an_encrypting_serde_leaves_no_plaintext_on_the_server(key: str, memory: MemoryFactory) -> None:
    _roundtrip(memory(key), EncryptedSerializer(XorCipher(), JsonPlusSerializer()))
