"""Prometheus metrics of the operator, served on ``:9090/metrics`` (``CHATMEMORY_METRICS_PORT``).

Recorded by :mod:`chatmemory_operator.handlers` around each reconcile; the server is started by
:mod:`chatmemory_operator.startup`. kopf has no metrics of its own (zalando-incubator/kopf#289).

- ``chatmemory_reconciliations_total{backend,result}``: every reconcile of a ChatMemory, ``result``
  is ``success`` or the condition reason of the failure (``BackendUnavailable``, ``InvalidSpec``,
  ``NotSupported``, ``StoreNotFound``, ``Error``);
- ``chatmemory_reconcile_duration_seconds{backend}``: how long each reconcile took;
- ``chatmemory_backend_errors_total{backend,reason}``: failed reconciles by reason;
- ``chatmemory_memories{backend,ready}``: the ChatMemories this operator knows, by Ready state.
"""

from __future__ import annotations

import threading
from socketserver import TCPServer, ThreadingMixIn
from typing import Any, Final
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

#: The backend label for a memory whose store could not be resolved yet.
UNKNOWN_BACKEND: Final = "unknown"
SUCCESS: Final = "success"
#: The help text of each metric, in the order ``Metrics`` declares them.
_HELP: Final = (
    "ChatMemory reconciliations by backend and result (success or the failure reason).",
    "Time spent reconciling one ChatMemory.",
    "Failed ChatMemory reconciliations by backend and reason.",
    "ChatMemories known to the operator, by backend and Ready state.",
)
_BUCKETS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    """The operator's metrics, on their own registry (so tests can build a fresh one)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r, h = self.registry, _HELP
        self.reconciliations = Counter("chatmemory_reconciliations", h[0], ["backend", "result"], registry=r)
        self.duration = Histogram(
            "chatmemory_reconcile_duration_seconds", h[1], ["backend"], registry=r, buckets=_BUCKETS
        )
        self.backend_errors = Counter("chatmemory_backend_errors", h[2], ["backend", "reason"], registry=r)
        self.memories = Gauge("chatmemory_memories", h[3], ["backend", "ready"], registry=r)
        self._lock = threading.Lock()
        self._states: dict[str, tuple[str, str]] = {}

    def observe(self, *, uid: str, backend: str, result: str, seconds: float, ready: bool) -> None:
        """Record one reconcile of the memory ``uid`` and its resulting Ready state."""
        backend = backend or UNKNOWN_BACKEND
        self.reconciliations.labels(backend=backend, result=result).inc()
        self.duration.labels(backend=backend).observe(max(seconds, 0.0))
        if result != SUCCESS:
            self.backend_errors.labels(backend=backend, reason=result).inc()
        self._set_state(uid, (backend, "true" if ready else "false"))

    def forget(self, uid: str) -> None:
        """The memory is gone: drop it from the ``chatmemory_memories`` gauge."""
        self._set_state(uid, None)

    def _set_state(self, uid: str, state: tuple[str, str] | None) -> None:
        with self._lock:
            if state is None:
                self._states.pop(uid, None)
            else:
                self._states[uid] = state
            counts: dict[tuple[str, str], int] = {}
            for s in self._states.values():
                counts[s] = counts.get(s, 0) + 1
            # every series seen so far stays exported, at 0 when no memory is in that state
            for backend, ready in set(self._series()) | set(counts):
                self.memories.labels(backend=backend, ready=ready).set(counts.get((backend, ready), 0))

    def _series(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for metric in self.memories.collect():
            for sample in metric.samples:
                out.append((sample.labels["backend"], sample.labels["ready"]))
        return out

    def serve(self, port: int, addr: str = "0.0.0.0") -> WSGIServer:  # noqa: S104 - scraped in-cluster
        """Start the ``/metrics`` HTTP server in a daemon thread; ``shutdown()`` the result to stop."""
        server = make_server(addr, port, make_wsgi_app(self.registry), _Server, handler_class=_QuietHandler)
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        return server


class _Server(ThreadingMixIn, WSGIServer):
    """prometheus_client's threaded WSGI server, minus the reverse DNS lookup in ``server_bind``
    (``socket.getfqdn`` of the bind address stalled start-up for seconds)."""

    daemon_threads = True

    def server_bind(self) -> None:
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No access log: Prometheus scrapes every few seconds."""


#: The process-wide metrics (handlers record here; startup serves them).
METRICS: Final = Metrics()
