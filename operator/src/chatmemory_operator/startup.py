"""Operator start-up and clean-up: kopf settings, the shared clients in ``memo``, the metrics server.

Registered with kopf by importing this module (``chatmemory_operator/__init__.py`` does). At
start-up it sets our finalizer and annotation prefix, keeps kopf's own Events to warnings (success
Events come from the reconcile layer, only on changes), builds one backend per kind and the
Kubernetes client into ``memo.ctx`` and starts ``/metrics``. At clean-up it closes them.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import kopf

from chatmemory_operator import config, k8s, metrics
from chatmemory_operator.backends import build_backends
from chatmemory_operator.reconcile import Context

FINALIZER: Final = "chatmemory.io/finalizer"
ANNOTATION_PREFIX: Final = "chatmemory.io"
WORKER_IDLE_TIMEOUT: Final = 0.5
Logger = logging.Logger | logging.LoggerAdapter[Any]


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
    memo.metrics_server = None
    if cfg.metrics_port:
        memo.metrics_server = metrics.METRICS.serve(cfg.metrics_port, cfg.metrics_addr)
        logger.info("metrics on http://%s:%d/metrics", cfg.metrics_addr, cfg.metrics_port)


@kopf.on.cleanup()
async def cleanup(memo: Any, logger: Logger, **_: Any) -> None:
    ctx: Context | None = memo.get("ctx")
    if ctx is not None:
        for backend in ctx.backends.values():
            backend.close()
        ctx.kube.close()
    server = memo.get("metrics_server")
    if server is not None:
        server.shutdown()
        server.server_close()
    logger.info("closed the backend clients")
