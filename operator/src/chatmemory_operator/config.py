"""The operator's settings, read once from the environment.

Used by :mod:`chatmemory_operator.startup` (kopf settings, metrics server), by
:mod:`chatmemory_operator.handlers` (timer intervals, retry backoff) and by ``__main__`` (which
namespaces to watch, the liveness endpoint, the log level). Every variable is optional; the defaults
suit a production deployment, tests shorten the intervals.

``CHATMEMORY_LIVENESS`` and ``CHATMEMORY_VERBOSE`` are read by ``python -m chatmemory_operator``
only. The Helm chart and the image's default command run ``kopf run`` instead, whose own options
set them (``--liveness`` from the chart's ``livenessProbe.port``, ``--verbose``/``--debug`` from
``operator.logLevel``); see :data:`MAIN_ONLY`.
"""

from __future__ import annotations

import fnmatch
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from chatmemory_operator.api.durations import parse_duration

#: Environment variable -> meaning; also the documentation of every knob.
ENV_VARS: dict[str, str] = {
    "CHATMEMORY_NAMESPACES": "comma-separated namespaces to watch; empty watches all namespaces",
    "CHATMEMORY_LIVENESS": (
        "kopf liveness endpoint URL (default http://0.0.0.0:8080/healthz; 'off' disables); "
        "python -m chatmemory_operator only"
    ),
    "CHATMEMORY_VERBOSE": (
        "1/true/yes/on: debug logs from kopf and the operator (default off; the Kubernetes client "
        "stays at warnings); python -m chatmemory_operator only"
    ),
    "CHATMEMORY_METRICS_PORT": "port of the Prometheus /metrics endpoint (default 9090; 0 disables)",
    "CHATMEMORY_METRICS_ADDR": "address the metrics endpoint binds (default 0.0.0.0)",
    "CHATMEMORY_DRIFT_INTERVAL": "seconds between drift checks of every ChatMemory (default 60)",
    "CHATMEMORY_STORE_INTERVAL": "seconds between reachability checks of every ChatMemoryStore (default 60)",
    "CHATMEMORY_RETRY_DELAY": "first retry delay in seconds after a temporary error (default 10)",
    "CHATMEMORY_RETRY_MAX_DELAY": "cap of the growing retry delay in seconds (default 300)",
    "CHATMEMORY_RETAIN_DELETE_RETRIES": "retries of a Retain deletion on an unreachable backend (default 3)",
    "CHATMEMORY_WORKERS": "objects processed at once (default 64); more: faster bursts, more memory",
    "CHATMEMORY_BACKEND_TIMEOUT": (
        "seconds one admin request to a store's server may take before it counts as unavailable "
        "(default 10; connects give up after 4)"
    ),
    "CHATMEMORY_STORE_CONCURRENCY": (
        "reconciles that may wait on one store's server at once (default 4): a hung server holds no "
        "more threads than this, and other stores' work goes on"
    ),
    "CHATMEMORY_ROTATION_EVERY": (
        "rotate every memory's password this long after its last rotation, e.g. 30d, unless the "
        "memory's spec.rotation.every says otherwise (default: never)"
    ),
    "CHATMEMORY_OPERATOR_NAMESPACE": (
        "the operator's own namespace: store Secrets may live here, and name claims (Leases) are kept "
        "here (default: the pod's namespace, else default)"
    ),
    "CHATMEMORY_STORE_SECRET_NAMESPACES": (
        "comma-separated namespaces (globs) besides the operator's own where a store's admin and CA "
        "Secrets may live (default none)"
    ),
    "CHATMEMORY_LEADER_ELECTION_LEASE": (
        "name of the coordination.k8s.io Lease, in the operator's namespace, that replicas hold in "
        "turn: only its holder handles anything, the others stand by (default empty: no election, "
        "this process is active at once; the chart sets it)"
    ),
    "CHATMEMORY_LEASE_DURATION": (
        "seconds a standby replica waits after the holder's last renewal before it takes the Lease "
        "(default 8): the longest handover after a crash; the holder renews every duration/8 (at "
        "least 1 s) and exits if it could not renew for 5/8 of it"
    ),
}


#: Read only by ``python -m chatmemory_operator``: under ``kopf run`` (the chart, the image's default
#: command) kopf's own ``--liveness`` and ``--verbose``/``--debug`` options decide these.
MAIN_ONLY: frozenset[str] = frozenset({"CHATMEMORY_LIVENESS", "CHATMEMORY_VERBOSE"})

_TRUE: frozenset[str] = frozenset({"1", "true", "yes", "on"})
_FALSE: frozenset[str] = frozenset({"", "0", "false", "no", "off"})


class ConfigError(ValueError):
    """An environment variable has a value the operator cannot use."""


@dataclass(frozen=True)
class OperatorConfig:
    """Everything tunable about the operator process."""

    namespaces: tuple[str, ...] = ()
    liveness: str = "http://0.0.0.0:8080/healthz"
    metrics_port: int = 9090
    metrics_addr: str = "0.0.0.0"  # noqa: S104 - a pod's metrics must be scrapable
    drift_interval: float = 60.0
    # drift checks a second across all memories: 10,000 memories at the 60 s interval would ask
    # 167 a second, more than a 2-core operator and API server do beside new work; past
    # interval x rate memories each is checked every memories/rate seconds (500 s at 10,000)
    drift_rate: float = 20.0
    store_interval: float = 60.0
    retry_delay: float = 10.0
    retry_max_delay: float = 300.0
    retain_delete_retries: int = 3
    workers: int = 64
    verbose: bool = False
    rotation_every: str = ""  # a duration, e.g. 30d; empty: no scheduled rotation by default
    backend_timeout: float = 10.0
    store_concurrency: int = 4
    operator_namespace: str = "default"
    store_secret_namespaces: tuple[str, ...] = ()
    leader_lease: str = ""
    lease_duration: int = 8

    @property
    def lease_retry_period(self) -> float:
        """Seconds between the holder's renewals (and a standby's attempts)."""
        return max(1.0, self.lease_duration / 8)

    @property
    def lease_renew_deadline(self) -> float:
        """Seconds without a renewal after which the holder exits: well before a standby may take
        the Lease (``lease_duration``), so two replicas never handle objects at once."""
        return self.lease_duration * 5 / 8

    @property
    def threads(self) -> int:
        """Worker threads for the synchronous backend and Kubernetes calls: enough that every store
        can use its share while one store's calls hang (asyncio's default is cores + 4)."""
        return max(16, 4 * self.store_concurrency)

    def may_read_store_secrets_in(self, namespace: str) -> bool:
        """Whether a store's admin or CA Secret may live in ``namespace``."""
        patterns = (self.operator_namespace, *self.store_secret_namespaces)
        return any(fnmatch.fnmatchcase(namespace, p) for p in patterns)

    def retry_backoff(self, retry: int) -> float:
        """The delay before retry number ``retry`` (0-based): doubles from ``retry_delay``, capped."""
        if retry < 0:
            retry = 0
        delay = self.retry_delay * (2 ** min(retry, 30))
        return float(min(delay, self.retry_max_delay))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OperatorConfig:
        """Read ``CHATMEMORY_*`` variables (see :data:`ENV_VARS`); raise :class:`ConfigError`."""
        e = os.environ if env is None else env
        cfg = cls(
            namespaces=_list(e, "CHATMEMORY_NAMESPACES"),
            liveness=e.get("CHATMEMORY_LIVENESS", cls.liveness).strip(),
            metrics_port=_int(e, "CHATMEMORY_METRICS_PORT", cls.metrics_port, minimum=0, maximum=65535),
            metrics_addr=e.get("CHATMEMORY_METRICS_ADDR", cls.metrics_addr).strip() or cls.metrics_addr,
            drift_interval=_float(e, "CHATMEMORY_DRIFT_INTERVAL", cls.drift_interval),
            store_interval=_float(e, "CHATMEMORY_STORE_INTERVAL", cls.store_interval),
            retry_delay=_float(e, "CHATMEMORY_RETRY_DELAY", cls.retry_delay),
            retry_max_delay=_float(e, "CHATMEMORY_RETRY_MAX_DELAY", cls.retry_max_delay),
            retain_delete_retries=_int(e, "CHATMEMORY_RETAIN_DELETE_RETRIES", cls.retain_delete_retries),
            workers=_int(e, "CHATMEMORY_WORKERS", cls.workers, minimum=1),
            verbose=_bool(e, "CHATMEMORY_VERBOSE"),
            rotation_every=_duration(e, "CHATMEMORY_ROTATION_EVERY"),
            backend_timeout=_float(e, "CHATMEMORY_BACKEND_TIMEOUT", cls.backend_timeout),
            store_concurrency=_int(e, "CHATMEMORY_STORE_CONCURRENCY", cls.store_concurrency, minimum=1),
            operator_namespace=e.get("CHATMEMORY_OPERATOR_NAMESPACE", "").strip() or _pod_namespace(),
            store_secret_namespaces=_list(e, "CHATMEMORY_STORE_SECRET_NAMESPACES"),
            leader_lease=e.get("CHATMEMORY_LEADER_ELECTION_LEASE", "").strip(),
            # at least 2 s: the holder must renew (once a second at best) before its deadline
            lease_duration=_int(e, "CHATMEMORY_LEASE_DURATION", cls.lease_duration, minimum=2, maximum=3600),
        )
        if cfg.retry_max_delay < cfg.retry_delay:
            raise ConfigError(
                f"CHATMEMORY_RETRY_MAX_DELAY ({cfg.retry_max_delay}) must not be below "
                f"CHATMEMORY_RETRY_DELAY ({cfg.retry_delay})"
            )
        return cfg


#: Where Kubernetes mounts a pod's namespace (with its service account token).
POD_NAMESPACE_FILE: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def _pod_namespace() -> str:
    try:
        return POD_NAMESPACE_FILE.read_text().strip() or "default"
    except OSError:
        return "default"


def _duration(env: Mapping[str, str], key: str) -> str:
    raw = env.get(key, "").strip()
    if raw:
        try:
            parse_duration(raw)
        except ValueError as e:
            raise ConfigError(f"{key}: {e}") from None
    return raw


def _list(env: Mapping[str, str], key: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in env.get(key, "").split(",") if n.strip())


def _float(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key, "").strip()
    if not raw:
        return float(default)
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise ConfigError(f"{key}={raw!r} must be greater than 0")
    return value


def _bool(env: Mapping[str, str], key: str) -> bool:
    raw = env.get(key, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigError(f"{key}={raw!r} is not a boolean (1/true/yes/on or 0/false/no/off)")


def _int(
    env: Mapping[str, str], key: str, default: int, *, minimum: int = 0, maximum: int | None = None
) -> int:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{key}={raw!r} is not an integer") from None
    if value < minimum or (maximum is not None and value > maximum):
        upper = f"..{maximum}" if maximum is not None else " or more"
        raise ConfigError(f"{key}={raw!r} is out of range ({minimum}{upper})")
    return value


@functools.cache
def load() -> OperatorConfig:
    """The process's configuration, read from the environment once (handlers need it at import:
    timer intervals are fixed when the decorators run)."""
    return OperatorConfig.from_env()
