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
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final
from urllib.parse import urlsplit

import kopf
from kubernetes.leaderelection.electionconfig import Config as ElectionConfig
from kubernetes.leaderelection.leaderelection import LeaderElection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock
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
    if leadership is not None and ctx is not None:
        # the Lease goes only once no reconcile of this replica runs any more (a thread outlives
        # the handler kopf cancelled): the next holder must not start beside one
        executor: ThreadPoolExecutor | None = memo.get("executor")
        if executor is not None:
            executor.shutdown(wait=True)
        try:
            leadership.release(ctx.kube)
        except k8s.KubernetesError as e:
            logger.warning("the Lease stays until it expires: %s", e)
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


class Leadership:
    """The operator's ``coordination.k8s.io`` Lease, held through the Kubernetes client's own
    leader election (``kubernetes.leaderelection``: the record, the optimistic-concurrency update,
    a standby's expiry measured on its own clock), with our loop around it.

    A standby polls every ``lease_retry_period`` and takes the Lease once its holder has not renewed
    it for ``lease_duration`` (measured from when the standby saw the last change, so clocks need not
    agree). The holder renews as often, and exits the process (``on_lost``) when it could not renew
    for ``lease_renew_deadline`` (5/8 of the duration), a stuck API call included, or sees another
    holder: it is gone before any standby may start. A graceful stop deletes the Lease, so a standby
    takes over at its next poll instead of after the duration.
    """

    def __init__(
        self,
        cfg: config.OperatorConfig,
        me: str,
        on_lost: Callable[[str], None] = _exit_now,
    ) -> None:
        self.cfg, self.me, self._on_lost = cfg, me, on_lost
        self._lock = LeaseLock(cfg.leader_lease, cfg.operator_namespace, me)  # type: ignore[no-untyped-call]
        self._election = LeaderElection(  # type: ignore[no-untyped-call]
            ElectionConfig(  # type: ignore[no-untyped-call]
                self._lock,
                lease_duration=cfg.lease_duration,
                renew_deadline=cfg.lease_renew_deadline,
                retry_period=cfg.lease_retry_period,
                onstarted_leading=lambda: None,  # our own loop runs the operator
                onstopped_leading=None,
            )
        )
        self._stop = threading.Event()
        self._renewed = 0.0  # monotonic time the last successful renewal was sent
        self.leading = False

    @property
    def holder(self) -> str:
        """The holder this replica saw last ("" before its first look)."""
        record = self._election.observed_record
        return str(record.holder_identity or "") if record is not None else ""

    def _attempt(self) -> bool:
        sent = time.monotonic()
        try:
            renewed = self._election.try_acquire_or_renew()  # type: ignore[no-untyped-call]
            held = bool(renewed) and self.holder == self.me
        except Exception as e:  # noqa: BLE001 - any failure is a period without renewal (bounded by the watchdog)
            log.debug("lease %s: %s", self.cfg.leader_lease, e)
            return False
        if held:
            self._renewed = sent
        return held

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
            late = time.monotonic() - self._renewed
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

    def stop(self) -> None:
        """Stop waiting or renewing (the Lease stays until :meth:`release` or it expires)."""
        self._stop.set()

    def release(self, kube: k8s.KubeClient) -> None:
        """Stop renewing and delete the Lease if this replica still holds it, at the version read
        (never another holder's): a standby takes over at its next poll."""
        was_leading, self.leading = self.leading, False
        self.stop()
        if not was_leading:
            return
        lease = kube.get_lease(self.cfg.operator_namespace, self.cfg.leader_lease)
        spec = (lease or {}).get("spec") or {}
        if lease is None or spec.get("holderIdentity") != self.me:
            return
        kube.delete_lease(
            self.cfg.operator_namespace, self.cfg.leader_lease, lease["metadata"].get("resourceVersion")
        )
        log.info("released Lease %s", self.cfg.leader_lease)


class _StandbyHealth(BaseHTTPRequestHandler):
    """Liveness of a standby replica, where kopf's endpoint will be once it leads (kopf serves it
    only after the start-up handlers, and a standby waits in one)."""

    def do_GET(self) -> None:
        body = b"standby\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """No access log: the kubelet probes every few seconds."""


@contextmanager
def standby_health(url: str) -> Iterator[None]:
    """Serve a liveness endpoint at ``url`` (host and port) while the block runs; none for ``""``."""
    if not url:
        yield
        return
    parts = urlsplit(url)
    server = ThreadingHTTPServer((parts.hostname or "0.0.0.0", parts.port or 80), _StandbyHealth)  # noqa: S104
    server.daemon_threads = True
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
    logging.getLogger("leaderelection").setLevel(logging.WARNING)  # an INFO line per renewal
    leadership = Leadership(cfg, identity())
    memo.leadership = leadership
    LEADER.set(0)
    where = f"Lease {cfg.operator_namespace}/{cfg.leader_lease}"
    logger.info("standing by as %s until %s is free", leadership.me, where)
    with standby_health(liveness_url(sys.argv, cfg.liveness)):
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
