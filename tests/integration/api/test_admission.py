"""The generated CRDs in the real API server: samples admitted, invalid manifests refused by field.

The CRDs from ``crds/`` are applied idempotently (server-side, ``--force-conflicts``) and never
deleted: the API server is shared with the other tests. Invalid creates use ``--dry-run=server``
(full admission, nothing stored); update rules need a stored object, created in this module's own
namespace (or, for the cluster-scoped store, under a unique name) and deleted at the end.
No operator is needed: everything here is the API server's own validation.
"""

from __future__ import annotations

import copy
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from chatmemory_operator.api import v1alpha1 as api

from tests.support.platform import Platform

ROOT = Path(__file__).resolve().parents[3]
CRDS = ROOT / "crds"
EXAMPLES = ROOT / "examples" / "manifests"
RUN = uuid.uuid4().hex[:8]


def kubectl(platform: Platform, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [platform["KUBECTL"], "--kubeconfig", platform["KUBECONFIG"], *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def dump(*docs: dict[str, Any]) -> str:
    return yaml.safe_dump_all(list(docs), sort_keys=False)


def memory(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": api.API_VERSION, "kind": "ChatMemory", "metadata": {"name": name}, "spec": spec}


def store(name: str, spec: dict[str, Any], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": api.API_VERSION, "kind": "ChatMemoryStore", "metadata": meta, "spec": spec}


# Stored memories name a store that never exists, so an operator watching this API server (other
# engineers' e2e runs) never provisions them on a real default store.
ABSENT_STORE = f"absent-{RUN}"

# An address nothing listens on: if an operator watches this API server, it marks the store
# unavailable and never reaches a real server.
UNREACHABLE = {"host": "127.0.0.1", "port": 1}


@pytest.fixture(scope="module")
def crds(platform: Platform) -> None:
    out = kubectl(platform, "apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    assert out.returncode == 0, out.stderr
    names = [f"crd/{api.MEMORY_PLURAL}.{api.GROUP}", f"crd/{api.STORE_PLURAL}.{api.GROUP}"]
    out = kubectl(platform, "wait", "--for=condition=Established", "--timeout=60s", *names)
    assert out.returncode == 0, out.stderr


@pytest.fixture(scope="module")
def namespace(platform: Platform, crds: None) -> Iterator[str]:
    name = f"api-admission-{RUN}"
    out = kubectl(platform, "create", "namespace", name)
    assert out.returncode == 0, out.stderr
    yield name
    kubectl(platform, "delete", "chatmemories", "--all", "-n", name, "--wait=false")
    kubectl(platform, "delete", "namespace", name, "--wait=false")


def apply(platform: Platform, namespace: str | None, *docs: dict[str, Any], dry_run: bool = False) -> Any:
    args = ["apply", "--validate=strict", "-f", "-"]
    if namespace:
        args += ["-n", namespace]
    if dry_run:
        args.append("--dry-run=server")
    return kubectl(platform, *args, stdin=dump(*docs))


def assert_rejected(out: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert out.returncode != 0, f"accepted, but should have been refused:\n{out.stdout}"
    for needle in needles:
        assert needle in out.stderr, f"{needle!r} not in the API server's answer:\n{out.stderr}"


# ---- valid samples -------------------------------------------------------------------------------


def localize(doc: dict[str, Any], namespace: str) -> dict[str, Any]:
    """A sample with every namespace (its own, admin and CA Secret references) moved to ``namespace``."""
    doc = copy.deepcopy(doc)
    if doc["kind"] == "Secret":
        doc["metadata"]["namespace"] = namespace
    if doc["kind"] == "ChatMemoryStore":
        doc["metadata"]["name"] = f"{doc['metadata']['name']}-{RUN}"
        block = next(iter(v for k, v in doc["spec"].items() if k in ("redis", "kafka", "tidb")))
        for ref in (block.get("adminSecretRef"), (block.get("tls") or {}).get("caSecretRef")):
            if ref:
                ref["namespace"] = namespace
    return doc


@pytest.mark.parametrize("sample", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_sample_manifest_passes_server_side_dry_run(platform: Platform, namespace: str, sample: str) -> None:
    docs = [localize(d, namespace) for d in yaml.safe_load_all((EXAMPLES / sample).read_text()) if d]
    out = apply(platform, namespace, *docs, dry_run=True)
    assert out.returncode == 0, out.stderr
    assert "(server dry run)" in out.stdout


@pytest.mark.usefixtures("crds")
def test_kubectl_explain_shows_the_ttl_description(platform: Platform) -> None:
    deadline = time.monotonic() + 60
    while True:  # the OpenAPI document is republished a moment after the CRD is established
        out = kubectl(platform, "explain", "chatmemory.spec.ttl")
        if out.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert out.returncode == 0, out.stderr
    text = " ".join(out.stdout.split())
    assert "How long messages are kept" in text
    assert "`36h`, `7d`" in text


@pytest.mark.usefixtures("crds")
def test_kubectl_explain_describes_the_store_kinds_backend_blocks(platform: Platform) -> None:
    out = kubectl(platform, "explain", "chatmemorystore.spec.kafka.securityProtocol")
    assert out.returncode == 0, out.stderr
    assert "Kafka security.protocol" in " ".join(out.stdout.split())


# ---- invalid creates -----------------------------------------------------------------------------

KAFKA_STORE = {"kafka": {"bootstrapServers": "127.0.0.1:1"}}

INVALID_MEMORIES: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    ("bad-ttl", {"ttl": "7 days"}, ("spec.ttl", "should match")),
    ("bad-ttl-unit", {"ttl": "2w"}, ("spec.ttl",)),
    ("zero-ttl", {"ttl": "0h"}, ("spec.ttl", "longer than zero")),
    (
        "negative-partitions",
        {"kafka": {"partitions": -3}},
        ("spec.kafka.partitions", "greater than or equal to 1"),
    ),
    ("zero-replication-factor", {"kafka": {"replicationFactor": 0}}, ("spec.kafka.replicationFactor",)),
    ("bad-deletion-policy", {"deletionPolicy": "Orphan"}, ("spec.deletionPolicy", '"Retain", "Delete"')),
    ("bad-secret-name", {"secretName": "My_Secret"}, ("spec.secretName",)),
    ("bad-max-messages", {"maxMessagesPerSession": 0}, ("spec.maxMessagesPerSession",)),
    ("two-backend-blocks", {"redis": {}, "kafka": {}}, ("at most one of redis, kafka or tidb",)),
    ("bad-topic", {"kafka": {"topic": "chat/topic"}}, ("spec.kafka.topic",)),
    ("dot-topic", {"kafka": {"topic": ".."}}, ("spec.kafka.topic", "cannot be '.' or '..'")),
    ("bad-key-prefix", {"redis": {"keyPrefix": "a*"}}, ("spec.redis.keyPrefix",)),
    ("bad-database", {"tidb": {"database": "my-db"}}, ("spec.tidb.database",)),
    ("system-database", {"tidb": {"database": "MySQL"}}, ("spec.tidb.database", "system schema")),
    ("bad-table", {"tidb": {"table": "t;drop"}}, ("spec.tidb.table",)),
    ("unknown-field", {"ttl": "7d", "colour": "blue"}, ('unknown field "spec.colour"',)),
    ("unknown-nested-field", {"kafka": {"partitionz": 3}}, ('unknown field "spec.kafka.partitionz"',)),
    ("string-partitions", {"kafka": {"partitions": "three"}}, ("spec.kafka.partitions",)),
]


@pytest.mark.parametrize(("case", "spec", "needles"), INVALID_MEMORIES, ids=[c[0] for c in INVALID_MEMORIES])
def test_invalid_memory_is_refused_naming_the_field(
    platform: Platform, namespace: str, case: str, spec: dict[str, Any], needles: tuple[str, ...]
) -> None:
    out = apply(platform, namespace, memory(f"invalid-{case}", spec), dry_run=True)
    assert_rejected(out, *needles)


INVALID_STORES: list[tuple[str, dict[str, Any], tuple[str, ...]]] = [
    (
        "two-backend-blocks",
        {"redis": UNREACHABLE, "tidb": UNREACHABLE},
        ("exactly one of redis, kafka or tidb",),
    ),
    ("no-backend-block", {"defaults": {"ttl": "7d"}}, ("exactly one of redis, kafka or tidb",)),
    (
        "bad-security-protocol",
        {"kafka": {"bootstrapServers": "127.0.0.1:1", "securityProtocol": "TLS"}},
        ("spec.kafka.securityProtocol", '"PLAINTEXT"'),
    ),
    (
        "bad-sasl-mechanism",
        {"kafka": {"bootstrapServers": "127.0.0.1:1", "saslMechanism": "PLAIN"}},
        ("spec.kafka.saslMechanism",),
    ),
    (
        "sasl-without-admin-secret",
        {"kafka": {"bootstrapServers": "127.0.0.1:1", "securityProtocol": "SASL_PLAINTEXT"}},
        ("spec.kafka.adminSecretRef", "required when securityProtocol is SASL"),
    ),
    (
        "bad-port",
        {"redis": {"host": "127.0.0.1", "port": 70000}},
        ("spec.redis.port", "less than or equal to 65535"),
    ),
    ("zero-port", {"tidb": {"host": "127.0.0.1", "port": 0}}, ("spec.tidb.port",)),
    ("missing-host", {"redis": {"port": 6379}}, ("spec.redis.host", "Required value")),
    ("bad-bootstrap-servers", {"kafka": {"bootstrapServers": "kafka"}}, ("spec.kafka.bootstrapServers",)),
    (
        "admin-secret-without-namespace",
        {"redis": {**UNREACHABLE, "adminSecretRef": {"name": "admin"}}},
        ("spec.redis.adminSecretRef.namespace", "Required value"),
    ),
    ("bad-default-ttl", {**KAFKA_STORE, "defaults": {"ttl": "1y"}}, ("spec.defaults.ttl",)),
    (
        "zero-default-partitions",
        {**KAFKA_STORE, "defaults": {"partitions": 0}},
        ("spec.defaults.partitions",),
    ),
]


@pytest.mark.parametrize(("case", "spec", "needles"), INVALID_STORES, ids=[c[0] for c in INVALID_STORES])
@pytest.mark.usefixtures("crds")
def test_invalid_store_is_refused_naming_the_field(
    platform: Platform, case: str, spec: dict[str, Any], needles: tuple[str, ...]
) -> None:
    out = apply(platform, None, store(f"invalid-{case}-{RUN}", spec), dry_run=True)
    assert_rejected(out, *needles)


# ---- invalid updates (transition rules need the stored object) -----------------------------------

INVALID_UPDATES: list[tuple[str, dict[str, Any], dict[str, Any], tuple[str, ...]]] = [
    (
        "decreased-partitions",
        {"kafka": {"partitions": 3}},
        {"kafka": {"partitions": 2}},
        ("spec.kafka.partitions", "never decrease"),
    ),
    (
        "removed-partitions",
        {"kafka": {"partitions": 3}},
        {"kafka": {}},
        ("spec.kafka.partitions", "cannot be removed"),
    ),
    (
        "changed-store",
        {"storeRef": {"name": "store-a"}},
        {"storeRef": {"name": "store-b"}},
        ("spec.storeRef.name", "immutable"),
    ),
    ("removed-store", {"storeRef": {"name": "store-a"}}, {}, ("spec.storeRef.name", "immutable")),
    (
        "changed-topic",
        {"kafka": {"topic": "chat.a"}},
        {"kafka": {"topic": "chat.b"}},
        ("spec.kafka.topic", "immutable"),
    ),
    (
        "added-topic",
        {"kafka": {"partitions": 1}},
        {"kafka": {"partitions": 1, "topic": "t"}},
        ("spec.kafka.topic",),
    ),
    ("removed-topic", {"kafka": {"topic": "chat.a"}}, {"kafka": {}}, ("spec.kafka.topic",)),
    (
        "changed-key-prefix",
        {"redis": {"keyPrefix": "a:"}},
        {"redis": {"keyPrefix": "b:"}},
        ("spec.redis.keyPrefix",),
    ),
    ("changed-database", {"tidb": {"database": "a"}}, {"tidb": {"database": "b"}}, ("spec.tidb.database",)),
    ("changed-table", {"tidb": {"table": "a"}}, {"tidb": {"table": "b"}}, ("spec.tidb.table", "immutable")),
]


@pytest.mark.parametrize(
    ("case", "before", "after", "needles"), INVALID_UPDATES, ids=[c[0] for c in INVALID_UPDATES]
)
def test_invalid_memory_update_is_refused_naming_the_field(
    platform: Platform,
    namespace: str,
    case: str,
    before: dict[str, Any],
    after: dict[str, Any],
    needles: tuple[str, ...],
) -> None:
    name = f"update-{case}"
    created = apply(platform, namespace, memory(name, before))
    assert created.returncode == 0, created.stderr
    assert_rejected(apply(platform, namespace, memory(name, after)), *needles)


def test_allowed_memory_updates_are_admitted(platform: Platform, namespace: str) -> None:
    name = "update-allowed"
    before = {"storeRef": {"name": ABSENT_STORE}, "kafka": {"partitions": 2, "topic": "chat.ok"}, "ttl": "7d"}
    assert apply(platform, namespace, memory(name, before)).returncode == 0
    after = {
        "storeRef": {"name": ABSENT_STORE},
        "kafka": {"partitions": 5, "topic": "chat.ok", "replicationFactor": 1},
        "ttl": "36h",
        "deletionPolicy": "Delete",
    }
    out = apply(platform, namespace, memory(name, after))
    assert out.returncode == 0, out.stderr


def test_store_backend_cannot_change(platform: Platform) -> None:
    name = f"admission-{RUN}"
    try:
        assert apply(platform, None, store(name, {"redis": UNREACHABLE})).returncode == 0
        out = apply(platform, None, store(name, {"tidb": UNREACHABLE}))
        assert_rejected(out, "the backend of a store cannot change")
    finally:
        kubectl(platform, "delete", "chatmemorystore", name, "--wait=false")


# ---- printer columns -----------------------------------------------------------------------------


def test_kubectl_get_chatmem_shows_store_backend_ttl_ready_age(platform: Platform, namespace: str) -> None:
    spec = {"storeRef": {"name": ABSENT_STORE}, "ttl": "7d"}
    assert apply(platform, namespace, memory("columns", spec)).returncode == 0
    out = kubectl(platform, "get", "chatmem", "columns", "-n", namespace)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0].split() == ["NAME", "STORE", "BACKEND", "TTL", "READY", "AGE"]
    wide = kubectl(platform, "get", "chatmem", "columns", "-n", namespace, "-o", "wide")
    assert "REASON" in wide.stdout.split("\n")[0].split()


def test_kubectl_get_chatmemstore_shows_backend_version_ready_default_age(platform: Platform) -> None:
    name = f"columns-{RUN}"
    try:
        # "false": a store marked default would be picked up by any operator watching this server
        created = apply(
            platform, None, store(name, {"redis": UNREACHABLE}, {api.DEFAULT_STORE_ANNOTATION: "false"})
        )
        assert created.returncode == 0, created.stderr
        out = kubectl(platform, "get", "chatmemstore", name)
        assert out.returncode == 0, out.stderr
        header, row = out.stdout.strip().split("\n")
        assert header.split() == ["NAME", "BACKEND", "VERSION", "READY", "DEFAULT", "AGE"]
        assert "false" in row.split()
    finally:
        kubectl(platform, "delete", "chatmemorystore", name, "--wait=false")
