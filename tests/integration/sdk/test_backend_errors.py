"""Errors that name their cause, on the platform's real servers: a wrong password, a missing
``password`` key, a bad CA PEM, a CA that did not sign the server's certificate, and an unreachable
server (``BackendUnavailable``), on Redis 7 (ACL and TLS) and on TiDB and MariaDB."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import chatmemory
import pytest
from chatmemory import Binding, ChatMemory
from chatmemory.contract import BackendKind
from chatmemory.errors import BackendError, BackendUnavailable, BindingError
from chatmemory.sql import table_ddl
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import HumanMessage

from tests.integration.sdk.conftest import redis_binding, uid, without_key
from tests.support.platform import Platform

BAD_PEM = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"


def write_and_read(memory: ChatMemory) -> list[BackendError]:
    """The error of an add and of a read on one history (each must raise)."""
    history = memory.history(f"s-{uid()}")
    errors = []
    for call in (lambda: history.add_messages([HumanMessage("hi")]), lambda: history.messages):
        with pytest.raises(BackendError) as info:
            call()
        errors.append(info.value)
    return errors


def test_redis_wrong_password(platform: Platform) -> None:
    binding = redis_binding(platform, "REDIS_URL", f"cmtest:{uid()}:", password="wrong-password")
    with ChatMemory(binding) as memory:
        for error in write_and_read(memory):
            assert not isinstance(error, BackendUnavailable)
            assert "authentication failed (wrong user name or password)" in str(error)
            assert "wrong-password" not in str(error)


def test_redis_missing_password_key(platform: Platform, tmp_path: Path) -> None:
    binding = redis_binding(platform, "REDIS_URL", f"cmtest:{uid()}:")
    with chatmemory.connect(path=without_key(binding, "password", tmp_path)) as memory:
        for error in write_and_read(memory):
            assert "authentication failed" in str(error)
            assert "'password'" in str(error)


def test_redis_bad_ca_pem(platform: Platform) -> None:
    binding = redis_binding(platform, "REDIS_TLS_URL", f"cmtest:{uid()}:", ca_cert=BAD_PEM)
    with pytest.raises(BindingError) as info:
        ChatMemory(binding)
    assert info.value.key == "ca.crt"
    assert "not a PEM CA certificate" in str(info.value)


def test_redis_unreachable_names_host_and_port(platform: Platform) -> None:
    binding = redis_binding(platform, "REDIS_URL", f"cmtest:{uid()}:", port=1)
    with ChatMemory(binding, timeout=2) as memory:
        for error in write_and_read(memory):
            assert isinstance(error, BackendUnavailable)
            assert f"{binding.host}:1" in str(error)
            assert "refused" in str(error)


SQL_SERVERS = ["TIDB_URL", "MARIADB_URL"]


def sql_binding(platform: Platform, server: str, **changes: object) -> Binding:
    u = urlsplit(platform[server])
    fields: dict[str, object] = {
        "backend": BackendKind.TIDB,
        "provider": "tidb" if server == "TIDB_URL" else "mariadb",
        "host": u.hostname or "",
        "port": u.port or 4000,
        "username": u.username or "root",
        "password": u.password or "",
        "database": "mysql",
        "table": "cmtest_never_created",
    }
    fields.update(changes)
    return Binding.model_validate(fields)


@pytest.mark.parametrize("server", SQL_SERVERS)
def test_sql_wrong_password(platform: Platform, server: str) -> None:
    with ChatMemory(sql_binding(platform, server, password="wrong-password")) as memory:
        for error in write_and_read(memory):
            assert not isinstance(error, BackendUnavailable)
            assert "authentication failed" in str(error)
            assert "(1045)" in str(error)


def test_sql_missing_password_key(platform: Platform, tmp_path: Path) -> None:
    binding = sql_binding(platform, "MARIADB_URL")  # TiDB's root has no password to leave out
    with chatmemory.connect(path=without_key(binding, "password", tmp_path)) as memory:
        for error in write_and_read(memory):
            assert "no password was sent" in str(error)
            assert "'password'" in str(error)


@pytest.mark.parametrize("server", SQL_SERVERS)
def test_sql_bad_ca_pem(platform: Platform, server: str) -> None:
    with pytest.raises(BindingError) as info:
        ChatMemory(sql_binding(platform, server, tls=True, ca_cert=BAD_PEM))
    assert info.value.key == "ca.crt"


@pytest.mark.parametrize("server", SQL_SERVERS)
def test_sql_unreachable_names_host_and_port(platform: Platform, server: str) -> None:
    binding = sql_binding(platform, server, port=1)
    with ChatMemory(binding, timeout=2) as memory:
        for error in write_and_read(memory):
            assert isinstance(error, BackendUnavailable)
            assert f"{binding.host}:1" in str(error)


def other_ca() -> str:
    """A valid CA certificate that did not sign the platform's (the first of the system bundle)."""
    bundle = Path("/etc/ssl/certs/ca-certificates.crt").read_text()
    end = "-----END CERTIFICATE-----"
    return bundle[bundle.index("-----BEGIN CERTIFICATE-----") : bundle.index(end) + len(end)] + "\n"


def test_redis_a_ca_that_did_not_sign_the_server(platform: Platform) -> None:
    binding = redis_binding(platform, "REDIS_TLS_URL", f"cmtest:{uid()}:", ca_cert=other_ca())
    with ChatMemory(binding) as memory:
        for error in write_and_read(memory):
            assert not isinstance(error, BackendUnavailable)
            assert "TLS handshake failed" in str(error)
            assert "certificate verify failed" in str(error)


# -- a server that is down for a moment ------------------------------------------------------------


class LateProxy:
    """A TCP proxy to ``upstream`` on a port that refuses connections for ``down`` seconds (a server
    restarting), then forwards every connection."""

    def __init__(self, upstream: tuple[str, int], down: float) -> None:
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port: int = probe.getsockname()[1]
        probe.close()
        self.upstream = upstream
        self.accepted = 0
        self.sockets: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(down,), daemon=True)
        self._thread.start()

    def _run(self, down: float) -> None:
        time.sleep(down)
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            server = socket.create_connection(self.upstream)
            self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()
        listener.close()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for s in self.sockets:
            s.close()


def stored_once_through_the_outage(memory: ChatMemory) -> BaseChatMessageHistory:
    """A turn written while the proxy refuses connections: retried, and stored exactly once."""
    history = memory.history(f"s-{uid()}")
    start = time.monotonic()
    history.add_messages([HumanMessage("during the outage")])  # refused, retried, sent once
    assert time.monotonic() - start >= 0.9
    assert [m.text for m in history.messages] == ["during the outage"]
    return history


def test_a_redis_turn_during_a_short_outage_is_stored_once(platform: Platform) -> None:
    real = redis_binding(platform, "REDIS_URL", f"cmtest:{uid()}:")
    proxy = LateProxy((real.host, real.port), down=1.0)
    try:
        binding = real.model_copy(update={"host": "127.0.0.1", "port": proxy.port})
        with ChatMemory(binding, timeout=5) as memory:
            stored_once_through_the_outage(memory).clear()
    finally:
        proxy.close()


@pytest.mark.parametrize("server", SQL_SERVERS)
def test_a_sql_turn_during_a_short_outage_is_stored_once(platform: Platform, server: str) -> None:
    database = f"cmtest_{uid()}"
    admin = sql_binding(platform, server)
    with ChatMemory(admin) as setup, setup.connector._pool.cursor() as cur:  # type: ignore[attr-defined]
        cur.execute(f"CREATE DATABASE `{database}`")
        cur.execute(table_ddl(database, "messages", tidb=False, ttl_seconds=0))
    proxy = LateProxy((admin.host, admin.port), down=1.0)
    try:
        binding = admin.model_copy(
            update={"host": "127.0.0.1", "port": proxy.port, "database": database, "table": "messages"}
        )
        with ChatMemory(binding, timeout=5) as memory:
            stored_once_through_the_outage(memory)
    finally:
        proxy.close()
        with ChatMemory(admin) as setup, setup.connector._pool.cursor() as cur:  # type: ignore[attr-defined]
            cur.execute(f"DROP DATABASE IF EXISTS `{database}`")
