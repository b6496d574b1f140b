"""The binding contract: the keys of a ChatMemory's Secret, versioned, defined once.

The operator (``chatmemory_operator``) builds a :class:`Binding` and writes
:meth:`Binding.to_secret_data` into the memory's Secret; the SDK's loaders read a Secret (mounted
files, environment or the Kubernetes API) back through :meth:`Binding.from_mapping`. Neither side
spells a key anywhere else. The layout follows the Service Binding spec: ``type``, ``provider``,
``host``, ``port``, ``username``, ``password``, ``uri`` plus the memory's own keys.

Versioning: :data:`CONTRACT_VERSION` is written as ``contract_version``. Readers accept every
version in :data:`SUPPORTED_CONTRACT_VERSIONS` and refuse others with a clear error, so an old SDK
never misreads a newer Secret. Adding an optional key keeps the version; renaming or changing the
meaning of a key bumps it.

What a memory's key prefix and TTL become on a server is defined here too, once for both sides:
:func:`key_pattern` (the Redis keys of a memory, for the operator's ACL and its scans as admin) and
:func:`retention_ms` (a Kafka topic's retention for a TTL).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Annotated, Any, Final, Protocol

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from chatmemory.errors import BindingError

CONTRACT_VERSION: Final = "1"
SUPPORTED_CONTRACT_VERSIONS: Final = frozenset({"1"})

#: The Kubernetes Secret ``type`` prefix from the Service Binding spec.
SECRET_TYPE_PREFIX: Final = "servicebinding.io/"


class BackendKind(enum.StrEnum):
    """Which backend a memory lives on; also the name of the spec block in the CRDs."""

    REDIS = "redis"
    KAFKA = "kafka"
    TIDB = "tidb"


#: Service Binding well-known ``type`` per backend (TiDB speaks the MySQL protocol).
BINDING_TYPES: Final[Mapping[BackendKind, str]] = {
    BackendKind.REDIS: "redis",
    BackendKind.KAFKA: "kafka",
    BackendKind.TIDB: "mysql",
}
_KIND_BY_TYPE: Final = {v: k for k, v in BINDING_TYPES.items()}


class Key(enum.StrEnum):
    """Every key the Secret may carry. Values are the file names of a mounted Secret."""

    CONTRACT_VERSION = "contract_version"
    TYPE = "type"
    PROVIDER = "provider"
    HOST = "host"
    PORT = "port"
    USERNAME = "username"
    PASSWORD = "password"
    URI = "uri"
    TLS = "tls"
    CA_CERT = "ca.crt"
    INSECURE_SKIP_VERIFY = "insecure_skip_verify"
    TTL_SECONDS = "ttl_seconds"
    MAX_MESSAGES = "max_messages"
    # Redis
    KEY_PREFIX = "key_prefix"
    CLUSTER = "cluster"
    ISOLATED = "isolated"
    REDIS_WAIT_REPLICAS = "redis_wait_replicas"
    REDIS_WAIT_TIMEOUT_MS = "redis_wait_timeout_ms"
    # Kafka
    BOOTSTRAP_SERVERS = "bootstrap_servers"
    TOPIC = "topic"
    SECURITY_PROTOCOL = "security_protocol"
    SASL_MECHANISM = "sasl_mechanism"
    CONSUMER_GROUP_PREFIX = "consumer_group_prefix"
    PARTITION_HISTORY = "partition_history"
    # TiDB / MySQL
    DATABASE = "database"
    TABLE = "table"
    CHECKPOINT_TABLE_PREFIX = "checkpoint_table_prefix"
    STORE_TABLE_PREFIX = "store_table_prefix"


_BOOL_TRUE = {"true", "1", "yes"}
_BOOL_FALSE = {"false", "0", "no", ""}


def _parse_bool(value: str) -> bool:
    v = value.strip().lower()
    if v in _BOOL_TRUE:
        return True
    if v in _BOOL_FALSE:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


class CredentialSource(Protocol):
    """Reads a memory's current user name and password again (see :mod:`chatmemory.loaders`)."""

    def credentials(self) -> tuple[str, str]: ...

    def refresh(self) -> None:
        """Read the source again at the next :meth:`credentials` (the server refused the last ones)."""


class Binding(BaseModel):
    """One ChatMemory's connection details: what the operator writes and the SDK reads."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    contract_version: str = CONTRACT_VERSION
    backend: BackendKind
    provider: str = Field(description="Server flavour: redis, valkey, kafka, tidb, mariadb, mysql.")
    host: str = ""
    port: Annotated[int, Field(ge=0, le=65535)] = 0
    username: str = ""
    password: str = Field(default="", repr=False)
    uri: str = Field(default="", repr=False)
    tls: bool = False
    ca_cert: str = Field(default="", repr=False)
    insecure_skip_verify: bool = False
    ttl_seconds: Annotated[int, Field(ge=0)] | None = None
    max_messages: Annotated[int, Field(ge=1)] | None = None
    # Redis
    key_prefix: str = ""
    cluster: bool = False
    isolated: bool = True
    redis_wait_replicas: Annotated[int, Field(ge=0)] | None = Field(
        default=None,
        description="Replicas that must confirm each turn (WAIT after the turn's EXEC); unset or 0: none.",
    )
    redis_wait_timeout_ms: Annotated[int, Field(ge=1)] | None = Field(
        default=None,
        description="Milliseconds the turn's WAIT may block for those replicas (default 1000).",
    )
    # Kafka
    bootstrap_servers: str = ""
    topic: str = ""
    security_protocol: str = ""  # Kafka only; empty means PLAINTEXT
    sasl_mechanism: str = ""
    consumer_group_prefix: str = ""
    partition_history: str = Field(
        default="",
        description="Every partition count the topic has had, ascending ('1,3'); empty when it never "
        "grew. A session's key maps to another partition after growth, so readers look in each.",
    )
    # TiDB / MySQL
    database: str = ""
    table: str = ""
    checkpoint_table_prefix: str = ""
    store_table_prefix: str = Field(
        default="",
        description="Prefix of the LangGraph store's tables (<prefix>store_items, <prefix>store_vectors); "
        "empty when the operator that wrote the Secret predates the store.",
    )

    @field_validator("contract_version")
    @classmethod
    def _known_version(cls, v: str) -> str:
        if v not in SUPPORTED_CONTRACT_VERSIONS:
            raise ValueError(
                f"contract version {v!r} is not supported by this chatmemory SDK "
                f"(supported: {', '.join(sorted(SUPPORTED_CONTRACT_VERSIONS))}); upgrade the SDK"
            )
        return v

    @field_validator("partition_history")
    @classmethod
    def _counts(cls, v: str) -> str:
        if v and not all(p.isdigit() and int(p) > 0 for p in v.split(",")):
            raise ValueError(f"expected partition counts like '1,3', got {v!r}")
        return v

    @property
    def partition_counts(self) -> tuple[int, ...]:
        """The topic's partition counts over time (empty: it never grew)."""
        return tuple(int(p) for p in self.partition_history.split(",")) if self.partition_history else ()

    @property
    def secret_type(self) -> str:
        """The Kubernetes Secret type, ``servicebinding.io/<type>``."""
        return SECRET_TYPE_PREFIX + BINDING_TYPES[self.backend]

    def to_secret_data(self) -> dict[str, str]:
        """The Secret's ``stringData``: every key as text, empty optional keys left out."""
        out: dict[str, str] = {
            Key.CONTRACT_VERSION.value: self.contract_version,
            Key.TYPE.value: BINDING_TYPES[self.backend],
        }
        for key in Key:
            if key in (Key.CONTRACT_VERSION, Key.TYPE):
                continue
            value = getattr(self, _FIELD_BY_KEY[key])
            if value is None or value == "":
                continue
            if isinstance(value, bool):
                out[key.value] = "true" if value else "false"
            else:
                out[key.value] = str(value)
        return out

    #: Where the binding can be read again (a mounted Secret, the Kubernetes API), so clients pick
    #: up rotated credentials; None for a binding that cannot change (variables, a URL, a literal).
    _source: CredentialSource | None = PrivateAttr(default=None)

    def with_source(self, source: CredentialSource | None) -> Binding:
        """This binding, its credentials followed through ``source`` on every new connection."""
        copy = self.model_copy()
        copy._source = source
        return copy

    @property
    def source(self) -> CredentialSource | None:
        return self._source

    def credentials(self) -> tuple[str, str]:
        """(user name, password) as the binding's source says now; the binding's own without one."""
        return self._source.credentials() if self._source is not None else (self.username, self.password)

    @classmethod
    def from_mapping(cls, data: Mapping[str, str], *, source: str) -> Binding:
        """Parse a Secret's keys (already decoded to text). Errors name the key and the source."""
        if Key.TYPE.value not in data:
            raise BindingError(f"missing key {Key.TYPE.value!r}", key=Key.TYPE.value, source=source)
        btype = data[Key.TYPE.value].strip()
        if btype not in _KIND_BY_TYPE:
            raise BindingError(
                f"key {Key.TYPE.value!r} is {btype!r}; expected one of {sorted(_KIND_BY_TYPE)}",
                key=Key.TYPE.value,
                source=source,
            )
        if Key.CONTRACT_VERSION.value not in data:
            raise BindingError(
                f"missing key {Key.CONTRACT_VERSION.value!r}", key=Key.CONTRACT_VERSION.value, source=source
            )
        fields: dict[str, Any] = {"backend": _KIND_BY_TYPE[btype]}
        known = {k.value: k for k in Key}
        for raw_key, raw in data.items():
            key = known.get(raw_key)
            if key is None or key is Key.TYPE:
                continue  # unknown keys are tolerated: a newer operator may add optional ones
            name = _FIELD_BY_KEY[key]
            value = raw.strip() if key not in (Key.PASSWORD, Key.CA_CERT) else raw
            if name in _BOOL_FIELDS:
                try:
                    fields[name] = _parse_bool(value)
                except ValueError as e:
                    raise BindingError(f"key {raw_key!r}: {e}", key=raw_key, source=source) from None
            else:
                fields[name] = value
        for name in _REQUIRED[fields["backend"]]:
            if not fields.get(name):
                key_name = _KEY_BY_FIELD[name]
                raise BindingError(
                    f"missing key {key_name!r} (required for a {btype} binding)", key=key_name, source=source
                )
        try:
            return cls.model_validate(fields)
        except ValidationError as e:
            err = e.errors()[0]
            name = str(err["loc"][0]) if err["loc"] else ""
            key_name = _KEY_BY_FIELD.get(name, name)
            raise BindingError(f"key {key_name!r}: {err['msg']}", key=key_name, source=source) from None


_FIELD_BY_KEY: Final = {k: ("ca_cert" if k is Key.CA_CERT else k.value) for k in Key}
_KEY_BY_FIELD: Final = {v: k.value for k, v in _FIELD_BY_KEY.items()}
_BOOL_FIELDS: Final = frozenset({"tls", "insecure_skip_verify", "cluster", "isolated"})
_REQUIRED: Final[Mapping[BackendKind, tuple[str, ...]]] = {
    BackendKind.REDIS: ("host", "port"),
    BackendKind.KAFKA: ("bootstrap_servers", "topic"),
    BackendKind.TIDB: ("host", "port", "username", "database", "table"),
}


# -- what a memory's TTL and key prefix mean on each backend (the operator and the SDK both call these)

_GLOB_SPECIAL: Final = frozenset("*?[]\\")


def glob_escape(text: str) -> str:
    """Escape Redis glob metacharacters so ``text`` matches only itself in SCAN MATCH or an ACL key
    pattern."""
    return "".join("\\" + c if c in _GLOB_SPECIAL else c for c in text)


def key_pattern(key_prefix: str) -> str:
    """The glob every Redis key of a memory matches: its escaped key prefix followed by ``*``.

    The operator grants it in the memory user's ACL (``~<pattern>``) and scans it on delete; the SDK
    keeps every key it writes under the prefix.

    Raises:
        ValueError: an empty prefix (the pattern would match every key of the server).
    """
    if not key_prefix:
        raise ValueError("a memory's key prefix must not be empty: its pattern would match every key")
    return glob_escape(key_prefix) + "*"


def retention_ms(ttl_seconds: int) -> int:
    """Kafka's ``retention.ms`` for a memory TTL: the topic deletes records that much older."""
    return ttl_seconds * 1000
