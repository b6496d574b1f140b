"""The reconcile flow of ChatMemory and ChatMemoryStore: backend-agnostic and free of kopf.

Called by :mod:`chatmemory_operator.handlers`, in a worker thread (backends and the Kubernetes
client are synchronous). This module knows no backend by name: the backend of the store's kind
(looked up in ``Context.backends``) makes every decision about its server. One memory reconcile
(:func:`reconcile_memory`) is five steps:

1. **store**: parse the memory, resolve its store (``storeRef``, else the one pinned in
   ``status.store``, else the default store), read the store's admin and CA Secrets;
2. **plan**: the common part (TTL, size limit, user name, with the store's defaults) and the
   backend's own plan from it (:meth:`~chatmemory_operator.backends.base.Backend.plan`);
3. **credentials**: the password in the memory's Secret (stable across reconciles), a new one when
   there is none or the ``chatmemory.io/rotate-credentials`` annotation has a new value;
4. **converge**: ``Backend.ensure`` (idempotent: creates or repairs); on a drift check,
   ``Backend.observe`` first, and nothing at all when it finds no drift and the Secret is current;
5. **publish**: the Secret (written when it differs), then the status: ``observedGeneration``,
   ``store``, ``backend``, ``ttl``, the ``Ready`` and ``Isolated`` conditions, ``binding.name``,
   ``provisioned``; plus the Events to post.

Errors are :class:`~chatmemory_operator.errors.ReconcileError`; the outcome carries the error and
a status that shows it, and the handlers turn it into a kopf retry or a permanent failure.
Passwords never enter a status, an Event or a log line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import pydantic
from chatmemory.contract import BackendKind, Binding

from chatmemory_operator import naming, ownership, secrets
from chatmemory_operator.api import v1alpha1 as api
from chatmemory_operator.api.durations import format_duration, parse_duration
from chatmemory_operator.backends.base import (
    USER_CLAIM,
    AdminAccess,
    Backend,
    Claim,
    DeletionPolicy,
    MemoryPlan,
    Prior,
    StoreConnection,
)
from chatmemory_operator.config import OperatorConfig
from chatmemory_operator.errors import (
    BackendUnavailable,
    CustomNamesNotAllowed,
    InvalidSpec,
    LimitExceeded,
    NamespaceNotAllowed,
    ReconcileError,
    SecretNotFound,
    StoreNotFound,
)
from chatmemory_operator.k8s import KubeClient, KubernetesError

log = logging.getLogger(__name__)

READY: Final = api.ConditionType.READY.value
#: The key of :func:`_owns` for the memory's data (the user's is ``USER_CLAIM``).
DATA: Final = "data"
ISOLATED: Final = api.ConditionType.ISOLATED.value


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the object: ``type`` is Normal or Warning."""

    type: str
    reason: str
    message: str


@dataclass
class Context:
    """What a reconcile needs: one backend per kind, the Kubernetes client, the settings, and the
    name claims (Leases in the operator's namespace)."""

    backends: Mapping[BackendKind, Backend[Any, Any]]
    kube: KubeClient
    config: OperatorConfig
    claims: ownership.Claims = field(init=False)

    def __post_init__(self) -> None:
        self.claims = ownership.Claims(self.kube, self.config.operator_namespace)


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


def admin_access(ctx: Context, store: api.ChatMemoryStore) -> AdminAccess:
    """The store's admin credentials and CA certificate, read from the Secrets it names."""
    name = store.metadata.name
    username = password = ca = ""
    admin = store.spec.admin_secret_ref
    tls = store.spec.tls or api.TLSSpec()
    block = f"spec.{store.spec.backend.value}"
    for ref, where in ((admin, "adminSecretRef"), (tls.ca_secret_ref, "tls.caSecretRef")):
        if ref is not None and not ctx.config.may_read_store_secrets_in(ref.namespace):
            raise InvalidSpec(
                f"ChatMemoryStore {name!r}: {block}.{where}.namespace {ref.namespace!r}: store Secrets are "
                f"read only in the operator's namespace {ctx.config.operator_namespace!r} and the namespaces "
                "its admin allows (the chart's storeSecretNamespaces)"
            )
    if admin is not None:
        data = _secret_data(ctx, admin.namespace, admin.name, name, "admin")
        if "password" not in data and "username" not in data:
            raise SecretNotFound(
                f"ChatMemoryStore {name!r}: the admin Secret {admin.namespace}/{admin.name} has neither "
                "a 'username' nor a 'password' key"
            )
        username = data.get("username", "").strip()
        password = data.get("password", "")
    ref = tls.ca_secret_ref
    if ref is not None and tls.enabled:
        ca = _secret_data(ctx, ref.namespace, ref.name, name, "CA").get(ref.key, "")
        if not ca:
            raise SecretNotFound(
                f"ChatMemoryStore {name!r}: the CA Secret {ref.namespace}/{ref.name} has no key {ref.key!r}"
            )
    return AdminAccess(username=username, password=password, ca_cert=ca)


def store_connection(ctx: Context, store: api.ChatMemoryStore) -> tuple[Backend[Any, Any], StoreConnection]:
    """The backend of the store's kind and the store's connection, with its admin credentials."""
    backend = ctx.backends[store.spec.backend]
    return backend, backend.connection(store, admin_access(ctx, store))


def reconcile_store(ctx: Context, body: Mapping[str, Any]) -> Outcome:
    """Check a ChatMemoryStore with its admin credentials; the status reports what was found."""
    old = old_store_status(body)
    generation = _generation(body)
    status = old.model_copy(update={"observed_generation": generation})
    outcome = Outcome(status={})
    try:
        with _kubernetes_unavailable():
            store = parse_store(body)
            outcome.backend = store.spec.backend.value
            status.backend = store.spec.backend
            backend, conn = store_connection(ctx, store)
            info = backend.check(conn)
    except ReconcileError as e:
        ready = api.Condition.make(READY, False, e.reason, str(e), generation=generation)
        return _finish(outcome, old.conditions, status, ready, error=e)
    status.version = info.version
    status.provider = info.provider
    status.capabilities = dict(sorted(info.capabilities.items()))
    message = f"{info.provider} {info.version} at {conn.address} answers with the admin credentials"
    ready = api.Condition.make(READY, True, api.Reason.CONNECTED, message, generation=generation)
    return _finish(outcome, old.conditions, status, ready)


# -- memories ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where a memory lives: its store, the backend of the store's kind, the connection, the plan."""

    store: api.ChatMemoryStore
    backend: Backend[Any, Any]
    conn: StoreConnection
    plan: MemoryPlan


@dataclass(frozen=True)
class Credentials:
    """The password to set and why: the memory's Secret as it is, and the rotation acted on."""

    password: str
    secret_name: str
    existing: dict[str, Any] | None  # the memory's Secret, as read before this reconcile
    rotation: str | None  # the rotate-credentials value acted on in this run
    requested: str  # the rotate-credentials value on the memory
    rotated: bool = False  # a new password in this run, by the annotation or the schedule
    previous_sha256: str = ""  # the previous password's hash while the grace period runs
    previous_until: datetime | None = None  # when the previous password stops


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


def common_plan(memory: api.ChatMemory, store: api.ChatMemoryStore) -> MemoryPlan:
    """What every backend needs of the memory, defaults applied; the backend block checked."""
    kind, spec = store.spec.backend, memory.spec
    if spec.backend is not None and spec.backend is not kind:
        other = spec.backend.value
        raise InvalidSpec(
            f"spec.{other} is set but ChatMemoryStore {store.metadata.name!r} is a {kind.value} store: "
            f"remove spec.{other} (settings for this store go in spec.{kind.value})"
        )
    defaults = store.spec.defaults or api.StoreDefaults()
    most = (store.spec.limits or api.StoreLimits()).max_ttl
    ttl = parse_duration(spec.ttl or defaults.ttl or api.DEFAULT_TTL)
    if most is not None and ttl > parse_duration(most):
        raise LimitExceeded(
            f"spec.ttl: {format_duration(ttl)} is longer than ChatMemoryStore {store.metadata.name!r} "
            f"allows (spec.limits.maxTTL {most})"
        )
    namespace, name = memory.metadata.namespace or "", memory.metadata.name
    return MemoryPlan(
        namespace=namespace,
        name=name,
        uid=memory.metadata.uid,
        ttl_seconds=ttl,
        max_messages=spec.max_messages_per_session,
        username=naming.username(namespace, name),
    )


def resolve(ctx: Context, memory: api.ChatMemory, *, use_default: bool = True) -> Target:
    """Steps 1 and 2: the memory's store and backend, and the backend's plan for the memory."""
    store = resolve_store(ctx, memory, use_default=use_default)
    backend, conn = store_connection(ctx, store)
    plan = backend.plan(common_plan(memory, store), memory, store)
    return Target(store=store, backend=backend, conn=conn, plan=plan)


def admit(ctx: Context, memory: api.ChatMemory, target: Target, old: api.ChatMemoryStatus) -> None:
    """Step 2, the store's policy: the namespace is allowed, custom names are allowed (or held
    already), and the memory holds every name it needs. Nothing is issued before this passes."""
    store, plan = target.store, target.plan
    allowed = store.spec.allowed_namespaces
    if allowed is not None and not allowed.admits(ctx.kube.namespace_labels(plan.namespace) or {}):
        if old.binding is not None:
            revoke(ctx, memory, target)
        raise NamespaceNotAllowed(
            f"ChatMemoryStore {store.metadata.name!r} does not admit namespace {plan.namespace!r} "
            "(spec.allowedNamespaces): use a store that does, or ask its owner"
        )
    claims = target.backend.claims(plan)
    if ctx.claims.confirmed(store.metadata.name, claims, plan.uid):
        return
    earlier = old.provisioned.names() if old.provisioned is not None else set()
    if plan.custom and not store.spec.allow_custom_names:
        held = ctx.claims.held(store.metadata.name, claims, plan.uid)
        if not all(held[c] is not None or c.value in earlier for c in claims if c.field):
            raise CustomNamesNotAllowed(
                f"{', '.join(plan.custom)}: ChatMemoryStore {store.metadata.name!r} does not let memories "
                "choose their names (spec.allowCustomNames): remove the field and the operator derives one"
            )
    holder = ownership.Holder(plan.uid, plan.namespace, plan.name)
    adoption = store.spec.adoption == "Allow"
    custom = bool(store.spec.allow_custom_names)  # else only derived names: they never overlap
    for claim in claims:
        existed = functools.partial(_existed, target, claim, earlier)
        overlap = custom or bool(claim.field)
        ctx.claims.claim(
            store.metadata.name, claim, holder, existed=existed, adoption=adoption, overlap=overlap
        )


def _existed(target: Target, claim: Claim, earlier: set[str]) -> bool:
    """Whether a name's object was on the server before the memory claimed it; a name the memory
    was given before claims existed (its status says so) counts as created for it."""
    return claim.value not in earlier and target.backend.exists(target.conn, target.plan, claim)


def revoke(ctx: Context, memory: api.ChatMemory, target: Target) -> None:
    """Remove the memory's user (never its data) and its Secret: its namespace lost the store."""
    if _owns(ctx, memory, target).get(USER_CLAIM, False):
        target.backend.delete(target.conn, target.plan, DeletionPolicy.RETAIN)
    _delete_own_secret(ctx, memory.metadata.namespace or "", memory.secret_name, memory.metadata.uid)


def _owns(ctx: Context, memory: api.ChatMemory, target: Target) -> dict[str, bool]:
    """For the user and the data: may this memory remove them? Yes for a name it holds (its data
    only when it did not adopt it); a memory provisioned before claims existed holds what nobody
    has claimed since."""
    store, claims = target.store.metadata.name, target.backend.claims(target.plan)
    held, nobody = ctx.claims.holdings(store, claims, memory.metadata.uid)
    legacy = memory.status.provisioned is not None and nobody
    owns: dict[str, bool] = {}
    for claim in claims:  # a backend may need several users (one per rotation, in turn): all of them
        mine = held[claim]
        key = DATA if claim.data else USER_CLAIM
        owns[key] = owns.get(key, True) and (legacy or (mine is not None and not mine.adopted))
    return owns


def credentials(
    ctx: Context, memory: api.ChatMemory, target: Target, old: api.ChatMemoryStatus, handled: str | None
) -> Credentials:
    """Step 3: the password in the memory's Secret (stable across reconciles), or a new one when
    there is none or a new rotation is requested. Refuses a Secret the memory does not own."""
    namespace, uid, sname = memory.metadata.namespace or "", memory.metadata.uid, memory.secret_name
    existing = ctx.kube.read_secret(namespace, sname)
    if existing is not None and not secrets.is_owned_by(existing, uid):
        raise InvalidSpec(
            f"Secret {namespace}/{sname} already exists and does not belong to this ChatMemory: "
            "set spec.secretName to another name, or delete that Secret"
        )
    users = [c.value for c in target.backend.claims(target.plan) if not c.data]  # the memory's own
    password = secrets.existing_password(existing, users)
    if existing is None and old.binding is not None and old.binding.name != sname:
        previous = ctx.kube.read_secret(namespace, old.binding.name)  # spec.secretName changed
        if previous is not None and secrets.is_owned_by(previous, uid):
            password = secrets.existing_password(previous, users)
    requested = memory.rotation_token
    rotation = requested if requested and requested != (handled or old.credentials_rotation or "") else None
    rotated = bool(password) and (rotation is not None or rotation_due(ctx, memory, old))
    creds = Credentials(password, sname, existing, rotation, requested, rotated)
    if rotated:
        return _with_grace(creds, memory, secrets.password_sha256(password))
    kept = secrets.previous_password(existing)
    if kept is not None and kept[1] > _now():  # a grace period still running (also after a restart)
        creds = dataclasses.replace(creds, previous_sha256=kept[0], previous_until=kept[1])
    return creds if password else dataclasses.replace(creds, password=secrets.generate_password())


def _with_grace(creds: Credentials, memory: api.ChatMemory, previous_sha256: str) -> Credentials:
    """A new password; the previous one keeps working for the memory's grace period."""
    spec = memory.spec.rotation or api.RotationSpec()
    grace = parse_duration(spec.grace_period or api.DEFAULT_GRACE_PERIOD, allow_zero=True)
    until = _now() + timedelta(seconds=grace) if grace else None
    digest = previous_sha256 if grace else ""
    return dataclasses.replace(
        creds, password=secrets.generate_password(), previous_sha256=digest, previous_until=until
    )


def rotation_due(ctx: Context, memory: api.ChatMemory, old: api.ChatMemoryStatus) -> bool:
    """Whether a scheduled rotation is due: ``spec.rotation.every`` (else the operator's default)
    has passed since the last rotation, or since the first password was issued."""
    every = (memory.spec.rotation or api.RotationSpec()).every or ctx.config.rotation_every
    if not every or old.rotated_at is None:
        return False
    return _now() >= old.rotated_at + timedelta(seconds=parse_duration(every))


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def ready_at(status: api.ChatMemoryStatus, generation: int | None) -> bool:
    """Whether the memory was Ready for this very generation of its spec."""
    ready = api.find_condition(status.conditions, READY)
    return (
        ready is not None
        and ready.status == api.ConditionStatus.TRUE
        and ready.observed_generation == generation
    )


def unchanged_binding(current: Binding | None, target: Target) -> Binding | None:
    """The Secret's binding when it already says everything ``ensure`` would write; else None.

    Lets a restart or a drift check whose ``observe`` found nothing out of place finish without
    touching the backend (no ACL SETUSER, ALTER USER or config writes per memory). Memories that
    borrow the store's credentials (a Redis without ACLs) are always re-ensured, since those
    credentials may have changed.
    """
    if current is None or not current.isolated:
        return None
    plan, tls = target.plan, target.conn.tls
    same = (
        current.ttl_seconds == plan.ttl_seconds
        and current.max_messages == plan.max_messages
        and (current.tls, current.ca_cert, current.insecure_skip_verify)
        == (tls.enabled, tls.ca_cert, tls.insecure_skip_verify)
        and target.backend.binding_current(current, target.conn, plan)
    )
    return current if same else None


def converge(
    target: Target,
    creds: Credentials,
    old: api.ChatMemoryStatus,
    generation: int | None,
    *,
    check_drift: bool,
    events: list[Event],
) -> Binding:
    """Step 4: ``ensure`` on the backend, unless a drift check finds nothing to do."""
    current = secrets.current_binding(creds.existing)
    if check_drift:
        observed = target.backend.observe(target.conn, target.plan, Prior(binding=current))
        repaired = [d.what for d in observed.drift]
        if creds.existing is None and old.binding is not None:
            repaired.append(f"Secret {creds.secret_name} was missing")
        if repaired:
            events.append(Event("Normal", "DriftRepaired", "; ".join(repaired) + ": repaired"))
        elif not creds.rotated and not _grace_changes(creds) and ready_at(old, generation):
            unchanged = unchanged_binding(current, target)
            if unchanged is not None:
                return unchanged
    prior = Prior(
        binding=current, provisioned=old.provisioned, previous_password_sha256=creds.previous_sha256
    )
    return target.backend.ensure(target.conn, target.plan, creds.password, prior)


def _grace_changes(creds: Credentials) -> bool:
    """Whether a grace period runs, or just ended (the previous password must go now)."""
    return bool(creds.previous_sha256) or secrets.previous_password(creds.existing) is not None


def publish(
    ctx: Context,
    memory: api.ChatMemory,
    binding: Binding,
    creds: Credentials,
    old: api.ChatMemoryStatus,
    *,
    check_drift: bool,
    events: list[Event],
) -> None:
    """Step 5a: write the Secret when it differs; remove the one a renamed ``secretName`` left."""
    namespace, name, uid = memory.metadata.namespace or "", memory.metadata.name, memory.metadata.uid
    sname = creds.secret_name
    owner = secrets.owner_reference(api_version=api.API_VERSION, kind=api.MEMORY_KIND, name=name, uid=uid)
    annotations = secrets.previous_annotations(creds.previous_sha256, creds.previous_until)
    desired = secrets.secret_body(
        binding, name=sname, namespace=namespace, owner=owner, memory_name=name, annotations=annotations
    )
    if secrets.needs_write(creds.existing, desired):
        ctx.kube.write_secret(desired, creds.existing)
        if creds.existing is None and old.binding is not None and not check_drift:
            events.append(Event("Normal", "SecretRecreated", f"Secret {sname} was missing: written again"))
    if old.binding is not None and old.binding.name != sname:
        _delete_own_secret(ctx, namespace, old.binding.name, uid)


def ready_status(
    status: api.ChatMemoryStatus, target: Target, binding: Binding, creds: Credentials
) -> tuple[api.Condition, list[Event]]:
    """Step 5b: fill in the status of a converged memory; the Ready condition and rotation Events."""
    events: list[Event] = []
    if creds.rotated:
        status.rotated_at = _now()
        who = binding.username or "the memory's user"
        why = f"rotation {creds.rotation!r}" if creds.rotation is not None else "scheduled rotation"
        until = (
            f"; the previous one works until {creds.previous_until.isoformat()}"
            if creds.previous_until
            else ""
        )
        events.append(Event("Normal", "CredentialsRotated", f"new password for {who} ({why}){until}"))
    if creds.rotation is not None:
        status.credentials_rotation = creds.rotation
    elif creds.requested and not status.credentials_rotation:
        status.credentials_rotation = creds.requested  # the first password already postdates the request
    status.rotated_at = status.rotated_at or _now()  # the first password starts the schedule
    status.previous_credentials_until = creds.previous_until
    sname = creds.secret_name
    status.binding = api.ServiceBindingRef(name=sname)
    status.provisioned = target.backend.provisioned(target.plan, binding)
    isolation = target.backend.isolation(binding)
    reason = api.Reason.OWN_USER if isolation.isolated else api.Reason.SHARED_CREDENTIALS
    isolated = api.Condition.make(
        ISOLATED, isolation.isolated, reason, isolation.message, generation=status.observed_generation
    )
    status.conditions = api.set_condition(status.conditions, isolated)
    what = target.backend.describe(target.plan)
    message = f"{what} on store {target.store.metadata.name!r}; connection details in Secret {sname}"
    ready = api.Condition.make(
        READY, True, api.Reason.PROVISIONED, message, generation=status.observed_generation
    )
    return ready, events


def reconcile_memory(
    ctx: Context, body: Mapping[str, Any], *, check_drift: bool = False, handled: str | None = None
) -> Outcome:
    """Converge one ChatMemory (see the module docstring); never raises a ReconcileError, the
    outcome carries it. ``check_drift`` observes the backend first and reports what it repairs;
    ``handled`` is a rotation value already acted on that the status may not show yet."""
    old = old_memory_status(body)
    status = old.model_copy(update={"observed_generation": _generation(body)})
    outcome = Outcome(status={})
    try:
        with _kubernetes_unavailable():
            memory = parse_memory(body)
            target = resolve(ctx, memory)  # 1, 2
            outcome.backend = target.store.spec.backend.value
            status.store, status.backend = target.store.metadata.name, target.store.spec.backend
            status.ttl = format_duration(target.plan.ttl_seconds)
            admit(ctx, memory, target, old)
            creds = credentials(ctx, memory, target, old, handled)  # 3
            binding = converge(  # 4
                target, creds, old, status.observed_generation, check_drift=check_drift, events=outcome.events
            )
            publish(ctx, memory, binding, creds, old, check_drift=check_drift, events=outcome.events)  # 5
    except ReconcileError as e:
        if isinstance(e, NamespaceNotAllowed):
            status.binding = status.provisioned = None  # revoked
        ready = api.Condition.make(READY, False, e.reason, str(e), generation=status.observed_generation)
        return _finish(outcome, old.conditions, status, ready, error=e)
    ready, events = ready_status(status, target, binding, creds)
    outcome.events.extend(events)
    outcome.rotation = creds.rotation
    return _finish(outcome, old.conditions, status, ready)


def _finish(
    outcome: Outcome,
    before: list[api.Condition],
    status: api.ChatMemoryStatus | api.ChatMemoryStoreStatus,
    ready: api.Condition,
    *,
    error: ReconcileError | None = None,
) -> Outcome:
    """The one way an outcome is completed: Ready set, the status in wire form, a transition Event."""
    status.conditions = api.set_condition(status.conditions, ready)
    outcome.status = status.to_patch()
    outcome.error = error
    outcome.events.extend(transition_events(before, status))
    return outcome


def _generation(body: Mapping[str, Any]) -> int | None:
    return int((body.get("metadata") or {}).get("generation") or 0) or None


@contextmanager
def _kubernetes_unavailable() -> Iterator[None]:
    """A failed Kubernetes API call is a BackendUnavailable: retried with backoff."""
    try:
        yield
    except KubernetesError as e:
        raise BackendUnavailable(f"Kubernetes API: {e}") from None


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


def delete_memory(ctx: Context, body: Mapping[str, Any]) -> list[Event]:
    """Remove what the memory holds: its user, and under ``Delete`` its data when it created it;
    then its Secret and its claims. Never touches a name another memory holds.

    A store that no longer exists, or a memory that never got a store, completes at once (with a
    Warning). Raises a :class:`ReconcileError` when the server or the store's Secrets cannot be
    used (the handler retries, or gives up as the deletion policy says).
    """
    try:
        memory = parse_memory(body)
    except InvalidSpec as e:
        return [Event("Warning", "NothingRemoved", f"nothing removed on the backend: {e}")]
    with _kubernetes_unavailable():
        try:
            target = resolve(ctx, memory, use_default=False)
        except (StoreNotFound, InvalidSpec) as e:
            forget(ctx, memory)
            return [Event("Warning", "NothingRemoved", f"nothing removed on the backend: {e}")]
        owns = _owns(ctx, memory, target)
        if owns[USER_CLAIM]:
            policy = memory.spec.deletion_policy if owns[DATA] else DeletionPolicy.RETAIN
            target.backend.delete(target.conn, target.plan, policy)
        forget(ctx, memory)
    return [_deleted_event(memory, target, owns)]


def _deleted_event(memory: api.ChatMemory, target: Target, owns: Mapping[str, bool]) -> Event:
    store = target.store.metadata.name
    if not owns[USER_CLAIM]:
        message = f"nothing removed on store {store!r}: the memory held none of its names there"
        return Event("Warning", "NothingRemoved", message)
    if memory.spec.deletion_policy is DeletionPolicy.DELETE and not owns[DATA]:
        message = f"removed the memory's user on store {store!r}; kept the data: the memory did not create it"
        return Event("Warning", "DataRetained", message)
    what = (
        "user and its data"
        if memory.spec.deletion_policy is DeletionPolicy.DELETE
        else "user (the data is retained)"
    )
    return Event("Normal", "Deleted", f"removed the memory's {what} on store {store!r}")


def forget(ctx: Context, memory: api.ChatMemory) -> None:
    """The last step of a deletion: the memory's Secret and its claims go."""
    _delete_own_secret(ctx, memory.metadata.namespace or "", memory.secret_name, memory.metadata.uid)
    ctx.claims.release(memory.metadata.uid)


def give_up_deletion(ctx: Context, body: Mapping[str, Any], reason: str, message: str) -> list[Event]:
    """Finish a deletion that cannot remove what is on the server: say so, then forget the memory."""
    with _kubernetes_unavailable(), contextlib.suppress(InvalidSpec):
        forget(ctx, parse_memory(body))
    return [Event("Warning", reason, message)]


def delete_store(ctx: Context, body: Mapping[str, Any]) -> list[Event]:
    """Revoke every credential the store handed out: the user of each memory on it (the data is
    retained, and a store created again gives the memories new users). Raises a
    :class:`ReconcileError` when the server or the store's Secrets cannot be used."""
    store = parse_store(body)
    name = store.metadata.name
    with _kubernetes_unavailable():
        memories = [
            m for m in ctx.kube.list_memories() if references_store(m, name, is_default=store.is_default)
        ]
        provisioned = [m for m in memories if (m.get("status") or {}).get("binding")]
        if not provisioned:
            return []
        backend, conn = store_connection(ctx, store)
        revoked = sum(_revoke_user(ctx, store, backend, conn, m) for m in provisioned)
    message = f"removed the users of {revoked} memories on this store (their data is retained)"
    return [Event("Normal", "CredentialsRevoked", message)]


def _revoke_user(
    ctx: Context,
    store: api.ChatMemoryStore,
    backend: Backend[Any, Any],
    conn: StoreConnection,
    body: Mapping[str, Any],
) -> bool:
    """Remove one memory's user from a store being deleted, if the memory holds it."""
    try:
        memory = parse_memory(body)
        plan = backend.plan(common_plan(memory, store), memory, store)
    except ReconcileError:
        return False  # a spec the store never served: nothing of it on the server
    if not _owns(ctx, memory, Target(store, backend, conn, plan))[USER_CLAIM]:
        return False
    backend.delete(conn, plan, DeletionPolicy.RETAIN)
    return True


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
