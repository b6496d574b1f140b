"""Operator start-up and clean-up: kopf settings, the shared clients in ``memo``, the metrics server,
and the leader election that lets several replicas run with one active.

Registered with kopf by importing this module (``chatmemory_operator/__init__.py`` does). At
start-up it sets our finalizer and annotation prefix, keeps kopf's own Events to warnings (success
Events come from the reconcile layer, only on changes), builds one backend per kind and the
Kubernetes client into ``memo.ctx`` and starts ``/metrics``. With ``CHATMEMORY_LEADER_ELECTION_LEASE``
set it then waits, serving only liveness and metrics, until this replica holds that Lease
(:class:`Leadership`): kopf starts no watch before the start-up handlers return, so a standby
handles nothing. At clean-up it waits for the reconciles in flight, releases the Lease and closes
the clients.

Why a Lease and not kopf's peering: peering pauses a replica when it sees a live peer of a
higher priority, judged on the peer's own timestamps; nothing stops a replica whose keep-alives
stopped going through while it still works, equal priorities (the replicas of one Deployment)
freeze every replica, and kopf documents it as having no per-object locks (its docs: one replica,
``--standalone``). The Lease is taken by an optimistic-concurrency update, and its holder exits
before a standby may take it over.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

import kopf
from prometheus_client import Gauge

from chatmemory_operator import config, k8s, metrics
from chatmemory_operator.backends import build_backends
from chatmemory_operator.reconcile import Context

FINALIZER: Final = "chatmemory.io/finalizer"
ANNOTATION_PREFIX: Final = "chatmemory.io"
WORKER_IDLE_TIMEOUT: Final = 0.5
Logger = logging.Logger | logging.LoggerAdapter[Any]
log = logging.getLogger(__name__)


def configure_settings(
    settings: kopf.OperatorSettings, *, workers: int = config.OperatorConfig.workers
) -> None:
    """Our finalizer and annotation prefix, quiet Events, bounded waits. Pure: no I/O."""
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    # kopf posts a "Handler succeeded" Event per run (every timer tick) at INFO: keep warnings only
    settings.posting.level = logging.WARNING
    # unexpected exceptions (bugs, not backend errors) retry after 30 s rather than 60 s
    settings.execution.default_backoff = 30
    # a watch that goes silent is restarted rather than trusted forever
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 60
    # At most `workers` (CHATMEMORY_WORKERS, default 64) objects are processed at once. kopf's
    # default starts a worker per object, so a burst of 1,000 creations held 1,000 at the peak, and
    # that memory stayed in the process (RSS with 1,060 memories 142-182 MB -> 119-125 MB). A
    # worker keeps its slot this long after its last event (kopf's default 5 s made a 1,000-object
    # burst take minutes with a limit).
    settings.queueing.worker_limit = workers
    settings.queueing.idle_timeout = WORKER_IDLE_TIMEOUT


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Any, logger: Logger, **_: Any) -> None:
    cfg = config.load()
    configure_settings(settings, workers=cfg.workers)
    memo.ctx = Context(backends=build_backends(), kube=k8s.KubeClient(k8s.load_api_client()), config=cfg)
    memo.locks = {}
    memo.store_slots = {}
    memo.rotations = {}
    # reconciles run in threads (the clients are synchronous): enough of them that a hung store's
    # calls (at most CHATMEMORY_STORE_CONCURRENCY) leave room for every other store
    executor = ThreadPoolExecutor(max_workers=cfg.threads, thread_name_prefix="reconcile")
    asyncio.get_running_loop().set_default_executor(executor)
    memo.executor = executor
    memo.metrics_server = None
    if cfg.metrics_port:
        memo.metrics_server = metrics.METRICS.serve(cfg.metrics_port, cfg.metrics_addr)
        logger.info("metrics on http://%s:%d/metrics", cfg.metrics_addr, cfg.metrics_port)
    memo.leadership = None
    await lead(cfg, memo, logger)


@kopf.on.cleanup()
async def cleanup(memo: Any, logger: Logger, **_: Any) -> None:
    ctx: Context | None = memo.get("ctx")
    leadership: Leadership | None = memo.get("leadership")
    if leadership is not None:
        # the Lease goes only once no reconcile of this replica runs any more (a thread outlives
        # the handler kopf cancelled): the next holder must not start beside one
        executor: ThreadPoolExecutor | None = memo.get("executor")
        if executor is not None:
            executor.shutdown(wait=True)
        try:
            leadership.release()
        except k8s.KubernetesError as e:
            logger.warning("the Lease stays until it expires: %s", e)
        leadership.close()
    if ctx is not None:
        for backend in ctx.backends.values():
            backend.close()
        ctx.kube.close()
    server = memo.get("metrics_server")
    if server is not None:
        server.shutdown()
        server.server_close()
    logger.info("closed the backend clients")


# -- leader election: one active replica, the others standing by ------------------------------------

#: The process exits with this code when it lost the Lease (the kubelet restarts it as a standby).
EXIT_LEADERSHIP_LOST: Final = 3
LEADER: Final = Gauge(
    "chatmemory_operator_leader",
    "1 on the operator replica that holds the Lease and handles objects, 0 on a standby.",
    registry=metrics.METRICS.registry,
)


def identity() -> str:
    """This process among the replicas: the pod's name (its host name) and a random suffix, so a
    restarted container never takes its predecessor's Lease for its own."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def liveness_url(argv: Sequence[str], configured: str) -> str:
    """Where kopf will serve liveness: ``kopf run --liveness=URL`` (the chart), else
    ``CHATMEMORY_LIVENESS`` (``python -m chatmemory_operator``). Empty or ``off``: none."""
    for i, arg in enumerate(argv):
        if arg.startswith("--liveness="):
            return arg.split("=", 1)[1]
        if arg == "--liveness" and i + 1 < len(argv):
            return argv[i + 1]
    return "" if configured.lower() in ("", "off", "none") else configured


def _exit_now(reason: str) -> None:
    log.critical("leadership lost, exiting at once so no handler runs beside the next holder: %s", reason)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(EXIT_LEADERSHIP_LOST)


def _wall_now() -> str:
    """Now as a Lease's MicroTime (UTC): written for people and other clients, never compared."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _record(spec: Mapping[str, Any]) -> tuple[Any, ...]:
    """The part of a Lease a holder's renewal changes (what a standby watches for a change)."""
    return tuple(spec.get(k) for k in ("holderIdentity", "leaseDurationSeconds", "acquireTime", "renewTime"))


class LeaseApi(Protocol):
    """The Lease calls leader election makes (:class:`k8s.KubeClient`'s)."""

    def get_lease(self, namespace: str, name: str, *, timeout: float = ...) -> dict[str, Any] | None: ...

    def create_lease(
        self, namespace: str, body: Mapping[str, Any], *, timeout: float = ...
    ) -> dict[str, Any] | None: ...

    def replace_lease(
        self, namespace: str, body: Mapping[str, Any], *, timeout: float = ...
    ) -> dict[str, Any] | None: ...

    def delete_lease(
        self, namespace: str, name: str, resource_version: str | None = None, *, timeout: float = ...
    ) -> None: ...


#: Seconds a standby's Lease call (and the release at shutdown) may take: a hung call ends and is
#: retried at the next poll, instead of keeping the standby waiting while its liveness answers 200.
STANDBY_CALL_TIMEOUT: Final = 5.0
#: A standby whose Lease calls have all failed for this long answers its liveness probe with 503.
STANDBY_FAILING_LIMIT: Final = 60.0
#: While the calls fail, a warning at most this often (the first failure is always logged).
FAILURE_LOG_INTERVAL: Final = 10.0


class Leadership:
    """The operator's ``coordination.k8s.io`` Lease: the record ``kubernetes.leaderelection`` and
    client-go write (``holderIdentity``, ``leaseDurationSeconds``, ``acquireTime``, ``renewTime``),
    taken and renewed by an optimistic-concurrency replace at the resourceVersion read.

    A standby polls every ``lease_retry_period`` and takes the Lease once the record has not changed
    for ``lease_duration``, timed with ``time.monotonic()`` from when this process last saw it change
    (after the read returned). The wall-clock times in the record are never compared: a clock step
    on either node changes nothing (the library times the expiry with ``time.time()``, so a forward
    step on a standby's node let it take a healthy holder's Lease). The holder renews as often, and
    exits the process (``on_lost``) when it could not renew for ``lease_renew_deadline`` (5/8 of the
    duration), a stuck API call included, or sees another holder: it is gone before any standby may
    start. Every call has a timeout: the holder's half the renew period (a read and a replace fit in
    one), a standby's :data:`STANDBY_CALL_TIMEOUT`. A graceful stop deletes the Lease, so a standby
    takes over at its next poll instead of after the duration.
    """

    def __init__(
        self,
        cfg: config.OperatorConfig,
        me: str,
        kube: LeaseApi,
        on_lost: Callable[[str], None] = _exit_now,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], str] = _wall_now,
    ) -> None:
        self.cfg, self.me, self.kube, self._on_lost = cfg, me, kube, on_lost
        self._clock, self._wall = clock, wall
        self._stop = threading.Event()
        self._renewed = 0.0  # monotonic time the last successful renewal was sent
        self._seen: tuple[Any, ...] | None = None  # the record as last read
        self._seen_at = 0.0  # monotonic time it was read changed
        self._failing_since: float | None = None  # monotonic time of the first failed call in a row
        self._failures = 0
        self._logged_at = 0.0
        self.last_error = ""
        self.holder = ""  # the holder this replica saw last ("" before its first look, or free)
        self.leading = False

    @property
    def call_timeout(self) -> float:
        """Seconds one Lease call may take: the holder's read and replace fit in one renew period."""
        return self.cfg.lease_retry_period / 2 if self.leading else STANDBY_CALL_TIMEOUT

    def try_acquire_or_renew(self) -> bool:
        """One look at the Lease: create it, renew it (ours), or take it (free, or its record
        unchanged for the duration); True when this replica holds it after the call. Raises
        :class:`k8s.KubernetesError` when a call failed (timed out included)."""
        ns, name, timeout = self.cfg.operator_namespace, self.cfg.leader_lease, self.call_timeout
        lease = self.kube.get_lease(ns, name, timeout=timeout)
        now = self._clock()  # after the read: never earlier than the renewal it shows
        if lease is None:
            body = self._claim(None)
            return self._took(self.kube.create_lease(ns, body, timeout=timeout), now)
        spec = lease.get("spec") or {}
        record = _record(spec)
        if record != self._seen:
            self._seen, self._seen_at = record, now
        self.holder = str(spec.get("holderIdentity") or "")
        if self.holder not in ("", self.me):
            # the longer of ours and the holder's: a holder configured longer keeps it that long
            duration = max(self.cfg.lease_duration, int(spec.get("leaseDurationSeconds") or 0))
            if now - self._seen_at < duration:
                return False
            log.info("Lease %s: %s did not renew for %d s, taking it over", name, self.holder, duration)
        return self._took(self.kube.replace_lease(ns, self._claim(lease), timeout=timeout), now)

    def _claim(self, lease: Mapping[str, Any] | None) -> dict[str, Any]:
        """The Lease with this replica's record; ``metadata`` (its resourceVersion) as read."""
        now = self._wall()
        spec = dict((lease or {}).get("spec") or {})
        previous = spec.get("holderIdentity") or ""
        spec.update(holderIdentity=self.me, leaseDurationSeconds=self.cfg.lease_duration, renewTime=now)
        if previous != self.me:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if previous else 0)
        metadata = dict(lease["metadata"]) if lease else {"name": self.cfg.leader_lease}
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata, "spec": spec}

    def _took(self, written: dict[str, Any] | None, now: float) -> bool:
        """Whether the create or replace went through (None: another writer came first)."""
        if written is None:
            return False
        self._seen = _record(written.get("spec") or {})
        self._seen_at, self.holder = now, self.me
        return True

    def _attempt(self) -> bool:
        sent = self._clock()
        try:
            held = self.try_acquire_or_renew()
        except Exception as e:  # noqa: BLE001 - any failure is a period without renewal (bounded by the watchdog)
            self._failed(e)
            return False
        self._succeeded()
        if held:
            self._renewed = sent
        return held

    def _failed(self, error: Exception) -> None:
        """Count a failed call and say so: at once, then every :data:`FAILURE_LOG_INTERVAL`."""
        now = self._clock()
        self.last_error = str(error) or type(error).__name__
        self._failures += 1
        if self._failing_since is None:
            self._failing_since = now
        elif now - self._logged_at < FAILURE_LOG_INTERVAL:
            return
        self._logged_at = now
        log.warning(
            "Lease %s: %d call(s) in a row failed over %.0f s (%s): %s",
            self.cfg.leader_lease,
            self._failures,
            now - self._failing_since,
            "holder" if self.leading else "standby",
            self.last_error,
        )

    def _succeeded(self) -> None:
        if self._failing_since is not None:
            log.info("Lease %s: calls work again after %d failure(s)", self.cfg.leader_lease, self._failures)
        self._failing_since, self._failures, self.last_error = None, 0, ""

    def health(self) -> tuple[bool, str]:
        """A standby's liveness: unhealthy once every Lease call failed for :data:`STANDBY_FAILING_LIMIT`."""
        if self._failing_since is None:
            return True, "standby"
        failing = self._clock() - self._failing_since
        text = f"standby: {self._failures} Lease call(s) failed over {failing:.0f} s: {self.last_error}"
        return failing < STANDBY_FAILING_LIMIT, text

    def acquire(self) -> bool:
        """Block until this replica holds the Lease (True) or :meth:`stop` was called (False)."""
        while not self._stop.is_set():
            if self._attempt():
                self.leading = True
                return True
            self._stop.wait(self.cfg.lease_retry_period)
        return False

    def keep(self) -> None:
        """Renew in one thread, watch the deadline in another; both end with :meth:`stop`."""
        threading.Thread(target=self._renew_loop, name="lease-renew", daemon=True).start()
        threading.Thread(target=self._watchdog, name="lease-watchdog", daemon=True).start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.cfg.lease_retry_period):
            if not self._attempt() and self.holder not in ("", self.me):
                self._lose(f"Lease {self.cfg.leader_lease} is held by {self.holder}")
                return

    def _watchdog(self) -> None:
        # a renewal that hangs never returns to the loop above: the deadline is watched apart
        while not self._stop.wait(0.1):
            late = self._clock() - self._renewed
            if late > self.cfg.lease_renew_deadline:
                self._lose(f"Lease {self.cfg.leader_lease} not renewed for {late:.1f} s")
                return

    def _lose(self, reason: str) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self.leading = False
        LEADER.set(0)
        self._on_lost(reason)

    def close(self) -> None:
        """Close the election's own client (after :meth:`release`)."""
        close = getattr(self.kube, "close", None)
        if close is not None:
            close()

    def stop(self) -> None:
        """Stop waiting or renewing (the Lease stays until :meth:`release` or it expires)."""
        self._stop.set()

    def release(self) -> None:
        """Stop renewing and delete the Lease if this replica still holds it, at the version read
        (never another holder's): a standby takes over at its next poll."""
        was_leading, self.leading = self.leading, False
        self.stop()
        if not was_leading:
            return
        ns, name = self.cfg.operator_namespace, self.cfg.leader_lease
        lease = self.kube.get_lease(ns, name, timeout=STANDBY_CALL_TIMEOUT)
        spec = (lease or {}).get("spec") or {}
        if lease is None or spec.get("holderIdentity") != self.me:
            return
        version = lease["metadata"].get("resourceVersion")
        self.kube.delete_lease(ns, name, version, timeout=STANDBY_CALL_TIMEOUT)
        log.info("released Lease %s", name)


class _StandbyHealth(BaseHTTPRequestHandler):
    """Liveness of a standby replica, where kopf's endpoint will be once it leads (kopf serves it
    only after the start-up handlers, and a standby waits in one): 200, or 503 with the reason once
    the standby's Lease calls have kept failing (``server.status``)."""

    server: _HealthServer

    def do_GET(self) -> None:
        healthy, text = self.server.status()
        body = f"{text}\n".encode()
        self.send_response(200 if healthy else 503)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """No access log: the kubelet probes every few seconds."""


class _HealthServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], status: Callable[[], tuple[bool, str]]) -> None:
        super().__init__(address, _StandbyHealth)
        self.status = status


@contextmanager
def standby_health(url: str, status: Callable[[], tuple[bool, str]]) -> Iterator[None]:
    """Serve a liveness endpoint at ``url`` (host and port) answering ``status()`` while the block
    runs; none for ``""``."""
    if not url:
        yield
        return
    parts = urlsplit(url)
    server = _HealthServer((parts.hostname or "0.0.0.0", parts.port or 80), status)  # noqa: S104
    threading.Thread(target=server.serve_forever, name="standby-health", daemon=True).start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


async def lead(cfg: config.OperatorConfig, memo: Any, logger: Logger) -> None:
    """Return once this replica holds the Lease (at once without an election)."""
    if not cfg.leader_lease:
        LEADER.set(1)
        return
    leadership = Leadership(cfg, identity(), k8s.lease_client())
    memo.leadership = leadership
    LEADER.set(0)
    where = f"Lease {cfg.operator_namespace}/{cfg.leader_lease}"
    logger.info("standing by as %s until %s is free", leadership.me, where)
    with standby_health(liveness_url(sys.argv, cfg.liveness), leadership.health):
        waiter = threading.Thread(target=leadership.acquire, name="lease-acquire", daemon=True)
        waiter.start()
        try:
            while waiter.is_alive():
                await asyncio.sleep(0.1)
        finally:
            if not leadership.leading:
                leadership.stop()  # cancelled (the pod is going away): stop waiting
    if not leadership.leading:
        raise kopf.PermanentError(f"stopped waiting for {where}")
    leadership.keep()
    LEADER.set(1)
    logger.info("leading as %s: holds %s", leadership.me, where)
