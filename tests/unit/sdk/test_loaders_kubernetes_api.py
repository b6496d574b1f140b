"""The Kubernetes source of the loader against a stand-in ``kubernetes`` module (no sockets).

The real API server is exercised in tests/integration/sdk/test_loaders_kubernetes.py; this covers
the lookup order (``<name>-chatmemory``, then the ChatMemory's ``status.binding.name``), the
namespace defaults and API errors.
"""

from __future__ import annotations

import base64
import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import pytest
from chatmemory import BackendKind, BindingError, BindingNotFound
from chatmemory.contract import Binding
from chatmemory.loaders import load_binding

BINDING = Binding(backend=BackendKind.REDIS, provider="redis", host="r", port=1, key_prefix="cm:")


class ApiException(Exception):
    def __init__(self, status: int, reason: str = "") -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


class FakeApi:
    """Secrets and ChatMemories by (namespace, name); records reads."""

    secrets: ClassVar[dict[tuple[str, str], dict[str, str]]] = {}
    memories: ClassVar[dict[tuple[str, str], dict[str, Any]]] = {}
    reads: ClassVar[list[str]] = []
    error: ClassVar[ApiException | None] = None

    def __init__(self, api: Any = None) -> None:
        pass

    def read_namespaced_secret(self, name: str, namespace: str) -> Any:
        FakeApi.reads.append(f"secret {namespace}/{name}")
        if FakeApi.error:
            raise FakeApi.error
        data = FakeApi.secrets.get((namespace, name))
        if data is None:
            raise ApiException(404, "Not Found")
        return types.SimpleNamespace(data={k: base64.b64encode(v.encode()).decode() for k, v in data.items()})

    def get_namespaced_custom_object(self, group: str, version: str, ns: str, plural: str, name: str) -> Any:
        FakeApi.reads.append(f"{plural}.{group}/{version} {ns}/{name}")
        memory = FakeApi.memories.get((ns, name))
        if memory is None:
            raise ApiException(404, "Not Found")
        return memory


@pytest.fixture
def kube(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> type[FakeApi]:
    FakeApi.secrets, FakeApi.memories, FakeApi.reads, FakeApi.error = {}, {}, [], None
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\n")
    mod = types.ModuleType("kubernetes")
    client = types.SimpleNamespace(
        CoreV1Api=FakeApi,
        CustomObjectsApi=FakeApi,
        ApiClient=lambda configuration=None: types.SimpleNamespace(close=lambda: None),
        Configuration=lambda: None,
    )
    config = types.SimpleNamespace(
        ConfigException=type("ConfigException", (Exception,), {}),
        list_kube_config_contexts=lambda config_file: ([], {"context": {"namespace": "team-a"}}),
        new_client_from_config=lambda config_file: types.SimpleNamespace(close=lambda: None),
        load_incluster_config=lambda client_configuration=None: None,
    )
    mod.client = client  # type: ignore[attr-defined]
    mod.config = config  # type: ignore[attr-defined]
    exceptions = types.ModuleType("kubernetes.client.exceptions")
    exceptions.ApiException = ApiException  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "kubernetes", mod)
    monkeypatch.setitem(sys.modules, "kubernetes.client", types.ModuleType("kubernetes.client"))
    monkeypatch.setitem(sys.modules, "kubernetes.client.exceptions", exceptions)
    for var in ("SERVICE_BINDING_ROOT", "KUBERNETES_SERVICE_HOST", "CHATMEMORY_TYPE", "CHATMEMORY_BOT_TYPE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    return FakeApi


def test_secret_named_after_the_memory_in_the_kubeconfig_namespace(kube: type[FakeApi]) -> None:
    kube.secrets[("team-a", "bot-chatmemory")] = BINDING.to_secret_data()
    assert load_binding("bot") == (BINDING, "secret:team-a/bot-chatmemory")


def test_explicit_namespace_wins(kube: type[FakeApi]) -> None:
    kube.secrets[("other", "bot-chatmemory")] = BINDING.to_secret_data()
    assert load_binding("bot", namespace="other")[1] == "secret:other/bot-chatmemory"


def test_falls_back_to_the_secret_named_in_the_memorys_status(kube: type[FakeApi]) -> None:
    kube.memories[("team-a", "bot")] = {"status": {"binding": {"name": "custom-secret"}}}
    kube.secrets[("team-a", "custom-secret")] = BINDING.to_secret_data()
    assert load_binding("bot") == (BINDING, "secret:team-a/custom-secret")
    assert kube.reads == [
        "secret team-a/bot-chatmemory",
        "chatmemories.chatmemory.io/v1alpha1 team-a/bot",
        "secret team-a/custom-secret",
    ]


def test_memory_without_a_binding_yet_is_reported_as_not_ready(kube: type[FakeApi]) -> None:
    kube.memories[("team-a", "bot")] = {"status": {}}
    with pytest.raises(BindingNotFound, match=r"no status\.binding\.name yet"):
        load_binding("bot")


def test_api_refusal_is_a_binding_error_naming_the_secret(kube: type[FakeApi]) -> None:
    kube.error = ApiException(403, "Forbidden")
    with pytest.raises(BindingError, match="403 Forbidden") as err:
        load_binding("bot")
    assert err.value.source == "secret:team-a/bot-chatmemory"


def test_in_cluster_uses_the_pods_namespace(
    kube: type[FakeApi], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ns_file = tmp_path / "namespace"
    ns_file.write_text("pod-ns\n")
    monkeypatch.setattr("chatmemory.loaders.POD_NAMESPACE_FILE", ns_file)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    kube.secrets[("pod-ns", "bot-chatmemory")] = BINDING.to_secret_data()
    assert load_binding("bot")[1] == "secret:pod-ns/bot-chatmemory"


def test_without_a_name_the_api_is_not_asked(kube: type[FakeApi]) -> None:
    with pytest.raises(BindingNotFound, match="needs a binding name"):
        load_binding()
    assert kube.reads == []
