"""The operator at scale: N ChatMemory objects on a Redis store (``--scale``, default 1,000).

Called by :mod:`bench.__main__` (``--only operator``). Runs only when ``chatmemory_operator.handlers``
imports and ``crds/`` exists (else it says why). It installs the CRDs with kubectl, creates a unique
namespace and a cluster-scoped ``ChatMemoryStore`` for ``REDIS_URL`` (admin credentials in a Secret
of that namespace), starts the operator as a real process (``python -m chatmemory_operator``,
watching only that namespace, liveness and metrics off) and measures, reading Ready from the API
server through one watch:

- create N memories (8 client threads) until every one is Ready;
- apply-to-Ready latency of one more memory at a time while N exist (p50 / p99);
- the operator's RSS (psutil, with children) with N memories;
- a restart with N memories: time until its log and the memories' watch are quiet for 3 s, and what
  it did to Redis meanwhile (``INFO commandstats``: ``ACL SETUSER`` would be re-provisioning).

What the operator does to Redis during the bulk create is counted from ``INFO commandstats`` too
(server-wide: the restart figure subtracts the server's background rate measured just before).
``--profile-operator`` runs the first operator process under :mod:`bench.sampled_operator` (stack
samples of every thread) and prints where its time goes. ``--operator-backends kafka,tidb`` adds the
same bulk apply on a Kafka and a TiDB store (time to all Ready and, always sampled, where it goes).
Cleanup: delete the memories while an operator runs (it removes finalizers, users, topics and
databases), the store, the namespace; finalizers still left after a timeout are stripped.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.env import ROOT, Ctx
from bench.harness import Check, Row, Stat, redis_commandstats, skipped, summarize

AREA = "operator"
GROUP, VERSION = "chatmemory.io", "v1alpha1"
MEMORIES, STORES = "chatmemories", "chatmemorystores"
#: Log lines of the steady state, not of a restart's work: every memory's drift check logs one.
_STEADY = re.compile(rb"Timer '(memory_drift|store_check)' succeeded")


def goals(n: int) -> tuple[float, int, float]:
    """(seconds to all Ready, RSS MB, seconds from a restart to quiet) for ``n`` memories: the
    1,000-memory row of ``make bench`` and, past 1,000, issue 15's row at 10,000 on 2 cores."""
    return (60.0, 150, 60.0) if n <= 1000 else (180.0, 300, 60.0)


def _why_not(ctx: Ctx) -> str | None:
    if reason := ctx.need("KUBECONFIG", "KUBECTL", "REDIS_URL"):
        return reason
    try:
        importlib.import_module("chatmemory_operator.handlers")
    except Exception as e:  # noqa: BLE001
        return f"chatmemory_operator.handlers does not import ({type(e).__name__}: {e})"
    crds = ROOT / "crds"
    if not crds.is_dir() or not list(crds.glob("*.yaml")):
        return f"no CRDs in {crds} (make crds)"
    return None


def _profile_summary(path: Path, top: int = 15) -> dict[str, Any]:
    """Where the operator's threads spent the bulk apply and the latency runs (stack samples)."""
    d = json.loads(path.read_text())
    busy = sum(v for k, v in d["state"].items() if k != "idle") or 1
    print(f"  operator stack samples ({d['ticks']} ticks x {d['interval_s'] * 1e3:g} ms): {d['state']}")
    print("  by outermost operator function (share of non-idle thread samples):")
    for name, n in d["operator_function"][:top]:
        print(f"    {n / busy:6.1%}  {name}")
    print("  by innermost operator function:")
    for name, n in d["innermost_operator_function"][:top]:
        print(f"    {n / busy:6.1%}  {name}")
    print("  by innermost frame:")
    for name, n in d["leaf"][:top]:
        print(f"    {n / busy:6.1%}  {name}")
    if "python_heap_total" in d:
        print(f"  Python heap at exit: {d['python_heap_total'] / 2**20:.0f} MB; largest files:")
        for fname, size in d["python_heap_by_file"][:8]:
            print(f"    {size / 2**20:6.1f} MB  {fname.replace(str(ROOT), '.')}")
    return {
        "python_heap_mb": round(d.get("python_heap_total", 0) / 2**20, 1),
        "python_heap_by_file_mb": [
            [f.replace(str(ROOT), "."), round(z / 2**20, 1)] for f, z in d.get("python_heap_by_file", [])[:8]
        ],
        "state": d["state"],
        "operator_function": [[k, round(v / busy, 3)] for k, v in d["operator_function"][:top]],
        "innermost_operator_function": [
            [k, round(v / busy, 3)] for k, v in d["innermost_operator_function"][:top]
        ],
        "leaf": [[k, round(v / busy, 3)] for k, v in d["leaf"][:top]],
    }


def _image_env() -> dict[str, str]:
    """The process settings the operator image sets (Dockerfile ENV), so the RSS is the image's."""
    text = (ROOT / "Dockerfile").read_text()
    return dict(re.findall(r"\b(MALLOC_ARENA_MAX)=(\d+)", text))


def _import_rss_mb() -> float:
    """RSS of a fresh interpreter that only imports the operator's handlers (its import footprint)."""
    code = "import psutil, chatmemory_operator.handlers; print(psutil.Process().memory_info().rss / 2**20)"
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
        )
        return float(out.stdout.strip().splitlines()[-1])
    except Exception:  # noqa: BLE001
        return float("nan")


def _rss(p: Any) -> int:
    return int(p.memory_info().rss + sum(c.memory_info().rss for c in p.children(recursive=True)))


def _wait_started(log: Path, nth: int, proc: Any, timeout: float = 60.0) -> float:
    """Seconds until the log shows kopf's ``nth`` successful start-up (the process is serving)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the operator exited with {proc.returncode}; see {log}")
        if log.exists() and log.read_text(errors="replace").count("Activity 'startup' succeeded") >= nth:
            return time.monotonic() - t0
        time.sleep(0.1)
    raise RuntimeError(f"the operator did not start within {timeout:.0f} s; see {log}")


def _ready(obj: dict[str, Any]) -> bool:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == "Ready":
            return str(c.get("status")) == "True"
    return False


class Watcher:
    """One watch on the namespace's ChatMemories: when each became Ready, and the last event time."""

    def __init__(self, api: Any, ns: str) -> None:
        self.api = api
        self.ns = ns
        self.ready_at: dict[str, float] = {}
        self.last_event = time.monotonic()
        self.events = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        from kubernetes import watch

        rv = None
        while not self._stop.is_set():
            w = watch.Watch()
            try:
                kw: dict[str, Any] = {"timeout_seconds": 30, "allow_watch_bookmarks": False}
                if rv:
                    kw["resource_version"] = rv
                for ev in w.stream(
                    self.api.list_namespaced_custom_object, GROUP, VERSION, self.ns, MEMORIES, **kw
                ):
                    obj = ev["object"]
                    rv = obj.get("metadata", {}).get("resourceVersion", rv)
                    now = time.monotonic()
                    self.last_event = now
                    self.events += 1
                    name = obj["metadata"]["name"]
                    if ev["type"] != "DELETED" and _ready(obj) and name not in self.ready_at:
                        self.ready_at[name] = now
                    if self._stop.is_set():
                        break
            except Exception:  # noqa: BLE001 - expired resourceVersion etc.: re-list
                rv = None
                time.sleep(0.2)
            finally:
                w.stop()

    def stop(self) -> None:
        self._stop.set()


class Cluster:
    """The API server (kubernetes client), the CRDs installed, and helpers for one namespace."""

    def __init__(self, ctx: Ctx) -> None:
        from kubernetes import client, config

        self.env = ctx.env
        self.kubeconfig = ctx.env["KUBECONFIG"]
        self.kubectl = [ctx.env["KUBECTL"], "--kubeconfig", self.kubeconfig]
        r = subprocess.run(
            [*self.kubectl, "apply", "-f", str(ROOT / "crds")], capture_output=True, text=True, timeout=120
        )
        if r.returncode != 0:
            raise RuntimeError(f"kubectl apply crds failed: {r.stderr.strip()[:200]}")
        subprocess.run(
            [*self.kubectl, "wait", "--for=condition=Established", "--timeout=60s", "-f", str(ROOT / "crds")],
            capture_output=True,
            text=True,
            timeout=90,
        )
        cfg = client.Configuration()
        config.load_kube_config(config_file=self.kubeconfig, client_configuration=cfg)
        cfg.connection_pool_maxsize = 16
        self.client = client
        apic = client.ApiClient(cfg)
        self.core = client.CoreV1Api(apic)
        self.api = client.CustomObjectsApi(apic)

    def store_spec(self, kind: str, ns: str) -> dict[str, Any]:
        """A store block for ``kind`` on the platform's server (admin Secrets in ``ns``)."""
        c = self.client
        if kind == "redis":
            u = urlsplit(self.env["REDIS_URL"])
            self.core.create_namespaced_secret(
                ns,
                c.V1Secret(
                    metadata=c.V1ObjectMeta(name="redis-admin"),
                    string_data={"username": u.username or "default", "password": u.password or ""},
                ),
            )
            return {
                "redis": {
                    "host": u.hostname,
                    "port": u.port or 6379,
                    "adminSecretRef": {"name": "redis-admin", "namespace": ns},
                }
            }
        if kind == "kafka":
            return {"kafka": {"bootstrapServers": self.env["KAFKA_BOOTSTRAP"]}}
        if kind == "tidb":
            u = urlsplit(self.env["TIDB_URL"])
            spec: dict[str, Any] = {"host": u.hostname, "port": u.port or 4000}
            if u.password:
                self.core.create_namespaced_secret(
                    ns,
                    c.V1Secret(
                        metadata=c.V1ObjectMeta(name="tidb-admin"),
                        string_data={"username": u.username or "root", "password": u.password},
                    ),
                )
                spec["adminSecretRef"] = {"name": "tidb-admin", "namespace": ns}
            return {"tidb": spec}
        raise ValueError(kind)

    def setup(self, ns: str, kind: str) -> str:
        c = self.client
        self.core.create_namespace(c.V1Namespace(metadata=c.V1ObjectMeta(name=ns)))
        store = f"{ns}-{kind}"
        self.api.create_cluster_custom_object(
            GROUP,
            VERSION,
            STORES,
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "ChatMemoryStore",
                "metadata": {"name": store},
                "spec": self.store_spec(kind, ns),
            },
        )
        return store


class Operator:
    """``python -m chatmemory_operator`` as a real process watching one namespace (optionally sampled)."""

    def __init__(self, cluster: Cluster, ns: str, sample: bool) -> None:
        self.cluster = cluster
        self.ns = ns
        self.log = Path(tempfile.gettempdir()) / f"{ns}-operator.log"
        self.samples = Path(tempfile.gettempdir()) / f"{ns}-operator-samples.json"
        self._sample_next = sample
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> float:
        """Start; return the seconds until kopf reports its start-up done."""
        cmd = [sys.executable, "-m", "chatmemory_operator"]
        extra: dict[str, str] = {}
        if self._sample_next:  # the first process only
            cmd = [sys.executable, "-m", "bench.sampled_operator"]
            extra = {"BENCH_SAMPLES_OUT": str(self.samples)}
            self._sample_next = False
        e = {
            **os.environ,
            **_image_env(),
            **extra,
            "KUBECONFIG": self.cluster.kubeconfig,
            "CHATMEMORY_NAMESPACES": self.ns,
            # the store's admin Secret and the name claims (Leases) live in the watched namespace
            "CHATMEMORY_OPERATOR_NAMESPACE": self.ns,
            "CHATMEMORY_LIVENESS": "off",
            "CHATMEMORY_METRICS_PORT": "0",
        }
        self.proc = subprocess.Popen(
            cmd, env=e, cwd=ROOT, stdout=self.log.open("ab"), stderr=subprocess.STDOUT
        )
        self.starts += 1
        return _wait_started(self.log, self.starts, self.proc)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        p = self.proc
        if p is None or p.poll() is not None:
            return
        p.terminate()
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def _body(name: str, store: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ChatMemory",
        "metadata": {"name": name},
        "spec": {"storeRef": {"name": store}, "ttl": "1h", "deletionPolicy": "Delete"},
    }


def _bulk(
    cl: Cluster, op: Operator, watcher: Watcher, ns: str, store: str, n: int
) -> tuple[float, float, int]:
    """Create ``n`` memories (8 client threads); (create seconds, seconds to all Ready, Ready count)."""
    names = [f"m{i:05d}" for i in range(n)]
    t0 = time.monotonic()
    with ThreadPoolExecutor(8) as ex:
        list(
            ex.map(
                lambda nm: cl.api.create_namespaced_custom_object(
                    GROUP, VERSION, ns, MEMORIES, _body(nm, store)
                ),
                names,
            )
        )
    created = time.monotonic() - t0
    deadline = t0 + 2 * goals(n)[0]  # twice the goal: a miss still reports how many got there
    while time.monotonic() < deadline and sum(1 for nm in names if nm in watcher.ready_at) < n:
        if not op.alive():
            raise RuntimeError(f"the operator exited; see {op.log}")
        time.sleep(0.2)
    ready = [watcher.ready_at[nm] for nm in names if nm in watcher.ready_at]
    all_ready = (max(ready) - t0) if len(ready) == n else float("nan")
    print(
        f"  {n} created in {created:.1f} s, {len(ready)}/{n} Ready after "
        f"{(max(ready) - t0) if ready else float('nan'):.1f} s"
    )
    return created, all_ready, len(ready)


def run(ctx: Ctx) -> list[Row]:
    if reason := _why_not(ctx):
        print(f"  skipped: {reason}")
        ready_s, rss_mb, _ = goals(ctx.scale)
        return [
            skipped(
                AREA,
                f"{ctx.scale} ChatMemory (Redis store)",
                reason,
                f"≤ {ready_s:.0f} s; p50 ≤ 0.5 s; RSS ≤ {rss_mb} MB",
            )
        ]
    try:
        cl = Cluster(ctx)
    except Exception as e:  # noqa: BLE001
        return [skipped(AREA, "operator at scale", str(e))]
    rows = _redis(ctx, cl)
    for kind in ctx.extra.get("operator_backends", []):
        if kind == "redis":
            continue
        key = {"kafka": "KAFKA_BOOTSTRAP", "tidb": "TIDB_URL"}[kind]
        if reason := ctx.need(key):
            rows.append(skipped(AREA, f"{ctx.scale} ChatMemory ({kind} store)", reason))
            continue
        rows.extend(_other(ctx, cl, kind))
    return rows


def _other(ctx: Ctx, cl: Cluster, kind: str) -> list[Row]:
    """N memories on a Kafka or TiDB store: the time to all Ready and where it goes (sampled)."""
    ns = ctx.name(f"op_{kind}").replace("_", "-")
    store = cl.setup(ns, kind)
    op = Operator(cl, ns, sample=True)
    watcher = Watcher(cl.api, ns)
    result: dict[str, Any] = {"namespace": ns, "memories": ctx.scale, "operator_log": str(op.log)}
    ctx.extra.setdefault("operator_" + kind, result)
    rows: list[Row] = []
    try:
        op.start()
        time.sleep(1.0)
        created, all_ready, ready = _bulk(cl, op, watcher, ns, store, ctx.scale)
        result.update(create_s=round(created, 2), all_ready_s=round(all_ready, 2), ready=ready)
        op.stop()  # writes the samples
        if op.samples.exists():
            result["profile"] = _profile_summary(op.samples)
        op.start()  # a plain operator again, to process the deletions at cleanup
        top = ", ".join(
            f"{k} {v:.0%}" for k, v in result.get("profile", {}).get("innermost_operator_function", [])[:3]
        )
        rows.append(
            Row(
                AREA,
                f"apply {ctx.scale} ChatMemory ({kind}) to all Ready",
                Stat(f"apply {ctx.scale} to all Ready", all_ready, all_ready, all_ready, 1),
                None,
                None,
                "report",
                checks=[Check("all Ready", ready == ctx.scale, f"{ready}/{ctx.scale}")],
                note=f"sampled operator (slower than plain); time goes to: {top}",
            )
        )
    except Exception as e:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        rows.append(
            skipped(AREA, f"{ctx.scale} ChatMemory ({kind})", f"error: {type(e).__name__}: {str(e)[:200]}")
        )
    finally:
        _cleanup(cl.api, cl.core, ns, store, op, watcher)
    return rows


def _redis(ctx: Ctx, cl: Cluster) -> list[Row]:
    env = ctx.env
    api, core = cl.api, cl.core
    ns = ctx.name("op").replace("_", "-")
    import redis

    rstats = redis.Redis.from_url(env["REDIS_URL"])
    store = cl.setup(ns, "redis")
    op = Operator(cl, ns, sample=bool(ctx.extra.get("profile_operator")))
    log = op.log
    watcher = Watcher(api, ns)
    rows: list[Row] = []
    result: dict[str, Any] = {"namespace": ns, "memories": ctx.scale, "operator_log": str(log)}
    ctx.extra["operator"] = result

    def body(name: str) -> dict[str, Any]:
        return _body(name, store)

    try:
        n = ctx.scale
        goal_ready, goal_rss, goal_quiet = goals(n)
        up = op.start()
        import psutil

        assert op.proc is not None
        base_rss = _rss(psutil.Process(op.proc.pid))
        result.update(operator_start_s=round(up, 2), operator_rss_idle_mb=round(base_rss / 2**20, 1))
        time.sleep(1.0)  # let the operator list and watch before the burst
        before = redis_commandstats(rstats)
        created, all_ready, n_ready = _bulk(cl, op, watcher, ns, store, n)
        after = redis_commandstats(rstats)
        delta = {
            k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) - before.get(k, 0) > 0
        }
        result.update(
            create_s=round(created, 2),
            all_ready_s=round(all_ready, 2),
            ready=n_ready,
            redis_commands_during_apply=dict(sorted(delta.items(), key=lambda kv: -kv[1])[:12]),
        )
        bulk = Stat(f"apply {n} to all Ready", all_ready, all_ready, all_ready, 1)
        rows.append(
            Row(
                AREA,
                f"apply {n} ChatMemory (Redis) to all Ready",
                bulk,
                None,
                None,
                f"≤ {goal_ready:.0f} s",
                checks=[
                    Check(
                        f"≤ {goal_ready:.0f} s",
                        all_ready <= goal_ready,
                        f"{all_ready:.1f} s, {n_ready}/{n} Ready",
                    )
                ],
                note=f"creates took {created:.1f} s (8 client threads); ACL SETUSER "
                f"{delta.get('acl|setuser', 0)}",
            )
        )
        # Latency one at a time while N exist.
        k = 15 if ctx.s.quick else 60
        lat: list[float] = []
        for i in range(k):
            nm = f"x{i:04d}"
            t1 = time.monotonic()
            api.create_namespaced_custom_object(GROUP, VERSION, ns, MEMORIES, body(nm))
            end = t1 + 30
            while nm not in watcher.ready_at and time.monotonic() < end:
                time.sleep(0.005)
            lat.append(watcher.ready_at.get(nm, float("inf")) - t1)
        st = summarize("apply→Ready, one at a time", [x for x in lat if x != float("inf")], True)
        p99 = sorted(lat)[max(0, round(0.99 * (len(lat) - 1)))]
        p50 = statistics.median(lat)
        result.update(latency_p50_s=round(p50, 3), latency_p99_s=round(p99, 3), latency_samples=k)
        rows.append(
            Row(
                AREA,
                f"apply→Ready latency with {n} existing",
                st.with_(note=f"p99 {p99 * 1e3:.0f} ms"),
                None,
                None,
                "p50 ≤ 0.5 s, p99 ≤ 2 s",
                checks=[
                    Check("p50 ≤ 0.5 s", p50 <= 0.5, f"{p50 * 1e3:.0f} ms"),
                    Check("p99 ≤ 2 s", p99 <= 2.0, f"{p99 * 1e3:.0f} ms"),
                ],
            )
        )
        # RSS.
        import psutil

        proc = psutil.Process(op.proc.pid)
        burst_rss = _rss(proc)
        # What `kubectl top` shows in steady state: sampled once the operator has been idle (under
        # 2% of a core) for a second, up to 20 s; right after the burst kopf's per-object workers
        # and their buffers are still alive.
        proc.cpu_percent(None)
        for _ in range(20):
            if proc.cpu_percent(1.0) < 2.0:
                break
        rss = _rss(proc)
        result["operator_rss_mb"] = round(rss / 2**20, 1)
        result["operator_rss_burst_mb"] = round(burst_rss / 2**20, 1)
        rows.append(
            Row(
                AREA,
                f"operator RSS with {n + k} memories",
                None,
                None,
                None,
                f"≤ {goal_rss} MB",
                checks=[Check(f"≤ {goal_rss} MB", rss <= goal_rss * 2**20, f"{rss / 2**20:.0f} MB")],
                note=f"settled (idle 1 s); {burst_rss / 2**20:.0f} MB right after the burst; "
                f"{_import_rss_mb():.0f} MB after importing the operator's modules alone, "
                f"{base_rss / 2**20:.0f} MB right after start-up with no memories, "
                f"+{(rss - base_rss) / 2**10 / max(1, n + k):.0f} KB per memory",
            )
        )
        # Restart. First the server's background rate of the same commands (a shared server: other
        # clients run ACL commands too), over a window with our operator idle.
        bg_window = 3.0 if ctx.s.quick else 6.0
        bg0 = redis_commandstats(rstats)
        time.sleep(bg_window)
        bg1 = redis_commandstats(rstats)
        bg_setuser = bg1.get("acl|setuser", 0) - bg0.get("acl|setuser", 0)
        op.stop()
        if op.samples.exists():
            result["profile"] = _profile_summary(op.samples)
        before = redis_commandstats(rstats)
        ev0 = watcher.events
        t2 = time.monotonic()
        up2 = op.start()
        result["operator_restart_start_s"] = round(up2, 2)
        # Steady state: no log line (but the drift checks' own, which go on for ever, paced) and no
        # event on the memories' watch for 3 s.
        quiet = 3.0
        limit = t2 + up2 + (30 if ctx.s.quick else goal_quiet + 30)
        last_change = time.monotonic()
        with log.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            pending = b""
            while time.monotonic() < limit:
                time.sleep(0.2)
                lines = (pending + fh.read()).split(b"\n")
                pending = lines.pop()
                if any(line and not _STEADY.search(line) for line in lines):
                    last_change = time.monotonic()
                last = max(last_change, watcher.last_event)
                if time.monotonic() - last >= quiet:
                    break
        settled = max(last_change, watcher.last_event, t2) - t2
        after = redis_commandstats(rstats)
        delta = {
            k2: after.get(k2, 0) - before.get(k2, 0)
            for k2 in after
            if after.get(k2, 0) - before.get(k2, 0) > 0
        }
        delta.pop("info", None)
        window = time.monotonic() - t2
        raw_setuser = delta.get("acl|setuser", 0)
        # The background again, after the restart settled: the rate is the mean of both windows.
        bg2 = redis_commandstats(rstats)
        time.sleep(bg_window)
        bg3 = redis_commandstats(rstats)
        bg_setuser += bg3.get("acl|setuser", 0) - bg2.get("acl|setuser", 0)
        bg_window *= 2
        setuser = max(0, round(raw_setuser - bg_setuser * window / bg_window))
        text = log.read_text(errors="replace")
        restart_log = text[text.rfind("Activity 'startup' succeeded") :]
        resumed = restart_log.count("Resuming is processed")
        result["restart_resumed_objects"] = resumed
        result.update(
            restart_settled_s=round(settled, 2),
            restart_setuser_net=setuser,
            restart_setuser_seen=raw_setuser,
            background_setuser=[bg_setuser, bg_window],
            restart_object_events=watcher.events - ev0,
            redis_commands_during_restart=dict(sorted(delta.items(), key=lambda kv: -kv[1])[:12]),
        )
        rows.append(
            Row(
                AREA,
                f"restart with {n + k} memories",
                Stat("restart → quiet", settled, settled, settled, 1),
                None,
                None,
                f"no re-provisioning, quiet ≤ {goal_quiet:.0f} s",
                checks=[
                    Check(
                        "no ACL SETUSER",
                        setuser <= 0.05 * (n + k),
                        f"~{setuser} SETUSER net of the server's background ({raw_setuser} seen in "
                        f"{window:.0f} s, {bg_setuser} in {bg_window:.0f} s with our operator idle)",
                    ),
                    Check("no object events", watcher.events == ev0, f"{watcher.events - ev0} object events"),
                    Check(f"quiet ≤ {goal_quiet:.0f} s", settled <= goal_quiet, f"{settled:.1f} s"),
                ],
                note=f"process start {up2:.1f} s; {resumed} objects resumed; quiet = no log line (the "
                "paced drift checks' own aside) and no object event for 3 s; Redis counters are "
                "server-wide (shared server)",
            )
        )
    except Exception as e:  # noqa: BLE001
        import traceback

        traceback.print_exc()
        rows.append(
            skipped(AREA, "operator at scale", f"error: {type(e).__name__}: {str(e)[:200]} (log {log})")
        )
    finally:
        _cleanup(api, core, ns, store, op, watcher, env["REDIS_URL"])
    return rows


def _left(api: Any, ns: str) -> int:
    """How many memories the namespace still holds (one item read: the server counts the rest)."""
    out = api.list_namespaced_custom_object(GROUP, VERSION, ns, MEMORIES, limit=1)
    return len(out["items"]) + int(out["metadata"].get("remainingItemCount") or 0)


def _cleanup(
    api: Any,
    core: Any,
    ns: str,
    store: str,
    op: Operator,
    watcher: Watcher,
    redis_url: str | None = None,
) -> None:
    """Delete the memories through the operator (it removes users and finalizers) while it makes
    progress; strip the finalizers it did not get to and, on a Redis store (``redis_url``), remove
    those memories' users by hand; then the store and the namespace (Secrets and Leases with it)."""
    t = time.monotonic()
    with contextlib.suppress(Exception):
        api.delete_collection_namespaced_custom_object(GROUP, VERSION, ns, MEMORIES)
    last, progress = -1, time.monotonic()
    end = progress + 180  # the operator deletes ~10 a second at 10,000: the rest is stripped below
    while op.alive() and time.monotonic() - progress < 30 and time.monotonic() < end:
        try:
            left = _left(api, ns)
        except Exception:  # noqa: BLE001
            break
        if not left:
            break
        if left != last:
            last, progress = left, time.monotonic()
        time.sleep(1)
    op.stop()
    with contextlib.suppress(Exception):
        items = api.list_namespaced_custom_object(GROUP, VERSION, ns, MEMORIES)["items"]
        names = [it["metadata"]["name"] for it in items]

        def strip(name: str) -> None:
            with contextlib.suppress(Exception):
                api.patch_namespaced_custom_object(
                    GROUP, VERSION, ns, MEMORIES, name, {"metadata": {"finalizers": None}}
                )

        with ThreadPoolExecutor(8) as ex:
            list(ex.map(strip, names))
        if names:
            print(f"  stripped finalizers from {len(names)} memories the operator did not finish")
        if names and redis_url:
            import redis
            from chatmemory_operator import naming

            r = redis.Redis.from_url(redis_url)
            users = [naming.username(ns, nm) for nm in names]
            gone = sum(
                int(r.execute_command("ACL", "DELUSER", *users[i : i + 500]))
                for i in range(0, len(users), 500)
            )
            print(f"  removed {gone} of their Redis users by hand")
    with contextlib.suppress(Exception):
        api.delete_cluster_custom_object(GROUP, VERSION, STORES, store)
    time.sleep(1)
    with contextlib.suppress(Exception):
        api.patch_cluster_custom_object(GROUP, VERSION, STORES, store, {"metadata": {"finalizers": None}})
    watcher.stop()
    with contextlib.suppress(Exception):
        core.delete_namespace(ns)
    print(f"  cleanup {time.monotonic() - t:.0f} s (namespace {ns} deleting, store {store} deleted)")
