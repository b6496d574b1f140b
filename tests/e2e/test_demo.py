"""``make demo``'s program (``python -m examples.demo``) end to end against the platform.

Runs the demo as a user would (a subprocess, the platform's env file) and checks that it exits 0,
that its output tells the story (chart, stores, Ready memories, a conversation per backend that
reads its history back, ``kubectl get chatmem``), and that it cleans up after itself: no release,
no memories, no operator process, CRDs kept.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.platform import Platform

ROOT = Path(__file__).resolve().parents[2]
MEMORIES = ("support-bot-redis", "support-bot-kafka", "support-bot-tidb")


@pytest.fixture(scope="module")
def demo(platform: Platform) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "KEEP_PLATFORM"}
    env["CHATMEMORY_PLATFORM_ENV"] = str(platform.source)
    env["COLUMNS"] = "160"
    return subprocess.run(
        [sys.executable, "-m", "examples.demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def kubectl(platform: Platform, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [platform["KUBECTL"], "--kubeconfig", platform["KUBECONFIG"], *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_demo_exits_zero(demo: subprocess.CompletedProcess[str]) -> None:
    assert demo.returncode == 0, demo.stdout[-5000:] + demo.stderr[-3000:]
    assert "FAILED" not in demo.stdout


def test_demo_installs_the_chart_and_explains_why_the_operator_runs_locally(
    demo: subprocess.CompletedProcess[str],
) -> None:
    out = demo.stdout
    assert "[1/5] Install the Helm chart into the local API server" in out
    assert "operator.enabled=false" in out
    assert "release 'chatmemory' in namespace chatmemory-system" in out
    assert "operator running (pid" in out


def test_demo_shows_every_store_and_memory_becoming_ready(demo: subprocess.CompletedProcess[str]) -> None:
    lines = demo.stdout.splitlines()
    for name in ("demo-redis", "demo-kafka", "demo-tidb", *MEMORIES):
        assert any(name in line and "Ready=True" in line for line in lines), name


def test_demo_holds_a_conversation_per_backend_that_reads_its_history_back(
    demo: subprocess.CompletedProcess[str],
) -> None:
    out = demo.stdout
    assert out.count("you> Hi, my name is Ada.") == 3
    # turn 2 sees turn 1 (2 messages) and turn 3 sees 4: the history went through each backend
    assert out.count("bot> I can see 2 earlier messages. You told me your name is Ada.") == 3
    assert out.count("bot> Still here, Ada: 4 earlier messages, all read back from the store.") == 3
    for name in MEMORIES:
        assert f"session 'user-42' in {name}: 6 messages" in out
        assert f"chatmemory.connect({name!r}, path=" in out


def test_demo_prints_kubectl_get_chatmem_and_where_to_look_next(
    demo: subprocess.CompletedProcess[str],
) -> None:
    out = demo.stdout
    assert "$ kubectl get chatmem -n chatmemory-demo" in out
    assert "Where to look next:" in out
    assert "kubectl describe chatmem -n chatmemory-demo support-bot-redis" in out
    assert "Done: three memories, three backends, one API." in out


def test_demo_leaves_nothing_running_but_keeps_the_crds(
    platform: Platform, demo: subprocess.CompletedProcess[str]
) -> None:
    assert demo.returncode == 0
    memories = kubectl(platform, "get", "chatmemories", "-n", "chatmemory-demo", "-o", "json")
    assert memories.returncode != 0 or json.loads(memories.stdout)["items"] == []
    stores = json.loads(kubectl(platform, "get", "chatmemorystores", "-o", "json").stdout)["items"]
    assert not [s for s in stores if s["metadata"]["name"].startswith("demo-")]
    for name in ("chatmemories.chatmemory.io", "chatmemorystores.chatmemory.io"):
        crd = kubectl(platform, "get", "crd", name, "-o", "json")
        assert crd.returncode == 0, f"{name} was deleted with the release"
        annotations = json.loads(crd.stdout)["metadata"]["annotations"]
        # installed (or adopted) by the demo's release, and kept by helm.sh/resource-policy
        assert annotations["meta.helm.sh/release-name"] == "chatmemory"
        assert annotations["helm.sh/resource-policy"] == "keep"
    state = Path(platform["PLATFORM_DIR"]) if "PLATFORM_DIR" in platform else ROOT / ".platform"
    pidfile = state / "demo-operator.pid"
    assert not pidfile.exists()
    assert "operator stopped" in demo.stdout
