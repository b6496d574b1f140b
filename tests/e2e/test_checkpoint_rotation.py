"""A LangGraph agent whose checkpointer follows its Secret never notices a rotation (issue 14).

The checkpointer comes from ``chatmemory.connect(path=...)`` on a directory the kubelet's way (see
:mod:`tests.e2e.test_rotation_under_load`, whose helpers this shares): an agent (a scripted
tool-calling chat model and one tool) runs a turn every 50 ms for a minute on one thread, on Redis 7
and TiDB at once, while the operator rotates the memory's credentials with a grace period; after
it ends (the previous credentials refused) every connection of the app is closed. No turn fails,
each thread's state holds its turns in order, and no checkpoint is lost: a thread's checkpoints run
step after step without a gap. A thread holds ten turns (LangGraph lists a checkpoint with the
whole conversation of its step, so listing one thread of a minute's turns took longer than writing
them: 50-90 s).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from chatmemory import connect
from langchain_core.messages import HumanMessage

from tests.e2e.conftest import E2E, LOAD_GRACE_PERIOD, LOAD_SECONDS, LoadedApp, rotate_under_load
from tests.integration.checkpoint.agent_support import build_agent
from tests.integration.sdk.test_follow_secret import MountedSecret

pytestmark = pytest.mark.faults

KEYS = ("redis7", "tidb")
TURNS_PER_THREAD = 10


def thread(i: int) -> dict[str, Any]:
    """The configurable of turn ``i``'s thread."""
    return {"configurable": {"thread_id": f"agent-under-load-{i // TURNS_PER_THREAD}"}}


def run_agent_through_a_rotation(e2e: E2E, key: str, name: str, directory: Path) -> list[str]:
    """One agent's minute on memory ``name``: what went wrong (empty when nothing did)."""
    mounted = MountedSecret(directory)
    mounted.write(e2e.binding(name))
    with connect(path=mounted.root) as memory:
        saver = memory.checkpointer()
        try:
            agent = build_agent(saver)

            def turn(i: int) -> None:
                agent.invoke({"messages": [HumanMessage(f"where is order {i}")]}, thread(i))

            app = LoadedApp(f"agent-{key}", turn)
            started = time.monotonic()
            app.start()
            try:
                time.sleep(1)
                rotate_under_load(e2e, key, name, mounted, app)
                time.sleep(max(2.0, LOAD_SECONDS - (time.monotonic() - started)))
            finally:
                app.stop()
            problems = [f"turn failed: {e!r}" for e in app.failures]
            if len(app.done) < 50:
                problems.append(f"only {len(app.done)} agent turns in {LOAD_SECONDS:g} s")
        finally:
            saver.close()
    return problems + read_back(mounted.root, app.done)


def read_back(directory: Path, done: list[int]) -> list[str]:
    """The threads as a fresh checkpointer of the same Secret reads them: each turn's four messages
    in order (question, tool call, tool result, answer) and every step's checkpoint."""
    turns: dict[int, list[int]] = {}
    for i in done:
        turns.setdefault(i // TURNS_PER_THREAD, []).append(i)
    problems: list[str] = []
    with connect(path=directory) as memory:
        saver = memory.checkpointer()
        try:
            agent = build_agent(saver)
            for ids in turns.values():
                config = thread(ids[0])
                name = config["configurable"]["thread_id"]
                messages = agent.get_state(config).values.get("messages", [])
                steps = sorted(int(t.metadata["step"]) for t in saver.list(config))  # type: ignore[arg-type]
                asked = [str(m.content) for m in messages if isinstance(m, HumanMessage)]
                wanted = [f"where is order {i}" for i in ids]
                if asked != wanted or len(messages) != 4 * len(wanted):
                    problems.append(
                        f"{name}: asked {wanted}; the state holds {asked} in {len(messages)} messages"
                    )
                if steps != list(range(-1, len(steps) - 1)):
                    problems.append(f"{name}: checkpoints of steps {steps}: some are missing")
        finally:
            saver.close()
    return problems


def test_an_agent_checkpointing_every_50_ms_for_a_minute_never_notices_a_rotation_and_a_blip(
    e2e: E2E, tmp_path: Path
) -> None:
    rotation: dict[str, Any] = {"gracePeriod": LOAD_GRACE_PERIOD}
    with (
        e2e.ready_memories("agent", KEYS, deletionPolicy="Delete", rotation=rotation) as names,
        ThreadPoolExecutor(len(KEYS)) as pool,
    ):
        runs = {
            key: pool.submit(run_agent_through_a_rotation, e2e, key, names[key], tmp_path / key)
            for key in KEYS
        }
        problems = {key: run.result() for key, run in runs.items()}
    assert {key: found for key, found in problems.items() if found} == {}
