"""The Redis checkpointer's logic, on an in-process stand-in for the handful of commands it sends.

No sockets: :class:`FakeRedis` implements exactly the commands of ``REDIS_COMMANDS`` (and refuses
any other: it has no SCAN, like the memory's ACL user), with Redis's score and lexicographic ZRANGE
semantics, and records every round trip so the tests can check atomicity, slots and TTLs. The same
saver runs against real servers in tests/integration/checkpoint/.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import pytest
from chatmemory.checkpoint import REDIS_COMMANDS, ChatMemoryRedisSaver
from chatmemory.checkpoint.redis import (
    INDEX_GRACE_SECONDS,
    escape_thread,
    glob_escape,
    index_key,
    thread_keys,
    thread_of_key,
)
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


def _score_ok(score: float, lo: bytes, hi: bytes) -> bool:
    def bound(b: bytes) -> tuple[float, bool]:
        text = b.decode()
        excl = text.startswith("(")
        return float(text.lstrip("(")), excl

    (low, lx), (high, hx) = bound(lo), bound(hi)
    return (score > low if lx else score >= low) and (score < high if hx else score <= high)


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
                    del h[f]
                    n += 1
            if h is not None and not h:
                self.data.pop(key)
            return n
        if name == "zadd":
            z = self.data.setdefault(key, {})
            flags = set()
            while rest and rest[0].upper() in (b"NX", b"XX", b"GT", b"LT"):
                flags.add(rest.pop(0).upper())
            new = 0
            for score, member in zip(rest[::2], rest[1::2], strict=True):
                old = z.get(member)
                new += old is None
                if old is None or (b"NX" not in flags and (b"GT" not in flags or float(score) > old)):
                    z[member] = float(score)
            return new
        if name == "zremrangebyscore":
            gone = [m for m, sc in (h or {}).items() if _score_ok(sc, rest[0], rest[1])]
            for m in gone:
                del h[m]
            if h is not None and not h:
                self.data.pop(key)
            return len(gone)
        if name == "zrange":
            z = h or {}
            members = sorted(z, key=lambda m: (z[m], m))
            opts = [r.upper() for r in rest[2:]]
            rev = b"REV" in opts
            if b"BYSCORE" in opts:
                hi, lo = (rest[0], rest[1]) if rev else (rest[1], rest[0])
                members = [m for m in members if _score_ok(z[m], lo, hi)]
                return members[::-1] if rev else members
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
    # Changed with the thread index (issue 13): on a standalone server the same MULTI also updates
    # the memory's thread index, which is not in the thread's slot (on a cluster it is a round trip
    # of its own, see test_on_a_cluster_the_index_is_a_round_trip_of_its_own).
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
    index = index_key("cm:ns:mem:")
    thread_cmds = [c for c in cmds if c[1] != index]
    tags = {re.search(r"\{[^}]*\}", str(c[1])).group(0) for c in thread_cmds}  # type: ignore[union-attr]
    assert tags == {"{t1}"}
    expired = {c[1] for c in thread_cmds if c[0] == "EXPIRE"}
    assert expired == set(saver.keys("t1").all)
    assert [c[0] for c in cmds if c[1] == index] == ["ZADD", "ZREMRANGEBYSCORE", "EXPIRE"]
    assert {k.decode() for k in server.data} <= {*saver.keys("t1").all, index}
    assert all(server.ttl[k] == 90 for k in server.data if k != index.encode())
    assert server.ttl[index.encode()] == 90 + INDEX_GRACE_SECONDS


def test_without_a_ttl_no_key_gets_an_expiry() -> None:
    server = FakeRedis()
    saver = saver_on(server)
    stored = saver.put(_config("t"), empty_checkpoint(), {"step": 0}, {})
    saver.put_writes(stored, [("c", 1)], "task")
    assert server.data and not server.ttl


def test_delete_thread_unlinks_the_threads_keys_and_its_index_entry_in_one_transaction() -> None:
    # Changed with the thread index (issue 13): the UNLINK and the ZREM from the index are one MULTI.
    server = FakeRedis()
    saver = saver_on(server)
    for t in ("a", "b"):
        saver.put(_config(t), empty_checkpoint(), {"step": 0}, {})
    server.batches.clear()
    saver.delete_thread("a")
    assert server.batches == [(True, [("UNLINK", *saver.keys("a").all), ("ZREM", saver.index, "a")])]
    assert saver.get_tuple(_config("a")) is None
    assert saver.get_tuple(_config("b")) is not None
    assert [t.config["configurable"]["thread_id"] for t in saver.list(None)] == ["b"]


def test_reading_the_latest_checkpoint_takes_two_round_trips_as_a_given_one_does() -> None:
    # Was three for "latest" (the id first) before put kept a copy of the namespace's latest
    # record (issue 17); tests/integration/checkpoint/test_round_trips.py counts on real servers.
    server = FakeRedis()
    saver = saver_on(server)
    cp = empty_checkpoint()
    cp["channel_values"] = {"a": 1}
    cp["channel_versions"] = {"a": saver.get_next_version(None)}
    stored = saver.put(_config("t"), cp, {"step": 0}, cp["channel_versions"])
    saver.put_writes(stored, [("a", 2)], "task")
    server.batches.clear()
    assert saver.get_tuple(_config("t")) is not None
    assert len(server.batches) == 2
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


def test_listing_without_a_thread_reads_the_index_newest_thread_first_and_sends_no_scan() -> None:
    server = FakeRedis()
    saver = saver_on(server, ttl_seconds=60)
    for t in ("x", "y", "z"):
        saver.put(_config(t), empty_checkpoint(), {"step": 0}, {})
        time.sleep(0.002)
    saver.put_writes(saver.put(_config("x"), empty_checkpoint(), {"step": 1}, {}), [("c", 1)], "task")
    server.batches.clear()
    got = [t.config["configurable"]["thread_id"] for t in saver.list(None)]
    assert got == ["x", "x", "z", "y"]
    first_trip = server.batches[0][1]
    assert first_trip == [("ZRANGE", saver.index, "+inf", first_trip[0][3], "BYSCORE", "REV")]
    assert all(str(c[0]).lower() != "scan" for _, cmds in server.batches for c in cmds)


async def test_threads_idle_past_the_ttl_and_the_grace_leave_the_index() -> None:
    server = FakeRedis()
    saver = saver_on(server, ttl_seconds=60)
    old = int(time.time() * 1000) - (60 + INDEX_GRACE_SECONDS + 5) * 1000
    server.execute_command("ZADD", saver.index, old, "gone")  # a thread last written long ago
    assert [t async for t in saver.alist(None)] == []  # not listed (its keys have expired)
    await saver.aput(_config("new"), empty_checkpoint(), {"step": 0}, {})
    assert set(server.data[saver.index.encode()]) == {b"new"}  # dropped by the next write


def test_delete_for_runs_finds_the_runs_threads_through_the_index() -> None:
    server = FakeRedis()
    saver = saver_on(server)
    saver.put(_config("a"), empty_checkpoint(), {"step": 0, "run_id": "r1"}, {})
    saver.put(_config("b"), empty_checkpoint(), {"step": 0, "run_id": "r2"}, {})
    saver.delete_for_runs(["r1"])
    assert saver.get_tuple(_config("a")) is None
    assert saver.get_tuple(_config("b")) is not None


def test_copy_thread_indexes_the_target() -> None:
    server = FakeRedis()
    saver = saver_on(server)
    saver.put(_config("src"), empty_checkpoint(), {"step": 0}, {})
    saver.copy_thread("src", "dst")
    assert sorted(t.config["configurable"]["thread_id"] for t in saver.list(None)) == ["dst", "src"]


def test_on_a_cluster_the_index_is_a_round_trip_of_its_own_before_a_write_after_a_delete() -> None:
    from chatmemory.checkpoint._redis_saver import _round_trips
    from chatmemory.checkpoint.redis import Batch

    write = Batch([("HSET", "k", "f", "v")], atomic=True, index=[("ZADD", "i", "GT", 1, "t")])
    assert _round_trips(write, cluster=False) == ([(write.commands + write.index, True)], 0)
    assert _round_trips(write, cluster=True) == ([(write.index, False), (write.commands, True)], 1)
    delete = Batch([("UNLINK", "k")], index=[("ZREM", "i", "t")], index_after=True)
    assert _round_trips(delete, cluster=True) == ([(delete.commands, False), (delete.index, False)], 0)
    assert _round_trips(Batch([("HMGET", "k", "f")]), cluster=True) == ([([("HMGET", "k", "f")], False)], 0)


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
    raw = b"".join(v for h in server.data.values() for v in h.values() if isinstance(v, bytes))
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
