"""The CRD generator: structural schemas, CEL rules, printer columns, the chart copy and ``--check``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from chatmemory_operator.api import crdgen
from chatmemory_operator.api import v1alpha1 as api
from chatmemory_operator.api.durations import DURATION_PATTERN
from pydantic import BaseModel, Field

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples" / "manifests"


def schema(kind: crdgen.Kind) -> dict[str, Any]:
    crd = crdgen.build_crd(kind)
    root: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return root


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for key, child in node.get("properties", {}).items():
        yield from walk(child, f"{path}.{key}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}[*]")


def rules_at(node: dict[str, Any]) -> dict[str, str]:
    return {r["rule"]: r["message"] for r in node.get("x-kubernetes-validations", [])}


@pytest.mark.parametrize("kind", crdgen.KINDS, ids=lambda k: k.kind)
def test_schema_is_structural_with_no_refs_unions_titles_or_nulls(kind: crdgen.Kind) -> None:
    for path, node in walk(schema(kind)):
        for forbidden in ("$ref", "anyOf", "oneOf", "allOf", "title", "nullable", "$defs"):
            assert forbidden not in node, f"{forbidden} at {path}"
        assert node.get("default", "") is not None, f"default null at {path}"
        assert "type" in node, f"no type at {path}"
        assert not ("properties" in node and "additionalProperties" in node), path


@pytest.mark.parametrize("kind", crdgen.KINDS, ids=lambda k: k.kind)
def test_every_spec_and_status_field_has_a_description(kind: crdgen.Kind) -> None:
    root = schema(kind)
    for part in ("spec", "status"):
        for path, node in walk(root["properties"][part], part):
            if path.endswith("[*]"):
                continue  # map values are described by their map
            assert node.get("description"), f"{path} has no description"


def test_a_field_without_description_stops_generation_naming_it() -> None:
    class Bad(BaseModel):
        """A model with an undocumented field."""

        documented: int = Field(description="fine")
        undocumented: int

    with pytest.raises(crdgen.GenerationError, match=r"spec\.undocumented: no description"):
        crdgen.schema_for(Bad, "spec")


def test_a_real_union_stops_generation() -> None:
    class Union(BaseModel):
        """A union that cannot be structural."""

        value: int | str = Field(description="either")

    with pytest.raises(crdgen.GenerationError, match=r"spec\.value: unions"):
        crdgen.schema_for(Union, "spec")


def test_memory_spec_carries_the_immutability_and_growth_rules() -> None:
    spec = schema(crdgen.MEMORY)["properties"]["spec"]
    props = spec["properties"]
    assert "self == oldSelf" in rules_at(props["kafka"]["properties"]["topic"])
    assert "self >= oldSelf" in rules_at(props["kafka"]["properties"]["partitions"])
    assert "self == oldSelf" in rules_at(props["redis"]["properties"]["keyPrefix"])
    assert "self == oldSelf" in rules_at(props["tidb"]["properties"]["database"])
    assert "self == oldSelf" in rules_at(props["tidb"]["properties"]["table"])
    field_paths = {r.get("fieldPath") for r in spec["x-kubernetes-validations"]}
    assert {
        ".storeRef.name",
        ".kafka.topic",
        ".redis.keyPrefix",
        ".tidb.database",
        ".tidb.table",
    } <= field_paths
    messages = " ".join(rules_at(spec).values())
    assert "at most one of redis, kafka or tidb" in messages
    assert "storeRef.name is immutable once set" in messages


def test_memory_spec_validates_formats_at_admission() -> None:
    props = schema(crdgen.MEMORY)["properties"]["spec"]["properties"]
    assert props["ttl"]["pattern"] == DURATION_PATTERN
    assert "self.matches('[1-9]')" in rules_at(props["ttl"])
    assert props["deletionPolicy"] == {
        **props["deletionPolicy"],
        "enum": ["Retain", "Delete"],
        "default": "Retain",
    }
    assert props["maxMessagesPerSession"]["minimum"] == 1
    assert props["kafka"]["properties"]["replicationFactor"]["minimum"] == 1
    assert props["secretName"]["pattern"] == api.DNS1123_SUBDOMAIN_PATTERN
    assert props["tidb"]["properties"]["table"]["pattern"] == api.SQL_IDENTIFIER_PATTERN


def test_store_spec_requires_exactly_one_backend_and_validates_kafka_enums() -> None:
    spec = schema(crdgen.STORE)["properties"]["spec"]
    assert any("== 1" in rule for rule in rules_at(spec))
    kafka = spec["properties"]["kafka"]["properties"]
    assert kafka["securityProtocol"]["enum"] == ["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"]
    assert kafka["saslMechanism"]["enum"] == ["SCRAM-SHA-512", "SCRAM-SHA-256"]
    redis = spec["properties"]["redis"]["properties"]
    assert (redis["port"]["minimum"], redis["port"]["maximum"]) == (1, 65535)
    assert schema(crdgen.STORE)["required"] == ["spec"]


@pytest.mark.parametrize("kind", crdgen.KINDS, ids=lambda k: k.kind)
def test_status_keeps_what_kopf_writes(kind: crdgen.Kind) -> None:
    status = schema(kind)["properties"]["status"]
    assert status["x-kubernetes-preserve-unknown-fields"] is True
    assert status["properties"]["kopf"]["x-kubernetes-preserve-unknown-fields"] is True
    conditions = status["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert conditions["items"]["required"] == ["status", "type"]


def test_memory_crd_names_columns_and_service_binding_label() -> None:
    crd = crdgen.build_crd(crdgen.MEMORY)
    assert crd["metadata"] == {
        "name": "chatmemories.chatmemory.io",
        "labels": {"servicebinding.io/provisioned-service": "true"},
    }
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"], names["categories"]) == (
        "ChatMemory",
        "chatmemories",
        ["chatmem"],
        ["chatmemory-all"],
    )
    assert crd["spec"]["scope"] == "Namespaced"
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    default_columns = [
        c["name"].upper() for c in version["additionalPrinterColumns"] if not c.get("priority")
    ]
    assert default_columns == ["STORE", "BACKEND", "TTL", "READY", "AGE"]
    reason = next(c for c in version["additionalPrinterColumns"] if c["name"] == "Reason")
    assert reason["priority"] == 1


def test_no_category_is_a_name_of_either_kind() -> None:
    """kubectl expands a category before it resolves a resource name: a category spelled like a
    kind's singular, plural or short name makes ``kubectl get chatmemory NAME`` fetch both kinds
    and fail with "you must specify only one resource" (issue 12)."""
    names: set[str] = set()
    categories: set[str] = set()
    for kind in crdgen.KINDS:
        n = crdgen.build_crd(kind)["spec"]["names"]
        names |= {n["kind"].lower(), n["singular"], n["plural"], *n["shortNames"]}
        categories |= set(n["categories"])
    assert categories == {"chatmemory-all"}
    assert categories.isdisjoint(names), categories & names


def test_store_crd_is_cluster_scoped_with_its_columns() -> None:
    crd = crdgen.build_crd(crdgen.STORE)
    assert crd["spec"]["scope"] == "Cluster"
    assert crd["spec"]["names"]["shortNames"] == ["chatmemstore"]
    columns = [c["name"].upper() for c in crd["spec"]["versions"][0]["additionalPrinterColumns"]]
    assert [c for c in columns if c in {"BACKEND", "VERSION", "READY", "DEFAULT", "AGE"}] == [
        "BACKEND",
        "VERSION",
        "READY",
        "DEFAULT",
        "AGE",
    ]


def render_helm(text: str, *, install: bool, keep: bool) -> str:
    """A tiny stand-in for Helm, enough for the two conditionals the generator writes."""
    out: list[str] = []
    stack: list[bool] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("{{- if .Values.crds.install }}"):
            stack.append(install)
        elif stripped.startswith("{{- if .Values.crds.keep }}"):
            stack.append(keep)
        elif stripped == "{{- end }}":
            stack.pop()
        elif all(stack):
            assert "{{" not in line, line
            out.append(line)
    assert not stack
    return "\n".join(out)


@pytest.mark.parametrize("kind", crdgen.KINDS, ids=lambda k: k.kind)
def test_chart_copy_is_the_crd_gated_by_install_and_kept_by_keep(kind: crdgen.Kind) -> None:
    text = crdgen.render_chart_crd(kind)
    canonical = crdgen.build_crd(kind)
    kept = yaml.safe_load(render_helm(text, install=True, keep=True))
    assert kept["metadata"].pop("annotations") == {"helm.sh/resource-policy": "keep"}
    assert kept == canonical
    assert yaml.safe_load(render_helm(text, install=True, keep=False)) == canonical
    assert yaml.safe_load(render_helm(text, install=False, keep=True)) is None


def test_reference_lists_every_field_of_both_kinds() -> None:
    text = crdgen.render_reference()
    for kind in crdgen.KINDS:
        root = schema(kind)
        for part in ("spec", "status"):
            for path, _node in walk(root["properties"][part], part):
                if path in ("spec", "status") or path.endswith(("[*]", "[]")):
                    continue
                assert f"| `{path}` |" in text, path
    assert api.DEFAULT_STORE_ANNOTATION in text
    assert api.ROTATE_CREDENTIALS_ANNOTATION in text


def test_reference_lists_the_isolated_reasons_under_isolated_not_ready() -> None:
    lines = crdgen.render_reference().splitlines()
    (ready,) = [line for line in lines if line.startswith("Ready condition reasons:")]
    (isolated,) = [line for line in lines if line.startswith("Isolated condition reasons")]
    for reason in api.Reason:
        in_ready, in_isolated = f"`{reason.value}`" in ready, f"`{reason.value}`" in isolated
        assert (in_ready, in_isolated) == (
            (False, True) if reason in api.ISOLATED_REASONS else (True, False)
        ), reason


def test_redis_admin_description_names_every_command_the_operator_sends_as_admin() -> None:
    """What ``backends/redis.py`` sends with the store's admin credentials (issue 12: ACL DELUSER,
    ACL WHOAMI and MODULE LIST were missing); the e2e test ``test_redis_admin_permissions`` runs the
    operator with an admin user allowed exactly this list."""
    description = schema(crdgen.STORE)["properties"]["spec"]["properties"]["redis"]["properties"][
        "adminSecretRef"
    ]["description"]
    for command in (
        "ACL SETUSER",
        "ACL GETUSER",
        "ACL DELUSER",
        "ACL WHOAMI",
        "INFO",
        "MODULE LIST",
        "COMMAND INFO",
        "CLIENT SETNAME",
        "SCAN",
        "UNLINK",
        "CLUSTER SLOTS",
        "COMMAND",
    ):
        assert command in description, command
    rules = {c.replace("|", " ").upper() for c in api.REDIS_ADMIN_COMMANDS + api.REDIS_CLUSTER_ADMIN_COMMANDS}
    assert {"ACL DELUSER", "ACL WHOAMI", "MODULE LIST", "COMMAND INFO"} <= rules


def test_main_writes_every_file_and_check_then_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert crdgen.main(["--root", str(tmp_path), "--check"]) == 1
    assert crdgen.main(["--root", str(tmp_path)]) == 0
    for rel in crdgen.outputs():
        assert (tmp_path / rel).is_file(), rel
    assert crdgen.main(["--root", str(tmp_path), "--check"]) == 0
    capsys.readouterr()


def test_check_names_the_drifted_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    crdgen.write(tmp_path)
    chart_copy = tmp_path / crdgen.CHART_CRD_DIR / "chatmemory.io_chatmemories.yaml"
    chart_copy.write_text(chart_copy.read_text() + "# hand edit\n")
    assert crdgen.main(["--root", str(tmp_path), "--check"]) == 1
    err = capsys.readouterr().err
    assert "charts/chatmemory-operator/templates/crds/chatmemory.io_chatmemories.yaml" in err
    assert "crds/chatmemory.io_chatmemorystores.yaml" not in err


def test_root_is_found_from_a_subdirectory_of_the_workspace() -> None:
    assert crdgen.find_root(ROOT / "operator" / "src") == ROOT


def example_documents() -> list[tuple[str, dict[str, Any]]]:
    docs: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for i, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if doc:
                docs.append((f"{path.name}#{i}", doc))
    return docs


def test_there_is_a_sample_store_and_memory_per_backend() -> None:
    kinds = [
        (doc["kind"], next(iter(k for k in ("redis", "kafka", "tidb") if k in doc.get("spec", {})), None))
        for _, doc in example_documents()
    ]
    for backend in ("redis", "kafka", "tidb"):
        assert ("ChatMemoryStore", backend) in kinds
        assert ("ChatMemory", backend) in kinds
    assert ("Secret", None) in kinds


@pytest.mark.parametrize(("name", "doc"), example_documents(), ids=lambda v: v if isinstance(v, str) else "")
def test_sample_manifests_are_valid_for_the_models_and_the_schema(name: str, doc: dict[str, Any]) -> None:
    if doc["kind"] == "Secret":
        assert set(doc["stringData"]) <= {"username", "password", "ca.crt"}
        return
    kind = {"ChatMemory": crdgen.MEMORY, "ChatMemoryStore": crdgen.STORE}[doc["kind"]]
    assert doc["apiVersion"] == api.API_VERSION
    model = api.ChatMemory if kind is crdgen.MEMORY else api.ChatMemoryStore
    model.from_body(doc)
    jsonschema.validate(doc["spec"], schema(kind)["properties"]["spec"])
