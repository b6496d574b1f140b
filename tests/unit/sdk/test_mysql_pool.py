"""The MySQL connection pool's reuse rule, on fake connections over a local socketpair (no server).

The same rule against real TiDB and MariaDB connections killed by the server is in
tests/integration/sdk/test_tidb_histories.py.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator

import pytest
from chatmemory.sql import MySQLPool, socket_is_quiet


class FakeConnection:
    """What the pool touches on a PyMySQL connection: ``_sock``, ``ping`` and ``close``."""

    def __init__(self, sock: socket.socket, *, ping_fails: bool = False) -> None:
        self._sock = sock
        self.pings = 0
        self.closed = False
        self.ping_fails = ping_fails

    def ping(self, reconnect: bool = False) -> None:
        self.pings += 1
        if self.ping_fails:
            raise OSError("server gone")

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    """Every socket a test makes, closed at the end."""
    made: list[socket.socket] = []
    yield made
    for s in made:
        s.close()


@pytest.fixture
def pair(sockets: list[socket.socket]) -> tuple[socket.socket, socket.socket]:
    ours, server = socket.socketpair()
    sockets += [ours, server]
    return ours, server


@pytest.fixture
def fresh(sockets: list[socket.socket]) -> Callable[[], FakeConnection]:
    """Makes connections over new, healthy socketpairs."""

    def make() -> FakeConnection:
        ours, server = socket.socketpair()
        sockets.extend((ours, server))
        return FakeConnection(ours)

    return make


def test_an_idle_socket_with_nothing_to_read_is_quiet(pair: tuple[socket.socket, socket.socket]) -> None:
    assert socket_is_quiet(FakeConnection(pair[0]))


def test_a_socket_the_server_closed_is_not_quiet(pair: tuple[socket.socket, socket.socket]) -> None:
    pair[1].close()
    assert not socket_is_quiet(FakeConnection(pair[0]))


def test_a_socket_with_an_unread_packet_is_not_quiet(pair: tuple[socket.socket, socket.socket]) -> None:
    pair[1].sendall(b"\x07\x00\x00\x00\xff")  # e.g. the error packet a KILL sends
    assert not socket_is_quiet(FakeConnection(pair[0]))


def test_a_connection_whose_socket_is_closed_is_not_quiet(pair: tuple[socket.socket, socket.socket]) -> None:
    conn = FakeConnection(pair[0])
    pair[0].close()
    assert not socket_is_quiet(conn)


def test_a_quiet_connection_is_reused_without_a_round_trip(pair: tuple[socket.socket, socket.socket]) -> None:
    first = FakeConnection(pair[0])
    pool = MySQLPool(lambda: first, 2)
    with pool.connection() as conn:
        assert conn is first
    with pool.connection() as conn:
        assert conn is first and first.pings == 0


def test_a_connection_the_server_closed_is_replaced(
    pair: tuple[socket.socket, socket.socket], fresh: Callable[[], FakeConnection]
) -> None:
    dead = FakeConnection(pair[0])
    new = fresh()
    opened = iter([dead, new])
    pool = MySQLPool(lambda: next(opened), 2)
    with pool.connection():
        pass
    pair[1].close()
    with pool.connection() as conn:
        assert conn is new
    assert dead.closed


def test_a_long_idle_connection_is_pinged_and_replaced_if_the_ping_fails(
    pair: tuple[socket.socket, socket.socket], fresh: Callable[[], FakeConnection]
) -> None:
    stale = FakeConnection(pair[0], ping_fails=True)
    new = fresh()
    opened = iter([stale, new])
    pool = MySQLPool(lambda: next(opened), 2, ping_after=0)
    with pool.connection():
        pass
    with pool.connection() as conn:
        assert conn is new
    assert stale.pings == 1 and stale.closed


def test_a_connection_whose_work_raised_is_closed_not_pooled(fresh: Callable[[], FakeConnection]) -> None:
    conns = [fresh(), fresh()]
    opened = iter(conns)
    pool = MySQLPool(lambda: next(opened), 2)
    with pytest.raises(RuntimeError), pool.connection():
        raise RuntimeError("statement failed")
    assert conns[0].closed
    with pool.connection() as conn:
        assert conn is conns[1]


def test_connections_beyond_the_pool_size_are_closed_on_return(fresh: Callable[[], FakeConnection]) -> None:
    conns = [fresh() for _ in range(3)]
    opened = iter(conns)
    pool = MySQLPool(lambda: next(opened), 2)
    taken = [pool.take() for _ in range(3)]
    for c in taken:
        pool.give_back(c)
    assert [c.closed for c in conns] == [False, False, True]
    pool.close()
    assert all(c.closed for c in conns)
