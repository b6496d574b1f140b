"""The operator image without a Docker engine: hadolint, then the image's build steps for real.

The builder stage's ``uv`` commands are read from the ``Dockerfile`` itself and run in a temporary
build context holding only what the Dockerfile copies, with ``/opt/venv`` mapped to a temporary
virtualenv. The operator is then started with the image's ``CMD`` from that virtualenv against the
real API server: its liveness endpoint must answer, and SIGTERM must stop it cleanly.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.platform import Platform
from tests.unit.test_dockerfile import cmd, copied_sources, run_commands, stages

ROOT = Path(__file__).resolve().parents[2]
UV = Path.home() / ".cache" / "chatmemory" / "uv-0.13.9" / "bin" / "uv"
DEV_TOOLS = {"pytest", "ruff", "mypy", "import-linter", "langgraph", "streamlit"}


def test_dockerfile_passes_hadolint(platform: Platform) -> None:
    out = subprocess.run(
        [platform["HADOLINT"], "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_catches_an_unpinned_base_image(platform: Platform, tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install uv\n")
    out = subprocess.run(
        [platform["HADOLINT"], "--no-color", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode != 0
    assert "DL3007" in out.stdout  # "Using latest is prone to errors"


def builder_uv_commands() -> list[str]:
    return [c for c in run_commands(stages()[0]) if c.startswith("uv ")]


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image's /opt/venv, built by the Dockerfile's own uv commands in a copy of its context."""
    assert UV.exists(), f"{UV} is missing: run `make venv`"
    work = tmp_path_factory.mktemp("image")
    context, venv = work / "src", work / "venv"
    for src in copied_sources():
        target = context / src
        target.parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / src).is_dir():
            shutil.copytree(ROOT / src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / src, target)
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "UV_LINK_MODE": "copy", "UV_COMPILE_BYTECODE": "1"}
    env.pop("VIRTUAL_ENV", None)
    base_python = str(
        Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    )
    for command in builder_uv_commands():
        command = command.replace("/opt/venv", str(venv)).replace("/usr/local/bin/python3.11", base_python)
        argv = [str(UV), *shlex.split(command)[1:]]
        out = subprocess.run(
            argv, cwd=context, env=env, capture_output=True, text=True, timeout=600, check=False
        )
        assert out.returncode == 0, f"{command}\n{out.stderr}"
    return venv


def installed(venv: Path) -> dict[str, str]:
    out = subprocess.run(
        [str(UV), "pip", "list", "--python", str(venv / "bin" / "python"), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return {p["name"].lower().replace("_", "-"): p["version"] for p in json.loads(out.stdout)}


def test_image_holds_exactly_the_locked_runtime_set_of_the_operator(image_venv: Path) -> None:
    requirements = (image_venv.parent / "src" / "requirements.txt").read_text()
    locked = {}
    for line in requirements.splitlines():
        if line and not line.startswith((" ", "#")) and "==" in line:
            name, _, rest = line.partition("==")
            locked[name.strip().lower().replace("_", "-")] = rest.split()[0].rstrip("\\").strip(";").strip()
    packages = installed(image_venv)
    unlocked = {n: v for n, v in packages.items() if n not in {"chatmemory", "chatmemory-operator"}}
    assert {n: v for n, v in unlocked.items() if locked.get(n) != v} == {}
    assert packages["chatmemory-operator"] == "0.1.0"
    assert packages["chatmemory"] == "0.1.0"
    assert {"kopf", "kubernetes", "redis", "confluent-kafka", "pymysql", "prometheus-client"} <= set(packages)
    assert DEV_TOOLS.isdisjoint(packages)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def watch_namespace(platform: Platform) -> Iterator[str]:
    """An empty namespace of our own, so this operator touches no other test's ChatMemories."""
    name = f"cm-image-{uuid.uuid4().hex[:8]}"
    kubectl = [platform["KUBECTL"], "--kubeconfig", platform["KUBECONFIG"]]
    subprocess.run([*kubectl, "create", "namespace", name], check=True, capture_output=True, timeout=60)
    yield name
    subprocess.run([*kubectl, "delete", "namespace", name, "--wait=false"], capture_output=True, timeout=60)


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return resp.status, resp.read().decode()


def test_operator_from_the_image_set_answers_liveness_and_stops_cleanly_on_sigterm(
    platform: Platform, image_venv: Path, watch_namespace: str, tmp_path: Path
) -> None:
    liveness_port, metrics_port = free_port(), free_port()
    argv = cmd()
    argv = [str(image_venv / "bin" / argv[0]), *argv[1:]]
    # the image's CMD, with the probe on a free loopback port and our namespace instead of all
    argv = [a.replace("0.0.0.0:8080", f"127.0.0.1:{liveness_port}") for a in argv]
    argv = [f"--namespace={watch_namespace}" if a == "--all-namespaces" else a for a in argv]
    env = {
        "PATH": f"{image_venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "TMPDIR": str(tmp_path),
        "KUBECONFIG": platform["KUBECONFIG"],
        "CHATMEMORY_NAMESPACES": watch_namespace,
        "CHATMEMORY_METRICS_PORT": str(metrics_port),
        "CHATMEMORY_METRICS_ADDR": "127.0.0.1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    log = tmp_path / "operator.log"
    with log.open("w") as out:
        proc = subprocess.Popen(argv, env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            probe: tuple[int, str] | None = None
            scrape: tuple[int, str] | None = None
            while time.monotonic() < deadline and proc.poll() is None and not (probe and scrape):
                try:
                    probe = probe or get(f"http://127.0.0.1:{liveness_port}/healthz")
                    scrape = scrape or get(f"http://127.0.0.1:{metrics_port}/metrics")
                except OSError:
                    time.sleep(0.3)
            assert proc.poll() is None, f"the operator exited:\n{log.read_text()[-3000:]}"
            assert probe is not None, log.read_text()[-3000:]
            assert probe[0] == 200
            json.loads(probe[1])  # kopf's probe answers with the probes' results as JSON
            assert scrape is not None, log.read_text()[-3000:]
            assert scrape[0] == 200
            assert "chatmemory_reconciliations_total" in scrape[1]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert "Forbidden" not in text
