"""Timeouts and retries of the Redis and TiDB/MySQL histories, against local fake servers.

A *blackholed* server accepts TCP connections and never answers: every history's add and read
must raise ``BackendUnavailable`` within its timeout plus a small margin, naming host:port and the
cause. A server that closes the connection after reading a request shows what is retried: a read
is sent again, a write (the turn's MULTI/EXEC, the INSERT) never is.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import chatmemory
import pytest
from chatmemory._connect import Timeouts
from chatmemory.errors import BackendError, BackendUnavailable, BindingError
from chatmemory.histories.redis import RedisChatMessageHistory
from chatmemory.histories.tidb import TiDBChatMessageHistory
from chatmemory.memory import ChatMemory
from langchain_core.messages import HumanMessage

TIMEOUT = 1.0
#: What a call may take beyond its timeout (thread start, the backoff of a retry, a slow CI box).
MARGIN = 1.5


class FakeServer:
    """A TCP listener on 127.0.0.1; ``serve(conn, received)`` runs per accepted connection."""

    def __init__(self, serve: Callable[[socket.socket, list[bytes]], None]) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self.connections: list[socket.socket] = []
        self._serve = serve
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(conn)
            threading.Thread(target=self._serve, args=(conn, self.received), daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        for c in self.connections:
            c.close()


def blackhole(conn: socket.socket, received: list[bytes]) -> None:
    """Accept and never answer (keep reading so the client's writes never block)."""
    conn.settimeout(30)
    try:
        while data := conn.recv(65536):
            received.append(data)
    except OSError:
        return


def redis_closes_on(*commands: bytes) -> Callable[[socket.socket, list[bytes]], None]:
    """A RESP server that answers +OK to the handshake and closes, without a reply, on a request
    holding one of ``commands`` (a crash after the request reached it)."""

    def serve(conn: socket.socket, received: list[bytes]) -> None:
        conn.settimeout(5)
        try:
            while data := conn.recv(65536):
                if any(c in data for c in commands):
                    time.sleep(0.05)  # the whole request (MULTI ... EXEC) arrives before the close
                    conn.setblocking(False)
                    try:
                        while more := conn.recv(65536):
                            data += more
                    except BlockingIOError:
                        pass
                    received.append(data)
                    break
                conn.sendall(b"".join(_reply(name) for name in _command_names(data)))
        except OSError:
            pass
        conn.close()

    return serve


def _command_names(data: bytes) -> list[bytes]:
    """The command names of the RESP arrays in ``data`` (each request read whole)."""
    names, lines, i = [], data.split(b"\r\n"), 0
    while i < len(lines) and lines[i].startswith(b"*"):
        count = int(lines[i][1:])
        names.append(lines[i + 2].upper())
        i += 1 + 2 * count
    return names


def _reply(name: bytes) -> bytes:
    if name == b"HELLO":  # RESP3 (redis-py 8's default protocol): a map with the version
        return b"%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$5\r\nproto\r\n:3\r\n"
    return b"+OK\r\n"


@contextmanager
def server(serve: Callable[[socket.socket, list[bytes]], None]) -> Iterator[FakeServer]:
    s = FakeServer(serve)
    try:
        yield s
    finally:
        s.close()


def refused_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


def timed(fn: Callable[[], object]) -> tuple[BaseException, float]:
    start = time.monotonic()
    with pytest.raises(BackendError) as info:
        fn()
    return info.value, time.monotonic() - start


URLS = {
    "redis": "redis://127.0.0.1:{port}",
    "tidb": "mysql://user:pw@127.0.0.1:{port}/app",
}


def memory_on(kind: str, port: int, timeout: float | Timeouts = TIMEOUT) -> ChatMemory:
    return chatmemory.connect_url(URLS[kind].format(port=port), timeout=timeout)


# -- blackholed server ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["redis", "tidb"])
@pytest.mark.parametrize("op", ["add", "read", "aadd", "aread"])
def test_a_blackholed_server_raises_within_the_timeout(kind: str, op: str) -> None:
    with server(blackhole) as s, memory_on(kind, s.port) as memory:
        history = memory.history("s1")
        calls: dict[str, Callable[[], object]] = {
            "add": lambda: history.add_messages([HumanMessage("hi")]),
            "read": lambda: history.messages,
            "aadd": lambda: asyncio.run(history.aadd_messages([HumanMessage("hi")])),
            "aread": lambda: asyncio.run(history.aget_messages()),
        }
        error, took = timed(calls[op])
    assert isinstance(error, BackendUnavailable), error
    assert took < TIMEOUT + MARGIN, f"{op} took {took:.2f} s"
    assert f"127.0.0.1:{s.port}" in str(error)
    assert "timed out" in str(error)
    if op.endswith("add") and kind == "redis":  # the MULTI reached the server: it may be applied
        assert error.applied is None
        assert "may or may not have been applied" in str(error)
    elif op.endswith("add"):  # the MySQL greeting never came: the INSERT was never sent
        assert error.applied is False


@pytest.mark.parametrize("kind", ["redis", "tidb"])
def test_directly_built_histories_have_timeouts_too(kind: str) -> None:
    with server(blackhole) as s:
        if kind == "redis":
            history = RedisChatMessageHistory("s1", f"redis://127.0.0.1:{s.port}", timeout=TIMEOUT)
            error, took = timed(lambda: history.messages)
        else:  # the constructor's CREATE TABLE is the first I/O
            error, took = timed(
                lambda: TiDBChatMessageHistory("s1", f"mysql://u:p@127.0.0.1:{s.port}/app", timeout=TIMEOUT)
            )
    assert isinstance(error, BackendUnavailable)
    assert took < TIMEOUT + MARGIN


def test_a_timeouts_pair_sets_connect_and_operation_apart() -> None:
    with server(blackhole) as s, memory_on("redis", s.port, Timeouts(connect=5, operation=TIMEOUT)) as memory:
        error, took = timed(lambda: memory.history("s").messages)
    assert isinstance(error, BackendUnavailable)
    assert took < TIMEOUT + MARGIN


def test_the_url_takes_timeout_query_options() -> None:
    with (
        server(blackhole) as s,
        chatmemory.connect_url(f"redis://127.0.0.1:{s.port}?timeout={TIMEOUT}&connect_timeout=2") as memory,
    ):
        assert memory.timeouts == Timeouts(connect=2, operation=TIMEOUT)
        error, took = timed(lambda: memory.history("s").messages)
    assert isinstance(error, BackendUnavailable)
    assert took < TIMEOUT + MARGIN


def test_default_timeouts_reach_every_client() -> None:
    from chatmemory._connect import mysql_kwargs, redis_kwargs

    memory = chatmemory.connect_url("redis://127.0.0.1:1")
    kwargs = memory.connector.client.connection_pool.connection_kwargs  # type: ignore[attr-defined]
    assert (kwargs["socket_connect_timeout"], kwargs["socket_timeout"]) == (5.0, 10.0)
    assert kwargs["retry"].get_retries() == 0  # redis-py's retry would re-send a MULTI/EXEC
    memory.close()
    assert redis_kwargs(memory.binding)["socket_timeout"] == 10.0
    tidb = chatmemory.connect_url("mysql://u:p@127.0.0.1:1/app", timeout=Timeouts(connect=1, operation=2))
    pool_kwargs = tidb.connector._pool._kwargs  # type: ignore[attr-defined]
    assert (pool_kwargs["connect_timeout"], pool_kwargs["read_timeout"], pool_kwargs["write_timeout"]) == (
        1,
        2,
        2,
    )
    assert mysql_kwargs(tidb.binding)["read_timeout"] == 10.0
    tidb.close()


@pytest.mark.parametrize("bad", [0, -1, "soon", True])
def test_a_bad_timeout_is_refused(bad: object) -> None:
    with pytest.raises((ValueError, TypeError, BindingError)):
        chatmemory.connect_url("redis://127.0.0.1:1", timeout=bad)


# -- what is retried --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["redis", "tidb"])
def test_a_refused_connection_raises_within_the_timeout_and_the_write_was_not_sent(kind: str) -> None:
    port = refused_port()
    with memory_on(kind, port, timeout=TIMEOUT) as memory:
        history = memory.history("s1")
        error, took = timed(lambda: history.add_messages([HumanMessage("hi")]))
        assert isinstance(error, BackendUnavailable)
        assert error.applied is False  # never sent: retried with backoff until the timeout, then given up
        assert "was not sent" in str(error)
        assert f"127.0.0.1:{port}" in str(error)
        assert "refused" in str(error)
        assert took < TIMEOUT + MARGIN
        read_error, _ = timed(lambda: history.messages)
        assert isinstance(read_error, BackendUnavailable)


def test_redis_sends_a_turn_once_and_a_read_again_after_a_broken_connection() -> None:
    with server(redis_closes_on(b"MULTI")) as s, memory_on("redis", s.port, timeout=3) as memory:
        history = memory.history("s1")
        error, _ = timed(lambda: history.add_messages([HumanMessage("once")]))
        assert isinstance(error, BackendUnavailable)
        assert error.applied is None
        sent = b"".join(s.received)
        assert sent.count(b"MULTI") == 1
        assert sent.count(b"EXEC") <= 1
    with server(lambda conn, _: conn.close()) as s, memory_on("redis", s.port, timeout=3) as memory:
        error, _ = timed(lambda: memory.history("s1").messages)
        assert isinstance(error, BackendUnavailable)
        assert "refused or broken" in str(error)
        assert len(s.connections) > 1  # a read is tried again, on a new connection


def test_async_redis_sends_a_turn_once() -> None:
    with server(redis_closes_on(b"MULTI")) as s, memory_on("redis", s.port, timeout=3) as memory:
        history = memory.history("s1")
        error, _ = timed(lambda: asyncio.run(history.aadd_messages([HumanMessage("once")])))
        assert isinstance(error, BackendUnavailable)
        assert b"".join(s.received).count(b"MULTI") == 1


def mysql_closes_on_a_statement(conn: socket.socket, received: list[bytes]) -> None:
    """Let PyMySQL connect (a greeting, OK to everything), then close on the history's statement."""
    import struct

    def packet(seq: int, payload: bytes) -> bytes:
        return struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload

    caps = 0x0000_0200 | 0x0000_8000 | 0x0008_0000 | 0x0000_0008 | 0x0000_0001  # proto41, secure, plugin auth
    greeting = (
        b"\x0a"
        + b"8.0.0-fake\x00"
        + struct.pack("<I", 1)
        + b"abcdefgh\x00"
        + struct.pack("<H", caps & 0xFFFF)
        + b"\x2d"
        + struct.pack("<H", 2)
        + struct.pack("<H", caps >> 16)
        + bytes([21])
        + b"\x00" * 10
        + b"ijklmnopqrst\x00"
        + b"mysql_native_password\x00"
    )
    ok = b"\x00\x00\x00\x02\x00\x00\x00"
    conn.settimeout(5)
    try:
        conn.sendall(packet(0, greeting))
        auth = conn.recv(65536)
        conn.sendall(packet(auth[3] + 1, ok))
        while data := conn.recv(65536):  # SET AUTOCOMMIT, the init_command, ...: OK; the statement: close
            if b"INSERT" in data or b"SELECT message" in data:
                received.append(data)
                break
            conn.sendall(packet(data[3] + 1, ok))
    except OSError:
        pass
    conn.close()


def test_tidb_sends_an_insert_once_and_a_select_again_after_a_lost_connection() -> None:
    with server(mysql_closes_on_a_statement) as s, memory_on("tidb", s.port, timeout=3) as memory:
        history = memory.history("s1")
        error, _ = timed(lambda: history.add_messages([HumanMessage("once")]))
        assert isinstance(error, BackendUnavailable), error
        assert error.applied is None
        assert sum(b"INSERT" in r for r in s.received) == 1
        s.received.clear()
        error, _ = timed(lambda: history.messages)
        assert isinstance(error, BackendUnavailable)
        assert sum(b"SELECT" in r for r in s.received) > 1


# -- bad TLS material ----------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["rediss://127.0.0.1:1", "mysql://u:p@127.0.0.1:1/app?tls=true"])
def test_a_bad_ca_pem_names_the_key(url: str, tmp_path: pytest.TempPathFactory) -> None:
    ca = tmp_path / "ca.pem"  # type: ignore[operator]
    ca.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
    with pytest.raises(BindingError) as info:
        chatmemory.connect_url(url, ca_file=str(ca))
    assert info.value.key == "ca.crt"
    assert "not a PEM CA certificate" in str(info.value)


def test_checkpointers_get_the_memory_timeouts() -> None:
    pytest.importorskip("langgraph.checkpoint.base")
    with chatmemory.connect_url("redis://127.0.0.1:1", timeout=2) as memory:
        saver = memory.checkpointer()
        kwargs = saver.client.connection_pool.connection_kwargs
        assert (kwargs["socket_connect_timeout"], kwargs["socket_timeout"]) == (2, 2)
        assert kwargs["retry"].get_retries() == 0
        assert saver.aclient.connection_pool.connection_kwargs["socket_timeout"] == 2
        saver.close()
    with chatmemory.connect_url(
        "mysql://u:p@127.0.0.1:1/app", checkpoint_table_prefix="cp_", timeout=Timeouts(connect=1, operation=3)
    ) as memory:
        sql_saver = memory.checkpointer()
        kw = sql_saver._connect_kwargs
        assert (kw["connect_timeout"], kw["read_timeout"], kw["write_timeout"]) == (1, 3, 3)
        default = chatmemory.connect_url("mysql://u:p@127.0.0.1:1/app", checkpoint_table_prefix="cp_")
        assert default.checkpointer()._connect_kwargs["read_timeout"] == 10.0
