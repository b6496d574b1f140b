"""The report: the ratio table on stdout, ``latest.md``, a timestamped JSON and the read-time plot.

Called by :mod:`bench.__main__` with every area's rows and the run's metadata.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bench.harness import Row, Stat, fmt_time


def _mark(r: Row) -> str:
    if r.skipped:
        return "skip"
    p = r.passed
    return "—" if p is None else ("pass" if p else "**miss**")


def _stat(s: Stat | None) -> str:
    if s is None:
        return "-"
    return f"{fmt_time(s.median)} [{fmt_time(s.p10)}–{fmt_time(s.p90)}] n={s.n}"


def _rt(s: Stat | None) -> str:
    if s is None:
        return "-"
    parts = []
    if s.round_trips is not None:
        parts.append(f"{s.round_trips:g} RTT")
    if s.server:
        parts.append(s.server)
    return "; ".join(parts) or "-"


def table(rows: list[Row]) -> str:
    head = (
        "| area | measure | chatmemory median [p10–p90] | peer | peer median [p10–p90] | ratio | goal "
        "| result | chatmemory round trips | peer round trips | checks / notes |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    out = []
    for r in rows:
        ratio = r.ratio
        rtxt = f"{ratio:.2f}x" if ratio is not None and not math.isnan(ratio) else "-"
        if ratio is not None and not r.paired:
            rtxt += " †"
        notes = "; ".join(f"{'✓' if c.ok else '✗'} {c.label} ({c.detail})" for c in r.checks)
        extra = r.skipped or r.note
        if r.ours and r.ours.note:
            extra = (extra + "; " if extra else "") + f"ours: {r.ours.note}"
        if r.peer and r.peer.note and r.peer.note != r.note:
            extra = (extra + "; " if extra else "") + f"peer: {r.peer.note}"
        notes = "; ".join(x for x in (notes, extra) if x)
        pname = r.peer.name if r.peer else "-"
        out.append(
            f"| {r.area} | {r.measure} | {_stat(r.ours)} | {pname} | {_stat(r.peer)} | {rtxt} "
            f"| {r.goal or '-'} | {_mark(r)} | {_rt(r.ours)} | {_rt(r.peer)} | {notes.replace('|', '/')} |"
        )
    return head + "\n".join(out) + "\n"


def console(rows: list[Row]) -> str:
    lines = [
        f"{'area':<10} {'measure':<38} {'ours':>10} {'peer':<44} {'peer t':>10} {'ratio':>7} "
        f"{'goal':<24} result"
    ]
    for r in rows:
        ratio = r.ratio
        rt = f"{ratio:.2f}x" if ratio is not None and not math.isnan(ratio) else "-"
        pname = (r.peer.name if r.peer else "-")[:44]
        res = _mark(r).replace("*", "")
        rts = [x.round_trips for x in (r.ours, r.peer) if x is not None]
        if any(v is not None for v in rts):
            res += " rtt " + "/".join("-" if v is None else f"{v:g}" for v in rts)
        if r.skipped:
            res += f" ({r.skipped[:90]})"
        elif r.checks:
            res += " " + " ".join(f"[{'ok' if c.ok else 'NO'} {c.label}: {c.detail}]" for c in r.checks)
        lines.append(
            f"{r.area:<10} {r.measure[:38]:<38} {fmt_time(r.ours.median if r.ours else None):>10} "
            f"{pname:<44} {fmt_time(r.peer.median if r.peer else None):>10} {rt:>7} {r.goal[:24]:<24} {res}"
        )
    return "\n".join(lines)


def markdown(rows: list[Row], meta: dict[str, Any], extra: dict[str, Any], plot: str | None) -> str:
    md = ["# chatmemory benchmarks", ""]
    md.append(
        f"Run {meta['started']} UTC, `{meta['command']}`, {meta['cpus']} CPUs, Python {meta['python']}, "
        f"{'quick' if meta['quick'] else 'full'} mode, GC {'disabled' if meta['gc_off'] else 'enabled'} "
        f"during timed calls, {meta['duration_s']:.0f} s total."
    )
    md.append("")
    md.append(
        f"Every figure is the median of at least {meta['min_runs']} runs and {meta['min_time_s']:g} s per "
        "candidate (slow or stateful operations: a fixed run count, shown as n), candidates interleaved "
        "in round-robin batches so a shared machine's drift hits them alike; [p10–p90] is the spread. "
        "Absolute times on a shared 2-core machine are noise: the ratio (chatmemory / peer, lower is "
        "better) from one run is the figure that counts. It is paired: the median, over the interleaved "
        "rounds, of chatmemory's batch median divided by the peer's batch median of the same round, so "
        "load that comes and goes cancels out († marks a plain ratio of medians, where the two sides "
        "were not measured in one interleaved set). Round trips are counted exactly at the client's "
        "socket writes (redis-py `send_packed_command`, PyMySQL command packets, Kafka Produce requests "
        "from librdkafka statistics); server counters (Redis `INFO commandstats` deltas, TiDB "
        "`STATEMENTS_SUMMARY`) follow them where available (a shared server: stray commands can show)."
    )
    passed = sum(1 for r in rows if r.passed is True)
    missed = [r for r in rows if r.passed is False]
    skipped = [r for r in rows if r.skipped]
    md.append("")
    md.append(f"**{passed} goals met, {len(missed)} missed, {len(skipped)} skipped.**")
    md.append("")
    md.append("## Goals")
    md.append("")
    md.append("| area | measure | against | ratio | goal | result | checks / notes |")
    md.append("|---|---|---|---|---|---|---|")
    for r in rows:
        if r.passed is None and not (r.skipped and r.goal and r.goal != "info"):
            continue
        ratio = r.ratio
        rtxt = f"{ratio:.2f}x" if ratio is not None and not math.isnan(ratio) else "-"
        if r.ours is not None and r.peer is None:
            rtxt = fmt_time(r.ours.median)
        checks = "; ".join(
            x
            for x in (
                "; ".join(f"{'✓' if c.ok else '✗'} {c.label} ({c.detail})" for c in r.checks),
                r.skipped,
                r.note,
            )
            if x
        )
        md.append(
            f"| {r.area} | {r.measure} | {r.peer.name if r.peer else '-'} | {rtxt} | {r.goal} | {_mark(r)} "
            f"| {checks.replace('|', '/')} |"
        )
    md.append("")
    md.append("## Ratios")
    md.append("")
    md.append(table(rows))
    for key, title in (
        ("redis_counts_beyond", "Redis: messages returned from a longer history"),
        ("kafka_counts", "Kafka: messages returned (completeness)"),
        ("operator", "Operator at scale (Redis store)"),
        ("operator_kafka", "Operator at scale (Kafka store)"),
        ("operator_tidb", "Operator at scale (TiDB store)"),
    ):
        if key in extra:
            md.append(f"## {title}")
            md.append("")
            md.append("```")
            md.append(json.dumps(extra[key], indent=2, default=str))
            md.append("```")
            md.append("")
    if plot:
        md.append("## Redis read time against history length")
        md.append("")
        md.append(f"![read time vs history length]({plot})")
        md.append("")
        curve = extra.get("redis_curve", {})
        if curve:
            sizes = sorted({k for d in curve.values() for k in d})
            md.append("| candidate | " + " | ".join(f"{n:,}" for n in sizes) + " |")
            md.append("|---|" + "---|" * len(sizes))
            for name, d in curve.items():
                md.append(f"| {name} | " + " | ".join(fmt_time(d.get(n)) for n in sizes) + " |")
            md.append("")
    md.append("## Versions")
    md.append("")
    md.append("| what | version |")
    md.append("|---|---|")
    for k, v in {**meta["servers"], **meta["packages"]}.items():
        md.append(f"| {k} | {v} |")
    md.append("")
    if meta.get("notes"):
        md.append("## Notes")
        md.append("")
        md.extend(f"- {n}" for n in meta["notes"])
        md.append("")
    return "\n".join(md)


def plot_curve(extra: dict[str, Any], path: Path) -> bool:
    curve = extra.get("redis_curve")
    if not curve:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    spread = extra.get("redis_curve_spread", {})
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for name, d in curve.items():
        xs = sorted(d)
        ys = [d[x] * 1e3 for x in xs]
        style = "-o" if name.startswith("chatmemory") else "--."
        ax.plot(xs, ys, style, label=name, linewidth=2.2 if name.startswith("chatmemory") else 1.2)
        sp = spread.get(name)
        if sp:
            ax.fill_between(xs, [sp[x][0] * 1e3 for x in xs], [sp[x][1] * 1e3 for x in xs], alpha=0.12)
    counts = extra.get("redis_counts_beyond", {})
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("messages in the session")
    ax.set_ylabel("read the whole history (ms, median; band p10–p90)")
    title = "Redis: read time against history length"
    if counts:
        lcr = counts.get("langchain-redis (Redis 8)", "-")
        title += f"\n(at {counts.get('written')} written, langchain-redis returns {lcr})"
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
