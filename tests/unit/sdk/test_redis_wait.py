"""The durability option's pure parts: binding keys, option checks, the turn's commands and replies.

No sockets: the server side (a replica confirming, none confirming, a failover) is in
tests/integration/failover.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
from chatmemory.contract import Binding, Key
from chatmemory.errors import BindingError
from chatmemory.histories.redis import (
    DEFAULT_WAIT_TIMEOUT_MS,
    NotReplicated,
    RedisChatMessageHistory,
    _retryable,
    check_waited,
    wait_options,
)

BASE = {"contract_version": "1", "type": "redis", "provider": "redis", "host": "h", "port": "6379"}


def check(replies: list[Any], wanted: int = 1) -> None:
    check_waited(replies, wanted=wanted, timeout_ms=500, where="redis h:1", key="app:{s}")


def test_the_binding_carries_the_wait_keys_and_writes_them_back() -> None:
    b = Binding.from_mapping({**BASE, "redis_wait_replicas": "1", "redis_wait_timeout_ms": "250"}, source="t")
    assert (b.redis_wait_replicas, b.redis_wait_timeout_ms) == (1, 250)
    data = b.to_secret_data()
    assert (data[Key.REDIS_WAIT_REPLICAS.value], data[Key.REDIS_WAIT_TIMEOUT_MS.value]) == ("1", "250")
    assert "redis_wait_replicas" not in Binding.from_mapping(BASE, source="t").to_secret_data()


@pytest.mark.parametrize(("key", "value"), [("redis_wait_replicas", "-1"), ("redis_wait_timeout_ms", "0")])
def test_a_bad_wait_key_is_refused_naming_the_key(key: str, value: str) -> None:
    with pytest.raises(BindingError) as raised:
        Binding.from_mapping({**BASE, key: value}, source="t")
    assert raised.value.key == key


def test_wait_options_default_to_no_wait_and_a_one_second_timeout() -> None:
    assert wait_options(None, None, 10) == (0, DEFAULT_WAIT_TIMEOUT_MS) == (0, 1000)
    assert wait_options(2, 300, 10) == (2, 300)


@pytest.mark.parametrize(
    ("replicas", "timeout_ms", "named"),
    [
        (-1, None, "redis_wait_replicas"),
        (1, 0, "redis_wait_timeout_ms"),
        (1, 10_000, "redis_wait_timeout_ms"),
    ],
)
def test_wait_options_refuse_what_could_not_work_naming_the_option(
    replicas: int, timeout_ms: int | None, named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        wait_options(replicas, timeout_ms, 10)  # 10 s operation timeout: a 10 s WAIT could not answer


def test_a_durable_turn_is_multi_exec_then_wait_written_together() -> None:
    client = redis.Redis(socket_timeout=5)  # no connection is opened
    h = RedisChatMessageHistory("s", key_prefix="app:", ttl=60, redis_client=client, wait_replicas=1)
    commands = h._waited(["doc"])
    assert [c[0] for c in commands] == ["MULTI", "RPUSH", "EXPIRE", "EXEC", "WAIT"]
    assert commands[-1] == ("WAIT", 1, 1000)


def test_a_turn_confirmed_by_enough_replicas_passes() -> None:
    check([b"OK", b"QUEUED", b"QUEUED", [2, 1], 1])
    check([b"OK", b"QUEUED", [2], 2], wanted=1)


def test_fewer_replicas_raise_not_replicated_applied_naming_the_option_and_what_to_do() -> None:
    with pytest.raises(NotReplicated) as raised:
        check([b"OK", b"QUEUED", [2], 0])
    e = raised.value
    assert (e.applied, e.replicas, e.wanted) == (True, 0, 1)
    assert "redis_wait_replicas" in str(e) and "do not send it again" in str(e)


def test_a_redirected_turn_raises_the_redirect_which_is_retried_as_never_applied() -> None:
    moved = redis.exceptions.MovedError("3999 127.0.0.1:7002")
    with pytest.raises(redis.exceptions.MovedError) as raised:
        check([b"OK", moved, redis.exceptions.ExecAbortError("EXECABORT"), 0])
    assert _retryable(raised.value, write=True)


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.MovedError("1 h:2"),
        redis.exceptions.AskError("1 h:2"),
        redis.exceptions.TryAgainError("TRYAGAIN"),
        redis.exceptions.ClusterDownError("CLUSTERDOWN"),
    ],
)
def test_a_turn_a_cluster_node_discarded_is_retried(error: Exception) -> None:
    assert _retryable(error, write=True)


def test_a_turn_whose_connection_broke_after_sending_is_not_retried() -> None:
    assert not _retryable(redis.ConnectionError("Error while reading from h:1"), write=True)


def test_a_refused_queued_command_is_raised_as_the_servers_error() -> None:
    with pytest.raises(redis.exceptions.NoPermissionError):
        check([b"OK", redis.exceptions.NoPermissionError("NOPERM"), redis.exceptions.ExecAbortError("x"), 0])


def test_a_failed_wait_after_a_written_turn_is_not_replicated_saying_wait_may_be_denied() -> None:
    with pytest.raises(NotReplicated, match="may lack WAIT"):
        check([b"OK", b"QUEUED", [2], redis.exceptions.NoPermissionError("NOPERM wait")])


def test_the_history_refuses_a_wait_timeout_its_socket_would_not_outlast() -> None:
    with pytest.raises(ValueError, match="redis_wait_timeout_ms"):
        RedisChatMessageHistory("s", redis_client=redis.Redis(socket_timeout=1), wait_replicas=1)
