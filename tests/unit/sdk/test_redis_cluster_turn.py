"""The asyncio Redis Cluster turn (issue 14): its commands, and the retry decision on its replies.

On a cluster the asyncio history writes a turn by hand as ``MULTI <turn> EXEC`` on one connection to
the slot's primary, so the server applies it whole or discards it whole; whether a failure is sent
again rests on that. These tests feed the replies a node can give (a redirection, a failover's
refusals, a connection lost at each point) to the history's check and retry rules. No sockets:
building the clients does no I/O; the server side is in tests/integration/sdk/test_redis_history.py.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
import redis.asyncio.cluster
from chatmemory.errors import BackendUnavailable
from chatmemory.histories.redis import RedisChatMessageHistory, _backend_error, _retryable, check_applied
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ExecAbortError,
    MovedError,
    NoPermissionError,
    ResponseError,
    TryAgainError,
)

KEY = "app:{s}"
QUEUED = b"QUEUED"
ABORT = ExecAbortError("EXECABORT Transaction discarded because of previous errors.")
CLOSED = redis.ConnectionError("Connection closed by server.")
RESET = redis.ConnectionError("Error while reading from 127.0.0.1:7001 : (104, 'Connection reset by peer')")
REFUSED_AT_CONNECT = redis.ConnectionError("Error 111 connecting to 127.0.0.1:7001. Connection refused.")


def moved() -> MovedError:
    return MovedError("8268 127.0.0.1:7002")


def outcome(replies: list[Any] | Exception) -> tuple[bool, bool | str | None, str]:
    """(retried, applied, message) for a turn that got ``replies`` (or raised before any reply)."""
    try:
        if isinstance(replies, Exception):
            raise replies
        check_applied(replies)
    except (redis.RedisError, redis.exceptions.RedisClusterException) as e:
        error = _backend_error(e, "redis cluster h:1", KEY, write=True)
        applied = error.applied if isinstance(error, BackendUnavailable) else "refused"
        return _retryable(e, write=True), applied, str(error)
    return False, True, ""


def test_the_async_cluster_turn_is_one_multi_exec_of_rpush_ltrim_expire() -> None:
    history = RedisChatMessageHistory(
        "s",
        key_prefix="app:",
        ttl=60,
        max_messages=10,
        async_redis_client=redis.asyncio.cluster.RedisCluster(host="127.0.0.1", port=9),
    )
    assert history._transaction(["m1", "m2"]) == [
        ("MULTI",),
        ("RPUSH", KEY, "m1", "m2"),
        ("LTRIM", KEY, -10, -1),
        ("EXPIRE", KEY, 60),
        ("EXEC",),
    ]


def test_an_applied_turn_raises_nothing() -> None:
    assert outcome([b"OK", QUEUED, QUEUED, QUEUED, [3, b"OK", 1]]) == (False, True, "")


@pytest.mark.parametrize(
    "replies",
    [
        pytest.param([b"OK", moved(), moved(), moved(), ABORT], id="MOVED-queued"),
        pytest.param([b"OK", AskError("8268 127.0.0.1:7002"), ABORT], id="ASK-queued"),
        pytest.param(
            [b"OK", TryAgainError("Multiple keys request during rehashing of slot"), ABORT], id="TRYAGAIN"
        ),
        pytest.param([b"OK", ClusterDownError("The cluster is down"), ABORT], id="CLUSTERDOWN-queued"),
        pytest.param([b"OK", QUEUED, QUEUED, moved()], id="MOVED-on-EXEC"),
        pytest.param(
            [b"OK", QUEUED, QUEUED, ClusterDownError("The cluster is down")], id="CLUSTERDOWN-on-EXEC"
        ),
        pytest.param(REFUSED_AT_CONNECT, id="connection-not-opened"),
    ],
)
def test_a_turn_the_server_discarded_whole_or_never_got_is_sent_again(replies: list[Any] | Exception) -> None:
    retried, _, _ = outcome(replies)
    assert retried


@pytest.mark.parametrize(
    "replies",
    [
        pytest.param([b"OK", QUEUED, QUEUED, CLOSED], id="closed-before-EXEC-reply"),
        pytest.param([RESET, RESET, RESET, RESET], id="reset-before-any-reply"),
        pytest.param([b"OK", QUEUED, redis.TimeoutError("Timeout reading from socket")], id="timeout"),
        pytest.param(
            redis.ConnectionError("Error 32 while writing to socket. Broken pipe."), id="broken-write"
        ),
    ],
)
def test_a_turn_whose_connection_failed_after_sending_is_not_sent_again_and_may_be_applied(
    replies: list[Any] | Exception,
) -> None:
    retried, applied, message = outcome(replies)
    assert (retried, applied) == (False, None)
    assert "may or may not have been applied" in message


def test_a_turn_refused_by_the_acl_is_not_sent_again_and_names_the_key() -> None:
    retried, applied, message = outcome(
        [b"OK", NoPermissionError("NOPERM No permissions to access a key"), ABORT]
    )
    assert (retried, applied) == (False, "refused")
    assert "permission denied" in message and KEY in message


def test_an_error_inside_execs_reply_is_raised() -> None:
    wrongtype = ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")
    retried, applied, message = outcome([b"OK", QUEUED, QUEUED, [wrongtype, b"OK", 1]])
    assert (retried, applied) == (False, "refused") and "WRONGTYPE" in message


def test_a_refusal_is_raised_before_execs_abort_so_the_reason_decides() -> None:
    with pytest.raises(MovedError):
        check_applied([b"OK", moved(), ABORT])
    with pytest.raises(ExecAbortError):
        check_applied([b"OK", QUEUED, ABORT])
