"""The Kafka backend: a topic per ChatMemory and, on SASL stores, a SCRAM user with ACLs on it only.

Called by the reconcile layer through :class:`~chatmemory_operator.backends.base.Backend` (built by
:func:`chatmemory_operator.backends.build_backends`), with confluent-kafka's ``AdminClient``:

- the topic, with the plan's partitions and replication factor, ``retention.ms`` from the TTL,
  ``cleanup.policy=delete`` and ``min.insync.replicas``; partitions grow on update; a decrease, a
  replication factor change, a factor above the broker count or a ``min.insync.replicas`` above
  the factor is refused (:class:`NotSupportedError`) before anything changes; a topic deleted by
  hand comes back, a changed ``retention.ms`` / ``cleanup.policy`` / ``min.insync.replicas`` is
  reset;
- the replication the memory and its store leave unset fits the cluster (:func:`replication`):
  on 3 or more brokers a new topic gets replication factor 3 and ``min.insync.replicas=2`` (an
  ``acks=all`` write survives one broker down and is on two brokers when answered), on fewer 1
  and 1; an existing topic keeps the factor it has;
- with SASL (``SASL_PLAINTEXT`` / ``SASL_SSL``): a SCRAM credential for the memory's user (the
  store's mechanism) and exactly these ACLs, any other ACL of that user being removed:
  ``TOPIC <topic> LITERAL: READ, WRITE, DESCRIBE`` and ``GROUP <consumer_group_prefix> PREFIXED:
  READ, DESCRIBE``. No IDEMPOTENT_WRITE on the cluster: since Kafka 3.0 (KIP-679) an idempotent
  producer needs only WRITE on the topic.

``Delete`` removes the topic, the ACLs and the credential; ``Retain`` the ACLs and the credential.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

from chatmemory.contract import BackendKind, Binding
from chatmemory.contract import retention_ms as contract_retention_ms
from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported, not in __all__
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from chatmemory_operator import naming
from chatmemory_operator.api import v1alpha1 as api
from chatmemory_operator.backends import base
from chatmemory_operator.backends._common import CONNECT_TIMEOUT, REQUEST_TIMEOUT, ClientCache, redact
from chatmemory_operator.backends.base import DeletionPolicy, Drift, MemoryPlan, Observed, Prior, StoreInfo
from chatmemory_operator.errors import BackendUnavailable, InvalidSpec, LimitExceeded, NotSupportedError

log = logging.getLogger(__name__)

_TOPIC_RE: Final = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
#: Seconds the reachability probe waits before the store is declared unavailable.
PROBE_TIMEOUT: Final = CONNECT_TIMEOUT + 2
SETTLE_TIMEOUT: Final = 10.0  # a new topic's metadata reaches every broker well within this
#: PBKDF2 iterations of the SCRAM credential (Kafka's minimum is 4096).
SCRAM_ITERATIONS: Final = 8192
#: Brokers from which a topic whose replication nobody set is replicated (a cluster, not one node).
CLUSTER_BROKERS: Final = 3
#: That topic's replication factor and ``min.insync.replicas`` on such a cluster.
CLUSTER_REPLICATION_FACTOR: Final = 3
CLUSTER_MIN_INSYNC_REPLICAS: Final = 2
TOPIC_OPERATIONS: Final = (AclOperation.READ, AclOperation.WRITE, AclOperation.DESCRIBE)
GROUP_OPERATIONS: Final = (AclOperation.READ, AclOperation.DESCRIBE)
_UNREACHABLE: Final = frozenset(
    {
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._AUTHENTICATION,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.BROKER_NOT_AVAILABLE,
    }
)
_DENIED: Final = frozenset(
    {
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
    }
)


@dataclass(frozen=True, kw_only=True)
class KafkaConnection(base.StoreConnection):
    """A Kafka store: its bootstrap servers and how the admin authenticates."""

    bootstrap_servers: str
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"

    @property
    def address(self) -> str:
        return self.bootstrap_servers


@dataclass(frozen=True, kw_only=True)
class KafkaPlan(MemoryPlan):
    """A memory on Kafka: its topic and the consumer-group prefix its user may use."""

    topic: str
    partitions: int = 1
    #: None: nobody set it, the cluster decides (see :func:`replication`)
    replication_factor: int | None = None
    #: None: nobody set it, derived from the replication factor
    min_insync_replicas: int | None = None
    consumer_group_prefix: str = ""
    #: where each set value comes from, for the messages that refuse it
    replication_field: str = "spec.kafka.replicationFactor"
    min_insync_field: str = "spec.kafka.minInsyncReplicas"


@dataclass(frozen=True)
class Replication:
    """A topic's effective replication factor and ``min.insync.replicas``."""

    factor: int
    min_insync: int


def default_min_insync(factor: int) -> int:
    """``min.insync.replicas`` for a factor nobody paired one with: 2 from 3 replicas (one broker
    may be down and an acknowledged write is still on two), else 1 (with 2 replicas, 2 would stop
    every ``acks=all`` write while one broker restarts)."""
    return CLUSTER_MIN_INSYNC_REPLICAS if factor >= CLUSTER_REPLICATION_FACTOR else 1


def replication(plan: KafkaPlan, brokers: int, existing_factor: int | None = None) -> Replication:
    """The replication of the memory's topic on a cluster of ``brokers`` brokers, whose topic
    already has ``existing_factor`` replicas (None: no topic yet). Pure.

    Unset, the factor is the topic's own when it exists (changing it needs a reassignment), else
    3 on 3 or more brokers and 1 below. Raises :class:`NotSupportedError` naming the field when the
    cluster cannot do it: a set factor above the brokers (for a new topic) or different from the
    topic's, a ``min.insync.replicas`` above the factor.
    """
    if plan.replication_factor is not None:
        factor = plan.replication_factor
        if existing_factor is None and factor > brokers:
            raise NotSupportedError(
                f"{plan.replication_field}: replication factor {factor} needs at least that many "
                f"brokers, but the Kafka cluster has {brokers}: set it to {brokers} or less"
            )
        if existing_factor is not None and factor != existing_factor:
            raise NotSupportedError(
                f"{plan.replication_field}: topic {plan.topic!r} has replication factor {existing_factor}; "
                f"changing it needs a partition reassignment, which the operator does not do: set it back "
                f"to {existing_factor}, or reassign with kafka-reassign-partitions"
            )
    elif existing_factor is not None:
        factor = existing_factor
    else:
        factor = CLUSTER_REPLICATION_FACTOR if brokers >= CLUSTER_BROKERS else api.DEFAULT_REPLICATION_FACTOR
    min_insync = plan.min_insync_replicas or default_min_insync(factor)  # never 0: validate_plan
    if min_insync > factor:
        raise NotSupportedError(
            f"{plan.min_insync_field}: min.insync.replicas {min_insync} is more than the topic's "
            f"replication factor {factor}: no acks=all write could ever be acknowledged; set it to "
            f"{factor} or less (the cluster has {brokers} brokers)"
        )
    return Replication(factor, min_insync)


def retention_ms(ttl_seconds: int) -> str:
    """``retention.ms`` for a ttl (the SDK's rule, shared with a history that creates its topic)."""
    return str(contract_retention_ms(ttl_seconds))


def topic_configs(ttl_seconds: int, min_insync_replicas: int | None = None) -> dict[str, str]:
    """The topic configs the operator owns (``min.insync.replicas`` once the cluster decided it)."""
    configs = {"retention.ms": retention_ms(ttl_seconds), "cleanup.policy": "delete"}
    if min_insync_replicas is not None:
        configs["min.insync.replicas"] = str(min_insync_replicas)
    return configs


def uses_sasl(store: KafkaConnection) -> bool:
    return store.security_protocol.upper().startswith("SASL_")


def with_partition_history(binding: Binding, prior: Prior, plan: KafkaPlan) -> Binding:
    """Record in the binding every partition count the topic has had (``partition_history``), the
    current one included.

    Growing a topic moves a session's key to another partition; the SDK reads the partitions the
    key mapped to under each count, so a session's older messages stay in its history. The counts
    come from the Secret written before and from ``status.provisioned.partitions``.
    """
    counts = {plan.partitions}
    current = prior.binding
    if current is not None and current.topic == plan.topic:
        counts.update(current.partition_counts)
        if prior.provisioned is not None and prior.provisioned.partitions:
            counts.add(prior.provisioned.partitions)
    # written even before the topic ever grew ("3"): a client started after a growth with a Secret
    # from before it then still knows the count its sessions were written under
    return binding.model_copy(update={"partition_history": ",".join(str(n) for n in sorted(counts))})


def scram_mechanism(name: str) -> ScramMechanism:
    """The store's SASL mechanism as a SCRAM mechanism; any other cannot hold per-memory users."""
    try:
        return ScramMechanism[name.upper().replace("-", "_")]
    except KeyError:
        raise NotSupportedError(
            f"SASL mechanism {name!r} keeps its users outside Kafka: per-memory users need "
            "SCRAM-SHA-256 or SCRAM-SHA-512 on the store"
        ) from None


def expected_acls(plan: KafkaPlan) -> list[AclBinding]:
    """The memory user's ACLs, exactly: its topic (LITERAL) and its consumer-group prefix."""
    principal = f"User:{plan.username}"
    topic = [
        AclBinding(
            ResourceType.TOPIC,
            plan.topic,
            ResourcePatternType.LITERAL,
            principal,
            "*",
            op,
            AclPermissionType.ALLOW,
        )
        for op in TOPIC_OPERATIONS
    ]
    group = [
        AclBinding(
            ResourceType.GROUP,
            plan.consumer_group_prefix,
            ResourcePatternType.PREFIXED,
            principal,
            "*",
            op,
            AclPermissionType.ALLOW,
        )
        for op in GROUP_OPERATIONS
    ]
    return topic + group


def acl_key(b: AclBinding) -> tuple[str, str, str, str, str, str, str]:
    """A comparable identity for an ACL binding."""
    return (
        str(b.restype),
        b.name,
        str(b.resource_pattern_type),
        b.principal,
        b.host,
        str(b.operation),
        str(b.permission_type),
    )


def version_from_broker_config(config: dict[str, str]) -> str:
    """A version label from a broker's configs: Kafka has no version request in its protocol.

    Before 4.0 ``inter.broker.protocol.version`` names it (``3.7-IV4`` → ``3.7``); 4.x removed that
    setting (KRaft only), so the absence means ``>=4.0``.
    """
    ibp = config.get("inter.broker.protocol.version")
    if ibp:
        return ibp.split("-")[0]
    return ">=4.0"


def validate_plan(plan: KafkaPlan, *, sasl: bool) -> None:
    if not _TOPIC_RE.match(plan.topic) or plan.topic in (".", ".."):
        raise InvalidSpec(f"topic {plan.topic!r} is not a valid Kafka topic name ([A-Za-z0-9._-], 1-249)")
    if plan.partitions < 1:
        raise InvalidSpec(f"partitions must be at least 1 (got {plan.partitions})")
    if plan.replication_factor is not None and plan.replication_factor < 1:
        raise InvalidSpec(f"replication factor must be at least 1 (got {plan.replication_factor})")
    if plan.min_insync_replicas is not None and plan.min_insync_replicas < 1:
        raise InvalidSpec(f"min.insync.replicas must be at least 1 (got {plan.min_insync_replicas})")
    factor, insync = plan.replication_factor, plan.min_insync_replicas
    if factor is not None and insync is not None and insync > factor:
        raise InvalidSpec(
            f"{plan.min_insync_field}: min.insync.replicas {plan.min_insync_replicas} is more than "
            f"{plan.replication_field} {plan.replication_factor}: no acks=all write could ever be "
            "acknowledged"
        )
    if sasl:
        if not plan.username:
            raise InvalidSpec("the memory has no Kafka user name")
        if not plan.consumer_group_prefix:
            raise InvalidSpec("the memory has no consumer group prefix: its ACL would cover every group")


@dataclass
class _Admin:
    """An AdminClient and the last error librdkafka reported (the reason a request timed out)."""

    client: AdminClient
    last_error: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Topic:
    partitions: int
    replication_factor: int


class KafkaBackend:
    """Provisions memories on a Kafka store. Thread-safe (AdminClient is)."""

    kind = BackendKind.KAFKA

    def __init__(self) -> None:
        self._admins: ClientCache[_Admin] = ClientCache(lambda a: None)  # freed when dropped
        # the replication each topic ended with, by (bootstrap servers, topic), for the status: the
        # cluster decides it when nobody set it, and provisioned() sees only the plan
        self._replications: dict[tuple[str, str], Replication] = {}

    def close(self) -> None:
        """Drop every cached AdminClient (librdkafka frees it when the last reference goes)."""
        self._admins.close()

    # -- Backend protocol -------------------------------------------------------------------------

    def connection(self, store: api.ChatMemoryStore, admin: base.AdminAccess) -> KafkaConnection:
        spec = store.spec.kafka
        assert spec is not None  # the registry picks this backend for stores with a kafka block
        protocol = api.SecurityProtocol(spec.security_protocol).value
        return KafkaConnection(
            bootstrap_servers=spec.bootstrap_servers,
            security_protocol=protocol,
            sasl_mechanism=api.SaslMechanism(spec.sasl_mechanism).value,
            **base.connection_fields(store, admin, tls=protocol.endswith("SSL")),
        )

    def plan(self, common: MemoryPlan, memory: api.ChatMemory, store: api.ChatMemoryStore) -> KafkaPlan:
        spec = memory.spec.kafka or api.KafkaMemorySpec()
        defaults = store.spec.defaults or api.StoreDefaults()
        limits = store.spec.limits or api.StoreLimits()
        partitions = spec.partitions or defaults.partitions or api.DEFAULT_PARTITIONS
        most = limits.max_partitions or api.DEFAULT_MAX_PARTITIONS
        if partitions > most:
            raise LimitExceeded(
                f"spec.kafka.partitions: {partitions} partitions are more than ChatMemoryStore "
                f"{store.metadata.name!r} allows (spec.limits.maxPartitions {most})"
            )
        store_field = f"ChatMemoryStore {store.metadata.name!r} spec.defaults"
        return base.extend(
            common,
            KafkaPlan,
            topic=spec.topic or naming.topic(common.namespace, common.name),
            partitions=partitions,
            replication_factor=spec.replication_factor or defaults.replication_factor,
            min_insync_replicas=spec.min_insync_replicas or defaults.min_insync_replicas,
            replication_field=(
                "spec.kafka.replicationFactor"
                if spec.replication_factor or not defaults.replication_factor
                else f"{store_field}.replicationFactor"
            ),
            min_insync_field=(
                "spec.kafka.minInsyncReplicas"
                if spec.min_insync_replicas or not defaults.min_insync_replicas
                else f"{store_field}.minInsyncReplicas"
            ),
            consumer_group_prefix=naming.consumer_group_prefix(common.namespace, common.name),
            custom=("spec.kafka.topic",) if spec.topic else (),
        )

    def claims(self, plan: KafkaPlan) -> tuple[base.Claim, ...]:
        second = base.Claim(base.USER_CLAIM, base.alternate_user(plan.username))  # rotations, in turn
        return (*base.claims_of(plan, "topic", plan.topic, "spec.kafka.topic"), second)

    def exists(self, store: KafkaConnection, plan: KafkaPlan, claim: base.Claim) -> bool:
        validate_plan(plan, sasl=uses_sasl(store))
        with self._errors(store) as admin:
            return self._describe_topic(admin, plan.topic) is not None

    def binding_current(self, binding: Binding, store: KafkaConnection, plan: KafkaPlan) -> bool:
        users = (plan.username, base.alternate_user(plan.username)) if uses_sasl(store) else ("",)
        return binding.username in users and (binding.bootstrap_servers, binding.topic) == (
            store.bootstrap_servers,
            plan.topic,
        )

    def provisioned(self, plan: KafkaPlan, binding: Binding) -> api.Provisioned:
        seen = self._replications.get((binding.bootstrap_servers, plan.topic))
        return api.Provisioned(
            topic=plan.topic,
            partitions=plan.partitions,
            replication_factor=seen.factor if seen else plan.replication_factor,
            min_insync_replicas=seen.min_insync if seen else plan.min_insync_replicas,
            consumer_group_prefix=plan.consumer_group_prefix if binding.username else None,
            username=binding.username or None,
            isolated=bool(binding.username),
            expiry="kafka-retention",
        )

    def describe(self, plan: KafkaPlan) -> str:
        return f"topic {plan.topic!r} ({plan.partitions} partitions)"

    def isolation(self, binding: Binding) -> base.Isolation:
        shared = "the store has no authentication (PLAINTEXT Kafka): any client can reach the topic"
        return base.isolation(binding, isolated=bool(binding.username), shared=shared)

    def check(self, store: KafkaConnection) -> StoreInfo:
        with self._errors(store) as admin:
            cluster = self._wait(admin.describe_cluster(request_timeout=REQUEST_TIMEOUT))
            version = "unknown"
            try:
                res = ConfigResource(ResourceType.BROKER, str(cluster.nodes[0].id))
                cfg = self._wait(admin.describe_configs([res], request_timeout=REQUEST_TIMEOUT)[res])
                version = version_from_broker_config({k: str(v.value) for k, v in cfg.items()})
            except KafkaException as e:
                log.info("kafka %s: no broker configs for the version (%s)", store.bootstrap_servers, e)
            acl = True
            try:
                self._wait(admin.describe_acls(self._user_filter(None), request_timeout=REQUEST_TIMEOUT))
            except KafkaException as e:
                if _code(e) not in (KafkaError.SECURITY_DISABLED, *_DENIED):
                    raise
                acl = False
        return StoreInfo(
            version=version,
            provider="kafka",
            capabilities={"sasl": uses_sasl(store), "acl": acl},
        )

    def observe(self, store: KafkaConnection, plan: KafkaPlan, prior: Prior = base.NO_PRIOR) -> Observed:
        plan = dataclasses.replace(plan, username=base.current_user(plan, prior))
        sasl = uses_sasl(store)
        validate_plan(plan, sasl=sasl)
        details: dict[str, str] = {"topic": plan.topic, "security_protocol": store.security_protocol}
        want_insync: int | None = None
        with self._errors(store) as admin:
            topic = self._describe_topic(admin, plan.topic)
            if topic is not None:
                details["partitions"] = str(topic.partitions)
                details["replication_factor"] = str(topic.replication_factor)
                current = self._topic_config(admin, plan.topic)
                for k in ("retention.ms", "cleanup.policy", "min.insync.replicas"):
                    details[k] = current.get(k, "")
                try:  # what ensure would set; a spec it would refuse is its to report
                    settled = replication(plan, topic.replication_factor, topic.replication_factor)
                    self._replications[(store.bootstrap_servers, plan.topic)] = dataclasses.replace(
                        settled, min_insync=int(details["min.insync.replicas"] or settled.min_insync)
                    )
                    want_insync = settled.min_insync
                except NotSupportedError:
                    pass
            user_exists = True
            if sasl:
                user_exists = self._has_credential(admin, plan.username)
                have = {acl_key(b) for b in self._acls(admin, plan.username)}
                want = {acl_key(b) for b in expected_acls(plan)}
                details["user"] = plan.username
                details["acls"] = "ok" if have == want else ("missing" if want - have else "extra")
        return Observed(
            exists=topic is not None,
            user_exists=user_exists,
            details=details,
            drift=self._drift(plan, topic is not None, user_exists, details, want_insync),
        )

    @staticmethod
    def _drift(
        plan: KafkaPlan, exists: bool, user_exists: bool, details: dict[str, str], want_insync: int | None
    ) -> tuple[Drift, ...]:
        found = base.presence_drift(plan, exists=exists, user_exists=user_exists, container="topic")
        if details.get("acls") in ("missing", "extra"):
            found.append(Drift(f"ACLs were {details['acls']}", "set exactly the memory's ACLs"))
        if exists and details.get("retention.ms") != retention_ms(plan.ttl_seconds):
            found.append(Drift(f"retention.ms was {details.get('retention.ms')}", "reset retention.ms"))
        if exists and details.get("partitions") != str(plan.partitions):
            found.append(Drift(f"the topic had {details['partitions']} partitions", "grow the topic"))
        if exists and want_insync is not None and details.get("min.insync.replicas") != str(want_insync):
            found.append(
                Drift(
                    f"min.insync.replicas was {details.get('min.insync.replicas')}",
                    f"set min.insync.replicas to {want_insync}",
                )
            )
        return tuple(found)

    def ensure(
        self, store: KafkaConnection, plan: KafkaPlan, password: str, prior: Prior = base.NO_PRIOR
    ) -> Binding:
        sasl = uses_sasl(store)
        first_user, second_user = plan.username, base.alternate_user(plan.username)
        plan = dataclasses.replace(plan, username=base.next_user(plan, prior))  # SCRAM: one password
        idle = second_user if plan.username == first_user else first_user  # the previous one, in a grace
        validate_plan(plan, sasl=sasl)
        mechanism = scram_mechanism(store.sasl_mechanism) if sasl else None
        if sasl and not password:
            raise InvalidSpec("the memory's SCRAM user needs a password")
        with self._errors(store, secrets=(password,)) as admin:
            topic = self._describe_topic(admin, plan.topic)
            settled = self._refuse_impossible(admin, store, plan, topic)
            created = topic is None
            if topic is None:
                topic = self._create_topic(admin, plan, settled)
                # lost a race with another creator (or a retry): the factor is the topic's
                settled = replication(plan, settled.factor, topic.replication_factor)
            if plan.partitions > topic.partitions:
                fut = admin.create_partitions(
                    [NewPartitions(plan.topic, plan.partitions)], request_timeout=REQUEST_TIMEOUT
                )[plan.topic]
                self._wait(fut)
            want = topic_configs(plan.ttl_seconds, settled.min_insync)
            current = self._topic_config(admin, plan.topic, settle=created)
            changed = {k: v for k, v in want.items() if current.get(k) != v}
            if changed:
                res = ConfigResource(
                    ResourceType.TOPIC,
                    plan.topic,
                    incremental_configs=[
                        ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
                        for k, v in changed.items()
                    ],
                )
                self._wait(admin.incremental_alter_configs([res], request_timeout=REQUEST_TIMEOUT)[res])
            self._replications[(store.bootstrap_servers, plan.topic)] = settled
            if sasl and mechanism is not None:
                upsert = UserScramCredentialUpsertion(
                    plan.username, ScramCredentialInfo(mechanism, SCRAM_ITERATIONS), password.encode()
                )
                for f in admin.alter_user_scram_credentials(
                    [upsert], request_timeout=REQUEST_TIMEOUT
                ).values():
                    self._wait(f)
                self._ensure_acls(admin, plan)
                if not prior.previous_password_sha256:  # no grace period (left): one user only
                    self._delete_user(admin, idle)
        first = store.bootstrap_servers.split(",")[0].strip()
        host, _, port = first.rpartition(":")
        binding = Binding(
            backend=BackendKind.KAFKA,
            provider="kafka",
            host=host,
            port=int(port) if port.isdigit() else 0,
            username=plan.username if sasl else "",
            password=password if sasl else "",
            uri=f"kafka://{store.bootstrap_servers}/{plan.topic}",
            **base.binding_fields(store, plan),
            bootstrap_servers=store.bootstrap_servers,
            topic=plan.topic,
            security_protocol=store.security_protocol,
            sasl_mechanism=store.sasl_mechanism if sasl else "",
            consumer_group_prefix=plan.consumer_group_prefix,
        )
        return with_partition_history(binding, prior, plan)

    def delete(self, store: KafkaConnection, plan: KafkaPlan, policy: DeletionPolicy) -> None:
        sasl = uses_sasl(store)
        validate_plan(plan, sasl=sasl)
        self._replications.pop((store.bootstrap_servers, plan.topic), None)
        with self._errors(store) as admin:
            if sasl:
                for user in (plan.username, base.alternate_user(plan.username)):
                    self._delete_user(admin, user)
            if policy is DeletionPolicy.DELETE:
                fut = admin.delete_topics([plan.topic], request_timeout=REQUEST_TIMEOUT)[plan.topic]
                try:
                    self._wait(fut)
                except KafkaException as e:
                    if _code(e) != KafkaError.UNKNOWN_TOPIC_OR_PART:
                        raise

    # -- helpers ----------------------------------------------------------------------------------

    def _delete_user(self, admin: AdminClient, username: str) -> None:
        """The user's ACLs and SCRAM credentials; already gone is fine."""
        flt = self._user_filter(username)
        self._wait(admin.delete_acls([flt], request_timeout=REQUEST_TIMEOUT)[flt])
        self._delete_credentials(admin, username)

    def _refuse_impossible(
        self, admin: AdminClient, store: KafkaConnection, plan: KafkaPlan, topic: _Topic | None
    ) -> Replication:
        """The topic's replication on this cluster; NotSupportedError before any change when the
        spec cannot be applied (see :func:`replication`; a partition decrease)."""
        cluster = self._wait(admin.describe_cluster(request_timeout=REQUEST_TIMEOUT))
        brokers = len(cluster.nodes)
        try:
            settled = replication(plan, brokers, topic.replication_factor if topic is not None else None)
        except NotSupportedError as e:
            raise NotSupportedError(f"kafka {store.bootstrap_servers}: {e}") from None
        if topic is not None and plan.partitions < topic.partitions:
            raise NotSupportedError(
                f"topic {plan.topic!r} has {topic.partitions} partitions and Kafka cannot remove partitions: "
                f"set partitions to {topic.partitions} or more (or recreate the memory)"
            )
        return settled

    def _create_topic(self, admin: AdminClient, plan: KafkaPlan, settled: Replication) -> _Topic:
        new = NewTopic(
            plan.topic,
            num_partitions=plan.partitions,
            replication_factor=settled.factor,
            config=topic_configs(plan.ttl_seconds, settled.min_insync),
        )
        fut = admin.create_topics([new], operation_timeout=REQUEST_TIMEOUT, request_timeout=REQUEST_TIMEOUT)
        try:
            self._wait(fut[plan.topic])
        except KafkaException as e:
            if _code(e) != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
            existing = self._describe_topic(admin, plan.topic)
            if existing is not None:
                return existing
        return _Topic(plan.partitions, settled.factor)

    def _describe_topic(self, admin: AdminClient, topic: str) -> _Topic | None:
        futs = admin.describe_topics(TopicCollection([topic]), request_timeout=REQUEST_TIMEOUT)
        try:
            desc = self._wait(futs[topic])
        except KafkaException as e:
            if _code(e) in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
                return None
            raise
        partitions = desc.partitions
        return _Topic(len(partitions), len(partitions[0].replicas) if partitions else 0)

    def _topic_config(self, admin: AdminClient, topic: str, settle: bool = False) -> dict[str, str]:
        """The topic's configs; ``settle`` waits out a just-created topic's metadata propagation.

        A broker other than the controller may answer UNKNOWN_TOPIC_OR_PART for a moment after
        CreateTopics returned (seen on KRaft under load), so a new topic gets a few short retries.
        """
        res = ConfigResource(ResourceType.TOPIC, topic)
        delay = 0.05
        deadline = time.monotonic() + (SETTLE_TIMEOUT if settle else 0)
        while True:
            try:
                cfg = self._wait(admin.describe_configs([res], request_timeout=REQUEST_TIMEOUT)[res])
                return {k: str(v.value) for k, v in cfg.items()}
            except KafkaException as e:
                if _code(e) != KafkaError.UNKNOWN_TOPIC_OR_PART or time.monotonic() >= deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    @staticmethod
    def _user_filter(username: str | None) -> AclBindingFilter:
        # None matches anything; the stubs type these arguments as str
        return AclBindingFilter(
            ResourceType.ANY,
            None,  # type: ignore[arg-type]
            ResourcePatternType.ANY,
            f"User:{username}" if username else None,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            AclOperation.ANY,
            AclPermissionType.ANY,
        )

    def _acls(self, admin: AdminClient, username: str) -> list[AclBinding]:
        fut = admin.describe_acls(self._user_filter(username), request_timeout=REQUEST_TIMEOUT)
        return list(self._wait(fut))

    def _ensure_acls(self, admin: AdminClient, plan: KafkaPlan) -> None:
        """Create the missing ACLs and remove any other ACL of the memory's user."""
        want = {acl_key(b): b for b in expected_acls(plan)}
        have = {acl_key(b): b for b in self._acls(admin, plan.username)}
        missing = [b for k, b in want.items() if k not in have]
        extra = [b for k, b in have.items() if k not in want]
        if missing:
            for f in admin.create_acls(missing, request_timeout=REQUEST_TIMEOUT).values():
                self._wait(f)
        if extra:
            filters = [
                AclBindingFilter(
                    b.restype,
                    b.name,
                    b.resource_pattern_type,
                    b.principal,
                    b.host,
                    b.operation,
                    b.permission_type,
                )
                for b in extra
            ]
            for f in admin.delete_acls(filters, request_timeout=REQUEST_TIMEOUT).values():
                self._wait(f)

    def _credential_mechanisms(self, admin: AdminClient, username: str) -> list[ScramMechanism]:
        futs = admin.describe_user_scram_credentials([username], request_timeout=REQUEST_TIMEOUT)
        assert isinstance(futs, dict)
        try:
            desc = self._wait(futs[username])
        except KafkaException as e:
            if _code(e) == KafkaError.RESOURCE_NOT_FOUND:
                return []
            raise
        return [info.mechanism for info in desc.scram_credential_infos]

    def _has_credential(self, admin: AdminClient, username: str) -> bool:
        return bool(self._credential_mechanisms(admin, username))

    def _delete_credentials(self, admin: AdminClient, username: str) -> None:
        for mechanism in self._credential_mechanisms(admin, username):
            fut = admin.alter_user_scram_credentials(
                [UserScramCredentialDeletion(username, mechanism)], request_timeout=REQUEST_TIMEOUT
            )[username]
            try:
                self._wait(fut)
            except KafkaException as e:
                if _code(e) != KafkaError.RESOURCE_NOT_FOUND:
                    raise

    @staticmethod
    def _wait(fut: Future[Any]) -> Any:
        try:
            return fut.result(timeout=REQUEST_TIMEOUT + 5)
        except FutureTimeout:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "admin request timed out")) from None

    def _admin(self, store: KafkaConnection) -> _Admin:
        return self._admins.get(store, lambda: self._connect(store))

    @staticmethod
    def _connect(store: KafkaConnection) -> _Admin:
        if not store.bootstrap_servers:
            raise InvalidSpec(f"store {store.name!r} has no bootstrap servers")
        last_error: list[str] = []

        def on_error(err: KafkaError) -> None:
            last_error[:] = [err.str()]

        conf: dict[str, Any] = {
            "bootstrap.servers": store.bootstrap_servers,
            "security.protocol": store.security_protocol,
            "client.id": "chatmemory-operator",
            "socket.connection.setup.timeout.ms": int(CONNECT_TIMEOUT * 1000),
            "socket.timeout.ms": int(REQUEST_TIMEOUT * 1000),
            "reconnect.backoff.max.ms": 2000,
            "error_cb": on_error,
            "logger": logging.getLogger(f"{__name__}.librdkafka"),
        }
        if uses_sasl(store):
            conf["sasl.mechanism"] = store.sasl_mechanism
            conf["sasl.username"] = store.admin_username
            conf["sasl.password"] = store.admin_password
        if store.tls.enabled or store.security_protocol.upper().endswith("SSL"):
            if store.tls.ca_cert:
                conf["ssl.ca.pem"] = store.tls.ca_cert
            if store.tls.insecure_skip_verify:
                conf["enable.ssl.certificate.verification"] = False
                conf["ssl.endpoint.identification.algorithm"] = "none"
        return _Admin(AdminClient(conf), last_error)

    @contextmanager
    def _errors(self, store: KafkaConnection, secrets: Sequence[str] = ()) -> Iterator[AdminClient]:
        """Yield the store's AdminClient; turn Kafka errors into BackendUnavailable naming the store."""
        hidden = (store.admin_password, *secrets)
        where = f"kafka {store.bootstrap_servers} (store {store.name!r})"
        admin = self._admin(store)
        try:
            # a short probe first: a dead or refusing cluster fails here in seconds, not after
            # REQUEST_TIMEOUT in the middle of a change
            admin.client.describe_cluster(request_timeout=PROBE_TIMEOUT).result(timeout=PROBE_TIMEOUT + 5)
            yield admin.client
        except KafkaException as e:
            code = _code(e)
            text = redact(_text(e), hidden)
            if code in _UNREACHABLE:
                admin.client.poll(0)  # serve error_cb: librdkafka's reason (refused, bad credentials)
                reason = redact("; ".join(admin.last_error), hidden) or text
                self._admins.discard(store)
                raise BackendUnavailable(
                    f"{where}: unreachable or refused the admin credentials: {reason}"
                ) from None
            if code in _DENIED:
                raise BackendUnavailable(
                    f"{where}: the admin user {store.admin_username!r} is not allowed: {text}"
                ) from None
            if code == KafkaError.INVALID_REPLICATION_FACTOR:
                raise NotSupportedError(f"{where}: {text}") from None
            raise BackendUnavailable(f"{where}: {text}") from None


def _code(e: KafkaException) -> int | None:
    err = e.args[0] if e.args else None
    return err.code() if isinstance(err, KafkaError) else None


def _text(e: KafkaException) -> str:
    err = e.args[0] if e.args else None
    return err.str() if isinstance(err, KafkaError) else str(e)
