"""The chart's high availability, alerts and dashboard, rendered by the real helm.

Two or more replicas take turns through a Lease (the operator's leader election), roll out one pod
at a time and keep a PodDisruptionBudget; one replica stays as before (``Recreate``, no Lease). The
PrometheusRule's expressions and the dashboard's queries are parsed with a real PromQL parser
(``promql-parser`` from PyPI; skipped, saying so, when it is not installed) and may only name
metrics the operator exports; with Prometheus's own ``promtool`` on ``PATH`` (or ``PROMTOOL``) the
rendered rule file also passes ``promtool check rules``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from chatmemory_operator import metrics, startup

from tests.e2e.test_chart import CHART, Tools, by_kind, render
from tests.support.platform import Platform

#: Grafana's template variables, as Grafana would expand them before the query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$namespace": ".*"}


@pytest.fixture(scope="module")
def tools(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Tools:
    return Tools(platform, tmp_path_factory.mktemp("helm-home"))


def deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deploy,) = by_kind(docs, "Deployment")
    return deploy


def env_of(deploy: dict[str, Any]) -> dict[str, Any]:
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# -- two replicas, one active -----------------------------------------------------------------------


def test_two_replicas_take_turns_through_a_lease_named_like_the_release(tools: Tools) -> None:
    docs = render(tools, "--set", "operator.replicas=2")
    deploy = deployment(docs)
    assert deploy["spec"]["replicas"] == 2
    env = env_of(deploy)
    assert env["CHATMEMORY_LEADER_ELECTION_LEASE"] == "rel-chatmemory-operator"
    assert env["CHATMEMORY_LEASE_DURATION"] == "8"
    # a new pod starts as a standby before an old one goes: never none, never two handling
    assert deploy["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    preferred = deploy["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert preferred[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"


def test_the_lease_lives_where_the_operator_may_take_renew_and_release_it(tools: Tools) -> None:
    """kubernetes.leaderelection reads, creates and replaces the Lease; a stopping pod deletes it."""
    docs = render(tools, "--set", "operator.replicas=2")
    (claims,) = [
        r for r in by_kind(docs, "Role") if r["metadata"]["name"] == "rel-chatmemory-operator-claims"
    ]
    assert claims["metadata"]["namespace"] == "cm-render"
    leases = [r for r in claims["rules"] if "leases" in r["resources"]]
    assert {"get", "create", "update", "delete"} <= set(leases[0]["verbs"])
    assert leases[0]["apiGroups"] == ["coordination.k8s.io"]


def test_two_replicas_keep_a_disruption_budget_of_one_pod(tools: Tools) -> None:
    docs = render(tools, "--set", "operator.replicas=3")
    (pdb,) = by_kind(docs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    pod_labels = deployment(docs)["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert (
        by_kind(
            render(tools, "--set", "operator.replicas=3", "--set", "podDisruptionBudget.enabled=false"),
            "PodDisruptionBudget",
        )
        == []
    )


def test_one_replica_stays_recreated_with_no_lease_and_no_budget(tools: Tools) -> None:
    """A budget of one pod for one replica would block every node drain."""
    docs = render(tools)
    deploy = deployment(docs)
    assert deploy["spec"]["strategy"] == {"type": "Recreate"}
    assert "CHATMEMORY_LEADER_ELECTION_LEASE" not in env_of(deploy)
    assert by_kind(docs, "PodDisruptionBudget") == []


def test_one_replica_may_hold_the_lease_to_be_scaled_by_hand(tools: Tools) -> None:
    deploy = deployment(
        render(
            tools,
            "--set", "operator.leaderElection.enabled=true",
            "--set", "operator.leaderElection.leaseDuration=15",
        )
    )  # fmt: skip
    env = env_of(deploy)
    assert env["CHATMEMORY_LEADER_ELECTION_LEASE"] == "rel-chatmemory-operator"
    assert env["CHATMEMORY_LEASE_DURATION"] == "15"
    assert deploy["spec"]["strategy"]["type"] == "RollingUpdate"


@pytest.mark.parametrize("duration", ["1", "3601"])
def test_a_lease_duration_the_operator_would_refuse_is_refused_by_the_schema(
    tools: Tools, duration: str
) -> None:
    out = tools.helm(
        "template", "rel", str(CHART), "--set", f"operator.leaderElection.leaseDuration={duration}"
    )
    assert out.returncode != 0
    assert "leaseDuration" in out.stderr


# -- alerts and dashboard ---------------------------------------------------------------------------


def exported_metrics() -> set[str]:
    """Every series name the operator's ``/metrics`` has once a reconcile was recorded."""
    fresh = metrics.Metrics()
    fresh.observe(uid="u", backend="redis", result="BackendUnavailable", seconds=0.1, ready=False)
    names = {s.name for family in fresh.registry.collect() for s in family.samples}
    leader = {s.name for family in metrics.METRICS.registry.collect() for s in family.samples}
    # the leader election's gauge (startup.LEADER) lives on the process-wide registry
    assert startup.LEADER.describe()[0].name in leader
    return names | {n for n in leader if n.startswith("chatmemory_operator_")}


def promql() -> Any:
    return pytest.importorskip(
        "promql_parser",
        reason="promql-parser (PyPI) is not installed: the PromQL expressions were not parsed",
    )


def selected_metrics(expr: Any) -> Iterator[str]:
    """The metric names of every vector selector in a parsed expression."""
    parser = promql()
    if isinstance(expr, parser.VectorSelector):
        if expr.name:
            yield expr.name
        return
    for attr in ("expr", "lhs", "rhs", "vector_selector", "param"):
        child = getattr(expr, attr, None)
        if child is not None:
            yield from selected_metrics(child)
    for arg in getattr(expr, "args", None) or []:
        yield from selected_metrics(arg)


def rules(tools: Tools) -> list[dict[str, Any]]:
    (rule,) = by_kind(render(tools, "--set", "prometheusRule.enabled=true"), "PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def test_every_alert_parses_as_promql_and_names_only_exported_metrics(tools: Tools) -> None:
    parser = promql()
    exported = exported_metrics()
    alerts = rules(tools)
    assert {r["alert"] for r in alerts} >= {
        "ChatMemoryNotReady",
        "ChatMemoryReconcileErrors",
        "ChatMemoryBackendUnreachable",
    }
    for r in alerts:
        parsed = parser.parse(r["expr"])  # raises on a broken expression
        named = set(selected_metrics(parsed))
        assert named, r["alert"]
        assert named <= exported, (r["alert"], named - exported)
        assert 'namespace="cm-render"' in r["expr"], r["alert"]
        assert r["labels"]["severity"] in ("warning", "critical")


def test_the_parser_refuses_a_broken_expression() -> None:
    """The check above can fail: an unclosed parenthesis does not parse."""
    with pytest.raises(ValueError, match="unclosed"):
        promql().parse('max by (backend) (chatmemory_memories{ready="false"} > 0')


def test_promtool_accepts_the_rendered_rule_file(tools: Tools, tmp_path: Path) -> None:
    promtool = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not promtool:
        pytest.skip(
            "promtool is not installed (PROMTOOL or PATH): the rule file was parsed by promql-parser only"
        )
    (rule,) = by_kind(render(tools, "--set", "prometheusRule.enabled=true"), "PrometheusRule")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    out = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    broken = tmp_path / "broken.yaml"
    spec = json.loads(json.dumps(rule["spec"]))
    spec["groups"][0]["rules"][0]["expr"] = "sum(rate(chatmemory_memories[5m])"
    broken.write_text(yaml.safe_dump(spec))
    assert (
        subprocess.run([promtool, "check", "rules", str(broken)], capture_output=True, timeout=60).returncode
        != 0
    )


def dashboard(tools: Tools, *args: str) -> tuple[dict[str, Any], dict[str, Any]]:
    (cm,) = by_kind(render(tools, "--set", "grafanaDashboard.enabled=true", *args), "ConfigMap")
    (text,) = cm["data"].values()
    return cm, json.loads(text)


def test_the_dashboard_is_a_configmap_for_grafanas_sidecar(tools: Tools) -> None:
    cm, board = dashboard(tools, "--set", "grafanaDashboard.namespace=monitoring")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "monitoring"
    assert board["uid"] == "chatmemory-operator" and board["panels"]
    assert by_kind(render(tools), "ConfigMap") == []


def test_every_dashboard_query_parses_and_names_only_exported_metrics(tools: Tools) -> None:
    parser = promql()
    exported = exported_metrics()
    _, board = dashboard(tools)
    used: set[str] = set()
    for panel in board["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert not re.search(r"\$\w+", expr), (panel["title"], expr)
            named = set(selected_metrics(parser.parse(expr)))
            assert named and named <= exported, (panel["title"], named - exported)
            used |= named
    # every series the operator exports is on the dashboard (creation timestamps aside)
    assert {n for n in exported if not n.endswith("_created")} <= used
