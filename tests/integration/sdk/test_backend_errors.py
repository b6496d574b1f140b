"""Errors that name their cause, on the platform's real servers: a wrong password, a missing
``password`` key, a bad CA PEM, a CA that did not sign the server's certificate, and an unreachable
server (``BackendUnavailable``), on Redis 7 (ACL and TLS) and on TiDB and MariaDB."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import chatmemory
import pytest
from chatmemory import Binding, ChatMemory
from chatmemory.contract import BackendKind
from chatmemory.errors import BackendError, BackendUnavailable, BindingError
from langchain_core.messages import HumanMessage

from tests.integration.sdk.conftest import redis_binding, uid
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
    for key, value in binding.to_secret_data().items():
        if key != "password":
            (tmp_path / key).write_text(value)
    with chatmemory.connect(path=tmp_path) as memory:
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
    for key, value in binding.to_secret_data().items():
        if key != "password":
            (tmp_path / key).write_text(value)
    with chatmemory.connect(path=tmp_path) as memory:
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
