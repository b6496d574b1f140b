"""The TiDB/MySQL history's async methods run natively on the event loop (asyncmy), on TiDB and MariaDB.

Many sessions at once share one connector's pool and each reads back exactly its own turn; no
worker thread is used (``asyncio.to_thread`` and the loop's executor are made to raise); a
blackholed server and a reply that never comes raise ``BackendUnavailable`` naming the server
instead of hanging, and so does a pooled connection whose server went silent (its reuse ping
counts in the operation timeout); a memory reading its Secret from a mounted directory follows a
rotated password after its connections were killed (a network blip), as the sync path does, and
reads the Secret in a thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest
from chatmemory import connect
from chatmemory._connect import Timeouts, mysql_kwargs
from chatmemory.contract import BackendKind, Binding
from chatmemory.errors import BackendUnavailable
from chatmemory.histories.tidb import TiDBConnector
from chatmemory.loaders import BindingSource
from chatmemory.sql import ASYNC_POOL_SIZE, AsyncMySQLPool
from langchain_core.messages import AIMessage, HumanMessage

from tests.integration.sdk.test_follow_secret import MountedSecret
from tests.support.platform import Platform

SERVERS = ["TIDB_URL", "MARIADB_URL"]
SESSIONS = 100
#: A generous bound for a call that must raise within a 1 s timeout: reaching it means a hang.
HANG = 30.0


def uid() -> str:
    return uuid.uuid4().hex[:10]


def admin(platform: Platform, key: str) -> Any:
    return pymysql.connect(**{**platform.mysql_params(key), "autocommit": True})


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest, platform: Platform) -> str:
    key: str = request.param
    if key not in platform:
        pytest.skip(f"{key} is not in the platform env file")
    return key


@pytest.fixture
def memory_user(platform: Platform, server: str) -> Iterator[Binding]:
    """A database with a user allowed only its data (the operator's grants), as a binding."""
    root = admin(platform, server)
    user, database, password = f"cma_{uid()}", f"cma_{uid()}", uuid.uuid4().hex
    with root.cursor() as cur:
        cur.execute(f"CREATE DATABASE `{database}`")
        cur.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, password))
        cur.execute(f"GRANT SELECT, INSERT, DELETE, CREATE ON `{database}`.* TO %s@'%%'", (user,))
    params = platform.mysql_params(server)
    binding = Binding(
        backend=BackendKind.TIDB,
        provider="tidb" if server == "TIDB_URL" else "mariadb",
        host=str(params["host"]),
        port=int(str(params["port"])),
        username=user,
        password=password,
        database=database,
        table="messages",
    )
    TiDBConnector(binding, create=True).close()  # the table, as the operator makes it
    yield binding
    with root.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS `{database}`")
        cur.execute("DROP USER IF EXISTS %s@'%%'", (user,))
    root.close()


def connections_of(platform: Platform, server: str, user: str) -> list[int]:
    root = admin(platform, server)
    try:
        with root.cursor() as cur:
            cur.execute("SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s", (user,))
            return [int(r[0]) for r in cur.fetchall()]
    finally:
        root.close()


@pytest.fixture
async def no_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every way of handing work to a thread raise: the async path must not use one."""

    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the async path handed work to a thread")

    loop = asyncio.get_running_loop()
    monkeypatch.setattr(asyncio, "to_thread", forbidden)
    monkeypatch.setattr(loop, "run_in_executor", forbidden)
    monkeypatch.setattr(threading.Thread, "start", forbidden)


async def test_a_hundred_sessions_at_once_share_one_pool_and_each_reads_its_own_turn(
    platform: Platform, server: str, memory_user: Binding
) -> None:
    connector = TiDBConnector(memory_user)
    try:
        histories = [connector.history(f"s{i:03d}") for i in range(SESSIONS)]

        async def turn(i: int) -> list[Any]:
            h = histories[i]
            await h.aadd_messages([HumanMessage(f"q{i}"), AIMessage(f"a{i}")])
            return await h.aget_messages()

        results = await asyncio.gather(*(turn(i) for i in range(SESSIONS)))
        for i, messages in enumerate(results):
            assert [m.content for m in messages] == [f"q{i}", f"a{i}"]
        # Idle after the burst: never more connections than the pool's size.
        assert 0 < len(connections_of(platform, server, memory_user.username)) <= ASYNC_POOL_SIZE
        await asyncio.gather(*(h.aclear() for h in histories))
        assert [await h.aget_messages() for h in histories[:3]] == [[], [], []]
    finally:
        await connector.aclose()
    assert connections_of(platform, server, memory_user.username) == []  # aclose said goodbye


@pytest.mark.usefixtures("no_threads")
async def test_the_async_methods_never_hand_work_to_a_thread(memory_user: Binding) -> None:
    connector = TiDBConnector(memory_user)
    try:
        history = connector.history("s")
        await history.aadd_messages([HumanMessage("hi"), AIMessage("hello")])
        assert [m.content for m in await history.aget_messages()] == ["hi", "hello"]
        await history.aclear()
        assert await history.aget_messages() == []
    finally:
        await connector.aclose()


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A listener that completes TCP connects (the kernel's backlog) and never says a word."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield sock.getsockname()[1]
    sock.close()


async def test_a_blackholed_server_raises_backend_unavailable_and_a_write_says_it_was_not_sent(
    blackhole: int,
) -> None:
    binding = Binding(
        backend=BackendKind.TIDB, provider="tidb", host="127.0.0.1", port=blackhole,
        username="u", password="secret-pw", database="d", table="messages",
    )  # fmt: skip
    connector = TiDBConnector(binding, timeout=Timeouts(connect=1, operation=1))
    history = connector.history("s")
    try:
        with pytest.raises(BackendUnavailable) as read:
            await asyncio.wait_for(history.aget_messages(), HANG)
        assert f"127.0.0.1:{blackhole}" in str(read.value) and "timed out" in str(read.value)
        with pytest.raises(BackendUnavailable) as write:
            await asyncio.wait_for(history.aadd_messages([HumanMessage("x")]), HANG)
        assert write.value.applied is False and "the write was not sent" in str(write.value)
        assert "secret-pw" not in str(read.value) + str(write.value)
    finally:
        await connector.aclose()


async def test_a_reply_that_never_comes_raises_within_the_operation_timeout(
    platform: Platform, server: str, memory_user: Binding
) -> None:
    kwargs = mysql_kwargs(memory_user, Timeouts(connect=1, operation=1))
    pool = AsyncMySQLPool(kwargs, f"mysql {memory_user.host}:{memory_user.port}")

    async def slow(cur: Any) -> None:
        await cur.execute("SELECT SLEEP(5)")

    try:
        with pytest.raises(BackendUnavailable) as err:
            await asyncio.wait_for(pool.run(slow), HANG)
        assert "timed out" in str(err.value) and f"{memory_user.host}:{memory_user.port}" in str(err.value)
    finally:
        await pool.aclose()


async def test_a_memory_follows_its_rotated_password_after_a_blip(
    platform: Platform, server: str, memory_user: Binding, tmp_path: Path
) -> None:
    mounted = MountedSecret(tmp_path / "binding")
    mounted.write(memory_user)
    root = admin(platform, server)
    memory = connect(path=mounted.root)
    try:
        history = memory.history("s")
        await history.aadd_messages([HumanMessage("before")])
        with root.cursor() as cur:
            cur.execute("ALTER USER %s@'%%' IDENTIFIED BY 'second-password'", (memory_user.username,))
        mounted.write(memory_user.model_copy(update={"password": "second-password"}))
        killed = connections_of(platform, server, memory_user.username)
        assert killed, "the memory's async pool keeps its connection open between calls"
        with root.cursor() as cur:
            for conn_id in killed:
                cur.execute(f"KILL {conn_id}")  # the blip: the app's connections are gone
        for _ in range(200):  # a KILL lands asynchronously: wait until the server closed them
            if not connections_of(platform, server, memory_user.username):
                break
            time.sleep(0.05)
        await history.aadd_messages([HumanMessage("after")])
        assert [m.content for m in await history.aget_messages()] == ["before", "after"]
    finally:
        await memory.aclose()
        root.close()


class SilentProxy:
    """A TCP proxy to ``upstream`` that can go silent: it then drops every byte both ways and closes
    nothing, as a server that vanished without FIN or RST (or a path that blackholes) looks."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.silent = threading.Event()
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            server = socket.create_connection(self.upstream)
            self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if not self.silent.is_set():
                    dst.sendall(data)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._listener.close()
        for s in self._sockets:
            s.close()


async def test_a_pooled_connection_whose_server_went_silent_raises_within_the_operation_timeout(
    platform: Platform, server: str, memory_user: Binding
) -> None:
    proxy = SilentProxy((memory_user.host, memory_user.port))
    binding = memory_user.model_copy(update={"host": "127.0.0.1", "port": proxy.port})
    # ping_after=0: every reuse pings, as one after 30 s idle does.
    pool = AsyncMySQLPool(
        mysql_kwargs(binding, Timeouts(connect=1, operation=1)), f"mysql 127.0.0.1:{proxy.port}", ping_after=0
    )

    async def select(cur: Any) -> Any:
        await cur.execute("SELECT 1")
        return await cur.fetchone()

    async def insert(cur: Any) -> None:
        await cur.execute("INSERT INTO messages (session_id, message) VALUES (%s, %s)", ("s", "{}"))

    try:
        assert await pool.run(select) == (1,)  # one pooled connection, idle from here on
        proxy.silent.set()
        with pytest.raises(BackendUnavailable) as err:
            await asyncio.wait_for(pool.run(insert, write=True), HANG)
        assert "timed out" in str(err.value) and "ping" in str(err.value)
        assert err.value.applied is False  # the ping failed: the INSERT was never sent
        with pytest.raises(BackendUnavailable):  # the silent connection is gone, not pooled again
            await asyncio.wait_for(pool.run(select), HANG)
    finally:
        pool.close()
        proxy.close()


async def test_a_memory_that_follows_its_secret_reads_it_in_a_thread_not_on_the_event_loop(
    memory_user: Binding,
) -> None:
    readers: list[threading.Thread] = []

    def load() -> Binding:  # stands for a blocking read (the Kubernetes API)
        readers.append(threading.current_thread())
        return memory_user

    source = BindingSource(load, memory_user, interval=0)  # every new connection reads the source
    connector = TiDBConnector(memory_user.with_source(source), timeout=1)
    readers.clear()  # building it is a sync call: only the async methods are under test
    try:
        history = connector.history("s")
        await history.aadd_messages([HumanMessage("hi")])
        assert [m.content for m in await history.aget_messages()] == ["hi"]
    finally:
        await connector.aclose()
    assert readers, "the new connection asked the source for the credentials"
    assert threading.current_thread() not in readers  # the event loop's thread
