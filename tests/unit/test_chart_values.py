"""The chart's values contract, offline: every value documented, the schema strict and in step.

Covers ``charts/chatmemory-operator/values.yaml``, ``values.schema.json`` and ``Chart.yaml``. The
rendering and installing checks (helm lint/template/install) are in ``tests/e2e/test_chart.py``.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from chatmemory_operator import config
from chatmemory_operator.api import v1alpha1

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "chatmemory-operator"

#: Schema nodes that hold Kubernetes API objects passed through as they are (the API server
#: validates them); every other object in the schema must refuse unknown keys.
PASSTHROUGH = {
    "/properties/global",
    "/properties/affinity/properties/nodeAffinity",
    "/properties/affinity/properties/podAffinity",
    "/properties/affinity/properties/podAntiAffinity",
}


def values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return loaded


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return loaded


def schema_errors(doc: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(schema())
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def undocumented_keys(text: str) -> list[str]:
    """Keys of values.yaml with no ``# --`` comment on them or on an ancestor (leaves) or children."""
    key_re = re.compile(r"^(\s*)([A-Za-z][\w.-]*):(.*)$")
    missing: list[str] = []
    comment_block: list[str] = []
    # stack of (indent, documented, path)
    stack: list[tuple[int, bool, str]] = []
    lines = text.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("#"):
            comment_block.append(stripped)
            continue
        m = key_re.match(line)
        if not m:
            comment_block = [] if stripped else comment_block
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3).strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        inherited = any(doc for _, doc, _ in stack)
        documented = inherited or any(c.startswith("# --") for c in comment_block)
        path = ".".join([p for _, _, p in stack[-1:]] + [key]) if stack else key
        comment_block = []
        next_lines = [n for n in lines[i + 1 :] if n.strip() and not n.strip().startswith("#")]
        is_parent = (
            rest == "" and bool(next_lines) and len(next_lines[0]) - len(next_lines[0].lstrip()) > indent
        )
        if not documented and not is_parent:
            missing.append(path)
        stack.append((indent, documented, path))
    return missing


def test_every_value_in_values_yaml_has_a_doc_comment() -> None:
    assert undocumented_keys((CHART / "values.yaml").read_text()) == []


def test_the_doc_comment_check_catches_an_undocumented_value() -> None:
    text = "# -- documented\na: 1\nparent:\n  # -- child doc\n  child: 2\n  other: 3\nb: 4\n"
    assert undocumented_keys(text) == ["parent.other", "b"]


def test_default_values_satisfy_the_schema() -> None:
    assert schema_errors(values()) == []


def test_schema_rejects_an_unknown_top_level_key() -> None:
    doc = values() | {"replicaCount": 2}
    assert any("replicaCount" in e for e in schema_errors(doc))


def test_schema_rejects_an_unknown_nested_key() -> None:
    doc = values()
    doc["crds"] = {**doc["crds"], "create": True}
    assert any("create" in e for e in schema_errors(doc))


def test_schema_rejects_a_wrong_type() -> None:
    doc = values()
    doc["crds"] = {**doc["crds"], "install": "yes"}
    errors = schema_errors(doc)
    assert any(e.startswith("crds/install") for e in errors), errors


def test_schema_takes_two_operator_replicas_and_rejects_a_negative_count() -> None:
    doc = values()
    doc["operator"] = {**doc["operator"], "replicas": 2}
    assert schema_errors(doc) == []
    doc["operator"] = {**doc["operator"], "replicas": -1}
    assert any(e.startswith("operator/replicas") for e in schema_errors(doc))


def test_schema_accepts_a_store_per_backend_and_rejects_a_store_with_two_backends() -> None:
    doc = values()
    doc["stores"] = [
        {"name": "redis", "default": True, "redis": {"host": "redis", "adminSecretRef": {"name": "r"}}},
        {
            "name": "kafka",
            "kafka": {
                "bootstrapServers": "kafka:9092",
                "securityProtocol": "SASL_PLAINTEXT",
                "saslMechanism": "SCRAM-SHA-512",
                "adminSecretRef": {"name": "k", "namespace": "ops"},
            },
            "defaults": {"partitions": 3, "ttl": "7d"},
        },
        {"name": "tidb", "tidb": {"host": "tidb", "port": 4000}},
    ]
    assert schema_errors(doc) == []
    doc["stores"] = [{"name": "both", "redis": {"host": "r"}, "tidb": {"host": "t"}}]
    assert schema_errors(doc) != []


def object_nodes(node: Any, pointer: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        if node.get("type") == "object":
            found.append((pointer, node))
        for key, child in node.items():
            found += object_nodes(child, f"{pointer}/{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            found += object_nodes(child, f"{pointer}/{i}")
    return found


def test_every_object_in_the_schema_refuses_unknown_keys() -> None:
    loose = [
        pointer
        for pointer, node in object_nodes(schema())
        if pointer not in PASSTHROUGH
        and node.get("additionalProperties") is not False
        # a map of strings (labels, annotations) constrains its values instead
        and not isinstance(node.get("additionalProperties"), dict)
    ]
    assert loose == []


def test_every_schema_property_has_a_default_in_values_yaml() -> None:
    documented = set(values())
    assert set(schema()["properties"]) - {"global"} == documented


def test_store_blocks_in_the_schema_have_the_same_fields_as_the_chatmemorystore_api() -> None:
    api = v1alpha1.ChatMemoryStoreSpec.model_json_schema(by_alias=True)
    defs = api.get("$defs", {})

    def fields(model_schema: dict[str, Any]) -> set[str]:
        if "$ref" in model_schema:
            model_schema = defs[model_schema["$ref"].rsplit("/", 1)[-1]]
        if "anyOf" in model_schema:
            model_schema = next(s for s in model_schema["anyOf"] if s.get("type") != "null")
            return fields(model_schema)
        return set(model_schema.get("properties", {}))

    store = schema()["properties"]["stores"]["items"]["properties"]
    for block in ("redis", "kafka", "tidb", "defaults"):
        assert set(store[block]["properties"]) == fields(api["properties"][block]), block


def test_chart_version_and_app_version_match_the_operator_distribution() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    operator = tomllib.loads((ROOT / "operator" / "pyproject.toml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["version"] == "0.1.0"
    assert chart["appVersion"] == operator["project"]["version"]


@pytest.mark.parametrize("name", ["crds.install", "crds.keep"])
def test_crd_switches_default_to_true(name: str) -> None:
    section, key = name.split(".")
    assert values()[section][key] is True


def test_the_chart_readme_documents_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    missing = []
    for key, prop in schema()["properties"].items():
        if key == "global":
            continue
        documented_as_a_whole = f"| `{key}` |" in readme
        children = prop.get("properties", {}) if prop.get("type") == "object" else {}
        if documented_as_a_whole:
            continue
        if not children:
            missing.append(key)
        for child, child_prop in children.items():
            if f"| `{key}.{child}` |" in readme:
                continue
            grandchildren = child_prop.get("properties", {})
            if not grandchildren or any(f"| `{key}.{child}.{g}` |" not in readme for g in grandchildren):
                missing.append(f"{key}.{child}")
    assert missing == []


def test_the_chart_sets_the_settings_the_readme_says_and_kopf_options_for_the_rest() -> None:
    """README: the chart sets CHATMEMORY_NAMESPACES and CHATMEMORY_METRICS_PORT; it runs ``kopf run``,
    so CHATMEMORY_LIVENESS and CHATMEMORY_VERBOSE (``python -m`` only) would have no effect there:
    ``--liveness`` follows ``livenessProbe.port`` and ``--verbose``/``--debug`` ``operator.logLevel``.
    The rendered equivalent is ``test_chart_liveness_and_log_level_follow_the_values`` (e2e)."""
    template = (CHART / "templates" / "deployment.yaml").read_text()
    set_by_chart = set(re.findall(r"name: (CHATMEMORY_[A-Z_]+)", template))
    readme = (ROOT / "README.md").read_text()
    sentence = " ".join(readme.split("The chart sets ", 1)[1].split(";", 1)[0].split())
    assert set(re.findall(r"`(CHATMEMORY_[A-Z_]+)`", sentence)) == set_by_chart
    assert set_by_chart <= set(config.ENV_VARS)
    assert set_by_chart.isdisjoint(config.MAIN_ONLY)
    assert 'command: ["kopf", "run"]' in template
    assert "- --liveness=http://0.0.0.0:{{ .Values.livenessProbe.port }}/healthz" in template
    assert "- --verbose" in template and "- --debug" in template
    chart_readme = (CHART / "README.md").read_text()
    for key in config.MAIN_ONLY:
        assert f"`{key}`" in chart_readme, key
