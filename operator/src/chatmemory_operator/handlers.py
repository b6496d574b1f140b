"""Every kopf handler of the operator: parse, call :mod:`chatmemory_operator.reconcile`, report.

Registered by importing this module (``chatmemory_operator/__init__.py`` does, for ``kopf run -m
chatmemory_operator``). Handlers stay thin:

- ChatMemory: create/update/resume converge; a timer re-checks every memory (drift repair, a store
  that appeared or came back); an event hook acts on a new ``chatmemory.io/rotate-credentials``
  value at once (kopf's diff ignores ``chatmemory.io/*`` annotations, its own storage prefix);
  delete removes the user (and the data under ``Delete``).
- ChatMemoryStore: create/update/resume and a timer check the server with the admin credentials.

The reconcile runs in a worker thread under a per-object lock (handlers and timers of one object
may overlap). Status is patched only when it changed; Events only on changes. A temporary error
becomes ``kopf.TemporaryError`` with a growing, capped delay; an invalid or unsupported spec a
``kopf.PermanentError`` (retried when the spec changes, and re-checked by the timer).
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

import kopf

from chatmemory_operator import config, metrics, reconcile
from chatmemory_operator.api import v1alpha1 as api
from chatmemory_operator.errors import ReconcileError, SecretNotFound
from chatmemory_operator.k8s import KubeClient, KubernetesError
from chatmemory_operator.reconcile import Context, Outcome

CONFIG = config.load()
Logger = logging.Logger | logging.LoggerAdapter[Any]
#: Writes a memory's new status when it changed; says whether it did.
StatusWriter = Callable[[Mapping[str, Any]], Awaitable[bool]]
MEMORIES = (api.GROUP, api.VERSION, api.MEMORY_PLURAL)
STORES = (api.GROUP, api.VERSION, api.STORE_PLURAL)


def _ctx(memo: Any) -> Context:
    ctx: Context = memo.ctx
    return ctx


def _lock(memo: Any, uid: str) -> asyncio.Lock:
    locks: dict[str, asyncio.Lock] = memo.locks
    return locks.setdefault(uid, asyncio.Lock())


def _store_slot(memo: Any, store: str) -> asyncio.Semaphore:
    """At most ``CHATMEMORY_STORE_CONCURRENCY`` reconciles wait on one store's server at once, so a
    hung server holds that many worker threads and no more: other stores' work goes on."""
    slots: dict[str, asyncio.Semaphore] = memo.store_slots
    return slots.setdefault(store, asyncio.Semaphore(CONFIG.store_concurrency))


def _store_of(body: Mapping[str, Any]) -> str:
    """The store a memory body names or was bound to ("" for the default store)."""
    ref = str(((body.get("spec") or {}).get("storeRef") or {}).get("name") or "")
    return ref or str((body.get("status") or {}).get("store") or "")


def status_patch(body: Mapping[str, Any], status: Mapping[str, Any]) -> dict[str, Any] | None:
    """The merge patch from the object's status to ``status`` (keys that went away set to null),
    or None when nothing changed."""
    if not reconcile.status_changed(body, status):
        return None
    out: dict[str, Any] = {
        key: None for key in body.get("status") or {} if key not in status and key != "kopf"
    }
    out.update(status)
    return out


def apply_status(patch: kopf.Patch, body: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """Put the status into kopf's patch when it changed; returns whether it did."""
    change = status_patch(body, status)
    if change is None:
        return False
    for key, value in change.items():
        patch.status[key] = value
    return True


def post_events(body: kopf.Body, outcome: Outcome) -> None:
    for ev in outcome.events:
        kopf.event(body, type=ev.type, reason=ev.reason, message=ev.message)


def raise_for(error: ReconcileError | None, retry: int) -> None:
    """The kopf error for a failed reconcile: retried with backoff, or permanent."""
    if error is None:
        return
    if error.temporary:
        raise kopf.TemporaryError(f"{error.reason}: {error}", delay=CONFIG.retry_backoff(retry))
    raise kopf.PermanentError(f"{error.reason}: {error}")


async def run_memory(
    body: Mapping[str, Any], memo: Any, logger: Logger, write: StatusWriter, *, check_drift: bool
) -> Outcome:
    """One reconcile of a memory under its lock: status written through ``write`` when it changed,
    Events posted, metrics recorded. The one status path of every memory handler."""
    uid = str(body.get("metadata", {}).get("uid"))
    rotations: dict[str, str] = memo.rotations
    started = time.monotonic()
    async with _lock(memo, uid), _store_slot(memo, _store_of(body)):
        plain = api.to_plain(body)
        outcome = await asyncio.to_thread(
            reconcile.reconcile_memory, _ctx(memo), plain, check_drift=check_drift, handled=rotations.get(uid)
        )
        changed = await write(outcome.status)
    if outcome.rotation is not None:
        rotations[uid] = outcome.rotation
    _observe(uid, outcome, started)
    if changed:
        logger.info("status: %s", _summary(outcome))
    post_events(cast(kopf.Body, body), outcome)
    return outcome


def into_patch(patch: kopf.Patch, body: Mapping[str, Any]) -> StatusWriter:
    """A status writer for a kopf handler: kopf applies the patch when the handler returns."""

    async def write(status: Mapping[str, Any]) -> bool:
        return apply_status(patch, body, status)

    return write


def through_api(kube: KubeClient, body: Mapping[str, Any]) -> StatusWriter:
    """A status writer for a memory reconciled outside its own handler (the store's wake-up)."""
    namespace, name = body["metadata"]["namespace"], body["metadata"]["name"]

    async def write(status: Mapping[str, Any]) -> bool:
        change = status_patch(body, status)
        if change is not None:
            await asyncio.to_thread(kube.patch_memory_status, namespace, name, change)
        return change is not None

    return write


def _observe(uid: str, outcome: Outcome, started: float) -> None:
    """Record one reconcile of the memory ``uid``, begun at monotonic time ``started``."""
    metrics.METRICS.observe(
        uid=uid,
        backend=outcome.backend,
        result=metrics.SUCCESS if outcome.error is None else outcome.error.reason,
        seconds=time.monotonic() - started,
        ready=outcome.ready,
    )


def _summary(outcome: Outcome) -> str:
    ready = api.find_condition(
        [api.Condition.model_validate(c) for c in outcome.status.get("conditions") or []], reconcile.READY
    )
    if ready is None:
        return "no Ready condition"
    return f"Ready={ready.status.value} {ready.reason}: {ready.message}"


# -- ChatMemory -------------------------------------------------------------------------------------


@kopf.on.resume(*MEMORIES)
@kopf.on.create(*MEMORIES)
@kopf.on.update(*MEMORIES)
async def memory_changed(
    body: kopf.Body, patch: kopf.Patch, memo: Any, retry: int, logger: Logger, reason: str, **_: Any
) -> None:
    """Create, update, resume: converge the memory to its spec.

    On resume (operator start) the backend is observed first, so a restart re-provisions nothing
    that is already in place."""
    resume = reason == kopf.Reason.RESUME
    outcome = await run_memory(body, memo, logger, into_patch(patch, body), check_drift=resume)
    raise_for(outcome.error, retry)


class Pacer:
    """Spaces events to at most ``rate`` a second across all callers: each caller takes the next
    free slot and is told how long to wait for it (no lock: the event loop is one thread)."""

    def __init__(self, rate: float) -> None:
        self.gap = 1.0 / rate
        self._next = 0.0

    def delay(self, now: float) -> float:
        """Seconds from ``now`` (event-loop time) until the caller's slot."""
        slot = max(now, self._next)
        self._next = slot + self.gap
        return slot - now


#: The drift checks of every memory, in turn: ``CONFIG.drift_rate`` a second at most. kopf starts
#: each memory's timer on its own, so a restart or a burst of creations would otherwise check them
#: all in the same second, ``drift_interval`` later, and every interval after that.
DRIFT_PACER = Pacer(CONFIG.drift_rate)


@kopf.timer(*MEMORIES, interval=CONFIG.drift_interval, initial_delay=CONFIG.drift_interval)
async def memory_drift(body: kopf.Body, patch: kopf.Patch, memo: Any, logger: Logger, **kwargs: Any) -> None:
    """Every interval (and in turn, see :data:`DRIFT_PACER`): observe the backend, repair what was
    changed by hand, rewrite a lost Secret.

    Errors are shown in status, never raised: the next tick is the retry."""
    stopped: kopf.DaemonStopped = kwargs["stopped"]  # kopf passes it to timers too (not in TimerFn)
    wait = DRIFT_PACER.delay(asyncio.get_running_loop().time())
    if wait > 0:
        await stopped.wait(wait)  # a deleted memory or a stopping operator does not wait its turn
    if stopped or body.get("metadata", {}).get("deletionTimestamp"):
        return
    await run_memory(body, memo, logger, into_patch(patch, body), check_drift=True)


def _rotation_requested(body: kopf.Body, memo: Any, **_: Any) -> bool:
    if body.get("metadata", {}).get("deletionTimestamp") or not body.get("status", {}).get("binding"):
        return False
    rotations: dict[str, str] = memo.get("rotations") or {}
    return reconcile.rotation_pending(body, rotations.get(str(body.get("metadata", {}).get("uid"))))


@kopf.on.event(*MEMORIES, when=_rotation_requested)
async def memory_rotation(body: kopf.Body, patch: kopf.Patch, memo: Any, logger: Logger, **_: Any) -> None:
    """A new ``chatmemory.io/rotate-credentials`` value on a provisioned memory: rotate now."""
    outcome = await run_memory(body, memo, logger, into_patch(patch, body), check_drift=False)
    if outcome.error is not None:
        logger.warning("rotation not done yet (%s); the timer retries", outcome.error.reason)


@kopf.on.delete(*MEMORIES)
async def memory_deleted(
    body: kopf.Body, patch: kopf.Patch, memo: Any, retry: int, logger: Logger, **_: Any
) -> None:
    """Remove what the memory holds on the server (see :func:`reconcile.delete_memory`); never
    stuck: see :func:`deletion_failed` for when it gives up."""
    uid = str(body.get("metadata", {}).get("uid"))
    async with _lock(memo, uid), _store_slot(memo, _store_of(body)):
        try:
            events = await asyncio.to_thread(reconcile.delete_memory, _ctx(memo), api.to_plain(body))
        except ReconcileError as e:
            events = await deletion_failed(body, patch, memo, retry, e)
    memo.locks.pop(uid, None)
    memo.rotations.pop(uid, None)
    metrics.METRICS.forget(uid)
    post_events(body, Outcome(status={}, events=events))
    logger.info("deleted: %s", "; ".join(ev.message for ev in events))


def force_deleted(body: Mapping[str, Any]) -> bool:
    """The admin's ``chatmemory.io/force-delete: "true"``: finish a deletion now."""
    return (body.get("metadata", {}).get("annotations") or {}).get(api.FORCE_DELETE_ANNOTATION) == "true"


async def deletion_failed(
    body: kopf.Body, patch: kopf.Patch, memo: Any, retry: int, error: ReconcileError
) -> list[reconcile.Event]:
    """A deletion that could not remove what is on the server: retry with backoff (the status
    says why), or finish with a Warning: at once with the ``chatmemory.io/force-delete``
    annotation; under ``Retain`` when the error cannot pass (a store or its Secret gone, a spec
    the server refuses) or after a few retries; under ``Delete`` (the data matters) only when the
    spec can never work."""
    forced = force_deleted(body)
    retain = (body.get("spec", {}).get("deletionPolicy") or "Retain") == api.DeletionPolicy.RETAIN.value
    final = not error.temporary or (retain and isinstance(error, SecretNotFound))
    if not (forced or final or (retain and retry >= CONFIG.retain_delete_retries)):
        deleting = api.Condition.make(reconcile.READY, False, api.Reason.DELETING, f"deleting: {error}")
        patch.status["conditions"] = [deleting.model_dump(by_alias=True, exclude_none=True, mode="json")]
        raise kopf.TemporaryError(f"{error.reason}: {error}", delay=CONFIG.retry_backoff(retry))
    reason = "ForceDeleted" if forced else "CredentialsNotRemoved"
    why = "chatmemory.io/force-delete is set" if forced else f"after {retry + 1} attempts"
    message = f"nothing more removed on the server ({why}: {error}); remove the memory's user by hand"
    plain = api.to_plain(body)
    return await asyncio.to_thread(reconcile.give_up_deletion, _ctx(memo), plain, reason, message)


# -- ChatMemoryStore --------------------------------------------------------------------------------


def store_in_scope(spec: Mapping[str, Any], namespaces: tuple[str, ...]) -> bool:
    """Whether this operator manages a store: every store when it watches all namespaces; in
    namespaced mode only stores whose Secrets live in ``namespaces`` (it could not read the
    others, and another operator instance manages them)."""
    if not namespaces:
        return True
    refs = []
    for kind in ("redis", "kafka", "tidb"):
        block = spec.get(kind) or {}
        refs.append(block.get("adminSecretRef") or {})
        refs.append((block.get("tls") or {}).get("caSecretRef") or {})
    secret_namespaces = {str(r.get("namespace")) for r in refs if r.get("namespace")}
    return all(any(fnmatch.fnmatchcase(ns, pattern) for pattern in namespaces) for ns in secret_namespaces)


def _store_is_ours(spec: kopf.Spec, **_: Any) -> bool:
    """In namespaced mode the store Secrets may also live where this operator reads them: its own
    namespace and the ones its admin allows (``CHATMEMORY_STORE_SECRET_NAMESPACES``)."""
    if not CONFIG.namespaces:
        return True
    readable = (*CONFIG.namespaces, CONFIG.operator_namespace, *CONFIG.store_secret_namespaces)
    return store_in_scope(spec, readable)


async def run_store(
    body: kopf.Body, patch: kopf.Patch, memo: Any, logger: Logger, *, changed: bool = False
) -> Outcome:
    uid = str(body.get("metadata", {}).get("uid"))
    was_ready = reconcile.is_ready(body)
    name = str(body.get("metadata", {}).get("name"))
    async with _lock(memo, uid), _store_slot(memo, name):
        outcome = await asyncio.to_thread(reconcile.reconcile_store, _ctx(memo), api.to_plain(body))
    if apply_status(patch, body, outcome.status):
        logger.info("status: %s", _summary(outcome))
    post_events(body, outcome)
    if outcome.ready and (not was_ready or changed):
        await wake_memories(memo, api.to_plain(body), logger, every=changed)
    return outcome


async def wake_memories(memo: Any, store: Mapping[str, Any], logger: Logger, *, every: bool = False) -> None:
    """The store became Ready: reconcile now the memories on it that are not Ready (created before
    the store, or waiting for the server), instead of at their next retry or timer tick. ``every``:
    the store's spec changed (its policy may now refuse memories): reconcile all of them."""
    ctx = _ctx(memo)
    name = str(store.get("metadata", {}).get("name"))
    try:
        memories = await asyncio.to_thread(ctx.kube.list_memories)
    except KubernetesError as e:  # a namespaced operator may not list cluster-wide
        logger.debug("not waking the memories of store %s: %s", name, e)
        return
    default = api.is_default_store(store)
    waiting = [
        m
        for m in memories
        if reconcile.references_store(m, name, is_default=default)
        and (every or not reconcile.is_ready(m))
        and not m.get("metadata", {}).get("deletionTimestamp")
        and (
            not CONFIG.namespaces
            or any(fnmatch.fnmatchcase(m["metadata"]["namespace"], p) for p in CONFIG.namespaces)
        )
    ]
    for body in waiting:
        outcome = await run_memory(body, memo, logger, through_api(ctx.kube, body), check_drift=False)
        meta = body["metadata"]
        logger.info("woke memory %s/%s: %s", meta["namespace"], meta["name"], _summary(outcome))


@kopf.on.resume(*STORES, when=_store_is_ours)
@kopf.on.create(*STORES, when=_store_is_ours)
@kopf.on.update(*STORES, when=_store_is_ours)
async def store_changed(
    body: kopf.Body, patch: kopf.Patch, memo: Any, retry: int, logger: Logger, reason: str, **_: Any
) -> None:
    """Check the server with the admin credentials; report version, provider and capabilities.
    A changed spec (policy, limits) is applied to every memory on the store at once."""
    outcome = await run_store(body, patch, memo, logger, changed=reason == kopf.Reason.UPDATE)
    raise_for(outcome.error, retry)


@kopf.on.delete(*STORES, when=_store_is_ours)
async def store_deleted(body: kopf.Body, memo: Any, retry: int, logger: Logger, **_: Any) -> None:
    """Revoke every credential the store handed out (the memories' users; their data stays)."""
    try:
        events = await asyncio.to_thread(reconcile.delete_store, _ctx(memo), api.to_plain(body))
    except ReconcileError as e:
        forced = force_deleted(body)
        if not (forced or not e.temporary or retry >= CONFIG.retain_delete_retries):
            raise kopf.TemporaryError(f"{e.reason}: {e}", delay=CONFIG.retry_backoff(retry)) from None
        message = f"the memories' users were not removed ({e}); remove them by hand"
        events = [reconcile.Event("Warning", "CredentialsNotRevoked", message)]
    post_events(body, Outcome(status={}, events=events))
    logger.info("deleted: %s", "; ".join(ev.message for ev in events) or "no memory on it had credentials")


@kopf.timer(*STORES, interval=CONFIG.store_interval, initial_delay=CONFIG.store_interval, when=_store_is_ours)
async def store_check(body: kopf.Body, patch: kopf.Patch, memo: Any, logger: Logger, **_: Any) -> None:
    """Every interval: is the server still reachable? (errors shown in status, not raised)"""
    if body.get("metadata", {}).get("deletionTimestamp"):
        return
    await run_store(body, patch, memo, logger)
