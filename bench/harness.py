"""Timing, statistics, round-trip counters and the result rows every area module returns.

Used by every ``bench.<area>`` module and by :mod:`bench.report`.

- :func:`compare` times several candidates **interleaved** (round-robin batches), so slow drift of a
  shared machine hits all of them alike; each gets at least ``min_runs`` runs and ``min_time`` seconds.
- :func:`measure` times one callable (the same rules).
- :class:`RoundTrips` counts client round trips exactly, at the socket-write level: one per redis-py
  ``send_packed_command`` (a pipeline is one), one per PyMySQL command packet (a query, a COMMIT).
- :class:`Row` is one line of the report: chatmemory's figure, a peer's, the ratio and the goal.
"""

from __future__ import annotations

import gc
import itertools
import statistics
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Settings:
    """How long to measure; ``--quick`` shrinks everything for a smoke run."""

    quick: bool = False
    min_runs: int = 30
    min_time: float = 1.0
    max_time: float = 4.0
    gc_off: bool = True

    @classmethod
    def make(cls, quick: bool, gc_off: bool = True) -> Settings:
        if quick:
            return cls(quick=True, min_runs=7, min_time=0.15, max_time=0.6, gc_off=gc_off)
        return cls(quick=False, gc_off=gc_off)


@dataclass
class Stat:
    """One candidate's timing: median and spread (seconds), runs, and what it costs on the wire."""

    name: str
    median: float
    p10: float
    p90: float
    n: int
    gc_off: bool = True
    round_trips: float | None = None  # client round trips per operation (exact)
    server: str = ""  # server-side counters per operation (commandstats, statements)
    note: str = ""
    rounds: dict[int, float] = field(default_factory=dict)  # round index -> median of that batch
    group: int = 0  # which compare() call measured it: only stats of one call are paired

    def with_(self, **kw: Any) -> Stat:
        d = asdict(self)
        d.update(kw)
        return Stat(**d)


def summarize(name: str, times: list[float], gc_off: bool, rounds: dict[int, float] | None = None) -> Stat:
    ts = sorted(times)
    n = len(ts)
    if n == 0:
        return Stat(name, float("nan"), float("nan"), float("nan"), 0, gc_off)

    def q(p: float) -> float:
        if n == 1:
            return ts[0]
        k = p * (n - 1)
        lo = int(k)
        hi = min(lo + 1, n - 1)
        return ts[lo] + (ts[hi] - ts[lo]) * (k - lo)

    return Stat(name, statistics.median(ts), q(0.10), q(0.90), n, gc_off, rounds=dict(rounds or {}))


@contextmanager
def gc_paused(enabled: bool) -> Iterator[None]:
    was = gc.isenabled()
    if enabled and was:
        gc.collect()
        gc.disable()
    try:
        yield
    finally:
        if enabled and was:
            gc.enable()


_GROUPS = itertools.count(1)


def compare(
    candidates: dict[str, Callable[[], Any]],
    s: Settings,
    *,
    min_runs: int | None = None,
    min_time: float | None = None,
    max_time: float | None = None,
    warmup: int = 2,
    gc_off: bool | None = None,
    exact_runs: int | None = None,
) -> dict[str, Stat]:
    """Time each candidate, interleaved; every call is one timed sample.

    ``exact_runs``: every candidate runs exactly that many timed calls (for stateful calls whose cost
    grows with each call, such as a turn that appends to the history it reads).
    """
    min_runs = s.min_runs if min_runs is None else min_runs
    min_time = s.min_time if min_time is None else min_time
    if exact_runs is not None:
        min_runs, min_time = exact_runs, 0.0
    max_time = s.max_time if max_time is None else max(max_time, min_time)
    gc_off = s.gc_off if gc_off is None else gc_off
    names = list(candidates)
    samples: dict[str, list[float]] = {n: [] for n in names}
    spent: dict[str, float] = dict.fromkeys(names, 0.0)
    # Warm up and estimate a batch size (aim ~40 ms per batch, at least one call).
    batch: dict[str, int] = {}
    for n in names:
        fn = candidates[n]
        t = 0.0
        for _ in range(warmup):
            t0 = time.perf_counter()
            fn()
            t = time.perf_counter() - t0
        batch[n] = max(1, min(200, int(0.04 / max(t, 1e-6)))) if warmup else 1
        if exact_runs is not None:  # at least ~10 interleaved rounds
            batch[n] = max(1, min(batch[n], exact_runs // 10))
    pc = time.perf_counter
    rounds: dict[str, dict[int, float]] = {n: {} for n in names}
    r = 0
    with gc_paused(gc_off):
        while True:
            active = [
                n
                for n in names
                if (len(samples[n]) < min_runs or spent[n] < min_time) and spent[n] < max_time
            ]
            # min_runs wins over max_time: a slow candidate still gets its runs.
            active += [n for n in names if n not in active and len(samples[n]) < min_runs]
            if exact_runs is not None:
                active = [n for n in names if len(samples[n]) < exact_runs]
            if not active:
                break
            for n in active:
                fn = candidates[n]
                out = samples[n]
                k = batch[n] if exact_runs is None else min(batch[n], exact_runs - len(out))
                start = len(out)
                for _ in range(k):
                    t0 = pc()
                    fn()
                    dt = pc() - t0
                    out.append(dt)
                    spent[n] += dt
                if len(out) > start:
                    rounds[n][r] = statistics.median(out[start:])
            r += 1
            if gc_off:
                # Keep the heap from growing without bound between batches, outside timed calls.
                gc.collect(0)
    group = next(_GROUPS)
    return {n: summarize(n, samples[n], gc_off, rounds[n]).with_(group=group) for n in names}


def measure(fn: Callable[[], Any], name: str, s: Settings, **kw: Any) -> Stat:
    return compare({name: fn}, s, **kw)[name]


def time_once(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


# --------------------------------------------------------------------------------------------
# Round trips, counted at the client's socket writes


class RoundTrips:
    """Patch (bench-only) the send paths of redis-py (sync + asyncio) and PyMySQL to count calls."""

    counts: dict[str, int] = {"redis": 0, "mysql": 0}  # noqa: RUF012
    _installed = False

    @classmethod
    def install(cls) -> None:
        if cls._installed:
            return
        cls._installed = True
        try:
            import redis.connection as rc

            orig = rc.AbstractConnection.send_packed_command

            def send_packed_command(self: Any, command: Any, check_health: bool = True) -> Any:
                cls.counts["redis"] += 1
                return orig(self, command, check_health)

            rc.AbstractConnection.send_packed_command = send_packed_command  # type: ignore[method-assign]
        except ImportError:
            pass
        try:
            import redis.asyncio.connection as rac

            aorig = rac.AbstractConnection.send_packed_command

            async def asend_packed_command(self: Any, command: Any, check_health: bool = True) -> Any:
                cls.counts["redis"] += 1
                return await aorig(self, command, check_health)

            rac.AbstractConnection.send_packed_command = asend_packed_command  # type: ignore[method-assign]
        except ImportError:
            pass
        try:
            import pymysql.connections as pc

            morig = pc.Connection._execute_command

            def _execute_command(self: Any, command: Any, sql: Any) -> Any:
                cls.counts["mysql"] += 1
                return morig(self, command, sql)

            pc.Connection._execute_command = _execute_command  # type: ignore[method-assign]
        except ImportError:
            pass

    @classmethod
    def per_op(cls, kind: str, fn: Callable[[], Any], ops: int = 10) -> float:
        """Client round trips per call of ``fn`` (after one untimed warm-up call)."""
        cls.install()
        fn()
        before = cls.counts[kind]
        for _ in range(ops):
            fn()
        return (cls.counts[kind] - before) / ops

    @classmethod
    async def aper_op(cls, kind: str, fn: Callable[[], Any], ops: int = 10) -> float:
        cls.install()
        await fn()
        before = cls.counts[kind]
        for _ in range(ops):
            await fn()
        return (cls.counts[kind] - before) / ops


def redis_commandstats(client: Any) -> dict[str, int]:
    info = client.info("commandstats")
    out: dict[str, int] = {}
    for k, v in info.items():
        name = k.removeprefix("cmdstat_")
        out[name] = int(v["calls"]) if isinstance(v, dict) else 0
    return out


def redis_server_per_op(admin: Any, fn: Callable[[], Any], ops: int = 20) -> str:
    """Commands the server executed per call, from ``INFO commandstats`` deltas.

    The server is shared: other clients' commands can show up; entries under 0.5 per op are dropped
    as noise, and the breakdown makes stray ones visible.
    """
    fn()
    before = redis_commandstats(admin)
    for _ in range(ops):
        fn()
    after = redis_commandstats(admin)
    per = {
        k: (after.get(k, 0) - before.get(k, 0)) / ops
        for k in after
        if k not in ("info",) and after.get(k, 0) - before.get(k, 0) > 0
    }
    per = {k: v for k, v in per.items() if v >= 0.5}
    total = sum(per.values())
    parts = " ".join(f"{k}:{v:g}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]))
    return f"{total:g} cmds ({parts})" if per else "0 cmds"


# --------------------------------------------------------------------------------------------
# Rows


#: Rounds both sides must share for a paired ratio.
PAIRED_MIN_ROUNDS = 5


@dataclass
class Check:
    label: str
    ok: bool
    detail: str = ""


@dataclass
class Row:
    """One comparison: ``ours`` (chatmemory) against ``peer``, ratio = ours / peer (lower is better)."""

    area: str
    measure: str
    ours: Stat | None = None
    peer: Stat | None = None
    goal_max_ratio: float | None = None  # pass when ours/peer <= this
    goal: str = ""
    checks: list[Check] = field(default_factory=list)
    note: str = ""
    skipped: str = ""

    @property
    def ratio(self) -> float | None:
        if (
            self.ours is None
            or self.peer is None
            or not self.peer.median
            or self.peer.median != self.peer.median
        ):
            return None
        common = sorted(set(self.ours.rounds) & set(self.peer.rounds))
        if self.paired:
            return statistics.median(self.ours.rounds[i] / self.peer.rounds[i] for i in common)
        return self.ours.median / self.peer.median

    @property
    def paired(self) -> bool:
        """The ratio is the median over interleaved rounds of ours/peer (two batches that ran back
        to back, so load changes cancel), not the ratio of the two medians."""
        if (
            self.ours is None
            or self.peer is None
            or not self.ours.group
            or self.ours.group != self.peer.group
        ):
            return False
        return len(set(self.ours.rounds) & set(self.peer.rounds)) >= PAIRED_MIN_ROUNDS

    @property
    def passed(self) -> bool | None:
        if self.skipped:
            return None
        oks: list[bool] = [c.ok for c in self.checks]
        if self.goal_max_ratio is not None:
            r = self.ratio
            if r is None:
                return None
            oks.append(r <= self.goal_max_ratio)
        if not oks:
            return None
        return all(oks)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for side in ("ours", "peer"):
            if d[side]:
                d[side]["rounds"] = len(d[side]["rounds"])
        d["ratio"] = self.ratio
        d["ratio_paired"] = self.paired
        d["passed"] = self.passed
        return d


def skipped(area: str, measure: str, reason: str, goal: str = "") -> Row:
    return Row(area=area, measure=measure, goal=goal, skipped=reason)


def guarded(area: str, measure: str, rows: list[Row], goal: str = "") -> Callable[..., Any]:
    """Decorator-ish runner: call ``fn``; on an exception append a skipped row with the reason."""

    def run(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - a failed measure must not stop the bench
            tb = traceback.format_exc(limit=3)
            print(f"  ! {area} / {measure}: {type(e).__name__}: {e}\n{tb}")
            rows.append(skipped(area, measure, f"error: {type(e).__name__}: {str(e)[:160]}", goal))
            return None

    return run


def fmt_time(sec: float | None) -> str:
    if sec is None or sec != sec:
        return "-"
    if sec < 1e-3:
        return f"{sec * 1e6:.0f} µs"
    if sec < 1:
        return f"{sec * 1e3:.2f} ms"
    return f"{sec:.2f} s"
