"""An in-memory Kubernetes and a fake backend for the reconcile tests (no sockets)."""

from __future__ import annotations

import base64
import copy
from typing import Any

from chatmemory.contract import BackendKind, Binding
from chatmemory_operator import reconcile
from chatmemory_operator.backends.base import (
    NO_PRIOR,
    Claim,
    DeletionPolicy,
    Drift,
    Observed,
    Prior,
    StoreInfo,
)
from chatmemory_operator.backends.redis import RedisBackend, RedisConnection, RedisPlan


class FakeKube:
    """The slice of KubeClient the reconcile layer uses, over dicts."""

    def __init__(self) -> None:
        self.stores: dict[str, dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.leases: dict[tuple[str, str], dict[str, Any]] = {}
        self.memories: dict[tuple[str, str], dict[str, Any]] = {}
        self.namespaces: dict[str, dict[str, str]] = {}
        self.clock = 0

    def get_store(self, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.stores.get(name))

    def default_store(self) -> dict[str, Any] | None:
        for s in self.stores.values():
            if (s["metadata"].get("annotations") or {}).get("chatmemory.io/is-default-store") == "true":
                return copy.deepcopy(s)
        return None

    def read_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.secrets.get((namespace, name)))

    def read_secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        s = self.secrets.get((namespace, name))
        if s is None:
            return None
        return {k: base64.b64decode(v).decode() for k, v in s["data"].items()}

    def write_secret(self, body: dict[str, Any], existing: dict[str, Any] | None) -> None:
        stored = {k: copy.deepcopy(v) for k, v in body.items() if k != "stringData"}
        stored["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in body["stringData"].items()}
        self.secrets[(body["metadata"]["namespace"], body["metadata"]["name"])] = stored

    def delete_secret(self, namespace: str, name: str) -> None:
        self.secrets.pop((namespace, name), None)

    # leases (name claims), memories and namespaces: what ownership.Claims reads and writes

    def get_lease(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.leases.get((namespace, name)))

    def create_lease(self, namespace: str, body: dict[str, Any]) -> dict[str, Any] | None:
        key = (namespace, body["metadata"]["name"])
        if key in self.leases:
            return None
        self.clock += 1
        lease = copy.deepcopy(body)
        lease["metadata"].update(
            resourceVersion=str(self.clock), creationTimestamp=f"2026-01-01T00:00:{self.clock:02d}Z"
        )
        self.leases[key] = lease
        return copy.deepcopy(lease)

    def list_leases(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        wanted = dict(part.split("=", 1) for part in selector.split(","))
        return [
            copy.deepcopy(v)
            for (ns, _), v in self.leases.items()
            if ns == namespace and all(v["metadata"]["labels"].get(k) == x for k, x in wanted.items())
        ]

    def delete_lease(self, namespace: str, name: str, resource_version: str | None = None) -> None:
        lease = self.leases.get((namespace, name))
        if lease is not None and resource_version in (None, lease["metadata"]["resourceVersion"]):
            del self.leases[(namespace, name)]

    def get_memory(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.memories.get((namespace, name)))

    def namespace_labels(self, name: str) -> dict[str, str] | None:
        return dict(self.namespaces.get(name, {}))

    def list_memories(self) -> list[dict[str, Any]]:
        return [copy.deepcopy(m) for m in self.memories.values()]

    def put_secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        self.secrets[(namespace, name)] = {
            "metadata": {"namespace": namespace, "name": name},
            "type": "Opaque",
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        }


class FakeBackend(RedisBackend):
    """The Redis backend's decisions (plan, status, isolation) without a server."""

    def __init__(self, *, acl: bool = True) -> None:
        super().__init__()
        self.acl = acl
        self.passwords: dict[str, str] = {}
        self.deleted: list[tuple[str, DeletionPolicy]] = []
        self.fail: Exception | None = None
        self.user_missing = False
        self.stores_seen: list[RedisConnection] = []
        self.ensures = 0
        self.existing: set[str] = set()  # key prefixes with keys on the "server"

    def exists(self, store: RedisConnection, plan: RedisPlan, claim: Claim) -> bool:
        return claim.value in self.existing

    def check(self, store: RedisConnection) -> StoreInfo:
        if self.fail:
            raise self.fail
        return StoreInfo(version="7.0.15", provider="redis", capabilities={"acl": self.acl})

    def observe(self, store: RedisConnection, plan: RedisPlan, prior: Prior = NO_PRIOR) -> Observed:
        return Observed(exists=True, user_exists=not self.user_missing, drift=self._missing(plan))

    def _missing(self, plan: RedisPlan) -> tuple[Drift, ...]:
        return (Drift(f"user {plan.username!r} was missing", "create it"),) if self.user_missing else ()

    def ensure(self, store: RedisConnection, plan: RedisPlan, password: str, prior: Prior) -> Binding:
        if self.fail:
            raise self.fail
        self.stores_seen.append(store)
        self.ensures += 1
        self.passwords[plan.username] = password
        user, pw = (plan.username, password) if self.acl else (store.admin_username, store.admin_password)
        return Binding(
            backend=BackendKind.REDIS,
            provider="redis",
            host=store.host,
            port=store.port,
            username=user,
            password=pw,
            key_prefix=plan.key_prefix,
            ttl_seconds=plan.ttl_seconds,
            isolated=self.acl,
        )

    def delete(self, store: RedisConnection, plan: RedisPlan, policy: DeletionPolicy) -> None:
        if self.fail:
            raise self.fail
        self.deleted.append((plan.username, policy))

    def close(self) -> None:
        pass


def store_body(name: str = "redis-store", *, default: bool = False, **spec: Any) -> dict[str, Any]:
    annotations = {"chatmemory.io/is-default-store": "true"} if default else {}
    return {
        "apiVersion": "chatmemory.io/v1alpha1",
        "kind": "ChatMemoryStore",
        "metadata": {"name": name, "uid": f"uid-{name}", "generation": 1, "annotations": annotations},
        "spec": spec
        or {
            "redis": {
                "host": "127.0.0.1",
                "port": 6379,
                "adminSecretRef": {"name": "admin", "namespace": "ops"},
            }
        },
    }


def memory_body(name: str = "chat", store: str | None = "redis-store", **spec: Any) -> dict[str, Any]:
    full: dict[str, Any] = {"ttl": "1h"}
    if store is not None:
        full["storeRef"] = {"name": store}
    full.update(spec)
    return {
        "apiVersion": "chatmemory.io/v1alpha1",
        "kind": "ChatMemory",
        "metadata": {
            "name": name,
            "namespace": "team",
            "uid": f"uid-{name}",
            "generation": 1,
            "annotations": {},
        },
        "spec": full,
    }


def ready(status: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "Ready")


def with_status(body: dict[str, Any], outcome: reconcile.Outcome) -> dict[str, Any]:
    return dict(body, status=outcome.status)
