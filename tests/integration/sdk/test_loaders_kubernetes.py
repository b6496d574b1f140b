"""Loading a binding from the real Kubernetes API: a Secret in a fresh namespace, good and bad."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import chatmemory
import pytest
from chatmemory import BindingError, BindingNotFound
from chatmemory.loaders import load_binding
from kubernetes import client, config
from langchain_core.messages import HumanMessage

from tests.integration.sdk.conftest import delete_prefix, redis_binding, uid
from tests.support.platform import Platform


@pytest.fixture(scope="module")
def api(platform: Platform) -> Iterator[client.ApiClient]:
    c = config.new_client_from_config(config_file=platform["KUBECONFIG"])
    yield c
    c.close()


@pytest.fixture
def namespace(api: client.ApiClient) -> Iterator[str]:
    name = f"cmtest-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


@pytest.fixture(autouse=True)
def only_the_api(monkeypatch: pytest.MonkeyPatch, platform: Platform, tmp_path: Path) -> None:
    """No directory or environment binding: the API is the only source."""
    import os

    for var in list(os.environ):
        if var.startswith("CHATMEMORY_") and var != "CHATMEMORY_PLATFORM_ENV":
            monkeypatch.delenv(var)
    monkeypatch.delenv("SERVICE_BINDING_ROOT", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", platform["KUBECONFIG"])


def create_secret(api: client.ApiClient, namespace: str, name: str, data: dict[str, str]) -> None:
    client.CoreV1Api(api).create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name=name), type="servicebinding.io/redis", string_data=data
        ),
    )


def test_connect_reads_the_secret_from_the_api_and_the_history_works(
    api: client.ApiClient, namespace: str, platform: Platform
) -> None:
    prefix = f"cmtest:{uid()}:"
    binding = redis_binding(platform, "REDIS_URL", prefix, ttl_seconds=90)
    create_secret(api, namespace, "support-bot-chatmemory", binding.to_secret_data())
    loaded, source = load_binding("support-bot", namespace=namespace)
    assert loaded == binding
    assert source == f"secret:{namespace}/support-bot-chatmemory"
    with chatmemory.connect("support-bot", namespace=namespace) as memory:
        try:
            history = memory.history("user-42")
            history.add_messages([HumanMessage("from a pod")])
            assert [m.text for m in history.messages] == ["from a pod"]
        finally:
            delete_prefix(memory.connector.client, prefix)  # type: ignore[attr-defined]


def test_unknown_contract_version_in_the_api_secret_names_key_and_source(
    api: client.ApiClient, namespace: str, platform: Platform
) -> None:
    data = redis_binding(platform, "REDIS_URL", "cmtest:x:").to_secret_data()
    data["contract_version"] = "7"
    create_secret(api, namespace, "future-chatmemory", data)
    with pytest.raises(BindingError) as err:
        chatmemory.connect("future", namespace=namespace)
    assert err.value.key == "contract_version"
    assert err.value.source == f"secret:{namespace}/future-chatmemory"
    assert "'7'" in str(err.value)


def test_missing_key_in_the_api_secret_names_key_and_source(
    api: client.ApiClient, namespace: str, platform: Platform
) -> None:
    data = redis_binding(platform, "REDIS_URL", "cmtest:x:").to_secret_data()
    del data["port"]
    create_secret(api, namespace, "holey-chatmemory", data)
    with pytest.raises(BindingError) as err:
        load_binding("holey", namespace=namespace)
    assert (err.value.key, err.value.source) == ("port", f"secret:{namespace}/holey-chatmemory")


def test_absent_secret_lists_every_source_searched(namespace: str) -> None:
    with pytest.raises(BindingNotFound) as err:
        load_binding("nobody", namespace=namespace)
    text = str(err.value)
    assert f"secret:{namespace}/nobody-chatmemory (not found)" in text
    assert "env:CHATMEMORY_NOBODY_" in text
