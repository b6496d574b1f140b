"""The protocol every backend module implements, and the plain data passed across it.

Called by :mod:`chatmemory_operator.reconcile` only. Each backend (``redis``, ``kafka``, ``tidb``)
turns a resolved :class:`MemoryPlan` into real server objects. Every method is safe to repeat and to
run after a crash at any point: "already exists" and "already gone" are successes. Backends never
talk to the Kubernetes API and never log passwords.

Errors: raise :class:`chatmemory_operator.errors.BackendUnavailable` when the server cannot be
reached (retried with backoff), :class:`~chatmemory_operator.errors.NotSupportedError` when the spec
asks for something this server cannot do (for example decreasing partitions), and
:class:`~chatmemory_operator.errors.InvalidSpec` for a spec that can never work.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Protocol

from chatmemory.contract import BackendKind, Binding


class DeletionPolicy(enum.StrEnum):
    RETAIN = "Retain"
    DELETE = "Delete"


@dataclass(frozen=True)
class TLSConfig:
    enabled: bool = False
    ca_cert: str = ""  # PEM text, resolved from caSecretRef by the reconcile layer
    insecure_skip_verify: bool = False


@dataclass(frozen=True)
class StoreConnection:
    """A ChatMemoryStore with its admin credentials resolved from the admin Secret."""

    name: str
    kind: BackendKind
    host: str = ""  # redis, tidb
    port: int = 0  # redis, tidb
    cluster: bool = False  # redis: host:port is a seed node of a Redis Cluster
    bootstrap_servers: str = ""  # kafka
    security_protocol: str = "PLAINTEXT"  # kafka
    sasl_mechanism: str = "SCRAM-SHA-512"  # kafka
    tls: TLSConfig = field(default_factory=TLSConfig)
    admin_username: str = ""
    admin_password: str = field(default="", repr=False)


@dataclass(frozen=True)
class StoreInfo:
    """What a store's status reports: the server version and what it can do."""

    version: str
    provider: str  # redis, valkey, kafka, tidb, mariadb, mysql
    capabilities: dict[str, bool]


@dataclass(frozen=True)
class MemoryPlan:
    """One ChatMemory, with every default applied and every name derived (see naming.py)."""

    namespace: str
    name: str
    uid: str
    ttl_seconds: int
    max_messages: int | None
    username: str  # the memory's own least-privilege user on the backend
    # redis
    key_prefix: str = ""
    # kafka
    topic: str = ""
    partitions: int = 1
    replication_factor: int = 1
    consumer_group_prefix: str = ""
    # tidb / mysql
    database: str = ""
    table: str = ""
    checkpoint_table_prefix: str = ""


@dataclass(frozen=True)
class Observed:
    """What exists on the backend for a memory right now (for status and drift detection).

    ``exists``: the memory's data container (topic, database + table; always true for Redis, whose
    prefix needs no container). ``user_exists``: the memory's own user, or true when the store has
    no per-memory users (PLAINTEXT Kafka, Redis without ACLs). ``details``: backend facts as text.
    """

    exists: bool
    user_exists: bool
    details: dict[str, str] = field(default_factory=dict)


class Backend(Protocol):
    """observe / ensure / delete, each idempotent. One instance per store, built at startup."""

    kind: BackendKind

    def check(self, store: StoreConnection) -> StoreInfo:
        """Connect with the admin credentials; report version and capabilities."""
        ...

    def observe(self, store: StoreConnection, plan: MemoryPlan) -> Observed:
        """Read what exists for ``plan`` without changing anything."""
        ...

    def ensure(self, store: StoreConnection, plan: MemoryPlan, password: str) -> Binding:
        """Create or repair everything ``plan`` needs; set the user's password; return the binding."""
        ...

    def delete(self, store: StoreConnection, plan: MemoryPlan, policy: DeletionPolicy) -> None:
        """Remove the memory's user; with ``DELETE`` also its data. Already gone is success."""
        ...

    def close(self) -> None:
        """Release the cached admin clients (the operator calls it at cleanup). Safe to repeat."""
        ...
