"""Redis: add one turn, read 100, read 10,000 (complete, linear) and the read-time curve.

Called by :mod:`bench.__main__` (``--only redis``). Every pair runs on one server: chatmemory
against the raw floor, the Memorystore layout and the community history on Redis 7 (``REDIS_URL``);
chatmemory against langchain-redis on Redis 8 with the search modules (``REDIS_SEARCH_URL``, redis-py
``protocol=2``: under RESP3 langchain-redis breaks on an existing index). Every history has a TTL, so
every candidate sets an expiry on write.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from typing import Any

from bench import data
from bench.env import Ctx, cm, missing
from bench.harness import Check, RoundTrips, Row, Stat, compare, guarded, redis_server_per_op, skipped
from bench.peers import MemorystoreLayoutHistory

AREA = "redis"
TTL = 3600
CURVE_SIZES_FULL = (10, 30, 100, 300, 1000, 3000, 10000)
CURVE_SIZES_QUICK = (10, 100, 1000, 10000)
BEYOND = 12000  # > langchain-redis's silent 10,000 cap


def _cleanup(client: Any, pattern: str) -> None:
    keys = list(client.scan_iter(match=pattern, count=1000))
    for i in range(0, len(keys), 500):
        client.unlink(*keys[i : i + 500])


class _Side:
    """Every candidate's history objects on one server, plus a writer that bulk-extends them."""

    def __init__(self, ctx: Ctx, url: str, tag: str, search: bool) -> None:
        import redis

        self.url = url
        self.prefix = f"{ctx.name('redis' + tag)}:"
        self.client = redis.Redis.from_url(url, protocol=2 if search else None)
        self.admin = redis.Redis.from_url(url, protocol=2)
        self.search = search
        self.h: dict[str, Any] = {}
        self.raw_key = ""

    def make(self, sid: str) -> dict[str, Any]:
        """Histories for one session id, one per candidate that runs on this server."""
        from langchain_community.chat_message_histories import RedisChatMessageHistory as Community

        Cm = cm("RedisChatMessageHistory")
        out: dict[str, Any] = {}
        if Cm is not None:
            out["chatmemory"] = Cm(sid, redis_url=self.url, key_prefix=f"{self.prefix}cm:", ttl=TTL)
        if self.search:
            from langchain_redis import RedisChatMessageHistory as LcRedis

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out["langchain-redis"] = LcRedis(
                    sid,
                    key_prefix=f"{self.prefix}lcr:",
                    index_name=f"{self.prefix}idx",
                    ttl=TTL,
                    redis_client=self.client,
                )
        else:
            out["community"] = Community(sid, url=self.url, key_prefix=f"{self.prefix}community:", ttl=TTL)
            out["memorystore layout"] = MemorystoreLayoutHistory(
                self.client, f"{self.prefix}ms:{sid}", ttl=TTL
            )
        return out

    def raw_add(self, key: str) -> Callable[[list[Any]], None]:
        """The floor: one MULTI pipeline (RPUSH all, EXPIRE), LangChain's own encoding."""

        def add(msgs: list[Any]) -> None:
            p = self.client.pipeline(transaction=True)
            p.rpush(key, *data.lc_encode_all(msgs))
            p.expire(key, TTL)
            p.execute()

        return add

    def raw_read(self, key: str) -> Callable[[], list[Any]]:
        """LangChain's decode path: LRANGE, json.loads each, messages_from_dict."""

        def read() -> list[Any]:
            return data.lc_decode(self.client.lrange(key, 0, -1))

        return read

    def extend(self, hs: dict[str, Any], raw_key: str, msgs: list[Any]) -> None:
        """Append ``msgs`` to every candidate's store in bulk (layout-exact, few round trips)."""
        for name, h in hs.items():
            if name == "community":  # LPUSH layout, read back reversed
                p = self.client.pipeline(transaction=False)
                for chunk in _chunks(data.lc_encode_all(msgs), 1000):
                    p.lpush(h.key, *chunk)
                p.execute()
            elif name == "memorystore layout":
                p = self.client.pipeline(transaction=False)
                for chunk in _chunks(data.lc_encode_all(msgs), 1000):
                    p.rpush(h.key, *chunk)
                p.execute()
            else:
                for chunk in _chunks(msgs, 1000):
                    h.add_messages(chunk)
        if raw_key:
            for chunk in _chunks(msgs, 1000):
                self.raw_add(raw_key)(chunk)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.search:
                self.admin.execute_command("FT.DROPINDEX", f"{self.prefix}idx")
        with contextlib.suppress(Exception):
            _cleanup(self.admin, f"{self.prefix}*")


def _exponent(points: dict[int, float]) -> float:
    """k of the least-squares fit log t = log a + k log n (1.0 = linear)."""
    import math

    xs = [math.log(n) for n in points]
    ys = [math.log(t) for t in points.values()]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs) or 1.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den


def _chunks(xs: list[Any], n: int) -> list[list[Any]]:
    return [xs[i : i + n] for i in range(0, len(xs), n)]


def run(ctx: Ctx) -> list[Row]:
    rows: list[Row] = []
    if reason := ctx.need("REDIS_URL"):
        return [skipped(AREA, "all Redis measures", reason)]
    if cm("RedisChatMessageHistory") is None:
        print("  chatmemory.RedisChatMessageHistory missing: peers only")
    r7 = _Side(ctx, ctx.env["REDIS_URL"], "7", search=False)
    ctx.cleanups.append(r7.close)
    r8: _Side | None = None
    if ctx.env.get("REDIS_SEARCH_URL"):
        r8 = _Side(ctx, ctx.env["REDIS_SEARCH_URL"], "8", search=True)
        ctx.cleanups.append(r8.close)
    try:
        guarded(AREA, "add one turn", rows)(lambda: _add_turn(ctx, rows, r7, r8))
        guarded(AREA, "read 100 messages", rows)(lambda: _read_100(ctx, rows, r7, r8))
        guarded(AREA, "read curve / 10,000", rows)(lambda: _curve(ctx, rows, r7, r8))
    finally:
        r7.close()
        if r8 is not None:
            r8.close()
    return rows


def _add_turn(ctx: Ctx, rows: list[Row], r7: _Side, r8: _Side | None) -> None:
    turn = data.turn(1)
    cands: dict[str, Callable[[], Any]] = {}
    h7 = r7.make("add")
    raw_key = f"{r7.prefix}raw:add"
    raw = r7.raw_add(raw_key)
    for name, h in h7.items():
        cands[f"{name} (Redis 7)"] = lambda h=h: h.add_messages(turn)
    cands["raw MULTI pipeline (Redis 7)"] = lambda: raw(turn)
    h8: dict[str, Any] = {}
    if r8 is not None:
        h8 = r8.make("add")
        for name, h in h8.items():
            cands[f"{name} (Redis 8)"] = lambda h=h: h.add_messages(turn)
    print(f"  add one turn: {', '.join(cands)}")
    st = compare(cands, ctx.s, min_time=ctx.s.min_time * 2)  # goal rows: more interleaved rounds
    for name, fn in cands.items():
        admin = r8.admin if "Redis 8" in name and r8 else r7.admin
        st[name] = st[name].with_(
            round_trips=RoundTrips.per_op("redis", fn), server=redis_server_per_op(admin, fn)
        )
    ours = st.get("chatmemory (Redis 7)")
    ours8 = st.get("chatmemory (Redis 8)")
    one_rt = [Check("1 round trip", ours.round_trips == 1, f"{ours.round_trips:g} RTT")] if ours else []
    goal_reason = "" if ours else missing("RedisChatMessageHistory")
    rows.append(
        Row(
            AREA,
            "add one turn (2 msgs)",
            ours,
            st["raw MULTI pipeline (Redis 7)"],
            1.1,
            "≤ 1.1x raw floor",
            checks=one_rt,
            skipped=goal_reason,
        )
    )
    rows.append(
        Row(
            AREA,
            "add one turn (2 msgs)",
            ours,
            st["memorystore layout (Redis 7)"],
            0.5,
            "≥ 2x faster",
            skipped=goal_reason,
        )
    )
    rows.append(
        Row(
            AREA,
            "add one turn (2 msgs)",
            ours,
            st["community (Redis 7)"],
            None,
            "info",
            skipped=goal_reason,
        )
    )
    if r8 is not None and "langchain-redis (Redis 8)" in st:
        rows.append(
            Row(
                AREA,
                "add one turn (2 msgs), Redis 8",
                ours8,
                st["langchain-redis (Redis 8)"],
                0.5,
                "≥ 2x faster",
                skipped="" if ours8 else missing("RedisChatMessageHistory"),
            )
        )
    else:
        rows.append(
            skipped(AREA, "add one turn vs langchain-redis", "REDIS_SEARCH_URL not set", "≥ 2x faster")
        )
    guarded(AREA, "add one turn over a slower network", rows)(lambda: _add_turn_rtt(ctx, rows, r7))


def _add_turn_rtt(ctx: Ctx, rows: list[Row], r7: _Side) -> None:
    """The same adds through a delaying proxy (about 1 ms per round trip): round trips multiply."""
    from bench.async_turns import _ping_rtt, proxied

    purl = proxied(ctx, r7.url)
    rtt = _ping_rtt(purl)
    side = _Side(ctx, purl, "7p", search=False)
    side.prefix = r7.prefix + "p:"  # same server: r7's cleanup covers these keys
    turn = data.turn(1)
    hs = side.make("add")
    raw = side.raw_add(f"{side.prefix}raw:add")
    cands: dict[str, Callable[[], Any]] = {n: (lambda h=h: h.add_messages(turn)) for n, h in hs.items()}
    cands["raw MULTI pipeline"] = lambda: raw(turn)
    st = compare(cands, ctx.s, min_runs=10 if ctx.s.quick else 30, min_time=0.1 if ctx.s.quick else 0.5)
    ours = st.get("chatmemory")
    if ours is None:
        return
    label = f"add one turn, {rtt * 1e3:.1f} ms RTT (proxy)"
    for peer in ("raw MULTI pipeline", "memorystore layout", "community"):
        rows.append(Row(AREA, label, ours, st[peer], None, "info"))


def _read_100(ctx: Ctx, rows: list[Row], r7: _Side, r8: _Side | None) -> None:
    msgs = data.history(100)
    h7 = r7.make("read100")
    raw_key = f"{r7.prefix}raw:read100"
    r7.extend(h7, raw_key, msgs)
    cands: dict[str, Callable[[], Any]] = {f"{n} (Redis 7)": (lambda h=h: h.messages) for n, h in h7.items()}
    cands["LRANGE + json + messages_from_dict (Redis 7)"] = r7.raw_read(raw_key)
    h8: dict[str, Any] = {}
    if r8 is not None:
        h8 = r8.make("read100")
        r8.extend(h8, "", msgs)
        for n, h in h8.items():
            cands[f"{n} (Redis 8)"] = lambda h=h: h.messages
    counts = {n: len(fn()) for n, fn in cands.items()}
    same = {n: data.same(fn(), msgs) for n, fn in cands.items()}
    print(f"  read 100: counts {counts}; identical to what was written: {same}")
    st = compare(cands, ctx.s, min_time=ctx.s.min_time * 2)  # goal rows: more interleaved rounds
    for n, fn in cands.items():
        st[n] = st[n].with_(
            round_trips=RoundTrips.per_op("redis", fn, ops=5),
            note=f"{counts[n]} msgs{'' if same[n] else ', NOT identical'}",
        )
    ours = st.get("chatmemory (Redis 7)")
    why = "" if ours else missing("RedisChatMessageHistory")
    checks = (
        [Check("same objects", same.get("chatmemory (Redis 7)", False), "== written messages")]
        if ours
        else []
    )
    rows.append(
        Row(
            AREA,
            "read 100 messages",
            ours,
            st["LRANGE + json + messages_from_dict (Redis 7)"],
            0.5,
            "≤ 0.5x LangChain decode path",
            checks=checks,
            skipped=why,
        )
    )
    rows.append(Row(AREA, "read 100 messages", ours, st["community (Redis 7)"], None, "info", skipped=why))
    rows.append(
        Row(AREA, "read 100 messages", ours, st["memorystore layout (Redis 7)"], None, "info", skipped=why)
    )
    if "langchain-redis (Redis 8)" in st:
        o8 = st.get("chatmemory (Redis 8)")
        rows.append(
            Row(
                AREA,
                "read 100 messages, Redis 8",
                o8,
                st["langchain-redis (Redis 8)"],
                None,
                "info",
                skipped="" if o8 else why,
            )
        )


def _curve(ctx: Ctx, rows: list[Row], r7: _Side, r8: _Side | None) -> None:
    sizes = CURVE_SIZES_QUICK if ctx.s.quick else CURVE_SIZES_FULL
    h7 = r7.make("curve")
    raw_key = f"{r7.prefix}raw:curve"
    h8 = r8.make("curve") if r8 is not None else {}
    readers: dict[str, Callable[[], Any]] = {n: (lambda h=h: h.messages) for n, h in h7.items()}
    readers["LRANGE + json + messages_from_dict"] = r7.raw_read(raw_key)
    for n, h in h8.items():
        readers[f"{n} (Redis 8)"] = lambda h=h: h.messages
    curve: dict[str, dict[int, Stat]] = {n: {} for n in readers}
    have = 0
    all_msgs = data.history(BEYOND)
    for size in sizes:
        r7.extend(h7, raw_key, all_msgs[have:size])
        if r8 is not None:
            r8.extend(h8, "", all_msgs[have:size])
        have = size
        big = size >= 3000
        st = compare(
            readers,
            ctx.s,
            min_runs=3 if big else (5 if size >= 1000 else ctx.s.min_runs),
            min_time=0.0 if big else ctx.s.min_time / 2,
            max_time=ctx.s.max_time / 2,
            warmup=1,
        )
        for n, s in st.items():
            curve[n][size] = s
        print(f"  curve n={size}: " + ", ".join(f"{n} {s.median * 1e3:.2f} ms" for n, s in st.items()))
    ctx.extra["redis_curve"] = {n: {k: v.median for k, v in d.items()} for n, d in curve.items()}
    ctx.extra["redis_curve_spread"] = {n: {k: (v.p10, v.p90) for k, v in d.items()} for n, d in curve.items()}
    # Completeness beyond 10,000.
    r7.extend(h7, raw_key, all_msgs[have:BEYOND])
    if r8 is not None:
        r8.extend(h8, "", all_msgs[have:BEYOND])
    counts = {n: len(fn()) for n, fn in readers.items()}
    ctx.extra["redis_counts_beyond"] = {"written": BEYOND, **counts}
    print(f"  {BEYOND} written; returned: {counts}")
    top = max(sizes)
    ours = curve.get("chatmemory", {}).get(top)
    why = "" if ours else missing("RedisChatMessageHistory")
    checks: list[Check] = []
    if ours:
        mid = 1000 if 1000 in curve["chatmemory"] else sorted(curve["chatmemory"])[-2]
        slope = (ours.median / top) / (curve["chatmemory"][mid].median / mid)
        checks.append(
            Check("complete", counts.get("chatmemory") == BEYOND, f"{counts.get('chatmemory')}/{BEYOND}")
        )
        ref = curve["LRANGE + json + messages_from_dict"]
        ref_slope = (ref[top].median / top) / (ref[mid].median / mid)
        # Linear: the per-message time at the largest size is within 2x of that at a tenth of it
        # (a quadratic term or a paging cliff shows as ~10x; allocator and cache effects make every
        # decoder somewhat worse on large lists, the LangChain decode path included, shown beside).
        # Also the exponent k of a least-squares fit t = a * n^k over the sizes >= 100.
        k = _exponent({n: v.median for n, v in curve["chatmemory"].items() if n >= 100})
        k_ref = _exponent({n: v.median for n, v in ref.items() if n >= 100})
        checks.append(
            Check(
                "linear",
                slope <= 2.0,
                f"per-msg time at {top:,} = {slope:.2f}x that at {mid:,}, fitted exponent {k:.2f} "
                f"(LangChain decode path: {ref_slope:.2f}x, {k_ref:.2f})",
            )
        )
    lcr = counts.get("langchain-redis (Redis 8)")
    note = f"at {BEYOND} written: chatmemory returns {counts.get('chatmemory', '-')}" + (
        f", langchain-redis {lcr}" if lcr is not None else ""
    )
    rows.append(
        Row(
            AREA,
            f"read {top:,} messages",
            ours,
            curve["LRANGE + json + messages_from_dict"][top],
            None,
            "complete, linear",
            checks=checks,
            note=note,
            skipped=why,
        )
    )
    if "langchain-redis (Redis 8)" in curve:
        o8 = curve.get("chatmemory (Redis 8)", {}).get(top)
        rows.append(
            Row(
                AREA,
                f"read {top:,} messages, Redis 8",
                o8,
                curve["langchain-redis (Redis 8)"][top],
                None,
                "info",
                note=f"langchain-redis returns {lcr} of {BEYOND}",
                skipped=why,
            )
        )
