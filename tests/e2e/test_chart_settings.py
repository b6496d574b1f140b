"""The chart's operator settings, rendered by the real helm: what the README says the chart does.

The chart runs ``kopf run`` (not ``python -m chatmemory_operator``), so ``CHATMEMORY_LIVENESS`` and
``CHATMEMORY_VERBOSE`` would have no effect in its pod (issue 12): the liveness endpoint follows
``livenessProbe.port`` and the log level ``operator.logLevel``, as kopf options, and the only
``CHATMEMORY_*`` variables it sets are the four the README names (issue 13 added the operator's own
namespace, from the downward API, and ``storeSecretNamespaces``). The offline twin of this check is
``tests/unit/test_chart_values.py::test_the_chart_sets_the_settings_the_readme_says_and_kopf_options_for_the_rest``.
"""

from __future__ import annotations

from typing import Any

import pytest
from chatmemory_operator import config

from tests.e2e.test_chart import Tools, by_kind, render
from tests.support.platform import Platform


@pytest.fixture(scope="module")
def tools(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> Tools:
    return Tools(platform, tmp_path_factory.mktemp("helm-home"))


def operator_container(tools: Tools, *args: str) -> dict[str, Any]:
    (deploy,) = by_kind(render(tools, *args), "Deployment")
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    return dict(container)


def chatmemory_env(container: dict[str, Any]) -> dict[str, Any]:
    """``CHATMEMORY_*`` variables: the value, or the ``valueFrom`` of one set from the pod."""
    return {
        e["name"]: e["value"] if "value" in e else e["valueFrom"]
        for e in container["env"]
        if e["name"].startswith("CHATMEMORY_")
    }


OWN_NAMESPACE = {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_chart_liveness_and_log_level_follow_the_values(tools: Tools) -> None:
    container = operator_container(
        tools, "--set", "livenessProbe.port=8181", "--set", "operator.logLevel=debug"
    )
    assert container["command"] == ["kopf", "run"]
    args = container["args"]
    assert "--liveness=http://0.0.0.0:8181/healthz" in args
    assert "--debug" in args and "--verbose" not in args
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["healthz"] == 8181
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    assert "--verbose" in operator_container(tools, "--set", "operator.logLevel=verbose")["args"]
    plain = operator_container(tools)["args"]
    assert "--verbose" not in plain and "--debug" not in plain


def test_chart_sets_only_namespaces_metrics_port_and_store_secret_namespaces_never_python_m_only_ones(
    tools: Tools,
) -> None:
    env = chatmemory_env(
        operator_container(
            tools,
            "--set", "watchNamespaces={team-a,team-b}", "--set", "metrics.port=9191",
            "--set", "storeSecretNamespaces={databases,pki}",
        )
    )  # fmt: skip
    assert env == {
        "CHATMEMORY_NAMESPACES": "team-a,team-b",
        "CHATMEMORY_METRICS_PORT": "9191",
        "CHATMEMORY_OPERATOR_NAMESPACE": OWN_NAMESPACE,
        "CHATMEMORY_STORE_SECRET_NAMESPACES": "databases,pki",
    }
    assert set(env).isdisjoint(config.MAIN_ONLY)
    assert set(env) <= set(config.ENV_VARS)


def test_store_secret_namespaces_take_the_deprecated_rbac_value_and_leave_out_the_release_namespace(
    tools: Tools,
) -> None:
    """``rbac.secretNamespaces`` (deprecated) joins ``storeSecretNamespaces``; the release namespace
    is the operator's own (always allowed) and globs pass through as the operator reads them."""
    env = chatmemory_env(
        operator_container(
            tools,
            "--set", "storeSecretNamespaces={db-*,cm-render,ops}", "--set", "rbac.secretNamespaces={ops,pki}",
        )
    )  # fmt: skip
    assert env["CHATMEMORY_STORE_SECRET_NAMESPACES"] == "db-*,ops,pki"
    assert env["CHATMEMORY_OPERATOR_NAMESPACE"] == OWN_NAMESPACE


def test_other_settings_reach_the_operator_through_extra_env(tools: Tools) -> None:
    container = operator_container(
        tools,
        "--set", "operator.extraEnv[0].name=CHATMEMORY_WORKERS",
        "--set-string", "operator.extraEnv[0].value=16",
    )  # fmt: skip
    assert chatmemory_env(container)["CHATMEMORY_WORKERS"] == "16"
