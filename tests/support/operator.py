"""The operator as a real process for e2e tests: install ``crds/``, start, wait, stop.

Used by ``tests/e2e/conftest.py`` (one process per session). The operator runs as
``python -m chatmemory_operator`` with the platform's ``KUBECONFIG``, short drift/retry intervals,
its liveness probe and metrics on free loopback ports, and a log file under ``/tmp`` (its path is
printed on failure). It watches only the namespaces matching ``namespaces`` (a kopf glob), so an
operator started by someone else on the shared API server does not fight over the same objects.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.support.platform import ROOT, Platform

CRDS = ROOT / "crds"
CRD_NAMES = ("chatmemories.chatmemory.io", "chatmemorystores.chatmemory.io")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kubectl(platform: Platform, *args: str, input: str | None = None, check: bool = True) -> str:
    """Run the platform's kubectl with its kubeconfig; returns stdout (raises with stderr)."""
    proc = subprocess.run(
        [platform["KUBECTL"], "--kubeconfig", platform["KUBECONFIG"], *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout


def install_crds(platform: Platform) -> None:
    """Apply ``crds/`` (as the chart tests do; reapplying is harmless) and wait until they are served."""
    kubectl(platform, "apply", "-f", str(CRDS))
    for name in CRD_NAMES:
        kubectl(platform, "wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")


@dataclass
class OperatorProcess:
    proc: subprocess.Popen[bytes]
    log_path: Path
    metrics_url: str
    liveness_url: str

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status)
    except (urllib.error.URLError, OSError):
        return 0


@contextlib.contextmanager
def running_operator(
    platform: Platform,
    *,
    namespaces: str,
    env: Mapping[str, str] | None = None,
    startup_timeout: float = 60.0,
) -> Iterator[OperatorProcess]:
    """Start the operator, wait for its liveness endpoint, yield it, stop it (SIGINT, then kill)."""
    metrics_port, liveness_port = free_port(), free_port()
    log_path = Path(f"/tmp/chatmemory-operator-e2e-{os.getpid()}-{int(time.time())}.log")
    full_env = {
        **os.environ,
        "KUBECONFIG": platform["KUBECONFIG"],
        "CHATMEMORY_NAMESPACES": namespaces,
        "CHATMEMORY_LIVENESS": f"http://127.0.0.1:{liveness_port}/healthz",
        "CHATMEMORY_METRICS_PORT": str(metrics_port),
        "CHATMEMORY_METRICS_ADDR": "127.0.0.1",
        "CHATMEMORY_DRIFT_INTERVAL": "4",
        "CHATMEMORY_STORE_INTERVAL": "4",
        "CHATMEMORY_RETRY_DELAY": "1",
        "CHATMEMORY_RETRY_MAX_DELAY": "4",
        "CHATMEMORY_RETAIN_DELETE_RETRIES": "2",
        "CHATMEMORY_VERBOSE": "1",
        "CHATMEMORY_BACKEND_TIMEOUT": "5",
        # the stores' admin Secrets live in the watched (session) namespaces
        "CHATMEMORY_STORE_SECRET_NAMESPACES": namespaces,
        **(env or {}),
    }
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "chatmemory_operator"],
            cwd=ROOT,
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    op = OperatorProcess(
        proc=proc,
        log_path=log_path,
        metrics_url=f"http://127.0.0.1:{metrics_port}/metrics",
        liveness_url=f"http://127.0.0.1:{liveness_port}/healthz",
    )
    try:
        deadline = time.monotonic() + startup_timeout
        while _get(op.liveness_url) != 200:
            if not op.alive():
                raise RuntimeError(
                    f"the operator exited with {proc.returncode}; log {log_path}:\n{op.log()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"the operator was not live after {startup_timeout}s; log {log_path}")
            time.sleep(0.2)
        yield op
    finally:
        if op.alive():
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
