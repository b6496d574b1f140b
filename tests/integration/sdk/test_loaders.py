"""``chatmemory.connect`` end to end on the real Redis: a mounted directory and environment variables.

Also: a bad binding writes nothing on the server, and the error names the key and the source.
"""

from __future__ import annotations

import os
from pathlib import Path

import chatmemory
import pytest
import redis
from chatmemory import BindingError
from chatmemory.loaders import env_name
from langchain_core.messages import AIMessage, HumanMessage
from redis.cluster import RedisCluster

from tests.integration.sdk.conftest import redis_binding, uid
from tests.support.platform import Platform

pytestmark = pytest.mark.parametrize("target", ["REDIS_URL", "REDIS_TLS_URL"], indirect=True)


@pytest.fixture(autouse=True)
def no_other_bindings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in list(os.environ):
        if var.startswith("CHATMEMORY_") and var != "CHATMEMORY_PLATFORM_ENV":
            monkeypatch.delenv(var)
    monkeypatch.delenv("SERVICE_BINDING_ROOT", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))


def keys_under(admin: redis.Redis | RedisCluster, prefix: str) -> list[bytes]:
    return list(admin.scan_iter(match=prefix + "*"))


def test_connect_from_a_mounted_secret_directory(
    platform: Platform,
    target: str,
    prefix: str,
    admin: redis.Redis | RedisCluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path / "bindings"
    (root / "support-bot").mkdir(parents=True)
    for key, value in redis_binding(platform, target, prefix, ttl_seconds=300).to_secret_data().items():
        (root / "support-bot" / key).write_text(value)
    monkeypatch.setenv("SERVICE_BINDING_ROOT", str(root))
    with chatmemory.connect("support-bot") as memory:
        assert memory.source == f"dir:{root / 'support-bot'}"
        history = memory.history("user-42")
        history.add_messages([HumanMessage("hi"), AIMessage("hello")])
        assert [m.text for m in history.messages] == ["hi", "hello"]
    assert 0 < admin.ttl(f"{prefix}{{user-42}}") <= 300


def test_connect_from_environment_variables(
    platform: Platform,
    target: str,
    prefix: str,
    admin: redis.Redis | RedisCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in redis_binding(platform, target, prefix).to_secret_data().items():
        monkeypatch.setenv(env_name(key), value)
    with chatmemory.connect() as memory:
        assert memory.source == "env:CHATMEMORY_"
        memory.history("s").add_messages([HumanMessage("from env")])
        assert [m.text for m in memory.history("s").messages] == ["from env"]
    assert keys_under(admin, prefix) == [f"{prefix}{{s}}".encode()]


@pytest.mark.parametrize(
    ("change", "key"),
    [({"port": None}, "port"), ({"port": "six"}, "port"), ({"contract_version": "2"}, "contract_version")],
    ids=["missing-key", "wrong-type", "unknown-contract-version"],
)
def test_bad_binding_names_key_and_source_and_writes_nothing(
    platform: Platform,
    target: str,
    prefix: str,
    admin: redis.Redis | RedisCluster,
    tmp_path: Path,
    change: dict[str, str | None],
    key: str,
) -> None:
    data = redis_binding(platform, target, prefix).to_secret_data()
    for k, v in change.items():
        if v is None:
            data.pop(k)
        else:
            data[k] = v
    mount = tmp_path / "mnt"
    mount.mkdir()
    for k, v in data.items():
        (mount / k).write_text(v)
    files_before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(BindingError) as err:
        chatmemory.connect(path=mount)
    assert (err.value.key, err.value.source) == (key, f"dir:{mount}")
    assert key in str(err.value) and str(mount) in str(err.value)
    assert keys_under(admin, prefix) == []  # nothing on the server
    assert sorted(p.name for p in tmp_path.rglob("*")) == files_before  # nothing on disk


def test_connect_url_with_tls_and_options(
    platform: Platform, target: str, prefix: str, admin: redis.Redis | RedisCluster
) -> None:
    options: dict[str, object] = {"key_prefix": prefix, "ttl": 77, "max_messages": 3}
    if target == "REDIS_TLS_URL":
        options["ca_file"] = platform["REDIS_TLS_CA_FILE"]
    with chatmemory.connect_url(platform[target], **options) as memory:
        assert memory.binding.tls is (target == "REDIS_TLS_URL")
        session = f"url-{uid()}"
        history = memory.history(session)
        history.add_messages([HumanMessage(str(i)) for i in range(5)])
        assert [m.text for m in history.messages] == ["2", "3", "4"]
        assert 0 < admin.ttl(f"{prefix}{{{session}}}") <= 77
