"""The protocol every backend module implements, and the plain data passed across it.

Called by :mod:`chatmemory_operator.reconcile` only, which knows no backend by name: it builds the
common part of a memory's plan (:class:`MemoryPlan`: TTL, size limit, user name), and the backend
of the store's kind does everything else. Each backend module (``redis``, ``kafka``, ``tidb``) owns
every decision about its server:

- its own connection record (a subclass of :class:`StoreConnection`) built from the store's spec;
- its own plan (a subclass of :class:`MemoryPlan`) with the names and settings of its server;
- what is out of place on the server (:class:`Drift` findings from ``observe``), and what
  ``ensure`` does about it;
- whether a binding written before is still current, ``status.provisioned``, the Ready message
  and whether the memory is isolated.

Every server-facing method is safe to repeat and to run after a crash at any point: "already
exists" and "already gone" are successes. Backends never talk to the Kubernetes API and never log
passwords.

Errors: raise :class:`chatmemory_operator.errors.BackendUnavailable` when the server cannot be
reached (retried with backoff), :class:`~chatmemory_operator.errors.NotSupportedError` when the spec
asks for something this server cannot do (for example decreasing partitions), and
:class:`~chatmemory_operator.errors.InvalidSpec` for a spec that can never work.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any, Final, Protocol, TypeVar

from chatmemory.contract import BackendKind, Binding

from chatmemory_operator.api import v1alpha1 as api

#: ``spec.deletionPolicy``: defined once, in the API model.
DeletionPolicy = api.DeletionPolicy


@dataclass(frozen=True)
class TLSConfig:
    enabled: bool = False
    ca_cert: str = ""  # PEM text, resolved from caSecretRef by the reconcile layer
    insecure_skip_verify: bool = False


@dataclass(frozen=True, kw_only=True)
class AdminAccess:
    """What the store's Secrets hold, read by the reconcile layer: admin user, password, CA."""

    username: str = ""
    password: str = field(default="", repr=False)
    ca_cert: str = ""


@dataclass(frozen=True, kw_only=True)
class StoreConnection:
    """How to reach a store as its admin. Each backend subclasses it with its address fields."""

    name: str
    tls: TLSConfig = field(default_factory=TLSConfig)
    admin_username: str = ""
    admin_password: str = field(default="", repr=False)

    @property
    def address(self) -> str:
        """Where the server is, for messages (``host:port`` or the bootstrap servers)."""
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class HostPortConnection(StoreConnection):
    """A store reached at one ``host:port`` (Redis, TiDB/MySQL)."""

    host: str
    port: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, kw_only=True)
class MemoryPlan:
    """What every backend needs of one ChatMemory, with defaults applied (built by reconcile).

    Each backend subclasses it with the names and settings of its server (see naming.py)."""

    namespace: str
    name: str
    uid: str
    ttl_seconds: int  # always > 0: the API rejects a zero TTL and defaults to 7d
    max_messages: int | None
    username: str  # the memory's own least-privilege user on the backend
    custom: tuple[str, ...] = ()  # the spec fields that set a name (wire paths), none when derived


#: The kind of a claim on a memory's user name (the data claims are the backend's own).
USER_CLAIM: Final = "user"


@dataclass(frozen=True)
class Claim:
    """A name on the store that one memory alone may hold (see :mod:`chatmemory_operator.ownership`).

    ``kind`` says what it names (``key-prefix``, ``topic``, ``database``, ``user``); with ``prefix``
    two names conflict when one starts with the other (Redis key prefixes), else when equal.
    ``field`` is the spec field that set the name, empty when the operator derived it.
    """

    kind: str
    value: str
    field: str = ""
    prefix: bool = False

    @property
    def data(self) -> bool:
        """Whether it names the memory's data (else its user)."""
        return self.kind != USER_CLAIM

    def describe(self) -> str:
        if self.field:
            return f"{self.field} {self.value!r}"
        return (
            f"the {self.kind.replace('-', ' ')} {self.value!r} (derived from the memory's namespace and name)"
        )


def claims_of(
    plan: MemoryPlan, kind: str, value: str, field: str, *, prefix: bool = False
) -> tuple[Claim, ...]:
    """The memory's data claim and its user claim."""
    data = Claim(kind, value, field if field in plan.custom else "", prefix)
    return data, Claim(USER_CLAIM, plan.username)


@dataclass(frozen=True)
class StoreInfo:
    """What a store's status reports: the server version and what it can do."""

    version: str
    provider: str  # redis, valkey, kafka, tidb, mariadb, mysql
    capabilities: dict[str, bool]


@dataclass(frozen=True)
class Drift:
    """One thing ``observe`` found out of place; ``ensure`` repairs each of them."""

    what: str  # in words for the DriftRepaired Event, e.g. "the ACL rules differed"
    repair: str  # what ensure does about it, e.g. "reset the user's rules"


@dataclass(frozen=True)
class Observed:
    """What exists on the backend for a memory right now.

    ``drift`` is the backend's verdict (empty: nothing to repair). ``exists``, ``user_exists`` and
    ``details`` are the facts behind it, for tests and diagnostics; the reconcile layer reads only
    ``drift``.
    """

    exists: bool
    user_exists: bool
    details: dict[str, str] = field(default_factory=dict)
    drift: tuple[Drift, ...] = ()


@dataclass(frozen=True)
class Prior:
    """What an earlier reconcile left: the binding in the memory's Secret, ``status.provisioned``,
    and, while a rotation's grace period runs, the SHA-256 (hex) of the previous password (a
    backend that can hold two passwords keeps it working; the others ignore it)."""

    binding: Binding | None = None
    provisioned: api.Provisioned | None = None
    previous_password_sha256: str = ""


#: A memory reconciled for the first time.
NO_PRIOR: Final = Prior()


@dataclass(frozen=True)
class Isolation:
    """The ``Isolated`` condition: does the memory have a user of its own? Why (or why not)?"""

    isolated: bool
    message: str


def extend(plan: MemoryPlan, cls: type[P], **fields: Any) -> P:
    """``plan`` as the backend's plan type, with the backend's own ``fields`` added."""
    common = {f.name: getattr(plan, f.name) for f in dataclasses.fields(MemoryPlan)}
    return cls(**{**common, **fields})


def connection_fields(store: api.ChatMemoryStore, admin: AdminAccess, *, tls: bool = False) -> dict[str, Any]:
    """The fields every connection has: the store's name, TLS (on when the spec or ``tls`` says
    so) with the CA read from its Secret, and the admin credentials."""
    spec = store.spec.tls or api.TLSSpec()
    enabled = spec.enabled or tls
    return {
        "name": store.metadata.name,
        "tls": TLSConfig(enabled, admin.ca_cert if enabled else "", spec.insecure_skip_verify),
        "admin_username": admin.username,
        "admin_password": admin.password,
    }


def binding_fields(store: StoreConnection, plan: MemoryPlan) -> dict[str, Any]:
    """The binding fields every backend writes the same way: TLS as the store has it, the TTL and
    the size limit as the plan says."""
    return {
        "tls": store.tls.enabled,
        "ca_cert": store.tls.ca_cert,
        "insecure_skip_verify": store.tls.insecure_skip_verify,
        "ttl_seconds": plan.ttl_seconds,
        "max_messages": plan.max_messages,
    }


def isolation(binding: Binding, *, isolated: bool, shared: str = "") -> Isolation:
    """Isolated: the binding names the memory's own user; else ``shared`` says who else can reach it."""
    if isolated:
        return Isolation(True, f"user {binding.username!r} can reach only this memory's data")
    return Isolation(False, shared)


def presence_drift(plan: MemoryPlan, *, exists: bool, user_exists: bool, container: str = "") -> list[Drift]:
    """The drift every backend words the same way: its data container or the memory's user missing."""
    found: list[Drift] = []
    if not exists:
        found.append(Drift(f"the {container} was missing", f"create the {container}"))
    if not user_exists:
        found.append(Drift(f"user {plan.username!r} was missing", "create the user"))
    return found


#: The longest user name every backend takes (MySQL's 32).
MAX_USER_LEN: Final = 32


def alternate_user(username: str) -> str:
    """The second user of a memory, used in turn with the first across rotations by backends
    without two passwords per user (MySQL, MariaDB, TiDB; Kafka SCRAM): during a grace period the
    previous user keeps the previous password while the Secret names the other one."""
    return username[: MAX_USER_LEN - 2] + "_b"


def current_user(plan: MemoryPlan, prior: Prior) -> str:
    """The user the memory's Secret names (the first one when there is no Secret yet)."""
    named = prior.binding.username if prior.binding is not None else ""
    return named if named in (plan.username, alternate_user(plan.username)) else plan.username


def next_user(plan: MemoryPlan, prior: Prior) -> str:
    """The user to set the password on: the other one when a rotation with a grace period starts
    (the Secret still holds the previous password), else the current one."""
    current = current_user(plan, prior)
    binding = prior.binding
    starting = (
        bool(prior.previous_password_sha256)
        and binding is not None
        and hashlib.sha256(binding.password.encode()).hexdigest() == prior.previous_password_sha256
    )
    if not starting:
        return current
    return alternate_user(plan.username) if current == plan.username else plan.username


C = TypeVar("C", bound=StoreConnection)
P = TypeVar("P", bound=MemoryPlan)


class Backend(Protocol[C, P]):
    """One instance per kind, built at startup; thread-safe. See the module docstring."""

    kind: BackendKind

    def connection(self, store: api.ChatMemoryStore, admin: AdminAccess) -> C:
        """The store's connection record (no I/O)."""
        ...

    def plan(self, common: MemoryPlan, memory: api.ChatMemory, store: api.ChatMemoryStore) -> P:
        """The memory's full plan: ``common`` plus this backend's names and settings (no I/O)."""
        ...

    def check(self, store: C) -> StoreInfo:
        """Connect with the admin credentials; report version and capabilities."""
        ...

    def observe(self, store: C, plan: P, prior: Prior = NO_PRIOR) -> Observed:
        """Read what exists for ``plan`` without changing anything; judge what drifted. ``prior``
        says which user the Secret names (a backend that alternates users during rotations)."""
        ...

    def ensure(self, store: C, plan: P, password: str, prior: Prior = NO_PRIOR) -> Binding:
        """Create or repair everything ``plan`` needs; set the user's password; return the binding."""
        ...

    def claims(self, plan: P) -> tuple[Claim, ...]:
        """The names on the store the memory must hold alone: its data's and its user's (no I/O)."""
        ...

    def exists(self, store: C, plan: P, claim: Claim) -> bool:
        """Whether the object a data claim names exists on the server already (keys under a prefix,
        a topic, a database): asked before a memory first claims a name it set itself."""
        ...

    def binding_current(self, binding: Binding, store: C, plan: P) -> bool:
        """Whether ``binding`` already says what ``ensure`` would (the backend-specific fields and
        the user name)."""
        ...

    def provisioned(self, plan: P, binding: Binding) -> api.Provisioned:
        """``status.provisioned``: what exists on the backend for this memory (no secrets)."""
        ...

    def describe(self, plan: P) -> str:
        """The memory's data in a few words for the Ready message, e.g. ``key prefix 'cm:a:b:'``."""
        ...

    def isolation(self, binding: Binding) -> Isolation:
        """Whether the binding's credentials reach only this memory."""
        ...

    def delete(self, store: C, plan: P, policy: DeletionPolicy) -> None:
        """Remove the memory's user; with ``DELETE`` also its data. Already gone is success."""
        ...

    def close(self) -> None:
        """Release the cached admin clients (the operator calls it at cleanup). Safe to repeat."""
        ...
