"""Run the operator with a stack sampler over all its threads: where its time goes.

``python -m bench.sampled_operator`` (started by :mod:`bench.operator_scale` with
``--profile-operator``) runs ``chatmemory_operator`` as ``__main__`` and, from a daemon thread,
samples every thread's stack every ``BENCH_SAMPLE_MS`` (5 ms). cProfile sees only the main thread,
and kopf runs sync handlers in executor threads, so this is the profile that shows them. At exit it
writes ``BENCH_SAMPLES_OUT`` (JSON): sample counts by innermost frame (``module:function``), by the
outermost ``chatmemory_operator`` function on the stack, and by state (busy, waiting on a socket,
idle), and the Python heap by file at exit (tracemalloc). py-spy would be the usual tool; it is not
in the locked environment, this needs nothing.
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import runpy
import sys
import threading
import time
from types import FrameType

#: Innermost functions that mean "blocked, not computing".
_IDLE = {"select", "poll", "wait", "_wait_for_tstate_lock", "get", "acquire", "sleep", "_worker"}
_IO = {"recv", "recv_into", "read", "readinto", "_safe_read", "readline", "sendall", "send", "do_handshake"}


def _where(f: FrameType) -> str:
    mod = f.f_globals.get("__name__", "?")
    name = f.f_code.co_name
    if name == "<lambda>":  # several API calls are lambdas: the line tells them apart
        name = f"<lambda> line {f.f_lineno}"
    return f"{mod}:{name}"


def main() -> None:
    import tracemalloc

    # Python heap by file, for the RSS figure (C allocations are not seen); BENCH_TRACE_FRAMES > 1
    # also records where the biggest allocations were made (slower).
    frames = int(os.environ.get("BENCH_TRACE_FRAMES", "1"))
    tracemalloc.start(frames)
    out = os.environ.get("BENCH_SAMPLES_OUT", "operator-samples.json")
    interval = float(os.environ.get("BENCH_SAMPLE_MS", "5")) / 1000
    leaf: collections.Counter[str] = collections.Counter()
    owner: collections.Counter[str] = collections.Counter()
    inner: collections.Counter[str] = collections.Counter()
    state: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    total = [0]

    def sample() -> None:
        me = threading.get_ident()
        while True:
            time.sleep(interval)
            frames = sys._current_frames()
            with lock:
                total[0] += 1
                for tid, f in frames.items():
                    if tid == me:
                        continue
                    name = f.f_code.co_name
                    mod = f.f_globals.get("__name__", "")
                    ours = first = None
                    g: FrameType | None = f
                    while g is not None:
                        if g.f_globals.get("__name__", "").startswith("chatmemory_operator"):
                            ours = _where(g)  # keeps the outermost one
                            first = first or ours  # and the innermost
                        g = g.f_back
                    waiting = name in _IDLE and mod in (
                        "selectors",
                        "threading",
                        "queue",
                        "concurrent.futures.thread",
                        "concurrent.futures._base",
                    )
                    if waiting and ours is None:
                        state["idle"] += 1  # an idle worker or the event loop with nothing to do
                        continue
                    # Inside an operator function: waiting on a future or a lock is part of its time
                    # (librdkafka's admin futures, for one).
                    kind = "blocked" if waiting else ("socket wait" if name in _IO else "busy")
                    state[kind] += 1
                    leaf[_where(f)] += 1
                    if ours:
                        owner[f"{ours} [{kind}]"] += 1
                        inner[f"{first} [{kind}]"] += 1

    def dump() -> None:
        snap = tracemalloc.take_snapshot()
        stats = snap.statistics("filename")
        heap = [[st.traceback[0].filename, st.size] for st in stats[:15]]
        with lock:
            data = {
                "interval_s": interval,
                "ticks": total[0],
                "state": dict(state),
                "leaf": leaf.most_common(40),
                "operator_function": owner.most_common(40),
                "innermost_operator_function": inner.most_common(40),
                "python_heap_total": sum(st.size for st in stats),
                "python_heap_by_file": heap,
            }
            if frames > 1:
                data["python_heap_by_traceback"] = [
                    [st.size, st.count, st.traceback.format()] for st in snap.statistics("traceback")[:25]
                ]
        with open(out, "w") as fh:
            json.dump(data, fh, indent=1)

    atexit.register(dump)
    threading.Thread(target=sample, daemon=True, name="bench-sampler").start()
    sys.argv = ["chatmemory_operator"]
    runpy.run_module("chatmemory_operator", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
