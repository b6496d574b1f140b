"""The reconcile flow of ChatMemory and ChatMemoryStore, backend-agnostic and free of kopf.

Called by :mod:`chatmemory_operator.handlers`, in a worker thread (backends and the Kubernetes
client are synchronous). One memory reconcile:

1. parse the memory (:mod:`chatmemory_operator.api.v1alpha1`), resolve its store (``storeRef`` or
   the default store, pinned in ``status.store`` once chosen) and the store's admin/CA Secrets;
2. build the :class:`~chatmemory_operator.backends.base.MemoryPlan`: defaults from the store,
   names from :mod:`chatmemory_operator.naming` unless the spec sets them, the backend block
   checked against the store's kind;
3. pick the password: the one in the memory's Secret (stable across reconciles), a new one when
   there is none or the ``chatmemory.io/rotate-credentials`` annotation has a new value;
4. ``Backend.ensure`` (idempotent: creates or repairs), then the Secret (written when it differs);
5. the new status: ``observedGeneration``, ``backend``, ``store``, the ``Ready`` and ``Isolated``
   conditions, ``binding.name``, what was provisioned; plus the Events to post.

Errors are :class:`~chatmemory_operator.errors.ReconcileError`; the outcome carries the error and
a status that shows it, and the handlers turn it into a kopf retry or a permanent failure.
Passwords never enter a status, an Event or a log line.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import pydantic
from chatmemory.contract import BackendKind, Binding

from chatmemory_operator import naming, secrets
from chatmemory_operator.api import v1alpha1 as api
from chatmemory_operator.api.durations import format_duration, parse_duration
from chatmemory_operator.backends.base import (
    Backend,
    DeletionPolicy,
    MemoryPlan,
    Observed,
    StoreConnection,
    TLSConfig,
)
from chatmemory_operator.config import OperatorConfig
from chatmemory_operator.errors import (
    BackendUnavailable,
    InvalidSpec,
    ReconcileError,
    SecretNotFound,
    StoreNotFound,
)
from chatmemory_operator.k8s import KubeClient, KubernetesError

log = logging.getLogger(__name__)

READY: Final = api.ConditionType.READY.value
ISOLATED: Final = api.ConditionType.ISOLATED.value


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the object: ``type`` is Normal or Warning."""

    type: str
    reason: str
    message: str


@dataclass
class Context:
    """What a reconcile needs: one backend per kind, the Kubernetes client, the settings."""

    backends: Mapping[BackendKind, Backend]
    kube: KubeClient
    config: OperatorConfig


@dataclass
class Outcome:
    """The result of one reconcile: the whole new status (wire names), Events, the error if any."""

    status: dict[str, Any]
    backend: str = ""
    events: list[Event] = field(default_factory=list)
    error: ReconcileError | None = None
    rotation: str | None = None  # the rotate-credentials value acted on in this run

    @property
    def ready(self) -> bool:
        return self.error is None


# -- parsing ----------------------------------------------------------------------------------------


def _invalid(what: str, e: pydantic.ValidationError) -> InvalidSpec:
    """A pydantic error as an InvalidSpec naming the field in wire (camelCase) spelling."""
    err = e.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    return InvalidSpec(f"{what}: {loc}: {err['msg']}" if loc else f"{what}: {err['msg']}")


def parse_memory(body: Mapping[str, Any]) -> api.ChatMemory:
    try:
        return api.ChatMemory.from_body(body)
    except pydantic.ValidationError as e:
        raise _invalid("ChatMemory", e) from None


def parse_store(body: Mapping[str, Any]) -> api.ChatMemoryStore:
    try:
        return api.ChatMemoryStore.from_body(body)
    except pydantic.ValidationError as e:
        name = (body.get("metadata") or {}).get("name")
        raise _invalid(f"ChatMemoryStore {name!r}", e) from None


def old_memory_status(body: Mapping[str, Any]) -> api.ChatMemoryStatus:
    """The status as it is now (an unreadable one counts as empty)."""
    try:
        return api.ChatMemoryStatus.model_validate(api.to_plain(body.get("status") or {}))
    except pydantic.ValidationError:
        return api.ChatMemoryStatus()


def old_store_status(body: Mapping[str, Any]) -> api.ChatMemoryStoreStatus:
    try:
        return api.ChatMemoryStoreStatus.model_validate(api.to_plain(body.get("status") or {}))
    except pydantic.ValidationError:
        return api.ChatMemoryStoreStatus()


def status_changed(body: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether ``new`` differs from the object's status (compared in wire form)."""
    old = {k: v for k, v in api.to_plain(body.get("status") or {}).items() if k != "kopf"}
    return old != dict(new)


# -- stores -----------------------------------------------------------------------------------------


def _secret_data(ctx: Context, namespace: str, name: str, store: str, what: str) -> dict[str, str]:
    data = ctx.kube.read_secret_data(namespace, name)
    if data is None:
        raise SecretNotFound(
            f"ChatMemoryStore {store!r}: the {what} Secret {namespace}/{name} does not exist: create it"
        )
    return data


def store_connection(ctx: Context, store: api.ChatMemoryStore) -> StoreConnection:
    """The store's connection, with the admin credentials and CA certificate read from Secrets."""
    spec = store.spec
    kind = spec.backend
    name = store.metadata.name
    username = password = ""
    admin = spec.admin_secret_ref
    if admin is not None:
        data = _secret_data(ctx, admin.namespace, admin.name, name, "admin")
        if "password" not in data and "username" not in data:
            raise SecretNotFound(
                f"ChatMemoryStore {name!r}: the admin Secret {admin.namespace}/{admin.name} has neither "
                "a 'username' nor a 'password' key"
            )
        username = data.get("username", "").strip()
        password = data.get("password", "")
    tls_spec = spec.tls or api.TLSSpec()
    ca = ""
    if tls_spec.ca_secret_ref is not None:
        ref = tls_spec.ca_secret_ref
        ca = _secret_data(ctx, ref.namespace, ref.name, name, "CA").get(ref.key, "")
        if not ca:
            raise SecretNotFound(
                f"ChatMemoryStore {name!r}: the CA Secret {ref.namespace}/{ref.name} has no key {ref.key!r}"
            )
    if spec.kafka is not None:
        k = spec.kafka
        protocol = api.SecurityProtocol(k.security_protocol)
        return StoreConnection(
            name=name,
            kind=kind,
            bootstrap_servers=k.bootstrap_servers,
            security_protocol=protocol.value,
            sasl_mechanism=api.SaslMechanism(k.sasl_mechanism).value,
            tls=TLSConfig(
                enabled=tls_spec.enabled or protocol.value.endswith("SSL"),
                ca_cert=ca,
                insecure_skip_verify=tls_spec.insecure_skip_verify,
            ),
            admin_username=username,
            admin_password=password,
        )
    block = spec.redis or spec.tidb
    assert block is not None  # the model guarantees exactly one block
    return StoreConnection(
        name=name,
        kind=kind,
        host=block.host,
        port=block.port,
        cluster=spec.redis.cluster if spec.redis is not None else False,
        tls=TLSConfig(
            enabled=tls_spec.enabled, ca_cert=ca, insecure_skip_verify=tls_spec.insecure_skip_verify
        ),
        admin_username=username,
        admin_password=password,
    )


def reconcile_store(ctx: Context, body: Mapping[str, Any]) -> Outcome:
    """Check a ChatMemoryStore with its admin credentials; the status reports what was found."""
    old = old_store_status(body)
    generation = int((body.get("metadata") or {}).get("generation") or 0) or None
    status = old.model_copy(update={"observed_generation": generation})
    backend = ""
    try:
        try:
            store = parse_store(body)
            backend = store.spec.backend.value
            status.backend = store.spec.backend
            conn = store_connection(ctx, store)
            info = ctx.backends[store.spec.backend].check(conn)
        except KubernetesError as e:
            raise BackendUnavailable(f"Kubernetes API: {e}") from None
    except ReconcileError as e:
        status.conditions = api.set_condition(
            old.conditions, api.Condition.make(READY, False, e.reason, str(e), generation=generation)
        )
        new = status.to_patch()
        return Outcome(status=new, backend=backend, error=e, events=transition_events(old.conditions, status))
    status.version = info.version
    status.provider = info.provider
    status.capabilities = dict(sorted(info.capabilities.items()))
    where = conn.bootstrap_servers or f"{conn.host}:{conn.port}"
    message = f"{info.provider} {info.version} at {where} answers with the admin credentials"
    status.conditions = api.set_condition(
        old.conditions,
        api.Condition.make(READY, True, api.Reason.CONNECTED, message, generation=generation),
    )
    return Outcome(
        status=status.to_patch(), backend=backend, events=transition_events(old.conditions, status)
    )


# -- memories ---------------------------------------------------------------------------------------


def resolve_store(ctx: Context, memory: api.ChatMemory, *, use_default: bool = True) -> api.ChatMemoryStore:
    """The memory's store: ``spec.storeRef.name``, else the one pinned in ``status.store``, else the
    default store. Raises :class:`StoreNotFound` saying what to do."""
    ref = memory.spec.store_name
    name = ref or (memory.status.store or "")
    if not name:
        if not use_default:
            raise StoreNotFound("the memory was never bound to a store")
        default = ctx.kube.default_store()
        if default is None:
            raise StoreNotFound(
                "spec.storeRef.name is empty and no ChatMemoryStore is marked as the default: set "
                f'spec.storeRef.name, or annotate a store with {api.DEFAULT_STORE_ANNOTATION}: "true"'
            )
        return parse_store(default)
    store = ctx.kube.get_store(name)
    if store is None:
        hint = "create it, or fix spec.storeRef.name" if ref else "create it again"
        raise StoreNotFound(f"ChatMemoryStore {name!r} does not exist: {hint}")
    return parse_store(store)


def memory_plan(memory: api.ChatMemory, store: api.ChatMemoryStore) -> MemoryPlan:
    """The memory with every default applied and every name derived; the backend block checked."""
    kind = store.spec.backend
    spec = memory.spec
    namespace, name = memory.metadata.namespace or "", memory.metadata.name
    if spec.backend is not None and spec.backend is not kind:
        other = spec.backend.value
        raise InvalidSpec(
            f"spec.{other} is set but ChatMemoryStore {store.metadata.name!r} is a {kind.value} store: "
            f"remove spec.{other} (settings for this store go in spec.{kind.value})"
        )
    defaults = store.spec.defaults or api.StoreDefaults()
    ttl = parse_duration(spec.ttl or defaults.ttl or api.DEFAULT_TTL)
    fields: dict[str, Any] = {
        "namespace": namespace,
        "name": name,
        "uid": memory.metadata.uid,
        "ttl_seconds": ttl,
        "max_messages": spec.max_messages_per_session,
        "username": naming.username(namespace, name),
    }
    if kind is BackendKind.REDIS:
        redis = spec.redis or api.RedisMemorySpec()
        fields["key_prefix"] = redis.key_prefix or naming.key_prefix(namespace, name)
    elif kind is BackendKind.KAFKA:
        kafka = spec.kafka or api.KafkaMemorySpec()
        fields["topic"] = kafka.topic or naming.topic(namespace, name)
        fields["partitions"] = kafka.partitions or defaults.partitions or api.DEFAULT_PARTITIONS
        fields["replication_factor"] = (
            kafka.replication_factor or defaults.replication_factor or api.DEFAULT_REPLICATION_FACTOR
        )
        fields["consumer_group_prefix"] = naming.consumer_group_prefix(namespace, name)
    else:
        tidb = spec.tidb or api.TiDBMemorySpec()
        fields["database"] = tidb.database or naming.database(namespace, name)
        fields["table"] = tidb.table or naming.DEFAULT_TABLE
    return MemoryPlan(**fields)


def provisioned(plan: MemoryPlan, kind: BackendKind, binding: Binding) -> api.Provisioned:
    """``status.provisioned``: what exists on the backend for this memory (no secrets)."""
    if kind is BackendKind.REDIS:
        return api.Provisioned(
            key_prefix=plan.key_prefix,
            username=binding.username if binding.isolated else None,
            isolated=binding.isolated,
            expiry="redis-expire",
        )
    if kind is BackendKind.KAFKA:
        return api.Provisioned(
            topic=plan.topic,
            partitions=plan.partitions,
            replication_factor=plan.replication_factor,
            consumer_group_prefix=plan.consumer_group_prefix if binding.username else None,
            username=binding.username or None,
            isolated=bool(binding.username),
            expiry="kafka-retention",
        )
    return api.Provisioned(
        database=plan.database,
        table=plan.table,
        username=binding.username,
        isolated=True,
        expiry="tidb-ttl" if binding.provider == "tidb" else "mysql-event",
    )


def with_partition_history(
    binding: Binding, current: Binding | None, plan: MemoryPlan, provisioned_partitions: int | None
) -> Binding:
    """Record in the binding every partition count the topic has had (``partition_history``).

    Growing a topic moves a session's key to another partition; the SDK reads the partitions the
    key mapped to under each count, so a session's older messages stay in its history. The counts
    come from the Secret written before and from ``status.provisioned.partitions``.
    """
    counts = {plan.partitions}
    if current is not None and current.topic == plan.topic:
        counts.update(current.partition_counts)
        if provisioned_partitions:
            counts.add(provisioned_partitions)
    if len(counts) == 1:
        return binding
    return binding.model_copy(update={"partition_history": ",".join(str(n) for n in sorted(counts))})


def ready_at(status: api.ChatMemoryStatus, generation: int | None) -> bool:
    """Whether the memory was Ready for this very generation of its spec."""
    ready = api.find_condition(status.conditions, READY)
    return (
        ready is not None
        and ready.status == api.ConditionStatus.TRUE
        and ready.observed_generation == generation
    )


def unchanged_binding(current: Binding | None, plan: MemoryPlan, conn: StoreConnection) -> Binding | None:
    """The Secret's binding when it already says everything ``ensure`` would write; else None.

    Lets a restart or a drift check whose ``observe`` found nothing out of place finish without
    touching the backend (no ACL SETUSER, ALTER USER or config writes per memory). Memories that
    borrow the store's credentials (a Redis without ACLs) are always re-ensured, since those
    credentials may have changed.
    """
    if current is None or not current.isolated:
        return None
    same = (
        current.ttl_seconds == (plan.ttl_seconds if plan.ttl_seconds > 0 else None)
        and current.max_messages == plan.max_messages
        and current.username == plan.username
        and current.tls == conn.tls.enabled
        and current.ca_cert == conn.tls.ca_cert
        and current.insecure_skip_verify == conn.tls.insecure_skip_verify
    )
    if conn.kind is BackendKind.REDIS:
        same = same and (current.host, current.port, current.key_prefix, current.cluster) == (
            conn.host,
            conn.port,
            plan.key_prefix,
            conn.cluster,
        )
    elif conn.kind is BackendKind.KAFKA:
        same = same and (current.bootstrap_servers, current.topic) == (conn.bootstrap_servers, plan.topic)
    else:
        same = same and bool(current.checkpoint_table_prefix)
        same = same and (current.host, current.port, current.database, current.table) == (
            conn.host,
            conn.port,
            plan.database,
            plan.table,
        )
    return current if same else None


def drift(observed: Observed, plan: MemoryPlan, kind: BackendKind) -> list[str]:
    """What ``observe`` found out of place (empty: nothing), in words for an Event."""
    found: list[str] = []
    d = observed.details
    if not observed.exists:
        found.append("the topic was missing" if kind is BackendKind.KAFKA else "the table was missing")
    if not observed.user_exists:
        found.append(f"user {plan.username!r} was missing")
    elif d.get("rules_match") == "false":
        found.append("the ACL rules differed")
    if d.get("acls") in ("missing", "extra"):
        found.append(f"ACLs were {d['acls']}")
    if d.get("grants") in ("missing", "extra"):
        found.append(f"grants were {d['grants']}")
    if kind is BackendKind.KAFKA and observed.exists:
        want = str(plan.ttl_seconds * 1000) if plan.ttl_seconds > 0 else "-1"
        if d.get("retention.ms") not in (None, want):
            found.append(f"retention.ms was {d.get('retention.ms')}")
        if d.get("partitions") not in (None, str(plan.partitions)):
            found.append(f"the topic had {d['partitions']} partitions")
    if "ttl_seconds" in d:  # SQL: the table's TTL clause (whole minutes) or the expiry event
        minutes = -(-plan.ttl_seconds // 60)
        expiry = plan.ttl_seconds if d.get("ttl_mechanism") == "event" else minutes * 60
        if d["ttl_seconds"] != str(max(expiry, 0)) or (
            plan.ttl_seconds > 0 and d.get("ttl_enabled") != "true"
        ):
            found.append("the expiry was changed")
    return found


def transition_events(before: list[api.Condition], status: Any) -> list[Event]:
    """An Event when the Ready condition changes status or reason."""
    old = api.find_condition(before, READY)
    new = api.find_condition(status.conditions, READY)
    if new is None:
        return []
    if old is not None and (old.status, old.reason) == (new.status, new.reason):
        return []
    ok = new.status == api.ConditionStatus.TRUE
    return [Event("Normal" if ok else "Warning", new.reason, new.message)]


def rotation_pending(body: Mapping[str, Any], handled: str | None = None) -> bool:
    """A new ``chatmemory.io/rotate-credentials`` value the operator has not acted on yet."""
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    wanted = str(annotations.get(api.ROTATE_CREDENTIALS_ANNOTATION) or "")
    done = handled or str((body.get("status") or {}).get("credentialsRotation") or "")
    return bool(wanted) and wanted != done


def reconcile_memory(
    ctx: Context, body: Mapping[str, Any], *, check_drift: bool = False, handled: str | None = None
) -> Outcome:
    """Converge one ChatMemory (see the module docstring); never raises a ReconcileError, the
    outcome carries it. ``check_drift`` observes the backend first and reports what it repairs;
    ``handled`` is a rotation value already acted on that the status may not show yet."""
    old = old_memory_status(body)
    meta = body.get("metadata") or {}
    generation = int(meta.get("generation") or 0) or None
    status = old.model_copy(update={"observed_generation": generation})
    events: list[Event] = []
    backend = ""
    rotation: str | None = None
    try:
        try:
            memory = parse_memory(body)
            namespace, name, uid = memory.metadata.namespace or "", memory.metadata.name, memory.metadata.uid
            store = resolve_store(ctx, memory)
            kind = store.spec.backend
            backend = kind.value
            status.store, status.backend = store.metadata.name, kind
            plan = memory_plan(memory, store)
            status.ttl = format_duration(plan.ttl_seconds)
            conn = store_connection(ctx, store)
            sname = memory.secret_name
            existing = ctx.kube.read_secret(namespace, sname)
            if existing is not None and not secrets.is_owned_by(existing, uid):
                raise InvalidSpec(
                    f"Secret {namespace}/{sname} already exists and does not belong to this ChatMemory: "
                    "set spec.secretName to another name, or delete that Secret"
                )
            password = secrets.existing_password(existing, plan.username)
            if existing is None and old.binding is not None and old.binding.name != sname:
                previous = ctx.kube.read_secret(namespace, old.binding.name)  # spec.secretName changed
                if previous is not None and secrets.is_owned_by(previous, uid):
                    password = secrets.existing_password(previous, plan.username)
            requested = memory.rotation_token
            done = handled or old.credentials_rotation or ""
            if requested and requested != done:
                rotation = requested
            if rotation is not None or not password:
                password = secrets.generate_password()
            backend_impl = ctx.backends[kind]
            binding: Binding | None = None
            if check_drift:
                repaired = drift(backend_impl.observe(conn, plan), plan, kind)
                if existing is None and old.binding is not None:
                    repaired.append(f"Secret {sname} was missing")
                if repaired:
                    events.append(Event("Normal", "DriftRepaired", "; ".join(repaired) + ": repaired"))
                elif rotation is None and ready_at(old, generation):
                    binding = unchanged_binding(secrets.current_binding(existing), plan, conn)
            if binding is None:  # something to create, change or repair
                binding = backend_impl.ensure(conn, plan, password)
                if kind is BackendKind.KAFKA:
                    before = old.provisioned.partitions if old.provisioned is not None else None
                    binding = with_partition_history(binding, secrets.current_binding(existing), plan, before)
            owner = secrets.owner_reference(
                api_version=api.API_VERSION, kind=api.MEMORY_KIND, name=name, uid=uid
            )
            desired = secrets.secret_body(
                binding, name=sname, namespace=namespace, owner=owner, memory_name=name
            )
            if secrets.needs_write(existing, desired):
                ctx.kube.write_secret(desired, existing)
                if existing is None and old.binding is not None and not check_drift:
                    events.append(
                        Event("Normal", "SecretRecreated", f"Secret {sname} was missing: written again")
                    )
            if old.binding is not None and old.binding.name != sname:
                _delete_own_secret(ctx, namespace, old.binding.name, uid)
        except KubernetesError as e:
            raise BackendUnavailable(f"Kubernetes API: {e}") from None
    except ReconcileError as e:
        status.conditions = api.set_condition(
            old.conditions, api.Condition.make(READY, False, e.reason, str(e), generation=generation)
        )
        events.extend(transition_events(old.conditions, status))
        return Outcome(status=status.to_patch(), backend=backend, events=events, error=e)
    if rotation is not None:
        status.credentials_rotation = rotation
        who = binding.username or "the memory's user"
        events.append(
            Event("Normal", "CredentialsRotated", f"new password for {who} (rotation {rotation!r})")
        )
    elif requested and not status.credentials_rotation:
        status.credentials_rotation = requested  # the first password already postdates the request
    status.binding = api.ServiceBindingRef(name=sname)
    status.provisioned = provisioned(plan, kind, binding)
    conditions = old.conditions
    if kind is BackendKind.REDIS and not binding.isolated:
        isolated = api.Condition.make(
            ISOLATED,
            False,
            api.Reason.SHARED_CREDENTIALS,
            "the Redis server has no ACLs: this memory uses the store's own credentials and can reach "
            "every key; use a server with ACLs (Redis 6+) to isolate memories",
            generation=generation,
        )
    else:
        isolated = api.Condition.make(
            ISOLATED,
            True,
            api.Reason.OWN_USER,
            f"user {binding.username!r} can reach only this memory's data"
            if binding.username
            else "the store has no authentication (PLAINTEXT Kafka): any client can reach the topic",
            generation=generation,
        )
        if not binding.username:
            isolated = isolated.model_copy(
                update={"status": api.ConditionStatus.FALSE, "reason": api.Reason.SHARED_CREDENTIALS.value}
            )
    conditions = api.set_condition(conditions, isolated)
    ready = api.Condition.make(
        READY,
        True,
        api.Reason.PROVISIONED,
        _ready_message(plan, kind, store.metadata.name, sname),
        generation=generation,
    )
    status.conditions = api.set_condition(conditions, ready)
    events.extend(transition_events(old.conditions, status))
    return Outcome(status=status.to_patch(), backend=backend, events=events, rotation=rotation)


def _ready_message(plan: MemoryPlan, kind: BackendKind, store: str, sname: str) -> str:
    if kind is BackendKind.REDIS:
        what = f"key prefix {plan.key_prefix!r}"
    elif kind is BackendKind.KAFKA:
        what = f"topic {plan.topic!r} ({plan.partitions} partitions)"
    else:
        what = f"table {plan.database}.{plan.table}"
    return f"{what} on store {store!r}; connection details in Secret {sname}"


def delete_memory(ctx: Context, body: Mapping[str, Any]) -> list[Event]:
    """Remove what the memory was given: its user always, its data too under ``Delete``.

    A store that no longer exists, or a memory that never got a store, completes at once (with a
    Warning). Raises :class:`BackendUnavailable` when the server cannot be reached.
    """
    try:
        memory = parse_memory(body)
    except InvalidSpec as e:
        return [Event("Warning", "NothingRemoved", f"nothing removed on the backend: {e}")]
    namespace, uid = memory.metadata.namespace or "", memory.metadata.uid
    policy = DeletionPolicy(memory.spec.deletion_policy.value)
    try:
        try:
            store = resolve_store(ctx, memory, use_default=False)
            plan = memory_plan(memory, store)
            conn = store_connection(ctx, store)
        except (StoreNotFound, InvalidSpec) as e:
            _delete_own_secret(ctx, namespace, memory.secret_name, uid)
            return [Event("Warning", "NothingRemoved", f"nothing removed on the backend: {e}")]
        ctx.backends[store.spec.backend].delete(conn, plan, policy)
        _delete_own_secret(ctx, namespace, memory.secret_name, uid)
    except KubernetesError as e:
        raise BackendUnavailable(f"Kubernetes API: {e}") from None
    what = "user and its data" if policy is DeletionPolicy.DELETE else "user (the data is retained)"
    return [Event("Normal", "Deleted", f"removed the memory's {what} on store {store.metadata.name!r}")]


def _delete_own_secret(ctx: Context, namespace: str, name: str, uid: str) -> None:
    existing = ctx.kube.read_secret(namespace, name)
    if existing is not None and secrets.is_owned_by(existing, uid):
        ctx.kube.delete_secret(namespace, name)


def is_ready(body: Mapping[str, Any]) -> bool:
    """Whether an object's Ready condition is True."""
    for c in (body.get("status") or {}).get("conditions") or []:
        if c.get("type") == READY:
            return bool(c.get("status") == api.ConditionStatus.TRUE.value)
    return False


def references_store(memory: Mapping[str, Any], store_name: str, *, is_default: bool) -> bool:
    """Whether a memory body uses ``store_name`` (by reference, pin, or as the default store)."""
    spec = memory.get("spec") or {}
    ref = str((spec.get("storeRef") or {}).get("name") or "")
    pinned = str((memory.get("status") or {}).get("store") or "")
    if ref or pinned:
        return (ref or pinned) == store_name
    return is_default
