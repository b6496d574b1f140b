"""``python -m bench [--quick] [--only AREAS] [--scale N] [--gc] [--no-write]
[--operator-backends kafka,tidb] [--profile-operator]`` (``make bench BENCH_ARGS=...``).

Runs each area in turn against the platform env file, prints the ratio table and writes
``bench/results/latest.md``, ``bench/results/<timestamp>.json`` and the Redis read-time plot.
An area whose servers or chatmemory classes are missing prints why and is skipped; the run goes on.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import platform
import sys
import time
import warnings

from bench import report
from bench.env import RESULTS, Ctx, env_path, package_versions, read_env, server_versions
from bench.harness import RoundTrips, Row, Settings, skipped

AREAS = {
    "redis": "bench.redis_history",
    "kafka": "bench.kafka_history",
    "tidb": "bench.tidb_history",
    "agent": "bench.agent",
    "async": "bench.async_turns",
    "checkpoint": "bench.checkpoint",
    "store": "bench.store",
    "operator": "bench.operator_scale",
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument(
        "--quick", action="store_true", help="a fast smoke run (~1 min): fewer runs, smaller sizes"
    )
    ap.add_argument("--only", default="", help=f"comma-separated areas: {','.join(AREAS)}")
    ap.add_argument(
        "--scale",
        type=int,
        default=None,
        help="ChatMemory objects for the operator, sessions in the Kafka topic (1000; --quick: 50)",
    )
    ap.add_argument("--gc", action="store_true", help="leave Python's GC on during timed calls")
    ap.add_argument("--no-write", action="store_true", help="print only; leave bench/results/ alone")
    ap.add_argument(
        "--operator-backends",
        default="redis",
        help="stores for the operator at scale: redis (the goals; always) plus kafka,tidb (time to all "
        "Ready and where it goes, with the operator's stacks sampled)",
    )
    ap.add_argument(
        "--profile-operator",
        action="store_true",
        help="sample the operator's thread stacks during the bulk apply and print where its time goes "
        "(slows it: the timings of that run are not the figures to report)",
    )
    args = ap.parse_args(argv)
    only = [a.strip() for a in args.only.split(",") if a.strip()] or list(AREAS)
    unknown = [a for a in only if a not in AREAS]
    if unknown:
        ap.error(f"unknown area(s) {unknown}; choose from {', '.join(AREAS)}")

    path = env_path()
    if not path.exists():
        print(f"no platform env file at {path}: bring the platform up (`make platform-up`) first")
        return 2
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*LangChainBetaWarning.*")
    s = Settings.make(args.quick, gc_off=not args.gc)
    scale = args.scale if args.scale is not None else (50 if args.quick else 1000)
    # The round-trip counters wrap the clients' send paths for the whole run, so every timing, ours
    # and the peers', carries the same (sub-µs) wrapper cost.
    RoundTrips.install()
    ctx = Ctx(env=read_env(path), s=s, scale=scale)
    ctx.extra["profile_operator"] = args.profile_operator
    ctx.extra["operator_backends"] = [b.strip() for b in args.operator_backends.split(",") if b.strip()]
    started = dt.datetime.now(dt.UTC)
    t0 = time.perf_counter()
    print(
        f"bench {ctx.run_id}: {'quick' if s.quick else 'full'} run, areas {','.join(only)}, "
        f"{os.cpu_count()} CPUs, env {path}"
    )
    rows: list[Row] = []
    notes: list[str] = []
    for area in only:
        print(f"\n== {area}")
        ta = time.perf_counter()
        try:
            mod = importlib.import_module(AREAS[area])
            out = mod.run(ctx)
        except Exception as e:  # noqa: BLE001 - one area failing must not lose the others' figures
            import traceback

            traceback.print_exc()
            out = [skipped(area, "all measures", f"error: {type(e).__name__}: {str(e)[:200]}")]
        finally:
            while ctx.cleanups:
                fn = ctx.cleanups.pop()
                try:
                    fn()
                except Exception as e:  # noqa: BLE001
                    print(f"  cleanup failed: {e}")
        rows.extend(out)
        notes.extend(ctx.extra.pop("notes", []))
        print(f"   ({area}: {time.perf_counter() - ta:.0f} s)")
    duration = time.perf_counter() - t0
    cmd = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
    meta = {
        "run_id": ctx.run_id,
        "started": started.strftime("%Y-%m-%d %H:%M:%S"),
        "command": cmd.strip(),
        "quick": s.quick,
        "gc_off": s.gc_off,
        "min_runs": s.min_runs,
        "min_time_s": s.min_time,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.platform(),
        "duration_s": duration,
        "areas": only,
        "packages": package_versions(),
        "servers": server_versions(ctx.env),
        "notes": notes,
    }
    print("\n" + report.console(rows))
    print(
        f"\n{sum(r.passed is True for r in rows)} met, {sum(r.passed is False for r in rows)} missed, "
        f"{sum(bool(r.skipped) for r in rows)} skipped; {duration:.0f} s"
    )
    if args.no_write:
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot = "redis_read_curve.png" if report.plot_curve(ctx.extra, RESULTS / "redis_read_curve.png") else None
    (RESULTS / "latest.md").write_text(report.markdown(rows, meta, ctx.extra, plot))
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    js = {"meta": meta, "rows": [r.to_json() for r in rows], "extra": ctx.extra}
    (RESULTS / f"{stamp}.json").write_text(json.dumps(js, indent=2, default=str))
    print(
        f"wrote {RESULTS / 'latest.md'}, {RESULTS / (stamp + '.json')}"
        + (f", {RESULTS / plot}" if plot else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
