"""The real kubectl finds each kind by its singular, plural and short name, and both by the category.

Issue 12: both CRDs carried the category ``chatmemory``, which is also ChatMemory's singular name.
kubectl expands a category before it resolves a resource name, so ``kubectl get chatmemory NAME``
became a get of both kinds and failed with "error: you must specify only one resource"; the same
for ``describe`` and ``delete``. Here every name of each kind runs ``get``, ``describe`` and
``delete`` on one object, and ``kubectl get chatmemory-all`` lists both kinds.

No operator is needed (nor started): the objects live in a namespace no operator watches, so they
carry no finalizer and ``delete`` returns at once. kubectl gets a fresh discovery cache directory,
so what it reads is what the API server serves now (kubectl caches discovery for hours).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.operator import install_crds
from tests.support.platform import Platform

GROUP = "chatmemory.io"
CATEGORY = "chatmemory-all"
MEMORY_NAMES = ("chatmemory", "chatmemories", "chatmem")
STORE_NAMES = ("chatmemorystore", "chatmemorystores", "chatmemstore")


def uid() -> str:
    return uuid.uuid4().hex[:8]


class Kubectl:
    """The platform's kubectl with its kubeconfig and a discovery cache of its own."""

    def __init__(self, platform: Platform, cache_dir: Path) -> None:
        self.argv = [
            platform["KUBECTL"],
            "--kubeconfig",
            platform["KUBECONFIG"],
            f"--cache-dir={cache_dir}",
        ]

    def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.argv, *args], input=stdin, capture_output=True, text=True, timeout=120, check=False
        )

    def ok(self, *args: str, stdin: str | None = None) -> str:
        out = self.run(*args, stdin=stdin)
        assert out.returncode == 0, f"kubectl {' '.join(args)} failed ({out.returncode}):\n{out.stderr}"
        return out.stdout


@pytest.fixture(scope="module")
def kubectl(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Kubectl:
    install_crds(platform)
    return Kubectl(platform, tmp_path_factory.mktemp("kube-cache"))


@pytest.fixture(scope="module")
def namespace(kubectl: Kubectl) -> Iterator[str]:
    name = f"cm-kubectl-{uid()}"  # not cm-e2e-*: the e2e operator leaves it alone
    kubectl.ok("create", "namespace", name)
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false")


def memory_manifest(name: str, namespace: str) -> str:
    return json.dumps(
        {
            "apiVersion": f"{GROUP}/v1alpha1",
            "kind": "ChatMemory",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"ttl": "1h", "storeRef": {"name": f"no-such-store-{uid()}"}},
        }
    )


def store_manifest(name: str) -> str:
    # a server nobody listens on: an operator that happens to watch stores only marks it not Ready
    return json.dumps(
        {
            "apiVersion": f"{GROUP}/v1alpha1",
            "kind": "ChatMemoryStore",
            "metadata": {"name": name},
            "spec": {"redis": {"host": "127.0.0.1", "port": 1}},
        }
    )


@pytest.mark.parametrize("resource", MEMORY_NAMES)
def test_get_describe_and_delete_a_chatmemory_by_each_of_its_names(
    kubectl: Kubectl, namespace: str, resource: str
) -> None:
    name = f"names-{resource}-{uid()}"
    kubectl.ok("apply", "-f", "-", stdin=memory_manifest(name, namespace))
    try:
        got = kubectl.ok("get", resource, name, "-n", namespace, "-o", "name")
        assert got.strip() == f"chatmemory.{GROUP}/{name}"
        table = kubectl.ok("get", resource, name, "-n", namespace)
        assert table.split()[:5] == ["NAME", "STORE", "BACKEND", "TTL", "READY"]
        described = kubectl.ok("describe", resource, name, "-n", namespace)
        assert f"Name:         {name}" in described
        assert "Kind:         ChatMemory\n" in described
        deleted = kubectl.ok("delete", resource, name, "-n", namespace, "--timeout=60s")
        assert deleted.startswith(f'chatmemory.{GROUP} "{name}" deleted'), deleted  # newer: "... from <ns>"
        gone = kubectl.run("get", resource, name, "-n", namespace)
        assert gone.returncode != 0 and "NotFound" in gone.stderr, gone.stderr
    finally:
        kubectl.run("delete", f"chatmemories.{GROUP}", name, "-n", namespace, "--ignore-not-found")


@pytest.mark.parametrize("resource", STORE_NAMES)
def test_get_describe_and_delete_a_chatmemorystore_by_each_of_its_names(
    kubectl: Kubectl, resource: str
) -> None:
    name = f"names-{resource}-{uid()}"
    kubectl.ok("apply", "-f", "-", stdin=store_manifest(name))
    try:
        got = kubectl.ok("get", resource, name, "-o", "name")
        assert got.strip() == f"chatmemorystore.{GROUP}/{name}"
        table = kubectl.ok("get", resource, name)
        assert table.split()[:4] == ["NAME", "BACKEND", "VERSION", "READY"]
        described = kubectl.ok("describe", resource, name)
        assert f"Name:         {name}" in described
        assert "Kind:         ChatMemoryStore\n" in described
        deleted = kubectl.ok("delete", resource, name, "--timeout=60s")
        assert deleted.startswith(f'chatmemorystore.{GROUP} "{name}" deleted'), (
            deleted
        )  # newer: "... from <ns>"
        gone = kubectl.run("get", resource, name)
        assert gone.returncode != 0 and "NotFound" in gone.stderr, gone.stderr
    finally:
        kubectl.run("delete", f"chatmemorystores.{GROUP}", name, "--ignore-not-found")


def test_the_category_lists_both_kinds(kubectl: Kubectl, namespace: str) -> None:
    memory, store = f"category-{uid()}", f"category-{uid()}"
    kubectl.ok("apply", "-f", "-", stdin=memory_manifest(memory, namespace))
    kubectl.ok("apply", "-f", "-", stdin=store_manifest(store))
    try:
        listed = kubectl.ok("get", CATEGORY, "-n", namespace, "-o", "name").split()
        assert f"chatmemory.{GROUP}/{memory}" in listed
        assert f"chatmemorystore.{GROUP}/{store}" in listed
        # and nothing else answers to the category
        assert {entry.split("/")[0] for entry in listed} == {
            f"chatmemory.{GROUP}",
            f"chatmemorystore.{GROUP}",
        }
    finally:
        kubectl.run("delete", f"chatmemories.{GROUP}", memory, "-n", namespace, "--ignore-not-found")
        kubectl.run("delete", f"chatmemorystores.{GROUP}", store, "--ignore-not-found")


@pytest.mark.parametrize("resource", ["chatmemory", "chatmemorystore"])
def test_kubectl_explain_answers_for_the_singular_name(kubectl: Kubectl, resource: str) -> None:
    """The README: ``kubectl explain chatmemory.spec`` gives every field from the schema."""
    out = kubectl.ok("explain", f"{resource}.spec")
    assert f"GROUP:      {GROUP}" in out
    assert "FIELDS:" in out
