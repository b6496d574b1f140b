"""The platform stays on loopback, away from the standard ports, and a failed start leaves nothing behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.platform import ROOT, Platform

STANDARD_PORTS = {6379, 3306, 4000, 9092, 6443, 2379}


def platform_pids(platform: Platform) -> set[int]:
    if "PLATFORM_DIR" not in platform:
        pytest.skip("servers are external: no local pids to check")
    pids = {int(p.read_text()) for p in (Path(platform["PLATFORM_DIR"]) / "pids").glob("*.pid")}
    assert pids, "the local platform recorded no pids"
    return pids


def listeners() -> list[tuple[str, int, set[int]]]:
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        host, _, port = line.split()[3].rpartition(":")
        rows.append((host, int(port), {int(pid) for pid in re.findall(r"pid=(\d+)", line)}))
    return rows


def test_every_platform_server_listens_on_loopback_only(platform: Platform) -> None:
    ours = platform_pids(platform)
    seen = [(host, port) for host, port, pids in listeners() if pids & ours]
    assert len(seen) >= 13, f"expected the platform's servers among the listeners, got {seen}"
    beyond = [(h, p) for h, p in seen if h not in ("127.0.0.1", "[::1]")]
    assert not beyond, f"listening beyond loopback: {beyond}"
    assert not {p for _, p in seen} & STANDARD_PORTS


def test_a_start_over_taken_ports_names_them_and_starts_nothing(platform: Platform, tmp_path: Path) -> None:
    platform_pids(platform)  # only meaningful beside a running local platform
    env = {**os.environ, "CHATMEMORY_PLATFORM_DIR": str(tmp_path / "second")}
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "localplatform.py"), "up"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert out.returncode == 1
    assert "ports already in use" in out.stdout and "redis port 16379" in out.stdout
    assert not list((tmp_path / "second").glob("pids/*.pid"))
