"""Finding a binding without Kubernetes: mounted directories, environment variables, and bad bindings."""

from __future__ import annotations

from pathlib import Path

import pytest
from chatmemory import BackendKind, BindingError, BindingNotFound
from chatmemory.contract import Binding
from chatmemory.loaders import env_name, env_prefix, load_binding

REDIS = Binding(
    backend=BackendKind.REDIS,
    provider="redis",
    host="redis.example",
    port=6380,
    username="mem",
    password="s3cret\n",
    key_prefix="cm:ns:bot:",
    ttl_seconds=60,
    max_messages=100,
    tls=True,
    ca_cert="-----BEGIN CERTIFICATE-----\nabc\n-----END CERTIFICATE-----\n",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for var in list(os.environ):
        if var.startswith("CHATMEMORY_") and var != "CHATMEMORY_PLATFORM_ENV":
            monkeypatch.delenv(var)
    monkeypatch.delenv("SERVICE_BINDING_ROOT", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.setenv("HOME", str(tmp_path))


def write_dir(directory: Path, data: dict[str, str]) -> Path:
    directory.mkdir(parents=True)
    for key, value in data.items():
        (directory / key).write_text(value)
    return directory


def set_env(monkeypatch: pytest.MonkeyPatch, data: dict[str, str], prefix: str = "CHATMEMORY_") -> None:
    for key, value in data.items():
        monkeypatch.setenv(env_name(key, prefix), value)


def test_mounted_directory_from_service_binding_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_dir(tmp_path / "bindings" / "support-bot", REDIS.to_secret_data())
    monkeypatch.setenv("SERVICE_BINDING_ROOT", str(tmp_path / "bindings"))
    binding, source = load_binding("support-bot")
    assert binding == REDIS
    assert source == f"dir:{tmp_path / 'bindings' / 'support-bot'}"


def test_single_binding_under_the_root_is_used_without_a_name(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write_dir(tmp_path / "b" / "only", REDIS.to_secret_data())
    monkeypatch.setenv("SERVICE_BINDING_ROOT", str(tmp_path / "b"))
    assert load_binding()[0] == REDIS


def test_several_bindings_without_a_name_is_an_error_listing_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write_dir(tmp_path / "b" / "one", REDIS.to_secret_data())
    write_dir(tmp_path / "b" / "two", REDIS.to_secret_data())
    monkeypatch.setenv("SERVICE_BINDING_ROOT", str(tmp_path / "b"))
    with pytest.raises(BindingError, match="one, two"):
        load_binding()


def test_explicit_path_wins_and_kubernetes_symlink_dirs_are_ignored(tmp_path: Path) -> None:
    d = write_dir(tmp_path / "mnt", REDIS.to_secret_data())
    (d / "..data").mkdir()
    (d / "..2026_11_29").mkdir()
    assert load_binding(path=d) == (REDIS, f"dir:{d}")


def test_explicit_missing_path_is_not_found_and_does_not_fall_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    set_env(monkeypatch, REDIS.to_secret_data())
    with pytest.raises(BindingNotFound, match="no binding directory"):
        load_binding(path=tmp_path / "absent")


def test_environment_variables_with_the_documented_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, REDIS.to_secret_data())
    assert "CHATMEMORY_CA_CRT" in __import__("os").environ
    binding, source = load_binding()
    assert binding == REDIS
    assert source == "env:CHATMEMORY_"


def test_named_environment_prefix_is_tried_first(monkeypatch: pytest.MonkeyPatch) -> None:
    set_env(monkeypatch, REDIS.to_secret_data())
    named = REDIS.model_copy(update={"key_prefix": "cm:ns:other:"})
    set_env(monkeypatch, named.to_secret_data(), env_prefix("support-bot"))
    assert env_prefix("support-bot") == "CHATMEMORY_SUPPORT_BOT_"
    assert load_binding("support-bot") == (named, "env:CHATMEMORY_SUPPORT_BOT_")
    assert load_binding("another")[0] == REDIS


def test_directory_wins_over_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    write_dir(tmp_path / "b" / "bot", REDIS.to_secret_data())
    monkeypatch.setenv("SERVICE_BINDING_ROOT", str(tmp_path / "b"))
    set_env(monkeypatch, REDIS.model_copy(update={"host": "elsewhere"}).to_secret_data())
    assert load_binding("bot")[0].host == "redis.example"


def test_nothing_found_lists_every_place_searched(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SERVICE_BINDING_ROOT", str(tmp_path))
    with pytest.raises(BindingNotFound) as err:
        load_binding("bot")
    text = str(err.value)
    assert f"dir:{tmp_path / 'bot'}" in text
    assert "env:CHATMEMORY_BOT_" in text and "env:CHATMEMORY_*" in text
    assert "kubernetes API" in text


def bad(data: dict[str, str], **changes: str | None) -> dict[str, str]:
    out = dict(data)
    for k, v in changes.items():
        key = k.replace("__", ".")
        if v is None:
            out.pop(key)
        else:
            out[key] = v
    return out


CASES = [
    ("missing key", bad(REDIS.to_secret_data(), host=None), "host", "missing key 'host'"),
    ("missing type", bad(REDIS.to_secret_data(), type=None), "type", "missing key 'type'"),
    ("wrong type", bad(REDIS.to_secret_data(), port="six"), "port", "key 'port'"),
    ("wrong bool", bad(REDIS.to_secret_data(), tls="maybe"), "tls", "key 'tls'"),
    ("unknown backend", bad(REDIS.to_secret_data(), type="mongodb"), "type", "'mongodb'"),
    ("unknown version", bad(REDIS.to_secret_data(), contract_version="99"), "contract_version", "'99'"),
    (
        "missing version",
        bad(REDIS.to_secret_data(), contract_version=None),
        "contract_version",
        "missing key",
    ),
]


@pytest.mark.parametrize(("case", "data", "key", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_binding_in_a_directory_names_the_key_and_the_source(
    tmp_path: Path, case: str, data: dict[str, str], key: str, message: str
) -> None:
    d = write_dir(tmp_path / "mnt", data)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(BindingError) as err:
        load_binding(path=d)
    assert err.value.key == key
    assert err.value.source == f"dir:{d}"
    assert message in str(err.value) and f"dir:{d}" in str(err.value)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written


ENV_CASES = [c for c in CASES if "type" in c[1]]  # without CHATMEMORY_TYPE there is no env binding


@pytest.mark.parametrize(("case", "data", "key", "message"), ENV_CASES, ids=[c[0] for c in ENV_CASES])
def test_bad_binding_in_the_environment_names_the_key_and_the_source(
    monkeypatch: pytest.MonkeyPatch, case: str, data: dict[str, str], key: str, message: str
) -> None:
    set_env(monkeypatch, data)
    with pytest.raises(BindingError) as err:
        load_binding()
    assert (err.value.key, err.value.source) == (key, "env:CHATMEMORY_")
    assert message in str(err.value)


def test_bad_binding_does_not_fall_through_to_the_next_source(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write_dir(tmp_path / "b" / "bot", bad(REDIS.to_secret_data(), port="x"))
    monkeypatch.setenv("SERVICE_BINDING_ROOT", str(tmp_path / "b"))
    set_env(monkeypatch, REDIS.to_secret_data())
    with pytest.raises(BindingError, match="port"):
        load_binding("bot")


def test_password_never_appears_in_errors(tmp_path: Path) -> None:
    d = write_dir(tmp_path / "mnt", bad(REDIS.to_secret_data(), port="x"))
    with pytest.raises(BindingError) as err:
        load_binding(path=d)
    assert "s3cret" not in str(err.value)
