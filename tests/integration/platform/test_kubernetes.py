"""Proof that the local Kubernetes control plane is real: API server, CEL admission, garbage collection."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.support.platform import Platform

GROUP = "platformcheck.chatmemory.io"
CRD_NAME = f"gadgets.{GROUP}"


@pytest.fixture(scope="module")
def api(platform: Platform) -> client.ApiClient:
    return config.new_client_from_config(config_file=platform["KUBECONFIG"])


@pytest.fixture(scope="module")
def namespace(api: client.ApiClient) -> Iterator[str]:
    name = f"platform-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    client.CoreV1Api(api).delete_namespace(name)


def kubectl(platform: Platform, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [platform["KUBECTL"], "--kubeconfig", platform["KUBECONFIG"], *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_api_server_reports_version_1_37_2(api: client.ApiClient) -> None:
    info = client.VersionApi(api).get_code()
    assert info.git_version == "v1.37.2"
    assert (info.major, info.minor) == ("1", "37")


def test_kubectl_talks_to_the_api_server(platform: Platform) -> None:
    out = kubectl(platform, "version", "-o", "yaml")
    assert out.returncode == 0, out.stderr
    assert yaml.safe_load(out.stdout)["serverVersion"]["gitVersion"] == "v1.37.2"


CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": CRD_NAME},
    "spec": {
        "group": GROUP,
        "scope": "Namespaced",
        "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "properties": {"size": {"type": "integer"}},
                                "x-kubernetes-validations": [
                                    {"rule": "self.size >= 1", "message": "size must be at least 1"},
                                    {
                                        "rule": "!has(oldSelf.size) || self.size >= oldSelf.size",
                                        "message": "size may not be decreased",
                                    },
                                ],
                            }
                        },
                    }
                },
            }
        ],
    },
}


@pytest.fixture(scope="module")
def gadget_crd(api: client.ApiClient) -> Iterator[None]:
    ext = client.ApiextensionsV1Api(api)
    try:
        ext.create_custom_resource_definition(CRD)
    except ApiException as e:
        if e.status != 409:
            raise
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        crd = ext.read_custom_resource_definition(CRD_NAME)
        if any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or []):
            break
        time.sleep(0.2)
    else:
        pytest.fail("the CRD never became Established")
    yield
    ext.delete_custom_resource_definition(CRD_NAME)


def gadget(name: str, size: int) -> str:
    return yaml.safe_dump(
        {"apiVersion": f"{GROUP}/v1", "kind": "Gadget", "metadata": {"name": name}, "spec": {"size": size}}
    )


@pytest.mark.usefixtures("gadget_crd")
def test_custom_resource_applied_with_kubectl_is_read_by_the_python_client(
    platform: Platform, api: client.ApiClient, namespace: str
) -> None:
    out = kubectl(platform, "apply", "-n", namespace, "-f", "-", stdin=gadget("g1", 3))
    assert out.returncode == 0, out.stderr
    obj = client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, "v1", namespace, "gadgets", "g1")
    assert obj["spec"]["size"] == 3


@pytest.mark.usefixtures("gadget_crd")
def test_cel_rules_reject_invalid_objects_naming_the_field(platform: Platform, namespace: str) -> None:
    out = kubectl(platform, "apply", "-n", namespace, "-f", "-", stdin=gadget("g2", 0))
    assert out.returncode != 0
    assert "spec: Invalid value" in out.stderr and "size must be at least 1" in out.stderr
    assert kubectl(platform, "apply", "-n", namespace, "-f", "-", stdin=gadget("g3", 5)).returncode == 0
    out = kubectl(platform, "apply", "-n", namespace, "-f", "-", stdin=gadget("g3", 4))
    assert out.returncode != 0
    assert "size may not be decreased" in out.stderr


def test_controller_manager_garbage_collects_orphans(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"), data={"a": "b"})
    )
    ref = client.V1OwnerReference(api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)
    core.create_namespaced_secret(
        namespace,
        client.V1Secret(
            metadata=client.V1ObjectMeta(name="owned", owner_references=[ref]), string_data={"k": "v"}
        ),
    )
    core.delete_namespaced_config_map("owner", namespace)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            core.read_namespaced_secret("owned", namespace)
        except ApiException as e:
            assert e.status == 404
            return
        time.sleep(0.2)
    pytest.fail("the owned Secret was not garbage-collected within 60 s")
