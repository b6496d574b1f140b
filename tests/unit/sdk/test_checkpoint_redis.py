"""The Redis checkpointer's logic, on an in-process stand-in for the handful of commands it sends.

No sockets: :class:`FakeRedis` implements exactly the commands of ``REDIS_COMMANDS`` (and refuses
any other), with Redis's lexicographic ZRANGE semantics, and records every round trip so the tests
can check atomicity, slots and TTLs. The same saver runs against real servers in
tests/integration/checkpoint/.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from typing import Any
from uuid import uuid4

import pytest
from chatmemory.checkpoint import REDIS_COMMANDS, ChatMemoryRedisSaver
from chatmemory.checkpoint.redis import escape_thread, glob_escape, thread_keys, thread_of_key
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

# -- a stand-in for the server --------------------------------------------------------------------


def _b(v: Any) -> bytes:
    if isinstance(v, bytes):
        return v
    return str(v).encode()


def _lex_ok(member: bytes, lo: bytes, hi: bytes) -> bool:
    def above(bound: bytes) -> bool:
        if bound == b"-":
            return True
        if bound == b"+":
            return False
        return member >= bound[1:] if bound[:1] == b"[" else member > bound[1:]

    def below(bound: bytes) -> bool:
        if bound == b"+":
            return True
        if bound == b"-":
            return False
        return member <= bound[1:] if bound[:1] == b"[" else member < bound[1:]

    return above(lo) and below(hi)


def _glob(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 1
            out += re.escape(pattern[i])
        elif c == "*":
            out += ".*"
        elif c == "?":
            out += "."
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + r"\Z", re.DOTALL)


class FakeRedis:
    """Hashes, lex-ordered sorted sets and TTLs; every round trip is recorded in ``batches``."""

    def __init__(self) -> None:
        self.data: dict[bytes, Any] = {}
        self.ttl: dict[bytes, int] = {}
        self.batches: list[tuple[bool, list[tuple[Any, ...]]]] = []

    # redis-py surface used by the saver
    def execute_command(self, *args: Any) -> Any:
        self.batches.append((False, [args]))
        return self._run(args)

    def pipeline(self, transaction: bool = True) -> FakePipeline:
        return FakePipeline(self, transaction)

    def scan_iter(self, match: str, count: int = 10) -> Iterator[bytes]:
        rx = _glob(match)
        return iter([k for k in list(self.data) if rx.match(k.decode())])

    def close(self) -> None:
        pass

    def _run(self, args: tuple[Any, ...]) -> Any:
        name = str(args[0]).lower()
        assert name in REDIS_COMMANDS, f"{name} is not in REDIS_COMMANDS (the ACL would refuse it)"
        key = _b(args[1])
        rest = [_b(a) for a in args[2:]]
        h = self.data.get(key)
        if name == "hset":
            h = self.data.setdefault(key, {})
            new = sum(1 for f in rest[::2] if f not in h)
            h.update(zip(rest[::2], rest[1::2], strict=True))
            return new
        if name == "hsetnx":
            h = self.data.setdefault(key, {})
            if rest[0] in h:
                return 0
            h[rest[0]] = rest[1]
            return 1
        if name == "hmget":
            return [(h or {}).get(f) for f in rest]
        if name == "hgetall":
            return dict(h or {})
        if name == "hkeys":
            return list(h or {})
        if name in ("hdel", "zrem"):
            n = 0
            for f in rest:
                if h is not None and f in h:
                    if isinstance(h, dict):
                        del h[f]
                    else:
                        h.discard(f)
                    n += 1
            if h is not None and not h:
                self.data.pop(key)
            return n
        if name == "zadd":
            z = self.data.setdefault(key, set())
            members = rest[1::2]
            new = len(set(members) - z)
            z.update(members)
            return new
        if name == "zrange":
            members = sorted(h or set())
            opts = [r.upper() for r in rest[2:]]
            rev = b"REV" in opts
            if b"BYLEX" in opts:
                hi, lo = (rest[0], rest[1]) if rev else (rest[1], rest[0])
                members = [m for m in members if _lex_ok(m, lo, hi)]
                if rev:
                    members.reverse()
                if b"LIMIT" in opts:
                    i = opts.index(b"LIMIT")
                    off, cnt = int(rest[2 + i + 1]), int(rest[2 + i + 2])
                    members = members[off : off + cnt]
                return members
            start, stop = int(rest[0]), int(rest[1])
            return members[start : (None if stop == -1 else stop + 1)]
        if name == "expire":
            if key in self.data:
                self.ttl[key] = int(rest[0])
                return 1
            return 0
        if name == "unlink":
            n = 0
            for k in [key, *rest]:
                n += self.data.pop(k, None) is not None
                self.ttl.pop(k, None)
            return n
        raise AssertionError(f"unexpected command {args}")


class FakePipeline:
    def __init__(self, server: FakeRedis, transaction: bool) -> None:
        self.server, self.transaction, self.cmds = server, transaction, []  # type: ignore[var-annotated]

    def execute_command(self, *args: Any) -> FakePipeline:
        self.cmds.append(args)
        return self

    def execute(self) -> list[Any]:
        self.server.batches.append((self.transaction, list(self.cmds)))
        return [self.server._run(c) for c in self.cmds]


class FakeAsyncRedis:
    """The asyncio surface over the same server."""

    def __init__(self, server: FakeRedis) -> None:
        self.server = server

    async def execute_command(self, *args: Any) -> Any:
        return self.server.execute_command(*args)

    def pipeline(self, transaction: bool = True) -> FakeAsyncPipeline:
        return FakeAsyncPipeline(self.server.pipeline(transaction))

    async def scan_iter(self, match: str, count: int = 10) -> AsyncIterator[bytes]:
        for k in self.server.scan_iter(match, count):
            yield k

    async def aclose(self) -> None:
        pass


class FakeAsyncPipeline:
    def __init__(self, pipe: FakePipeline) -> None:
        self.pipe = pipe

    def execute_command(self, *args: Any) -> FakeAsyncPipeline:
        self.pipe.execute_command(*args)
        return self

    async def execute(self) -> list[Any]:
        return self.pipe.execute()


def saver_on(server: FakeRedis, **kwargs: Any) -> ChatMemoryRedisSaver:
    kwargs.setdefault("prefix", "cm:ns:mem:")
    return ChatMemoryRedisSaver(server, aclient=FakeAsyncRedis(server), **kwargs)  # type: ignore[arg-type]


def _config(thread: str, ns: str = "", cid: str | None = None) -> Any:
    conf: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ns}
    if cid:
        conf["checkpoint_id"] = cid
    return {"configurable": conf}


# -- the conformance suite, on the stand-in ------------------------------------------------------


async def test_the_saver_passes_langgraphs_conformance_suite_in_every_capability() -> None:
    server = FakeRedis()

    @checkpointer_test(name="ChatMemoryRedisSaver(fake)")
    async def factory() -> AsyncIterator[ChatMemoryRedisSaver]:
        yield saver_on(server, ttl_seconds=600)

    report = await validate(factory)
    failures = {name: r.failures for name, r in report.results.items() if r.failures}
    assert failures == {}
    assert {name for name, r in report.results.items() if r.detected and r.passed} == {
        "put",
        "put_writes",
        "get_tuple",
        "list",
        "delete_thread",
        "delete_for_runs",
        "copy_thread",
        "prune",
    }


# -- layout, atomicity, TTL ----------------------------------------------------------------------


def test_thread_keys_share_one_hash_tag_so_a_thread_stays_in_one_cluster_slot() -> None:
    keys = thread_keys("cm:ns:mem:", "user-42")
    assert keys.all == tuple(f"cm:ns:mem:{{user-42}}:{s}" for s in ("cp", "cx", "bl", "wr", "wx", "rx"))


def test_braces_and_percent_in_a_thread_id_are_escaped_and_read_back() -> None:
    tid = "a{b}c%d"
    assert escape_thread(tid) == "a%7Bb%7Dc%25d"
    key = thread_keys("p:", tid).cp
    assert key.count("{") == 1 and key.count("}") == 1
    assert thread_of_key("p:", key.encode()) == tid


def test_glob_metacharacters_in_the_prefix_are_escaped_for_scan() -> None:
    assert glob_escape("a*b?[c]\\") == "a\\*b\\?\\[c\\]\\\\"


async def test_every_write_is_one_transaction_on_one_slot_that_refreshes_the_ttl_of_all_keys() -> None:
    server = FakeRedis()
    saver = saver_on(server, ttl_seconds=90)
    cp = empty_checkpoint()
    cp["channel_values"] = {"messages": ["hi"]}
    cp["channel_versions"] = {"messages": saver.get_next_version(None)}
    stored = await saver.aput(
        _config("t1"), cp, {"source": "input", "step": -1, "run_id": "r1"}, cp["channel_versions"]
    )
    server.batches.clear()
    await saver.aput_writes(stored, [("messages", "x"), ("__error__", "boom")], "task-1")
    assert len(server.batches) == 1
    atomic, cmds = server.batches[0]
    assert atomic
    tags = {re.search(r"\{[^}]*\}", str(c[1])).group(0) for c in cmds}  # type: ignore[union-attr]
    assert tags == {"{t1}"}
    expired = {c[1] for c in cmds if c[0] == "EXPIRE"}
    assert expired == set(saver.keys("t1").all)
    assert {k.decode() for k in server.data} <= set(saver.keys("t1").all)
    assert all(server.ttl[k] == 90 for k in server.data)


def test_without_a_ttl_no_key_gets_an_expiry() -> None:
    server = FakeRedis()
    saver = saver_on(server)
    stored = saver.put(_config("t"), empty_checkpoint(), {"step": 0}, {})
    saver.put_writes(stored, [("c", 1)], "task")
    assert server.data and not server.ttl


def test_delete_thread_is_one_unlink_of_the_threads_keys_and_leaves_other_threads() -> None:
    server = FakeRedis()
    saver = saver_on(server)
    for t in ("a", "b"):
        saver.put(_config(t), empty_checkpoint(), {"step": 0}, {})
    server.batches.clear()
    saver.delete_thread("a")
    assert server.batches == [(False, [("UNLINK", *saver.keys("a").all)])]
    assert saver.get_tuple(_config("a")) is None
    assert saver.get_tuple(_config("b")) is not None


def test_reading_the_latest_checkpoint_takes_three_round_trips_and_a_given_one_two() -> None:
    server = FakeRedis()
    saver = saver_on(server)
    cp = empty_checkpoint()
    cp["channel_values"] = {"a": 1}
    cp["channel_versions"] = {"a": saver.get_next_version(None)}
    stored = saver.put(_config("t"), cp, {"step": 0}, cp["channel_versions"])
    saver.put_writes(stored, [("a", 2)], "task")
    server.batches.clear()
    assert saver.get_tuple(_config("t")) is not None
    assert len(server.batches) == 3
    server.batches.clear()
    tup = saver.get_tuple(stored)
    assert len(server.batches) == 2
    assert tup is not None and tup.checkpoint["channel_values"] == {"a": 1}
    assert tup.pending_writes == [("task", "a", 2)]


def test_a_prefix_with_another_memorys_keys_is_never_read() -> None:
    server = FakeRedis()
    mine, other = saver_on(server, prefix="cm:a:"), saver_on(server, prefix="cm:b:")
    other.put(_config("t"), empty_checkpoint(), {"step": 0}, {})
    assert mine.get_tuple(_config("t")) is None
    assert list(mine.list(None)) == []
    assert len(list(other.list(None))) == 1


def test_listing_without_a_thread_scans_this_memorys_threads_only() -> None:
    server = FakeRedis()
    saver = saver_on(server)
    for t in ("x", "y{1}"):
        saver.put(_config(t), empty_checkpoint(), {"step": 0, "source": "loop"}, {})
    got = sorted(t.config["configurable"]["thread_id"] for t in saver.list(None, filter={"source": "loop"}))
    assert got == ["x", "y{1}"]


def test_a_custom_serializer_is_used_for_everything_stored() -> None:
    class Rot:
        def encrypt(self, plaintext: bytes) -> tuple[str, bytes]:
            return "rot", bytes((b + 1) % 256 for b in plaintext)

        def decrypt(self, ciphername: str, ciphertext: bytes) -> bytes:
            assert ciphername == "rot"
            return bytes((b - 1) % 256 for b in ciphertext)

    server = FakeRedis()
    saver = saver_on(server, serde=EncryptedSerializer(Rot(), JsonPlusSerializer()))
    secret = f"secret-{uuid4()}"
    cp = empty_checkpoint()
    cp["channel_values"] = {"msg": secret}
    cp["channel_versions"] = {"msg": saver.get_next_version(None)}
    stored = saver.put(_config("t"), cp, {"step": 0, "note": secret}, cp["channel_versions"])
    saver.put_writes(stored, [("msg", secret)], "task")
    raw = b"".join(v for h in server.data.values() if isinstance(h, dict) for v in h.values())
    assert secret.encode() not in raw
    assert b"+rot" in raw
    tup = saver.get_tuple(stored)
    assert tup is not None
    assert tup.checkpoint["channel_values"]["msg"] == secret
    assert tup.metadata["note"] == secret
    assert tup.pending_writes == [("task", "msg", secret)]


def test_a_client_that_decodes_responses_is_refused() -> None:
    import redis

    with pytest.raises(ValueError, match="decode_responses"):
        ChatMemoryRedisSaver(redis.Redis(decode_responses=True))


def test_a_nul_in_a_namespace_is_refused_rather_than_misfiled() -> None:
    saver = saver_on(FakeRedis())
    with pytest.raises(ValueError, match="NUL"):
        saver.put(_config("t", ns="a\x00b"), empty_checkpoint(), {}, {})


def test_prune_keep_latest_keeps_the_blobs_the_latest_checkpoint_still_reads() -> None:
    server = FakeRedis()
    saver = saver_on(server)
    v1 = saver.get_next_version(None)
    cp1 = empty_checkpoint()
    cp1["channel_values"] = {"a": "a1", "b": "b1"}
    cp1["channel_versions"] = {"a": v1, "b": v1}
    s1 = saver.put(_config("t"), cp1, {"step": 0}, {"a": v1, "b": v1})
    v2 = saver.get_next_version(v1)
    cp2 = empty_checkpoint()
    cp2["channel_values"] = {"a": "a2", "b": "b1"}
    cp2["channel_versions"] = {"a": v2, "b": v1}
    s2 = saver.put(s1, cp2, {"step": 1}, {"a": v2})
    saver.prune(["t"])
    assert [t.config for t in saver.list(_config("t"))] == [s2]
    tup = saver.get_tuple(_config("t"))
    assert tup is not None and tup.checkpoint["channel_values"] == {"a": "a2", "b": "b1"}
    blobs = server.data[saver.keys("t").bl.encode()]
    assert len(blobs) == 2  # a@v1 is gone


def test_prune_leaves_a_namespace_whose_graph_uses_delta_channels() -> None:
    saver = saver_on(FakeRedis())
    s1 = saver.put(_config("t"), empty_checkpoint(), {"step": 0}, {})
    saver.put(s1, empty_checkpoint(), {"step": 1, "counters_since_delta_snapshot": {"m": (1, 1)}}, {})
    saver.prune(["t"])
    assert len(list(saver.list(_config("t")))) == 2


def test_an_unknown_prune_strategy_is_refused() -> None:
    with pytest.raises(ValueError, match="strategy"):
        saver_on(FakeRedis()).prune(["t"], strategy="keep_some")


def test_the_acl_list_is_the_operators_history_commands_plus_the_checkpointers_extras() -> None:
    from chatmemory.checkpoint import EXTRA_REDIS_COMMANDS
    from chatmemory_operator.backends.redis import SDK_COMMANDS

    assert set(REDIS_COMMANDS) <= set(SDK_COMMANDS) | set(EXTRA_REDIS_COMMANDS)
    assert set(EXTRA_REDIS_COMMANDS) <= set(REDIS_COMMANDS)
    assert "keys" not in REDIS_COMMANDS and "eval" not in REDIS_COMMANDS
