"""The ``chatmemory.io/v1alpha1`` API: ``ChatMemoryStore`` and ``ChatMemory`` as pydantic models.

This module is the single source of truth for both custom resources:

- :mod:`chatmemory_operator.api.crdgen` turns the ``*Spec`` and ``*Status`` models into the CRDs'
  structural OpenAPI schemas (descriptions, enums, patterns, minimums and the CEL rules declared
  here in ``json_schema_extra``), the chart's copy and ``docs/reference.md``;
- the reconcile layer and the kopf handlers parse what the API server sends with
  :meth:`ChatMemory.from_body` / :meth:`ChatMemoryStore.from_body` (or ``ChatMemorySpec.model_validate``)
  and write status back with :meth:`ChatMemoryStatus.to_patch` / :meth:`ChatMemoryStoreStatus.to_patch`.

Python attributes are snake_case; the wire names are camelCase aliases (``populate_by_name``, so
both spellings are accepted). Unknown keys are ignored when parsing (kopf writes ``status.kopf``;
a newer CRD may carry fields this operator does not know). Validation here mirrors the schema's
static rules; the transition rules (immutable names, partitions never decrease) can only be checked
by the API server, which has the old object.

Nothing here performs I/O. Imports: pydantic, the SDK's :class:`~chatmemory.contract.BackendKind`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal, Self

from chatmemory.contract import BackendKind
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from chatmemory_operator.api.durations import DURATION_MAX_LENGTH, DURATION_PATTERN, parse_duration

# --------------------------------------------------------------------------------------------------
# Names and constants
# --------------------------------------------------------------------------------------------------

GROUP: Final = "chatmemory.io"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

MEMORY_KIND: Final = "ChatMemory"
MEMORY_PLURAL: Final = "chatmemories"
MEMORY_SINGULAR: Final = "chatmemory"
MEMORY_SHORT_NAMES: Final = ("chatmem",)

STORE_KIND: Final = "ChatMemoryStore"
STORE_PLURAL: Final = "chatmemorystores"
STORE_SINGULAR: Final = "chatmemorystore"
STORE_SHORT_NAMES: Final = ("chatmemstore",)

#: ``kubectl get chatmemory-all`` lists both kinds. A category must not be a name of any kind
#: (singular, plural or short name): kubectl expands categories before resource names, so a category
#: ``chatmemory`` turned ``kubectl get chatmemory NAME`` into a get of both kinds, which fails.
CATEGORIES: Final = ("chatmemory-all",)

#: On a ChatMemoryStore, ``"true"`` marks the store used by memories with an empty ``storeRef.name``
#: (like ``storageclass.kubernetes.io/is-default-class``).
DEFAULT_STORE_ANNOTATION: Final = "chatmemory.io/is-default-store"
#: On a ChatMemory: set it to a new value (a timestamp, a counter) to issue a new password.
ROTATE_CREDENTIALS_ANNOTATION: Final = "chatmemory.io/rotate-credentials"
#: ``"true"`` on a ChatMemory or ChatMemoryStore being deleted: finish the deletion now, even if
#: what the operator handed out on the server cannot be removed (an admin's last resort).
FORCE_DELETE_ANNOTATION: Final = "chatmemory.io/force-delete"
#: The label of a Service Binding provisioned-service CRD (set on the ChatMemory CRD).
PROVISIONED_SERVICE_LABEL: Final = "servicebinding.io/provisioned-service"

#: What a Redis store's admin user must be allowed (``ACL SETUSER`` command rules), besides every key
#: (``~*``): the commands the operator sends as that user (``backends/redis.py``). A memory's user
#: is set, read back, probed for and removed with ACL SETUSER/GETUSER/WHOAMI/DELUSER; INFO and
#: MODULE LIST give the store's status (version, cluster mode, modules); CLIENT SETNAME names the
#: connection; SCAN and UNLINK remove a ``Delete`` memory's keys.
REDIS_ADMIN_COMMANDS: Final = (
    "acl|setuser",
    "acl|getuser",
    "acl|deluser",
    "acl|whoami",
    "info",
    "module|list",
    "command|info",
    "client|setname",
    "scan",
    "unlink",
)
#: Added on a Redis Cluster: the client reads the slot map and the command table.
REDIS_CLUSTER_ADMIN_COMMANDS: Final = ("cluster|slots", "command")
#: Sent by redis-py on connect where the server knows it (Redis 7.2+, Valkey); a refusal is ignored
#: (only the server's ACL LOG shows it), and Redis 7.0 rejects the rule, so it is not required.
REDIS_OPTIONAL_ADMIN_COMMANDS: Final = ("client|setinfo",)


def _commands(rules: Sequence[str]) -> str:
    """``("acl|setuser", "scan", "unlink")`` -> ``ACL SETUSER, SCAN and UNLINK``."""
    names = [r.replace("|", " ").upper() for r in rules]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


#: The operator's TTL when neither the memory nor its store's ``defaults`` set one.
DEFAULT_TTL: Final = "7d"
#: Partitions one memory's topic may have when the store's ``spec.limits`` does not say.
DEFAULT_MAX_PARTITIONS: Final = 64
#: Kafka partitions and replication factor when neither the memory nor its store set them.
DEFAULT_PARTITIONS: Final = 1
DEFAULT_REPLICATION_FACTOR: Final = 1

#: ``spec.secretName`` when unset is ``<metadata.name>`` + this suffix.
SECRET_NAME_SUFFIX: Final = "-chatmemory"

DNS1123_SUBDOMAIN_PATTERN: Final = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
KAFKA_TOPIC_PATTERN: Final = r"^[A-Za-z0-9._-]+$"
KAFKA_TOPIC_MAX_LENGTH: Final = 249
SQL_IDENTIFIER_PATTERN: Final = r"^[A-Za-z0-9_]+$"
SQL_IDENTIFIER_MAX_LENGTH: Final = 64
#: A key prefix: no spaces, no Redis glob characters and no ``{}`` (the SDK adds the hash tag).
KEY_PREFIX_PATTERN: Final = r"^[A-Za-z0-9._:/-]+$"
KEY_PREFIX_MAX_LENGTH: Final = 200
#: Schemas a memory may never use as its database.
SYSTEM_SCHEMAS: Final = (
    "mysql",
    "information_schema",
    "performance_schema",
    "sys",
    "metrics_schema",
    "test",
)


class ConditionType(enum.StrEnum):
    """The condition types this operator writes."""

    READY = "Ready"
    #: ChatMemory only: ``False`` when the memory shares the store's credentials (no ACLs).
    ISOLATED = "Isolated"


#: A condition's ``status``, as Kubernetes spells it.
ConditionStatus = enum.StrEnum("ConditionStatus", {"TRUE": "True", "FALSE": "False", "UNKNOWN": "Unknown"})


class Reason(enum.StrEnum):
    """``reason`` of a condition (CamelCase, as Kubernetes conventions require): the ``Ready``
    reasons (:data:`READY_REASONS`), then the ChatMemory ``Isolated`` ones (:data:`ISOLATED_REASONS`)."""

    #: ChatMemory: every backend object exists and the Secret is written.
    PROVISIONED = "Provisioned"
    #: ChatMemoryStore: the operator reached the server with the admin credentials.
    CONNECTED = "Connected"
    #: The server cannot be reached or refused the credentials; retried with backoff.
    BACKEND_UNAVAILABLE = "BackendUnavailable"
    #: The spec can never work as written (e.g. a kafka block on a Redis store).
    INVALID_SPEC = "InvalidSpec"
    #: The server cannot do what the spec asks (fewer partitions, impossible replication factor).
    NOT_SUPPORTED = "NotSupported"
    #: The referenced store (or a default store) does not exist.
    STORE_NOT_FOUND = "StoreNotFound"
    #: The admin Secret or CA Secret of a store does not exist or lacks a key.
    SECRET_NOT_FOUND = "SecretNotFound"
    #: Deletion is in progress.
    DELETING = "Deleting"
    #: A name the memory asks for (key prefix, topic, database, user) is another memory's, overlaps
    #: it, or names an object on the server that was not created for this memory.
    NAME_CONFLICT = "NameConflict"
    #: The store's ``spec.allowedNamespaces`` does not admit the memory's namespace.
    NAMESPACE_NOT_ALLOWED = "NamespaceNotAllowed"
    #: The memory sets a name (keyPrefix, topic, database, table) and the store does not allow it.
    CUSTOM_NAMES_NOT_ALLOWED = "CustomNamesNotAllowed"
    #: The memory asks for more than the store's ``spec.limits`` allow.
    LIMIT_EXCEEDED = "LimitExceeded"
    #: Isolated=True: the memory has its own least-privilege user.
    OWN_USER = "OwnUser"
    #: Isolated=False: the server has no ACLs (or Kafka without SASL); the memory uses the store's
    #: credentials (or none).
    SHARED_CREDENTIALS = "SharedCredentials"


#: Reasons of the ``Isolated`` condition (ChatMemory only): never a ``Ready`` reason.
ISOLATED_REASONS: Final = (Reason.OWN_USER, Reason.SHARED_CREDENTIALS)
#: Reasons of the ``Ready`` condition.
READY_REASONS: Final = tuple(r for r in Reason if r not in ISOLATED_REASONS)


class DeletionPolicy(enum.StrEnum):
    """What deleting a ChatMemory does to its data."""

    RETAIN = "Retain"
    DELETE = "Delete"


class SecurityProtocol(enum.StrEnum):
    """Kafka ``security.protocol``."""

    PLAINTEXT = "PLAINTEXT"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"
    SSL = "SSL"

    @property
    def uses_sasl(self) -> bool:
        return self.value.startswith("SASL_")


class SaslMechanism(enum.StrEnum):
    """Kafka ``sasl.mechanism`` (SCRAM only: the operator creates SCRAM users per memory)."""

    SCRAM_SHA_512 = "SCRAM-SHA-512"
    SCRAM_SHA_256 = "SCRAM-SHA-256"


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One ``x-kubernetes-validations`` entry; ``field_path`` names the field in the error."""
    out = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    return out


def _validations(*rules: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


def _immutable(field: str) -> dict[str, Any]:
    return _validations(cel("self == oldSelf", f"{field} is immutable: it cannot change after creation"))


def _custom_name(field: str, pattern: str, max_length: int, description: str, *rules: dict[str, str]) -> Any:
    """A name a memory may set instead of the derived one: optional, immutable, pattern-checked."""
    immutable = cel("self == oldSelf", f"{field} is immutable: it cannot change after creation")
    return Field(
        default=None,
        min_length=1,
        max_length=max_length,
        pattern=pattern,
        description=description,
        json_schema_extra=_validations(immutable, *rules),
    )


def _fixed_at_creation(block: str, field: str) -> dict[str, str]:
    """Spec-level rule: ``block.field`` can neither be added nor removed after creation."""
    return cel(
        f"(has(self.{block}) && has(self.{block}.{field})) == "
        f"(has(oldSelf.{block}) && has(oldSelf.{block}.{field}))",
        f"{block}.{field} can only be set when the ChatMemory is created, and cannot be removed",
        f".{block}.{field}",
    )


def _count_blocks() -> str:
    return "(has(self.redis) ? 1 : 0) + (has(self.kafka) ? 1 : 0) + (has(self.tidb) ? 1 : 0)"


class ApiModel(BaseModel):
    """Base of every API model: camelCase on the wire, snake_case in Python, unknown keys ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
    )


Duration = Annotated[
    str,
    Field(
        pattern=DURATION_PATTERN,
        min_length=2,
        max_length=DURATION_MAX_LENGTH,
        json_schema_extra=_validations(
            cel("self.matches('[1-9]')", "must be longer than zero, for example 90s, 30m, 36h or 7d")
        ),
    ),
]


def _check_duration(value: str | None) -> str | None:
    if value is not None:
        parse_duration(value)
    return value


# --------------------------------------------------------------------------------------------------
# ChatMemoryStore
# --------------------------------------------------------------------------------------------------


class CASecretRef(ApiModel):
    """A key of a Secret that holds the PEM CA bundle to trust."""

    name: str = Field(min_length=1, max_length=253, description="Name of the Secret holding the CA bundle.")
    namespace: str = Field(
        min_length=1,
        max_length=63,
        description="Namespace of the Secret (stores are cluster-scoped, so it is always given).",
    )
    key: str = Field(
        default="ca.crt",
        min_length=1,
        max_length=253,
        description="Key in the Secret whose value is the PEM CA bundle.",
    )


class TLSSpec(ApiModel):
    """How the operator (and every memory's client) connects over TLS."""

    enabled: bool = Field(
        default=False,
        description="Connect over TLS (for Kafka, securityProtocol SSL or SASL_SSL also means TLS).",
    )
    ca_secret_ref: CASecretRef | None = Field(
        default=None,
        description=(
            "CA bundle to verify the server's certificate with; omit to use the system trust store. "
            "Copied into every memory's Secret as ca.crt when TLS is on (enabled, or a Kafka SSL protocol)."
        ),
    )
    insecure_skip_verify: bool = Field(
        default=False,
        description="Do not verify the server's certificate. For development only.",
    )


class AdminSecretRef(ApiModel):
    """A Secret with the admin credentials the operator uses (never given to applications).

    Keys: ``username`` (optional: Redis ``default`` user, Kafka and MySQL need it) and ``password``.
    """

    name: str = Field(
        min_length=1,
        max_length=253,
        description="Name of the Secret with the keys `username` (optional) and `password`.",
    )
    namespace: str = Field(
        min_length=1,
        max_length=63,
        description="Namespace of the Secret (stores are cluster-scoped, so it is always given).",
    )


class RedisStoreSpec(ApiModel):
    """A Redis, Valkey or Redis Cluster server. Memories get an ACL user confined to their key prefix."""

    host: str = Field(min_length=1, max_length=253, description="Host name or IP address of the server.")
    port: int = Field(default=6379, ge=1, le=65535, description="TCP port of the server.")
    cluster: bool = Field(
        default=False,
        description="A Redis Cluster: host:port is a seed node, and users are set on every primary.",
    )
    tls: TLSSpec | None = Field(default=None, description="TLS settings; omit for plain TCP.")
    admin_secret_ref: AdminSecretRef | None = Field(
        default=None,
        description=(
            f"Admin credentials: an ACL user allowed {_commands(REDIS_ADMIN_COMMANDS)} on every key "
            f"(`~*`); on a Redis Cluster also {_commands(REDIS_CLUSTER_ADMIN_COMMANDS)}; "
            f"{_commands(REDIS_OPTIONAL_ADMIN_COMMANDS)} (Redis 7.2+) is optional. "
            "Omit for a server without AUTH."
        ),
    )


class KafkaStoreSpec(ApiModel):
    """A Kafka cluster. Memories get a topic and, with SASL, a SCRAM user with ACLs on it."""

    model_config = ConfigDict(
        json_schema_extra=_validations(
            cel(
                "!has(self.securityProtocol) || !self.securityProtocol.startsWith('SASL_') "
                "|| has(self.adminSecretRef)",
                "adminSecretRef is required when securityProtocol is SASL_PLAINTEXT or SASL_SSL",
                ".adminSecretRef",
            )
        )
    )

    bootstrap_servers: str = Field(
        min_length=1,
        max_length=2048,
        pattern=r"^[^,\s]+:[0-9]+(,[^,\s]+:[0-9]+)*$",
        description="Comma-separated host:port list of brokers, e.g. `kafka-0:9092,kafka-1:9092`.",
    )
    security_protocol: SecurityProtocol = Field(
        default=SecurityProtocol.PLAINTEXT,
        description="Kafka security.protocol. With SASL_*, memories get their own SCRAM user and ACLs.",
    )
    sasl_mechanism: SaslMechanism = Field(
        default=SaslMechanism.SCRAM_SHA_512,
        description="SCRAM mechanism of the admin user and of the users created for memories.",
    )
    tls: TLSSpec | None = Field(default=None, description="TLS settings for SSL and SASL_SSL.")
    admin_secret_ref: AdminSecretRef | None = Field(
        default=None,
        description=(
            "Admin credentials (a super user, or one allowed to alter topics, SCRAM users and ACLs). "
            "Required with SASL."
        ),
    )


class TiDBStoreSpec(ApiModel):
    """A TiDB server, or any MySQL-protocol server (MySQL, MariaDB).

    Memories get a database, a user granted only that database and the message table. TiDB expires
    rows with its native TTL; on MySQL/MariaDB the operator uses an event or periodic deletes.
    """

    host: str = Field(min_length=1, max_length=253, description="Host name or IP address of the server.")
    port: int = Field(
        default=4000, ge=1, le=65535, description="TCP port of the server (TiDB 4000, MySQL 3306)."
    )
    tls: TLSSpec | None = Field(default=None, description="TLS settings; omit for plain TCP.")
    admin_secret_ref: AdminSecretRef | None = Field(
        default=None,
        description=(
            "Admin credentials (a user allowed CREATE DATABASE, CREATE USER and GRANT). "
            "Omit to connect as root without a password."
        ),
    )


#: Whether a memory may take over an object that already exists on the server.
AdoptionPolicy = Literal["Allow", "Deny"]
#: Which namespaces may use a store (as a Gateway listener's ``allowedRoutes``).
NamespacesFrom = Literal["All", "Selector"]


class LabelSelectorRequirement(ApiModel):
    """One ``matchExpressions`` entry of a Kubernetes label selector."""

    key: str = Field(min_length=1, max_length=317, description="The label key.")
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="In, NotIn, Exists or DoesNotExist."
    )
    values: list[Annotated[str, Field(description="A label value.")]] = Field(
        default_factory=list, description="The values for In and NotIn (empty for Exists and DoesNotExist)."
    )

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "Exists":
            return self.key in labels
        if self.operator == "DoesNotExist":
            return self.key not in labels
        found = self.key in labels and labels[self.key] in self.values
        return found if self.operator == "In" else not found


class LabelSelector(ApiModel):
    """A Kubernetes label selector: every ``matchLabels`` pair and every expression must hold."""

    match_labels: dict[str, str] = Field(default_factory=dict, description="Labels a namespace must carry.")
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, description="Label requirements a namespace must meet."
    )

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels.items()) and all(
            e.matches(labels) for e in self.match_expressions
        )


class AllowedNamespaces(ApiModel):
    """Which namespaces may have memories on this store."""

    model_config = ConfigDict(
        json_schema_extra=_validations(
            cel(
                "self.from != 'Selector' || has(self.selector)",
                "from: Selector needs a selector",
            )
        )
    )

    from_: NamespacesFrom = Field(
        default="All",
        alias="from",
        description="All: every namespace (the default). Selector: namespaces whose labels match `selector`.",
    )
    selector: LabelSelector | None = Field(
        default=None, description="With `from: Selector`: a label selector on namespaces."
    )

    def admits(self, labels: Mapping[str, str]) -> bool:
        if self.from_ == "All":
            return True
        return self.selector is not None and self.selector.matches(labels)


class StoreLimits(ApiModel):
    """What one memory on this store may ask for at most."""

    max_partitions: int | None = Field(
        default=None,
        ge=1,
        description=f"Kafka: partitions of one memory's topic (default {DEFAULT_MAX_PARTITIONS}).",
    )
    max_ttl: Duration | None = Field(
        default=None, alias="maxTTL", description="The longest TTL a memory may set (no limit when unset)."
    )

    @field_validator("max_ttl")
    @classmethod
    def _ttl_valid(cls, value: str | None) -> str | None:
        return _check_duration(value)


class StoreDefaults(ApiModel):
    """Values used by memories on this store that leave them unset."""

    ttl: Duration | None = Field(
        default=None,
        description="Default time to live of messages, e.g. `7d` (the operator's own default when unset).",
    )
    partitions: int | None = Field(default=None, ge=1, description="Kafka: default number of partitions.")
    replication_factor: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Kafka: default replication factor of new topics. Unset: 3 on a cluster of 3 or more "
            "brokers, else 1."
        ),
    )
    min_insync_replicas: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Kafka: default `min.insync.replicas` of the memories' topics (at most their replication "
            "factor). Unset: 2 for a replication factor of 3 or more, else 1."
        ),
    )

    @field_validator("ttl")
    @classmethod
    def _ttl_valid(cls, value: str | None) -> str | None:
        return _check_duration(value)


class ChatMemoryStoreSpec(ApiModel):
    """One backend server registered for chat memories. Set exactly one of redis, kafka or tidb."""

    model_config = ConfigDict(
        json_schema_extra=_validations(
            cel(f"{_count_blocks()} == 1", "set exactly one of redis, kafka or tidb"),
            cel(
                "has(self.redis) == has(oldSelf.redis) && has(self.kafka) == has(oldSelf.kafka) "
                "&& has(self.tidb) == has(oldSelf.tidb)",
                "the backend of a store cannot change: create another ChatMemoryStore",
            ),
        )
    )

    redis: RedisStoreSpec | None = Field(default=None, description="A Redis, Valkey or Redis Cluster server.")
    kafka: KafkaStoreSpec | None = Field(default=None, description="A Kafka cluster.")
    tidb: TiDBStoreSpec | None = Field(default=None, description="A TiDB, MySQL or MariaDB server.")
    allowed_namespaces: AllowedNamespaces | None = Field(
        default=None,
        description=(
            "Which namespaces may have memories here (default: all). A memory in another namespace gets "
            "Ready=False, reason NamespaceNotAllowed, and nothing on the server; a memory whose namespace "
            "stops matching loses its credentials (its data is retained)."
        ),
    )
    allow_custom_names: bool | None = Field(
        default=None,
        description=(
            "Whether memories may set their own names (redis.keyPrefix, kafka.topic, tidb.database, "
            "tidb.table). Default false: the operator derives every name (reason CustomNamesNotAllowed "
            "otherwise). A memory that already holds a custom name keeps it."
        ),
    )
    adoption: AdoptionPolicy | None = Field(
        default=None,
        description=(
            "Deny (the default): a memory never takes over a topic, database or keys under a prefix that "
            "exist on the server but were not created for it (reason NameConflict). Allow: it may, for "
            "moving existing data in; deletionPolicy Delete still never deletes what a memory adopted."
        ),
    )
    limits: StoreLimits | None = Field(
        default=None, description="What one memory may ask for at most (reason LimitExceeded)."
    )
    defaults: StoreDefaults | None = Field(
        default=None, description="Defaults for memories on this store that leave a setting unset."
    )

    @model_validator(mode="after")
    def _exactly_one_backend(self) -> Self:
        blocks = [k for k in BackendKind if getattr(self, k.value) is not None]
        if len(blocks) != 1:
            raise ValueError(f"set exactly one of redis, kafka or tidb (found {len(blocks)})")
        return self

    @property
    def backend(self) -> BackendKind:
        """Which backend block is set."""
        for kind in BackendKind:
            if getattr(self, kind.value) is not None:
                return kind
        raise AssertionError("validated: exactly one backend block")  # pragma: no cover

    @property
    def tls(self) -> TLSSpec | None:
        """The TLS settings of whichever backend block is set."""
        block: RedisStoreSpec | KafkaStoreSpec | TiDBStoreSpec | None = self.redis or self.kafka or self.tidb
        return block.tls if block is not None else None

    @property
    def admin_secret_ref(self) -> AdminSecretRef | None:
        """The admin Secret reference of whichever backend block is set."""
        block: RedisStoreSpec | KafkaStoreSpec | TiDBStoreSpec | None = self.redis or self.kafka or self.tidb
        return block.admin_secret_ref if block is not None else None


class Condition(ApiModel):
    """A standard Kubernetes condition (metav1.Condition)."""

    type: str = Field(
        min_length=1,
        max_length=316,
        description="Condition type: `Ready` (and on ChatMemory `Isolated`).",
    )
    status: ConditionStatus = Field(description="`True`, `False` or `Unknown`.")
    reason: str = Field(
        default="",
        max_length=1024,
        description=(
            "Machine-readable CamelCase reason. Ready: Provisioned, Connected, BackendUnavailable, "
            "InvalidSpec, NotSupported, StoreNotFound, SecretNotFound, Deleting. Isolated: OwnUser, "
            "SharedCredentials."
        ),
    )
    message: str = Field(default="", max_length=32768, description="What happened, and what to do about it.")
    last_transition_time: datetime | None = Field(
        default=None, description="When the status last changed (RFC 3339)."
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation this condition was computed from."
    )

    @classmethod
    def make(
        cls,
        type: ConditionType | str,
        status: ConditionStatus | bool,
        reason: Reason | str,
        message: str = "",
        *,
        generation: int | None = None,
        now: datetime | None = None,
    ) -> Condition:
        """A condition stamped ``now`` (UTC, whole seconds); ``status`` may be a bool."""
        if isinstance(status, bool):
            status = ConditionStatus.TRUE if status else ConditionStatus.FALSE
        return cls(
            type=str(type),
            status=status,
            reason=str(reason),
            message=message,
            last_transition_time=(now or datetime.now(UTC)).replace(microsecond=0),
            observed_generation=generation,
        )


_CONDITIONS_EXTRA: Final[dict[str, Any]] = {
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
}


def find_condition(conditions: Sequence[Condition], type: ConditionType | str) -> Condition | None:
    """The condition of ``type``, if present."""
    return next((c for c in conditions if c.type == str(type)), None)


def set_condition(conditions: Sequence[Condition], new: Condition) -> list[Condition]:
    """``conditions`` with ``new`` replacing the one of the same type (or appended).

    ``lastTransitionTime`` is kept from the old condition when ``status`` did not change, as
    Kubernetes conventions require. The input is not modified.
    """
    out: list[Condition] = []
    placed = False
    for c in conditions:
        if c.type != new.type:
            out.append(c)
            continue
        if c.status == new.status and c.last_transition_time is not None:
            new = new.model_copy(update={"last_transition_time": c.last_transition_time})
        out.append(new)
        placed = True
    if not placed:
        out.append(new)
    return out


class ChatMemoryStoreStatus(ApiModel):
    """What the operator observed about the store's server."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation the operator last reconciled."
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="`Ready`: can the operator reach the server with the admin credentials?",
        json_schema_extra=_CONDITIONS_EXTRA,
    )
    backend: BackendKind | None = Field(default=None, description="Which backend block the spec sets.")
    version: str | None = Field(
        default=None, description="The server's version, e.g. `7.2.4` or `8.0.11-TiDB-v8.5.0`."
    )
    provider: str | None = Field(
        default=None, description="The server product: redis, valkey, kafka, tidb, mariadb or mysql."
    )
    capabilities: dict[str, bool] = Field(
        default_factory=dict,
        description=(
            "What the server can do, by name: Redis `acl`, `search`, `json`; Kafka `sasl`, `acl`; "
            "TiDB/MySQL `ttl` (native row TTL), `events`."
        ),
    )

    def to_patch(self) -> dict[str, Any]:
        """The status as a JSON-ready dict with wire names, unset fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# --------------------------------------------------------------------------------------------------
# ChatMemory
# --------------------------------------------------------------------------------------------------


class StoreRef(ApiModel):
    """Which ChatMemoryStore holds the memory."""

    name: str = Field(
        default="",
        max_length=253,
        description=(
            "Name of the ChatMemoryStore. Empty: the store annotated "
            '`chatmemory.io/is-default-store: "true"`. Immutable once set.'
        ),
    )


class KafkaMemorySpec(ApiModel):
    """Kafka settings of the memory's topic (only with a Kafka store)."""

    model_config = ConfigDict(
        json_schema_extra=_validations(
            cel(
                "!has(self.minInsyncReplicas) || !has(self.replicationFactor) "
                "|| self.minInsyncReplicas <= self.replicationFactor",
                "minInsyncReplicas cannot exceed replicationFactor (no write could ever be acknowledged)",
                ".minInsyncReplicas",
            )
        )
    )

    partitions: int | None = Field(
        default=None,
        ge=1,
        description="Partitions of the topic; may grow, never decrease. Default: the store's, else 1.",
        json_schema_extra=_validations(
            cel("self >= oldSelf", "partitions can grow but never decrease (Kafka cannot remove partitions)")
        ),
    )
    replication_factor: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Replication factor of the topic (at most the brokers). Default: the store's, else 3 on a "
            "cluster of 3 or more brokers, else 1."
        ),
    )
    min_insync_replicas: int | None = Field(
        default=None,
        ge=1,
        description=(
            "`min.insync.replicas` of the topic: replicas that must have a write before an `acks=all` "
            "producer is answered (at most the replication factor). Default: the store's, else 2 for a "
            "replication factor of 3 or more, else 1."
        ),
    )
    topic: str | None = _custom_name(
        "topic",
        KAFKA_TOPIC_PATTERN,
        KAFKA_TOPIC_MAX_LENGTH,
        "Topic name. Default: derived from the namespace and name. Immutable.",
        cel("self != '.' && self != '..'", "topic cannot be '.' or '..'"),
    )

    @field_validator("topic")
    @classmethod
    def _not_dots(cls, value: str | None) -> str | None:
        if value in (".", ".."):
            raise ValueError("topic cannot be '.' or '..'")
        return value

    @model_validator(mode="after")
    def _insync_within_replicas(self) -> Self:
        low, high = self.min_insync_replicas, self.replication_factor
        if low is not None and high is not None and low > high:
            raise ValueError(
                f"minInsyncReplicas ({low}) cannot exceed replicationFactor ({high}): no write could "
                "ever be acknowledged"
            )
        return self


class RedisMemorySpec(ApiModel):
    """Redis settings of the memory (only with a Redis store)."""

    key_prefix: str | None = _custom_name(
        "keyPrefix",
        KEY_PREFIX_PATTERN,
        KEY_PREFIX_MAX_LENGTH,
        "Prefix of every key of the memory; its user can touch only these keys. "
        "Default: derived from the namespace and name. Immutable.",
    )


class TiDBMemorySpec(ApiModel):
    """TiDB/MySQL settings of the memory (only with a TiDB store)."""

    database: str | None = _custom_name(
        "database",
        SQL_IDENTIFIER_PATTERN,
        SQL_IDENTIFIER_MAX_LENGTH,
        "Database of the memory. Default: derived from the namespace and name. Immutable.",
        cel(
            "!(self.lowerAscii() in [" + ", ".join(f"'{s}'" for s in SYSTEM_SCHEMAS) + "])",
            "database cannot be a system schema",
        ),
    )
    table: str | None = _custom_name(
        "table",
        SQL_IDENTIFIER_PATTERN,
        SQL_IDENTIFIER_MAX_LENGTH,
        "Table of the messages. Default: derived from the name. Immutable.",
    )

    @field_validator("database")
    @classmethod
    def _not_system(cls, value: str | None) -> str | None:
        if value is not None and value.lower() in SYSTEM_SCHEMAS:
            raise ValueError(f"database {value!r} is a system schema")
        return value


#: How long the previous credentials keep working after a rotation when the memory does not say.
DEFAULT_GRACE_PERIOD: Final = "5m"


class RotationSpec(ApiModel):
    """When the memory's password changes, and how long the previous one keeps working."""

    grace_period: Annotated[str, Field(pattern=DURATION_PATTERN, max_length=DURATION_MAX_LENGTH)] | None = (
        Field(
            default=None,
            description=(
                "How long the previous password keeps working after a rotation, so that pods pick up "
                "the new Secret first (the kubelet syncs a mounted Secret within about a minute). Default "
                f"{DEFAULT_GRACE_PERIOD}; `0s` stops it at once. Redis keeps both passwords on the memory's "
                "user; TiDB/MySQL/MariaDB and Kafka SCRAM (one password per user) use two users in turn, "
                "the previous one keeping the previous password until the grace period ends."
            ),
        )
    )
    every: Duration | None = Field(
        default=None,
        description=(
            "Rotate on its own this long after the last rotation (or the creation), e.g. `30d`. "
            "Default: the operator's CHATMEMORY_ROTATION_EVERY, else never."
        ),
    )

    @field_validator("grace_period")
    @classmethod
    def _grace_valid(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value, allow_zero=True)
        return value

    @field_validator("every")
    @classmethod
    def _every_valid(cls, value: str | None) -> str | None:
        return _check_duration(value)


class ChatMemorySpec(ApiModel):
    """A chat memory: a TTL'd, isolated place for an application's chat histories, and its Secret."""

    model_config = ConfigDict(
        json_schema_extra=_validations(
            cel(
                f"{_count_blocks()} <= 1",
                "set at most one of redis, kafka or tidb: the block of the store's backend",
            ),
            cel(
                "!has(oldSelf.storeRef) || !has(oldSelf.storeRef.name) || oldSelf.storeRef.name == '' "
                "|| (has(self.storeRef) && has(self.storeRef.name) "
                "&& self.storeRef.name == oldSelf.storeRef.name)",
                "storeRef.name is immutable once set: create another ChatMemory to use another store",
                ".storeRef.name",
            ),
            cel(
                "!has(oldSelf.kafka) || !has(oldSelf.kafka.partitions) "
                "|| (has(self.kafka) && has(self.kafka.partitions))",
                "kafka.partitions cannot be removed once set (partitions never decrease)",
                ".kafka.partitions",
            ),
            _fixed_at_creation("kafka", "topic"),
            _fixed_at_creation("redis", "keyPrefix"),
            _fixed_at_creation("tidb", "database"),
            _fixed_at_creation("tidb", "table"),
        )
    )

    store_ref: StoreRef | None = Field(
        default=None, description="The ChatMemoryStore to provision on; omit to use the default store."
    )
    ttl: Duration | None = Field(
        default=None,
        description=(
            "How long messages are kept: whole numbers with units d, h, m, s in that order, e.g. "
            "`90s`, `30m`, `36h`, `7d`, `1h30m`. Default: the store's defaults.ttl, else 7d."
        ),
    )
    max_messages_per_session: int | None = Field(
        default=None, ge=1, description="Keep at most this many messages per session (the oldest go first)."
    )
    rotation: RotationSpec | None = Field(
        default=None,
        description=(
            "Credential rotation: scheduled (`every`) and with overlap (`gracePeriod`). The annotation "
            "chatmemory.io/rotate-credentials rotates at once."
        ),
    )
    deletion_policy: DeletionPolicy = Field(
        default=DeletionPolicy.RETAIN,
        description=(
            "On delete: `Retain` keeps the data and removes only the memory's user; "
            "`Delete` also removes the topic, keys or database."
        ),
    )
    secret_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=DNS1123_SUBDOMAIN_PATTERN,
        description="Name of the connection Secret written in this namespace. Default: `<name>-chatmemory`.",
    )
    kafka: KafkaMemorySpec | None = Field(default=None, description="Kafka settings (Kafka stores only).")
    redis: RedisMemorySpec | None = Field(default=None, description="Redis settings (Redis stores only).")
    tidb: TiDBMemorySpec | None = Field(default=None, description="TiDB/MySQL settings (TiDB stores only).")

    @field_validator("ttl")
    @classmethod
    def _ttl_valid(cls, value: str | None) -> str | None:
        return _check_duration(value)

    @model_validator(mode="after")
    def _at_most_one_backend(self) -> Self:
        blocks = [k.value for k in BackendKind if getattr(self, k.value) is not None]
        if len(blocks) > 1:
            raise ValueError(f"set at most one of redis, kafka or tidb (found {', '.join(blocks)})")
        return self

    @property
    def backend(self) -> BackendKind | None:
        """The backend block that is set, or ``None`` (then the store decides)."""
        for kind in BackendKind:
            if getattr(self, kind.value) is not None:
                return kind
        return None

    @property
    def store_name(self) -> str:
        """``storeRef.name``, or ``""`` for the default store."""
        return self.store_ref.name if self.store_ref is not None else ""

    @property
    def ttl_seconds(self) -> int | None:
        """``ttl`` in seconds, or ``None`` when unset (then the store's default applies)."""
        return parse_duration(self.ttl) if self.ttl is not None else None


class ServiceBindingRef(ApiModel):
    """The Service Binding ``status.binding``: the Secret an application mounts."""

    name: str = Field(description="Name of the connection Secret in the memory's namespace.")


class Provisioned(ApiModel):
    """What exists on the backend for this memory (no secrets)."""

    topic: str | None = Field(default=None, description="Kafka: the topic.")
    partitions: int | None = Field(default=None, description="Kafka: the topic's partitions.")
    replication_factor: int | None = Field(default=None, description="Kafka: the topic's replication factor.")
    min_insync_replicas: int | None = Field(
        default=None, description="Kafka: the topic's `min.insync.replicas`."
    )
    consumer_group_prefix: str | None = Field(
        default=None, description="Kafka: the consumer-group prefix the memory's user may use."
    )
    key_prefix: str | None = Field(default=None, description="Redis: the key prefix.")
    database: str | None = Field(default=None, description="TiDB/MySQL: the database.")
    table: str | None = Field(default=None, description="TiDB/MySQL: the message table.")
    username: str | None = Field(default=None, description="The memory's own user on the backend.")
    isolated: bool | None = Field(
        default=None,
        description="True: the memory has its own least-privilege user; false: it shares the store's.",
    )
    expiry: str | None = Field(
        default=None,
        description=(
            "How expired messages are removed: `redis-expire`, `kafka-retention`, `tidb-ttl` "
            "or `mysql-event`."
        ),
    )

    def names(self) -> set[str]:
        """The names this status says the memory was given (prefix, topic, database, user)."""
        values = (self.key_prefix, self.topic, self.database, self.username)
        return {v for v in values if v}


class ChatMemoryStatus(ApiModel):
    """What the operator provisioned and whether the memory is usable."""

    observed_generation: int | None = Field(
        default=None, ge=0, description="The metadata.generation the operator last reconciled."
    )
    backend: BackendKind | None = Field(default=None, description="The backend of the resolved store.")
    store: str | None = Field(default=None, description="Name of the resolved ChatMemoryStore.")
    ttl: str | None = Field(default=None, description="The effective TTL, e.g. `7d`.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description=(
            "`Ready` (reason Provisioned, BackendUnavailable, InvalidSpec, NotSupported, StoreNotFound, "
            "SecretNotFound or Deleting) and `Isolated` (True, OwnUser: the memory has its own user; "
            "False, SharedCredentials: it uses the store's credentials, or none)."
        ),
        json_schema_extra=_CONDITIONS_EXTRA,
    )
    binding: ServiceBindingRef | None = Field(
        default=None, description="The connection Secret (Service Binding provisioned service)."
    )
    provisioned: Provisioned | None = Field(default=None, description="What was provisioned on the backend.")
    credentials_rotation: str | None = Field(
        default=None,
        description="The chatmemory.io/rotate-credentials value the current password was issued for.",
    )
    rotated_at: datetime | None = Field(
        default=None, description="When the current password was issued by a rotation (RFC 3339)."
    )
    previous_credentials_until: datetime | None = Field(
        default=None,
        description=(
            "While a rotation's grace period runs: when the previous password stops working (RFC 3339); "
            "unset otherwise."
        ),
    )

    def to_patch(self) -> dict[str, Any]:
        """The status as a JSON-ready dict with wire names, unset fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


# --------------------------------------------------------------------------------------------------
# Whole resources (parsing what the API server / kopf hands over)
# --------------------------------------------------------------------------------------------------


class ObjectMeta(ApiModel):
    """The parts of ``metadata`` the operator reads."""

    name: str = ""
    namespace: str | None = None
    uid: str = ""
    generation: int = 0
    resource_version: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    deletion_timestamp: str | None = None


def to_plain(value: Any) -> Any:
    """Deep-copy mappings and sequences (kopf's ``Body`` views) into plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


class Resource(ApiModel):
    """What both kinds share: the API version, the metadata the operator reads, and parsing."""

    api_version: str = API_VERSION
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Self:
        """Parse a body from the API server or kopf; raises ``pydantic.ValidationError``."""
        return cls.model_validate(to_plain(body))


class ChatMemoryStore(Resource):
    """A whole ChatMemoryStore object."""

    kind: str = STORE_KIND
    spec: ChatMemoryStoreSpec
    status: ChatMemoryStoreStatus = Field(default_factory=ChatMemoryStoreStatus)

    @property
    def is_default(self) -> bool:
        """Annotated ``chatmemory.io/is-default-store: "true"``."""
        return is_default_store({"metadata": {"annotations": self.metadata.annotations}})


def is_default_store(body: Mapping[str, Any]) -> bool:
    """Whether a store body (parsed or not) is annotated ``chatmemory.io/is-default-store: "true"``."""
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(DEFAULT_STORE_ANNOTATION, "")).strip().lower() == "true"


class ChatMemory(Resource):
    """A whole ChatMemory object."""

    kind: str = MEMORY_KIND
    spec: ChatMemorySpec = Field(default_factory=ChatMemorySpec)
    status: ChatMemoryStatus = Field(default_factory=ChatMemoryStatus)

    @property
    def secret_name(self) -> str:
        """``spec.secretName``, else ``<metadata.name>-chatmemory``."""
        return self.spec.secret_name or default_secret_name(self.metadata.name)

    @property
    def rotation_token(self) -> str:
        """The ``chatmemory.io/rotate-credentials`` annotation, ``""`` when absent."""
        return self.metadata.annotations.get(ROTATE_CREDENTIALS_ANNOTATION, "")


def default_secret_name(memory_name: str) -> str:
    """The Secret name used when ``spec.secretName`` is unset."""
    return f"{memory_name}{SECRET_NAME_SUFFIX}"


__all__ = [
    "API_VERSION",
    "CATEGORIES",
    "DEFAULT_GRACE_PERIOD",
    "DEFAULT_MAX_PARTITIONS",
    "DEFAULT_PARTITIONS",
    "DEFAULT_REPLICATION_FACTOR",
    "DEFAULT_STORE_ANNOTATION",
    "DEFAULT_TTL",
    "FORCE_DELETE_ANNOTATION",
    "GROUP",
    "ISOLATED_REASONS",
    "MEMORY_KIND",
    "MEMORY_PLURAL",
    "MEMORY_SHORT_NAMES",
    "MEMORY_SINGULAR",
    "PROVISIONED_SERVICE_LABEL",
    "READY_REASONS",
    "REDIS_ADMIN_COMMANDS",
    "REDIS_CLUSTER_ADMIN_COMMANDS",
    "REDIS_OPTIONAL_ADMIN_COMMANDS",
    "ROTATE_CREDENTIALS_ANNOTATION",
    "SECRET_NAME_SUFFIX",
    "STORE_KIND",
    "STORE_PLURAL",
    "STORE_SHORT_NAMES",
    "STORE_SINGULAR",
    "VERSION",
    "AdminSecretRef",
    "AdoptionPolicy",
    "AllowedNamespaces",
    "CASecretRef",
    "ChatMemory",
    "ChatMemorySpec",
    "ChatMemoryStatus",
    "ChatMemoryStore",
    "ChatMemoryStoreSpec",
    "ChatMemoryStoreStatus",
    "Condition",
    "ConditionStatus",
    "ConditionType",
    "DeletionPolicy",
    "KafkaMemorySpec",
    "KafkaStoreSpec",
    "LabelSelector",
    "LabelSelectorRequirement",
    "NamespacesFrom",
    "ObjectMeta",
    "Provisioned",
    "Reason",
    "RedisMemorySpec",
    "RedisStoreSpec",
    "Resource",
    "RotationSpec",
    "SaslMechanism",
    "SecurityProtocol",
    "ServiceBindingRef",
    "StoreDefaults",
    "StoreLimits",
    "StoreRef",
    "TLSSpec",
    "TiDBMemorySpec",
    "TiDBStoreSpec",
    "default_secret_name",
    "find_condition",
    "is_default_store",
    "set_condition",
    "to_plain",
]
