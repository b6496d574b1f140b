"""Applications writing turns through a rotation never notice it (issue 14's scenario).

Each application holds one ``chatmemory.connect(path=...)`` on a directory laid out and updated the
way the kubelet does it (the update lands 2 s after the Secret changes) and writes a turn every
50 ms for a minute, on Redis 7, Redis Cluster, Kafka with SASL/SCRAM and TiDB at once (one memory
each, so the tier costs one minute, not four). Meanwhile the operator rotates each memory's
credentials with a grace period (Redis: a second password for the same user; Kafka and TiDB: the
other user of the pair); once the grace period has ended and the server refuses the previous
credentials, every connection the application has is closed (a network blip). No write fails or is
duplicated, and every write reads back in order.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from chatmemory import connect
from langchain_core.messages import HumanMessage

from tests.e2e.conftest import (
    E2E,
    LOAD_GRACE_PERIOD,
    LOAD_SECONDS,
    LoadedApp,
    logs_in,
    rotate_under_load,
)
from tests.integration.sdk.test_follow_secret import MountedSecret

pytestmark = pytest.mark.faults

KEYS = ("redis7", "cluster", "kafka-sasl", "tidb")


def run_through_a_rotation(e2e: E2E, key: str, name: str, directory: Path) -> list[str]:
    """One application's minute on memory ``name``: what went wrong (empty when nothing did)."""
    mounted = MountedSecret(directory)
    mounted.write(e2e.binding(name))
    with connect(path=mounted.root) as memory:
        history = memory.history("load")
        app = LoadedApp(f"app-{key}", lambda i: history.add_message(HumanMessage(f"turn {i}")))
        started = time.monotonic()
        app.start()
        try:
            time.sleep(1)
            old = rotate_under_load(e2e, key, name, mounted, app)
            time.sleep(max(2.0, LOAD_SECONDS - (time.monotonic() - started)))
        finally:
            app.stop()
        problems = [f"turn failed: {e!r}" for e in app.failures]
        if len(app.done) < 100:
            problems.append(f"only {len(app.done)} turns in {LOAD_SECONDS:g} s")
        problems += read_back(mounted.root, [f"turn {i}" for i in app.done])
        if logs_in(old):
            problems.append("the previous credentials still log in after the grace period")
    return problems


def read_back(directory: Path, written: list[str]) -> list[str]:
    """Every write once, in order, read with a fresh client of the same mounted Secret."""
    with connect(path=directory) as fresh:
        read = [str(m.content) for m in fresh.history("load").messages]
    if read == written:
        return []
    duplicated = sorted({t for t in read if read.count(t) > 1})
    missing = [t for t in written if t not in read]
    return [f"read back {len(read)} of {len(written)} writes; duplicated {duplicated}; missing {missing}"]


def test_apps_writing_every_50_ms_for_a_minute_never_notice_a_rotation_and_a_blip(
    e2e: E2E, tmp_path: Path
) -> None:
    rotation = {"gracePeriod": LOAD_GRACE_PERIOD}
    with (
        e2e.ready_memories("load", KEYS, deletionPolicy="Delete", rotation=rotation) as names,
        ThreadPoolExecutor(len(KEYS)) as pool,
    ):
        runs = {
            key: pool.submit(run_through_a_rotation, e2e, key, names[key], tmp_path / key) for key in KEYS
        }
        problems = {key: run.result() for key, run in runs.items()}
    assert {key: found for key, found in problems.items() if found} == {}
