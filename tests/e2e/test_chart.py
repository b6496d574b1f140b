"""The Helm chart against the real API server: lint, render, install, upgrade, uninstall, RBAC.

Uses the platform's ``HELM`` (v4) and ``KUBECTL`` with its ``KUBECONFIG``. The API server is
shared with other tests that apply the CRDs with kubectl, so releases here install with
``crds.install=false`` on top of the CRDs from ``crds/``, and a render test checks the chart's CRD
templates carry exactly the ``crds/`` content. Every release and namespace has a unique name and is
removed at the end. The API server has no kubelet: Deployments exist but never run pods, so the
checks look at objects and permissions, not at pods.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from tests.support.platform import Platform

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "chatmemory-operator"
CRDS = ROOT / "crds"
MANIFESTS = ROOT / "examples" / "manifests"
GROUP = "chatmemory.io"


def run(
    argv: list[str], *, env: dict[str, str] | None = None, stdin: str | None = None, timeout: int = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=timeout, check=False, env=env
    )


class Tools:
    """helm and kubectl bound to the platform's kubeconfig, with helm's state in a temp dir."""

    def __init__(self, platform: Platform, home: Path) -> None:
        self.platform = platform
        self.env = {
            **os.environ,
            "KUBECONFIG": platform["KUBECONFIG"],
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def helm(self, *args: str, timeout: int = 120) -> subprocess.CompletedProcess[str]:
        return run([self.platform["HELM"], *args], env=self.env, timeout=timeout)

    def helm_ok(self, *args: str) -> str:
        out = self.helm(*args)
        assert out.returncode == 0, f"helm {' '.join(args)} failed:\n{out.stderr}\n{out.stdout}"
        return out.stdout

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return run([self.platform["KUBECTL"], *args], env=self.env, stdin=stdin)

    def kubectl_ok(self, *args: str, stdin: str | None = None) -> str:
        out = self.kubectl(*args, stdin=stdin)
        assert out.returncode == 0, f"kubectl {' '.join(args)} failed:\n{out.stderr}"
        return out.stdout

    def exists(self, kind: str, name: str, namespace: str | None = None) -> bool:
        args = ["get", kind, name, "-o", "name"] + (["-n", namespace] if namespace else [])
        out = self.kubectl(*args)
        if out.returncode != 0 and "NotFound" not in out.stderr and "not found" not in out.stderr:
            raise AssertionError(out.stderr)
        return out.returncode == 0

    def gone(self, kind: str, name: str, namespace: str | None = None, timeout: float = 30) -> bool:
        deadline = time.monotonic() + timeout
        while self.exists(kind, name, namespace):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return True

    def can_i(self, sa: str, verb: str, resource: str, namespace: str | None = None) -> bool:
        """``kubectl auth can-i`` as ``sa``; ``resource`` may end in ``/status`` (a subresource)."""
        resource, _, sub = resource.partition("/")
        args = ["auth", "can-i", verb, resource, f"--as={sa}"] + ([f"--subresource={sub}"] if sub else [])
        args += ["-n", namespace] if namespace else ["--all-namespaces"]
        out = self.kubectl(*args)
        assert out.stdout.strip() in {"yes", "no"}, out.stderr
        return out.stdout.strip() == "yes"


@pytest.fixture(scope="module")
def tools(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Tools:
    return Tools(platform, tmp_path_factory.mktemp("helm-home"))


def uid() -> str:
    return uuid.uuid4().hex[:8]


def render(tools: Tools, *args: str, namespace: str = "cm-render") -> list[dict[str, Any]]:
    out = tools.helm_ok("template", "rel", str(CHART), "--namespace", namespace, *args)
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


@pytest.fixture(scope="module")
def crds_installed(tools: Tools) -> None:
    """The CRDs from crds/, applied as the other e2e tests do (never deleted: shared)."""
    assert sorted(CRDS.glob("*.yaml")), "crds/ is empty: run `make crds`"
    tools.kubectl_ok("apply", "-f", str(CRDS))
    for path in sorted(CRDS.glob("*.yaml")):
        name = yaml.safe_load(path.read_text())["metadata"]["name"]
        tools.kubectl_ok("wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")


@pytest.fixture
def namespace(tools: Tools) -> Iterator[str]:
    name = f"cm-chart-{uid()}"
    tools.kubectl_ok("create", "namespace", name)
    yield name
    tools.kubectl("delete", "namespace", name, "--wait=false")


# -- lint and render ---------------------------------------------------------------------------------


@pytest.mark.parametrize("strict", [False, True], ids=["lint", "lint-strict"])
def test_chart_passes_helm_lint(tools: Tools, strict: bool) -> None:
    args = ["lint", str(CHART)] + (["--strict"] if strict else [])
    out = tools.helm(*args)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in out.stdout


def test_chart_passes_helm_lint_in_namespaced_mode_with_stores(tools: Tools) -> None:
    out = tools.helm(
        "lint", "--strict", str(CHART),
        "--set", "watchNamespaces={team-a,team-b}",
        "--set", "stores[0].name=redis,stores[0].redis.host=redis,stores[0].redis.adminSecretRef.name=r",
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


def test_default_render_is_one_recreated_hardened_operator_with_cluster_rbac(tools: Tools) -> None:
    docs = render(tools)
    (deploy,) = by_kind(docs, "Deployment")
    spec = deploy["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "ghcr.io/chatmemory/chatmemory-operator:0.1.0"
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"healthz": 8080, "metrics": 9090}
    assert container["command"] == ["kopf", "run"]
    args = container["args"]
    assert {"--standalone", "--module=chatmemory_operator", "--all-namespaces"} <= set(args)
    assert "--liveness=http://0.0.0.0:8080/healthz" in args
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["securityContext"]["runAsUser"] == 10001
    assert set(container["resources"]) == {"requests", "limits"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CHATMEMORY_NAMESPACES"] == ""
    assert env["CHATMEMORY_METRICS_PORT"] == "9090"
    assert env["CHATMEMORY_STORE_SECRET_NAMESPACES"] == ""
    (own,) = [e for e in container["env"] if e["name"] == "CHATMEMORY_OPERATOR_NAMESPACE"]
    assert own["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
    assert pod["serviceAccountName"] == "rel-chatmemory-operator"
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("ClusterRole", "rel-chatmemory-operator") in kinds
    assert ("ClusterRoleBinding", "rel-chatmemory-operator") in kinds
    assert ("ServiceAccount", "rel-chatmemory-operator") in kinds
    assert ("Service", "rel-chatmemory-operator-metrics") in kinds
    assert ("NetworkPolicy", "rel-chatmemory-operator") in kinds
    # the only Role: name claims (Leases) in the release namespace
    roles = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in by_kind(docs, "Role")}
    assert roles == {("cm-render", "rel-chatmemory-operator-claims")}
    assert by_kind(docs, "ServiceMonitor") == []


def test_namespaced_render_uses_roles_in_watched_namespaces_and_a_minimal_cluster_role(tools: Tools) -> None:
    docs = render(tools, "--set", "watchNamespaces={team-a,team-b}", "--set", "storeSecretNamespaces={ops}")
    roles = {(d["metadata"]["namespace"], d["metadata"]["name"]) for d in by_kind(docs, "Role")}
    assert roles == {
        ("team-a", "rel-chatmemory-operator"),
        ("team-b", "rel-chatmemory-operator"),
        ("cm-render", "rel-chatmemory-operator-store-secrets"),
        ("ops", "rel-chatmemory-operator-store-secrets"),
        ("default", "rel-chatmemory-operator-store-events"),
        ("cm-render", "rel-chatmemory-operator-claims"),
    }
    bindings = {(d["metadata"]["namespace"], d["roleRef"]["name"]) for d in by_kind(docs, "RoleBinding")}
    assert {(ns, name) for ns, name in roles} == bindings
    operator_cluster_roles = [
        d
        for d in by_kind(docs, "ClusterRole")
        if d["metadata"]["name"].startswith("rel-chatmemory-operator-cluster")
    ]
    (cluster,) = operator_cluster_roles
    resources = {r for rule in cluster["rules"] for r in rule["resources"]}
    assert resources == {  # namespaces: labels for allowedNamespaces; kopf lists them for a namespace list
        "chatmemorystores",
        "chatmemorystores/status",
        "chatmemories",  # get only: the holder of a name claim, in any namespace
        "customresourcedefinitions",
        "namespaces",
    }
    (memories,) = [rule for rule in cluster["rules"] if rule["resources"] == ["chatmemories"]]
    assert memories["verbs"] == ["get"]
    assert not [d for d in by_kind(docs, "ClusterRole") if d["metadata"]["name"] == "rel-chatmemory-operator"]
    (deploy,) = by_kind(docs, "Deployment")
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CHATMEMORY_NAMESPACES"] == "team-a,team-b"
    assert env["CHATMEMORY_STORE_SECRET_NAMESPACES"] == "ops"
    assert "--namespace=team-a" in container["args"]
    assert "--namespace=team-b" in container["args"]
    assert "--all-namespaces" not in container["args"]


def test_user_roles_aggregate_into_view_and_edit_and_service_binding_role_is_labelled(tools: Tools) -> None:
    roles = {d["metadata"]["name"]: d for d in by_kind(render(tools), "ClusterRole")}
    view = roles["rel-chatmemory-operator-view"]["metadata"]["labels"]
    edit = roles["rel-chatmemory-operator-edit"]["metadata"]["labels"]
    assert view["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert edit["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert "rbac.authorization.k8s.io/aggregate-to-view" not in edit
    sb = roles["rel-chatmemory-operator-servicebinding"]
    assert sb["metadata"]["labels"]["servicebinding.io/controller"] == "true"
    assert sb["rules"] == [
        {"apiGroups": [GROUP], "resources": ["chatmemories"], "verbs": ["get", "list", "watch"]}
    ]


def test_crd_templates_carry_the_crds_directory_and_are_kept_on_uninstall(tools: Tools) -> None:
    rendered = {d["metadata"]["name"]: d for d in by_kind(render(tools), "CustomResourceDefinition")}
    canonical = {}
    for path in sorted(CRDS.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        canonical[doc["metadata"]["name"]] = doc
    assert canonical, "crds/ is empty: run `make crds`"
    assert set(rendered) == set(canonical)
    for name, crd in canonical.items():
        assert rendered[name]["spec"] == crd["spec"], (
            f"{name}: chart copy drifted from crds/ (run `make crds`)"
        )
        assert rendered[name]["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_crds_are_left_out_with_install_false_and_not_kept_with_keep_false(tools: Tools) -> None:
    assert by_kind(render(tools, "--set", "crds.install=false"), "CustomResourceDefinition") == []
    crds = by_kind(render(tools, "--set", "crds.keep=false"), "CustomResourceDefinition")
    assert crds
    for crd in crds:
        assert "helm.sh/resource-policy" not in (crd["metadata"].get("annotations") or {})


def test_operator_disabled_renders_rbac_but_no_deployment_or_metrics_service(tools: Tools) -> None:
    docs = render(tools, "--set", "operator.enabled=false")
    assert by_kind(docs, "Deployment") == []
    assert by_kind(docs, "Service") == []
    assert by_kind(docs, "ClusterRole")


def test_service_monitor_renders_only_when_enabled(tools: Tools) -> None:
    (monitor,) = by_kind(render(tools, "--set", "serviceMonitor.enabled=true"), "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


def test_stores_from_values_default_their_secret_namespaces_to_the_release_namespace(tools: Tools) -> None:
    docs = render(
        tools,
        "--set", "stores[0].name=redis,stores[0].default=true,stores[0].redis.host=redis.db",
        "--set", "stores[0].redis.adminSecretRef.name=redis-admin",
        "--set", "stores[1].name=kafka,stores[1].kafka.bootstrapServers=kafka:9092",
        "--set", "stores[1].kafka.adminSecretRef.name=kafka-admin",
        "--set", "stores[1].kafka.adminSecretRef.namespace=ops",
        "--set", "storeSecretNamespaces={ops}",
    )  # fmt: skip
    stores = {d["metadata"]["name"]: d for d in by_kind(docs, "ChatMemoryStore")}
    assert stores["redis"]["spec"]["redis"]["adminSecretRef"] == {
        "name": "redis-admin",
        "namespace": "cm-render",
    }
    assert stores["redis"]["metadata"]["annotations"]["chatmemory.io/is-default-store"] == "true"
    assert stores["kafka"]["spec"]["kafka"]["adminSecretRef"] == {"name": "kafka-admin", "namespace": "ops"}
    assert "annotations" not in stores["kafka"]["metadata"]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--set", "replicaCount=2"], "replicaCount"),
        (["--set", "crds.create=true"], "create"),
        (["--set-string", "operator.replicas=one"], "replicas"),
        (["--set-string", "crds.install=yes"], "install"),
        (["--set", "operator.leaderElection.leaseDuration=1"], "leaseDuration"),
        (["--set", "stores[0].name=x,stores[0].redis.host=r,stores[0].tidb.host=t"], "stores"),
        (
            ["--set", "serviceMonitor.enabled=true", "--set", "metrics.service.enabled=false"],
            "serviceMonitor.enabled needs metrics.service.enabled",
        ),
        (
            [
                "--set",
                "stores[0].name=a,stores[0].default=true,stores[0].redis.host=r",
                "--set",
                "stores[1].name=b,stores[1].default=true,stores[1].tidb.host=t",
            ],
            "at most one store may be marked default",
        ),
        (
            [
                "--set",
                "stores[0].name=k,stores[0].tidb.host=t,stores[0].tidb.adminSecretRef.name=a",
                "--set",
                "stores[0].tidb.adminSecretRef.namespace=ops",
            ],
            'tidb.adminSecretRef.namespace "ops" is neither the release namespace',
        ),
        (
            [
                "--set",
                "stores[0].name=r,stores[0].redis.host=r,stores[0].redis.tls.caSecretRef.name=ca",
                "--set",
                "stores[0].redis.tls.caSecretRef.namespace=pki",
            ],
            'add "pki" to storeSecretNamespaces',
        ),
        (
            ["--set", "watchNamespaces={a}", "--set", "storeSecretNamespaces={db-*}"],
            '"db-*" is a glob',
        ),
        (["--set", "storeSecretNamespaces={Ops}"], "storeSecretNamespaces"),
        (["--set", "networkPolicy.metricsFrom[0].pods.app=x"], "pods"),
    ],
    ids=[
        "unknown-key",
        "unknown-nested-key",
        "int-as-string",
        "bool-as-string",
        "lease-too-short",
        "two-backends",
        "monitor-without-service",
        "two-default-stores",
        "store-secret-elsewhere",
        "store-ca-elsewhere",
        "glob-in-namespaced-mode",
        "namespace-not-a-name",
        "unknown-peer-key",
    ],
)
def test_schema_rejects_bad_values_naming_the_field(tools: Tools, args: list[str], named: str) -> None:
    out = tools.helm("template", "rel", str(CHART), *args)
    assert out.returncode != 0
    assert named in out.stderr, out.stderr


# -- install, upgrade, uninstall -------------------------------------------------------------------


class Release:
    def __init__(self, tools: Tools, name: str, namespace: str) -> None:
        self.tools, self.name, self.namespace = tools, name, namespace
        self.fullname = f"{name}-chatmemory-operator"
        self.sa = f"system:serviceaccount:{namespace}:{self.fullname}"

    def can_i(self, verb: str, resource: str, namespace: str | None = None) -> bool:
        return self.tools.can_i(self.sa, verb, resource, namespace)


@pytest.fixture(scope="module")
def release(tools: Tools, crds_installed: None) -> Iterator[Release]:
    """A cluster-wide release with one store from values (pointing at a host that does not exist)."""
    rel = Release(tools, f"cmc{uid()}", f"cm-chart-{uid()}")
    store = f"{rel.name}-redis"
    tools.helm_ok(
        "install", rel.name, str(CHART), "--namespace", rel.namespace, "--create-namespace",
        "--set", "crds.install=false",
        "--set", f"stores[0].name={store},stores[0].redis.host=redis.invalid",
        "--set", "stores[0].redis.adminSecretRef.name=redis-admin",
    )  # fmt: skip
    yield rel
    tools.helm("uninstall", rel.name, "--namespace", rel.namespace)
    tools.kubectl("delete", "chatmemorystores.chatmemory.io", store, "--ignore-not-found", "--wait=false")
    tools.kubectl("delete", "namespace", rel.namespace, "--wait=false")


def test_install_creates_the_operator_objects_and_the_store(tools: Tools, release: Release) -> None:
    ns, name = release.namespace, release.fullname
    for kind in ("deployment", "serviceaccount", "service", "networkpolicy"):
        assert tools.exists(kind, name if kind != "service" else f"{name}-metrics", ns), kind
    assert tools.exists("role", f"{name}-claims", ns)
    for kind in ("clusterrole", "clusterrolebinding"):
        assert tools.exists(kind, name), kind
    for suffix in ("view", "edit", "servicebinding"):
        assert tools.exists("clusterrole", f"{name}-{suffix}"), suffix
    store = json.loads(
        tools.kubectl_ok("get", "chatmemorystores.chatmemory.io", f"{release.name}-redis", "-o", "json")
    )
    assert store["spec"]["redis"]["adminSecretRef"] == {"name": "redis-admin", "namespace": ns}
    assert store["metadata"]["labels"]["app.kubernetes.io/instance"] == release.name
    status = json.loads(tools.helm_ok("status", release.name, "-n", ns, "-o", "json"))
    assert status["info"]["status"] == "deployed"


#: What the operator calls: kopf's watches and patches, and chatmemory_operator.k8s.
ALLOWED_CLUSTER_WIDE = [
    ("list", "chatmemories.chatmemory.io"),
    ("watch", "chatmemories.chatmemory.io"),
    ("patch", "chatmemories.chatmemory.io"),
    ("patch", "chatmemories.chatmemory.io/status"),
    ("get", "chatmemorystores.chatmemory.io"),
    ("list", "chatmemorystores.chatmemory.io"),
    ("watch", "chatmemorystores.chatmemory.io"),
    ("patch", "chatmemorystores.chatmemory.io"),
    ("patch", "chatmemorystores.chatmemory.io/status"),
    ("get", "secrets"),
    ("create", "secrets"),
    ("update", "secrets"),
    ("delete", "secrets"),
    ("create", "events"),
    ("list", "customresourcedefinitions.apiextensions.k8s.io"),
    ("watch", "customresourcedefinitions.apiextensions.k8s.io"),
    ("get", "chatmemories.chatmemory.io"),  # the holder of a name claim
    ("update", "chatmemories.chatmemory.io/finalizers"),  # blockOwnerDeletion on the memory's Secret
    ("get", "namespaces"),  # labels, for a store's allowedNamespaces selector
    ("list", "namespaces"),
    ("watch", "namespaces"),
]
#: Name claims: Leases in the release namespace only.
LEASE_VERBS = ["get", "list", "watch", "create", "update", "patch", "delete"]
DENIED_ALWAYS = [
    ("list", "secrets"),  # Secrets are read by name only
    ("watch", "secrets"),
    ("update", "chatmemories.chatmemory.io/status"),
    ("delete", "namespaces"),
    ("create", "namespaces"),
    ("get", "pods"),
    ("create", "pods"),
    ("create", "chatmemories.chatmemory.io"),
    ("delete", "chatmemories.chatmemory.io"),
    ("create", "chatmemorystores.chatmemory.io"),
    ("delete", "chatmemorystores.chatmemory.io"),
    ("delete", "customresourcedefinitions.apiextensions.k8s.io"),
    ("create", "clusterroles.rbac.authorization.k8s.io"),
    ("get", "configmaps"),
    ("create", "deployments.apps"),
    ("update", "namespaces"),
    ("patch", "namespaces"),
    ("update", "chatmemorystores.chatmemory.io/finalizers"),
]


def test_cluster_wide_operator_may_do_what_it_needs(release: Release) -> None:
    denied = [(v, r) for v, r in ALLOWED_CLUSTER_WIDE if not release.can_i(v, r)]
    assert denied == []


def test_cluster_wide_operator_is_denied_everything_else(release: Release) -> None:
    allowed = [(v, r) for v, r in DENIED_ALWAYS if release.can_i(v, r)]
    assert allowed == []


def operator_manages_claims_only_in_its_own_namespace(release: Release, elsewhere: str) -> None:
    denied = [v for v in LEASE_VERBS if not release.can_i(v, "leases.coordination.k8s.io", release.namespace)]
    assert denied == []
    allowed = [v for v in LEASE_VERBS if release.can_i(v, "leases.coordination.k8s.io", elsewhere)]
    assert allowed == []
    assert not release.can_i("list", "leases.coordination.k8s.io")  # not cluster-wide


def test_cluster_wide_operator_manages_name_claims_as_leases_in_its_own_namespace_only(
    release: Release,
) -> None:
    operator_manages_claims_only_in_its_own_namespace(release, "default")


def test_the_notes_chatmemory_passes_server_side_dry_run(tools: Tools, release: Release) -> None:
    notes = tools.helm_ok("get", "notes", release.name, "-n", release.namespace)
    assert "mountPath: /bindings/support-bot" in notes
    assert "SERVICE_BINDING_ROOT" in notes
    start = notes.index("apiVersion: chatmemory.io/v1alpha1")
    manifest = notes[start : notes.index("\n\n", start)]
    doc = yaml.safe_load(manifest)
    assert doc["kind"] == "ChatMemory"
    assert doc["spec"]["storeRef"]["name"] == f"{release.name}-redis"
    ns = f"cm-chart-{uid()}"
    tools.kubectl_ok("create", "namespace", ns)
    try:
        doc["metadata"]["namespace"] = ns
        out = tools.kubectl_ok("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(doc))
        assert "created (server dry run)" in out
    finally:
        tools.kubectl("delete", "namespace", ns, "--wait=false")


def sample_manifests() -> list[Path]:
    return sorted(MANIFESTS.glob("*.yaml")) + sorted(MANIFESTS.glob("*.yml"))


def test_every_sample_manifest_passes_server_side_dry_run(
    tools: Tools, crds_installed: None, namespace: str
) -> None:
    paths = sample_manifests()
    assert paths, f"no sample manifests in {MANIFESTS}"
    failures = []
    for path in paths:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        for doc in docs:  # into our namespace: the samples' own may not exist on this server
            doc.get("metadata", {}).pop("namespace", None)
        out = tools.kubectl(
            "apply", "--dry-run=server", "-n", namespace, "-f", "-", stdin=yaml.safe_dump_all(docs)
        )
        if out.returncode != 0:
            failures.append(f"{path.name}: {out.stderr.strip()}")
    assert failures == []


def test_upgrade_applies_a_changed_value(tools: Tools, release: Release) -> None:
    tools.helm_ok(
        "upgrade", release.name, str(CHART), "-n", release.namespace, "--reuse-values",
        "--set", "operator.logLevel=debug", "--set", "resources.limits.memory=384Mi",
        "--set", "metrics.service.enabled=false",
    )  # fmt: skip
    deploy = json.loads(
        tools.kubectl_ok("get", "deployment", release.fullname, "-n", release.namespace, "-o", "json")
    )
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert "--debug" in container["args"]
    assert container["resources"]["limits"]["memory"] == "384Mi"
    assert not tools.exists("service", f"{release.fullname}-metrics", release.namespace)
    history = json.loads(tools.helm_ok("history", release.name, "-n", release.namespace, "-o", "json"))
    assert [h["revision"] for h in history] == [1, 2]


def test_view_and_edit_users_get_chatmemories_through_the_builtin_roles(
    tools: Tools, release: Release
) -> None:
    ns = release.namespace
    viewer, editor = f"viewer-{uid()}", f"editor-{uid()}"
    tools.kubectl_ok("create", "rolebinding", viewer, "--clusterrole=view", f"--user={viewer}", "-n", ns)
    tools.kubectl_ok("create", "rolebinding", editor, "--clusterrole=edit", f"--user={editor}", "-n", ns)
    resource = "chatmemories.chatmemory.io"
    deadline = time.monotonic() + 30  # the controller manager aggregates the roles asynchronously
    while time.monotonic() < deadline:
        if tools.can_i(viewer, "list", resource, ns) and tools.can_i(editor, "delete", resource, ns):
            break
        time.sleep(0.5)
    assert tools.can_i(viewer, "list", resource, ns)
    assert not tools.can_i(viewer, "delete", resource, ns)
    assert tools.can_i(editor, "create", resource, ns)
    assert tools.can_i(editor, "delete", resource, ns)
    assert not tools.can_i(editor, "delete", resource, "default")


def test_uninstall_removes_the_release_objects_and_keeps_the_crds(tools: Tools, crds_installed: None) -> None:
    rel = Release(tools, f"cmu{uid()}", f"cm-chart-{uid()}")
    tools.helm_ok(
        "install",
        rel.name,
        str(CHART),
        "-n",
        rel.namespace,
        "--create-namespace",
        "--set",
        "crds.install=false",
    )
    assert tools.exists("clusterrole", rel.fullname)
    try:
        tools.helm_ok("uninstall", rel.name, "-n", rel.namespace)
        assert tools.gone("deployment", rel.fullname, rel.namespace)
        assert tools.gone("serviceaccount", rel.fullname, rel.namespace)
        assert tools.gone("clusterrole", rel.fullname)
        assert tools.gone("clusterrolebinding", rel.fullname)
        assert tools.gone("clusterrole", f"{rel.fullname}-view")
        assert tools.exists("crd", f"chatmemories.{GROUP}")
        assert tools.exists("crd", f"chatmemorystores.{GROUP}")
        listed = json.loads(tools.helm_ok("list", "-n", rel.namespace, "-o", "json"))
        assert listed == []
    finally:
        tools.kubectl("delete", "namespace", rel.namespace, "--wait=false")


# -- namespaced mode ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def namespaced(tools: Tools, crds_installed: None) -> Iterator[tuple[Release, str, str, str]]:
    """A release watching one namespace, with a store whose admin Secret lives in a third one."""
    rel = Release(tools, f"cmn{uid()}", f"cm-chart-{uid()}")
    watched, other, secrets = (f"cm-chart-{uid()}" for _ in range(3))
    for ns in (watched, other, secrets):
        tools.kubectl_ok("create", "namespace", ns)
    store = f"{rel.name}-tidb"
    tools.helm_ok(
        "install", rel.name, str(CHART), "-n", rel.namespace, "--create-namespace",
        "--set", "crds.install=false", "--set", f"watchNamespaces={{{watched}}}",
        "--set", f"stores[0].name={store},stores[0].tidb.host=tidb.invalid",
        "--set", "stores[0].tidb.adminSecretRef.name=tidb-admin",
        "--set", f"stores[0].tidb.adminSecretRef.namespace={secrets}",
        "--set", f"storeSecretNamespaces={{{secrets}}}",
    )  # fmt: skip
    yield rel, watched, other, secrets
    tools.helm("uninstall", rel.name, "-n", rel.namespace)
    tools.kubectl("delete", "chatmemorystores.chatmemory.io", store, "--ignore-not-found", "--wait=false")
    for ns in (rel.namespace, watched, other, secrets):
        tools.kubectl("delete", "namespace", ns, "--wait=false")


def test_namespaced_operator_manages_secrets_and_memories_only_in_watched_namespaces(
    namespaced: tuple[Release, str, str, str],
) -> None:
    rel, watched, other, _secrets = namespaced
    for verb in ("get", "create", "update", "delete"):
        assert rel.can_i(verb, "secrets", watched), verb
        assert not rel.can_i(verb, "secrets", other), verb
    assert not rel.can_i("list", "secrets", watched)
    assert rel.can_i("patch", "chatmemories.chatmemory.io", watched)
    assert rel.can_i("patch", "chatmemories.chatmemory.io/status", watched)
    assert rel.can_i("watch", "chatmemories.chatmemory.io", watched)
    assert not rel.can_i("list", "chatmemories.chatmemory.io", other)
    assert not rel.can_i("get", "secrets")  # not cluster-wide
    assert rel.can_i("create", "events", watched)
    assert not rel.can_i("create", "events", other)
    assert rel.can_i("update", "chatmemories.chatmemory.io/finalizers", watched)
    assert not rel.can_i("update", "chatmemories.chatmemory.io/finalizers", other)


def test_namespaced_operator_reads_store_secrets_but_cannot_change_them(
    namespaced: tuple[Release, str, str, str],
) -> None:
    rel, _watched, other, secrets = namespaced
    for ns in (secrets, rel.namespace):
        assert rel.can_i("get", "secrets", ns), ns
        assert not rel.can_i("list", "secrets", ns), ns
        assert not rel.can_i("update", "secrets", ns), ns
    assert not rel.can_i("get", "secrets", other)
    # kopf posts the cluster-scoped stores' Events in "default" (its client has no namespace)
    assert rel.can_i("create", "events", "default")
    assert not rel.can_i("create", "events", rel.namespace)


def test_namespaced_operator_keeps_cluster_access_to_stores_and_crds_only(
    namespaced: tuple[Release, str, str, str],
) -> None:
    rel, _watched, other, _secrets = namespaced
    assert rel.can_i("list", "chatmemorystores.chatmemory.io")
    assert rel.can_i("patch", "chatmemorystores.chatmemory.io/status")
    assert rel.can_i("watch", "customresourcedefinitions.apiextensions.k8s.io")
    for verb in ("get", "list", "watch"):
        assert rel.can_i(verb, "namespaces"), verb
    assert rel.can_i("get", "chatmemories.chatmemory.io", other)  # a claim's holder, anywhere
    assert not rel.can_i("list", "chatmemories.chatmemory.io", other)
    allowed = [(v, r) for v, r in DENIED_ALWAYS if rel.can_i(v, r)]
    assert allowed == []


def test_namespaced_operator_manages_name_claims_as_leases_in_its_own_namespace_only(
    namespaced: tuple[Release, str, str, str],
) -> None:
    rel, watched, _other, _secrets = namespaced
    operator_manages_claims_only_in_its_own_namespace(rel, watched)


# -- the operator itself, under the chart's ServiceAccount ------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_account_kubeconfig(tools: Tools, rel: Release, path: Path) -> None:
    """A kubeconfig that authenticates as the release's ServiceAccount (a TokenRequest token)."""
    token = tools.kubectl_ok("create", "token", rel.fullname, "-n", rel.namespace, "--duration=30m").strip()
    admin = yaml.safe_load(Path(tools.platform["KUBECONFIG"]).read_text())
    cluster = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": cluster}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [
            {
                "name": "operator",
                "context": {"cluster": "local", "user": "operator", "namespace": rel.namespace},
            }
        ],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


def ready(tools: Tools, kind: str, name: str, namespace: str | None = None) -> bool:
    args = ["get", kind, name, "-o", "json"] + (["-n", namespace] if namespace else [])
    out = tools.kubectl(*args)
    if out.returncode != 0:
        return False
    conditions = (json.loads(out.stdout).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def test_operator_with_only_the_charts_namespaced_rbac_provisions_and_deletes_a_memory(
    tools: Tools, crds_installed: None, tmp_path: Path
) -> None:
    """The real proof that the RBAC is enough: the operator runs as the chart's ServiceAccount."""
    platform = tools.platform
    redis = urlsplit(platform["REDIS_URL"])
    rel = Release(tools, f"cms{uid()}", f"cm-chart-{uid()}")
    watched = f"cm-chart-{uid()}"
    store, memory = f"{rel.name}-redis", "notes"
    tools.kubectl_ok("create", "namespace", watched)
    proc = None
    log = tmp_path / "operator.log"
    try:
        tools.helm_ok(
            "install", rel.name, str(CHART), "-n", rel.namespace, "--create-namespace",
            "--set", "crds.install=false", "--set", "operator.enabled=false",
            "--set", f"watchNamespaces={{{watched}}}",
            "--set", f"stores[0].name={store},stores[0].redis.host={redis.hostname}",
            "--set", f"stores[0].redis.port={redis.port},stores[0].redis.adminSecretRef.name=redis-admin",
        )  # fmt: skip
        tools.kubectl_ok(
            "create", "secret", "generic", "redis-admin", "-n", rel.namespace,
            f"--from-literal=username={platform['REDIS_ADMIN_USER']}",
            f"--from-literal=password={platform['REDIS_ADMIN_PASSWORD']}",
        )  # fmt: skip
        kubeconfig = tmp_path / "kubeconfig"
        service_account_kubeconfig(tools, rel, kubeconfig)
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "CHATMEMORY_NAMESPACES": watched,
            # as the chart's pod would get it (the store's admin Secret is in the release namespace)
            "CHATMEMORY_OPERATOR_NAMESPACE": rel.namespace,
            "CHATMEMORY_LIVENESS": f"http://127.0.0.1:{free_port()}/healthz",
            "CHATMEMORY_METRICS_PORT": str(free_port()),
            "CHATMEMORY_METRICS_ADDR": "127.0.0.1",
            "CHATMEMORY_RETRY_DELAY": "1",
            "CHATMEMORY_RETRY_MAX_DELAY": "5",
        }
        with log.open("w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "chatmemory_operator"], env=env, stdout=out, stderr=subprocess.STDOUT
            )
        spec = {"storeRef": {"name": store}, "deletionPolicy": "Delete", "ttl": "1h"}
        manifest = {
            "apiVersion": f"{GROUP}/v1alpha1",
            "kind": "ChatMemory",
            "metadata": {"name": memory, "namespace": watched},
            "spec": spec,
        }
        tools.kubectl_ok("apply", "-f", "-", stdin=json.dumps(manifest))
        deadline = time.monotonic() + 90
        while not ready(tools, "chatmemories.chatmemory.io", memory, watched):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        # this operator did it (reading the store and its admin Secret, writing the memory's Secret)
        assert any("Provisioned" in line and watched in line for line in log.read_text().splitlines())
        assert tools.exists("secret", f"{memory}-chatmemory", watched)
        tools.kubectl_ok("delete", "chatmemories.chatmemory.io", memory, "-n", watched, "--wait=false")
        assert tools.gone("chatmemories.chatmemory.io", memory, watched, timeout=60), log.read_text()[-3000:]
    finally:
        if proc is not None and proc.poll() is None:
            # while the operator still runs, so its finalizer never blocks the namespace
            tools.kubectl("delete", "chatmemories.chatmemory.io", memory, "-n", watched, "--ignore-not-found")
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        tools.helm("uninstall", rel.name, "-n", rel.namespace)
        tools.kubectl("delete", "chatmemorystores.chatmemory.io", store, "--ignore-not-found", "--wait=false")
        for ns in (rel.namespace, watched):
            tools.kubectl("delete", "namespace", ns, "--wait=false")
    # Other tests' stores may name Secrets this ServiceAccount cannot read; ours must never be denied.
    denied = [
        line
        for line in log.read_text().splitlines()
        if ("Forbidden" in line or " 403" in line)
        and (watched in line or rel.namespace in line or store in line)
    ]
    assert denied == []
