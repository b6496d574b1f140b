"""The chart's side of issue 13 (tenancy), rendered by the real helm.

- Store Secrets: the operator reads a store's admin and CA Secrets only in its own namespace and in
  ``storeSecretNamespaces`` (``CHATMEMORY_STORE_SECRET_NAMESPACES``, fnmatch globs). The chart
  refuses ``stores`` entries the operator would refuse, matching globs as the operator does, and in
  namespaced mode grants Secret reads in exactly those namespaces.
- The NetworkPolicy: ingress to the metrics port only, egress from ``networkPolicy.egress``; the
  chart README's restricted example passes the API server's validation.

The RBAC itself (Leases in the release namespace, namespaces, ``chatmemories/finalizers``) is checked
with ``kubectl auth can-i`` on installed releases in ``tests/e2e/test_chart.py``.
"""

from __future__ import annotations

import fnmatch
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.test_chart import CHART, Tools, by_kind, render
from tests.support.platform import Platform

RELEASE_NS = "cm-render"  # render()'s namespace


@pytest.fixture(scope="module")
def tools(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Tools:
    return Tools(platform, tmp_path_factory.mktemp("helm-home"))


def values_file(tmp_path: Path, values: dict[str, Any]) -> str:
    """Values as a file: globs (``[!a]``, ``*``) and commas would need escaping with ``--set``."""
    path = tmp_path / f"values-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def store_with_secret_in(namespace: str, *, ca: bool = False) -> dict[str, Any]:
    ref = {"name": "s", "namespace": namespace}
    redis: dict[str, Any] = {"host": "redis.db"}
    if ca:
        redis["tls"] = {"enabled": True, "caSecretRef": ref}
    else:
        redis["adminSecretRef"] = ref
    return {"name": "redis", "redis": redis}


# -- store Secret namespaces -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "namespace"),
    [
        ("ops", "ops"),
        ("ops", "ops2"),
        ("db-*", "db-team-a"),
        ("db-*", "db"),
        ("*", "anything"),
        ("t?am", "team"),
        ("t?am", "tteam"),
        ("team-[ab]", "team-b"),
        ("team-[ab]", "team-c"),
        ("team-[!ab]", "team-c"),
        ("team-[!ab]", "team-a"),
        ("team-[a-c]", "team-b"),
        ("team", "team-a"),  # the whole name, not a prefix
        ("*-prod", "team-a-prod"),
    ],
)
def test_the_chart_matches_store_secret_namespace_globs_as_the_operator_does(
    tools: Tools, tmp_path: Path, pattern: str, namespace: str
) -> None:
    """The chart's check is the operator's (``OperatorConfig.may_read_store_secrets_in``): fnmatch."""
    values = {"storeSecretNamespaces": [pattern], "stores": [store_with_secret_in(namespace)]}
    out = tools.helm("template", "rel", str(CHART), "-n", RELEASE_NS, "-f", values_file(tmp_path, values))
    expected = fnmatch.fnmatchcase(namespace, pattern)
    assert (out.returncode == 0) is expected, out.stderr
    if not expected:
        assert f'namespace "{namespace}" is neither the release namespace' in out.stderr
        assert f'add "{namespace}" to storeSecretNamespaces' in out.stderr


def test_a_store_secret_in_the_release_namespace_needs_no_allowance(tools: Tools, tmp_path: Path) -> None:
    for ca in (False, True):
        values = {"stores": [store_with_secret_in(RELEASE_NS, ca=ca)]}
        docs = render(tools, "-f", values_file(tmp_path, values))
        (store,) = by_kind(docs, "ChatMemoryStore")
        assert store["metadata"]["name"] == "redis"


def test_a_store_ca_secret_elsewhere_is_refused_like_an_admin_secret(tools: Tools, tmp_path: Path) -> None:
    values = {"stores": [store_with_secret_in("pki", ca=True)]}
    out = tools.helm("template", "rel", str(CHART), "-n", RELEASE_NS, "-f", values_file(tmp_path, values))
    assert out.returncode != 0
    assert 'redis.tls.caSecretRef.namespace "pki"' in out.stderr
    values["storeSecretNamespaces"] = ["pki"]
    assert by_kind(render(tools, "-f", values_file(tmp_path, values)), "ChatMemoryStore")


def secret_readers(docs: list[dict[str, Any]]) -> set[str]:
    """Namespaces where a Role bound to the operator grants ``get`` on Secrets."""
    return {
        d["metadata"]["namespace"]
        for d in by_kind(docs, "Role")
        if any("secrets" in r["resources"] and "get" in r["verbs"] for r in d["rules"])
    }


def test_namespaced_rbac_reads_store_secrets_exactly_where_the_operator_allows(
    tools: Tools, tmp_path: Path
) -> None:
    values = {
        "watchNamespaces": ["team-a"],
        "storeSecretNamespaces": ["databases"],
        "rbac": {"secretNamespaces": ["legacy"]},  # deprecated: joins storeSecretNamespaces
        "stores": [store_with_secret_in("databases")],
    }
    docs = render(tools, "-f", values_file(tmp_path, values))
    # the watched namespace for memories' Secrets; the rest for stores' Secrets only
    assert secret_readers(docs) == {"team-a", RELEASE_NS, "databases", "legacy"}
    store_roles = {
        d["metadata"]["namespace"]: d["rules"]
        for d in by_kind(docs, "Role")
        if d["metadata"]["name"].endswith("-store-secrets")
    }
    assert set(store_roles) == {RELEASE_NS, "databases", "legacy"}
    for rules in store_roles.values():
        assert rules == [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]
    (deploy,) = by_kind(docs, "Deployment")
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["CHATMEMORY_STORE_SECRET_NAMESPACES"] == "databases,legacy"


def test_a_store_in_a_namespace_only_the_old_automatic_rbac_covered_is_now_refused(
    tools: Tools, tmp_path: Path
) -> None:
    """Before issue 13 the chart added every store's Secret namespace to the RBAC by itself; now a
    namespace must be allowed explicitly, or the operator would refuse the store after the upgrade."""
    values = {"watchNamespaces": ["team-a"], "stores": [store_with_secret_in("databases")]}
    out = tools.helm("template", "rel", str(CHART), "-n", RELEASE_NS, "-f", values_file(tmp_path, values))
    assert out.returncode != 0
    assert 'add "databases" to storeSecretNamespaces' in out.stderr


def test_globs_are_allowed_cluster_wide_and_refused_in_namespaced_mode(tools: Tools, tmp_path: Path) -> None:
    values: dict[str, Any] = {"storeSecretNamespaces": ["db-*"], "stores": [store_with_secret_in("db-1")]}
    assert by_kind(render(tools, "-f", values_file(tmp_path, values)), "ChatMemoryStore")
    values["watchNamespaces"] = ["team-a"]
    out = tools.helm("template", "rel", str(CHART), "-n", RELEASE_NS, "-f", values_file(tmp_path, values))
    assert out.returncode != 0
    assert '"db-*" is a glob' in out.stderr
    values["rbac"] = {"create": False}  # no Roles to write: the operator's check alone applies
    assert by_kind(render(tools, "-f", values_file(tmp_path, values)), "ChatMemoryStore")


# -- NetworkPolicy ---------------------------------------------------------------------------------


def network_policy(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (policy,) = by_kind(docs, "NetworkPolicy")
    return dict(policy["spec"])


def test_network_policy_admits_only_the_metrics_port_and_allows_all_egress_by_default(tools: Tools) -> None:
    docs = render(tools)
    spec = network_policy(docs)
    (deploy,) = by_kind(docs, "Deployment")
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    selector = spec["podSelector"]["matchLabels"]
    assert selector.items() <= pod_labels.items()  # it selects the operator pod
    assert selector == deploy["spec"]["selector"]["matchLabels"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    # one port in, from anywhere; the liveness port needs no rule (the kubelet is on the node)
    assert spec["ingress"] == [{"ports": [{"port": 9090, "protocol": "TCP"}]}]
    assert spec["egress"] == [{}]


def test_network_policy_follows_the_metrics_port_and_metrics_from(tools: Tools, tmp_path: Path) -> None:
    peers = [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        },
        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
    ]
    values = {"metrics": {"port": 9191}, "networkPolicy": {"metricsFrom": peers}}
    spec = network_policy(render(tools, "-f", values_file(tmp_path, values)))
    assert spec["ingress"] == [{"ports": [{"port": 9191, "protocol": "TCP"}], "from": peers}]


def test_network_policy_is_optional_and_only_for_a_running_operator(tools: Tools) -> None:
    assert by_kind(render(tools, "--set", "networkPolicy.enabled=false"), "NetworkPolicy") == []
    assert by_kind(render(tools, "--set", "operator.enabled=false"), "NetworkPolicy") == []


def test_an_empty_egress_list_is_refused(tools: Tools, tmp_path: Path) -> None:
    """No egress at all would cut the operator off from the API server: refused by the schema."""
    values = {"networkPolicy": {"egress": []}}
    out = tools.helm("template", "rel", str(CHART), "-n", RELEASE_NS, "-f", values_file(tmp_path, values))
    assert out.returncode != 0
    assert "/networkPolicy/egress" in out.stderr


def readme_network_policy_example() -> dict[str, Any]:
    readme = (CHART / "README.md").read_text()
    section = readme.split("### NetworkPolicy", 1)[1]
    (block,) = re.findall(r"```yaml\n(.*?)```", section.split("\n## ", 1)[0], re.S)
    loaded: dict[str, Any] = yaml.safe_load(block)
    return loaded


@pytest.fixture
def namespace(tools: Tools) -> Iterator[str]:
    name = f"cm-chart-{uuid.uuid4().hex[:8]}"
    tools.kubectl_ok("create", "namespace", name)
    yield name
    tools.kubectl("delete", "namespace", name, "--wait=false")


def test_the_readme_restricted_egress_example_renders_and_passes_server_side_dry_run(
    tools: Tools, tmp_path: Path, namespace: str
) -> None:
    example = readme_network_policy_example()
    assert set(example) == {"networkPolicy"}
    docs = render(tools, "-f", values_file(tmp_path, example), namespace=namespace)
    spec = network_policy(docs)
    assert spec["egress"] == example["networkPolicy"]["egress"]
    assert spec["ingress"][0]["from"] == example["networkPolicy"]["metricsFrom"]
    ports = {p["port"] for rule in spec["egress"] for p in rule.get("ports", [])}
    assert 53 in ports  # DNS, or nothing resolves
    (policy,) = by_kind(docs, "NetworkPolicy")
    out = tools.kubectl_ok("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(policy))
    assert "created (server dry run)" in out


def test_the_default_network_policy_passes_server_side_dry_run(tools: Tools, namespace: str) -> None:
    (policy,) = by_kind(render(tools, namespace=namespace), "NetworkPolicy")
    out = tools.kubectl_ok("apply", "--dry-run=server", "-f", "-", stdin=yaml.safe_dump(policy))
    assert "created (server dry run)" in out
