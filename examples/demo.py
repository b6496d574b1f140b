"""The main job (``make demo``): chatmemory end to end on the local platform, as a new user sees it.

``make demo`` brings the platform up (``.platform/env``) and runs ``python -m examples.demo``:

1. installs the Helm chart (CRDs, RBAC, user roles) into the local API server, namespace
   ``chatmemory-system``. The local API server has no nodes, so the chart's operator Deployment is
   switched off (``operator.enabled=false``) and the operator runs as a local process instead;
2. creates the admin Secrets and registers one ChatMemoryStore per backend (Redis 7 with ACLs, Kafka
   with SASL/SCRAM, TiDB) through the chart's ``stores`` value, and starts the operator;
3. applies one ChatMemory per backend and prints their conditions as they change until Ready;
4. for each memory, writes its Secret's keys as files (what a pod's Secret volume holds), opens it
   with ``chatmemory.connect(name, path=...)`` and holds a 3-turn conversation through LangChain's
   ``RunnableWithMessageHistory`` with a deterministic fake chat model;
5. prints the stored history, ``kubectl get chatmem -n chatmemory-demo`` and where to look next,
   then deletes what it created (memories, release, operator). ``KEEP_PLATFORM=1`` leaves everything running.

Re-running is safe: every step is an apply or an upgrade. A failure names the step, prints the tail
of the operator's log and exits non-zero. Tested by ``tests/e2e/test_demo.py``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "chatmemory-operator"
RELEASE = "chatmemory"
SYSTEM_NS = "chatmemory-system"
DEMO_NS = "chatmemory-demo"
SESSION = "user-42"
CRDS = ("chatmemories.chatmemory.io", "chatmemorystores.chatmemory.io")
READY_TIMEOUT = 180.0

# -- output: rich when installed, plain text otherwise ----------------------------------------------

try:
    from rich.console import Console
    from rich.markup import escape
    from rich.panel import Panel
    from rich.table import Table

    _console: Console | None = Console(highlight=False, soft_wrap=True)
except ImportError:  # pragma: no cover - rich is in the dev environment
    _console = None


class UI:
    """Friendly, readable output; every line also makes sense without colours."""

    def __init__(self) -> None:
        self.step_no = 0
        self.steps = 5
        self.current = ""

    def title(self, text: str, sub: str) -> None:
        if _console:
            _console.print(Panel.fit(f"[bold]{text}[/bold]\n{sub}", border_style="cyan"))
        else:
            print(f"== {text} ==\n{sub}")

    def step(self, text: str) -> None:
        self.step_no += 1
        self.current = f"step {self.step_no}/{self.steps}: {text}"
        line = f"[{self.step_no}/{self.steps}] {text}"
        if _console:
            _console.print(f"\n[bold cyan]{line}[/bold cyan]")
        else:
            print(f"\n{line}")

    def say(self, text: str, style: str = "") -> None:
        if _console:
            _console.print(
                f"  [{style}]{escape(text)}[/{style}]" if style else f"  {text}", markup=bool(style)
            )
        else:
            print(f"  {text}")

    def ok(self, text: str) -> None:
        self.say(f"✓ {text}", "green")

    def note(self, text: str) -> None:
        self.say(text, "dim")

    def warn(self, text: str) -> None:
        self.say(f"! {text}", "yellow")

    def cmd(self, argv: Sequence[str]) -> None:
        self.say(f"$ {shown(argv)}", "dim")

    def block(self, text: str) -> None:
        for line in text.rstrip().splitlines():
            self.say(f"  {line}")

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        if _console:
            t = Table(*headers, box=None, padding=(0, 2), show_edge=False)
            for row in rows:
                t.add_row(*row)
            _console.print(t)
            return
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
        for row in [headers, *rows]:
            print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))

    def turn(self, who: str, text: str) -> None:
        if _console:
            colour = "magenta" if who == "you" else "blue"
            _console.print(f"    [bold {colour}]{who:>3}>[/bold {colour}] {escape(text)}", markup=True)
        else:
            print(f"    {who:>3}> {text}")


ui = UI()


def shown(argv: Sequence[str]) -> str:
    """A command as a user would type it: ``helm``, not ``/root/.cache/.../helm-v4.3.1``."""
    tool = Path(argv[0]).name.split("-v")[0]
    return " ".join([tool, *argv[1:]])


class StepFailed(Exception):
    """A step of the demo failed; the message says what to look at."""


# -- the platform, kubectl and helm -----------------------------------------------------------------


def read_env() -> dict[str, str]:
    path = Path(os.environ.get("CHATMEMORY_PLATFORM_ENV", ROOT / ".platform" / "env"))
    if not path.exists():
        raise StepFailed(f"no platform env file at {path}: run `make demo` (it starts the platform)")
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and not key.startswith("#"):
            env[key.strip()] = value.strip()
    return env


@dataclass
class Platform:
    env: dict[str, str]

    @property
    def tool_env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": self.env["KUBECONFIG"]}

    def run(
        self, argv: Sequence[str], *, stdin: str | None = None, check: bool = True, show: bool = False
    ) -> subprocess.CompletedProcess[str]:
        if show:
            ui.cmd(argv)
        out = subprocess.run(
            list(argv),
            input=stdin,
            capture_output=True,
            text=True,
            env=self.tool_env,
            cwd=ROOT,
            timeout=300,
            check=False,
        )
        if check and out.returncode != 0:
            raise StepFailed(f"`{shown(argv)}` failed:\n{(out.stderr or out.stdout).strip()}")
        return out

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True, show: bool = False) -> str:
        return self.run([self.env["KUBECTL"], *args], stdin=stdin, check=check, show=show).stdout

    def helm(self, *args: str, show: bool = True) -> str:
        return self.run([self.env["HELM"], *args], show=show).stdout

    def apply(self, docs: Sequence[dict[str, Any]]) -> None:
        self.kubectl("apply", "-f", "-", stdin="\n---\n".join(json.dumps(d) for d in docs))

    def get_json(self, *args: str) -> dict[str, Any] | None:
        out = self.run([self.env["KUBECTL"], "get", *args, "-o", "json"], check=False)
        if out.returncode != 0:
            if "NotFound" in out.stderr or "not found" in out.stderr:
                return None
            raise StepFailed(f"kubectl get {' '.join(args)}: {out.stderr.strip()}")
        doc: dict[str, Any] = json.loads(out.stdout)
        return doc


def wait_for(what: str, check: Callable[[], bool], timeout: float = 60.0, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise StepFailed(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the backends of the local platform -------------------------------------------------------------


@dataclass(frozen=True)
class Backend:
    kind: str  # redis | kafka | tidb
    label: str  # what the output calls it
    store: str  # ChatMemoryStore name
    memory: str  # ChatMemory name
    admin_secret: str
    admin_username: str
    admin_password: str
    store_spec: dict[str, Any]
    memory_spec: dict[str, Any]


def backends(env: dict[str, str]) -> list[Backend]:
    redis = urlsplit(env["REDIS_URL"])
    tidb = urlsplit(env["TIDB_URL"])
    return [
        Backend(
            kind="redis",
            label="Redis 7 (ACLs)",
            store="demo-redis",
            memory="support-bot-redis",
            admin_secret="demo-redis-admin",
            admin_username=env["REDIS_ADMIN_USER"],
            admin_password=env["REDIS_ADMIN_PASSWORD"],
            store_spec={"host": redis.hostname, "port": redis.port or 6379},
            memory_spec={"ttl": "7d"},
        ),
        Backend(
            kind="kafka",
            label="Kafka (SASL/SCRAM)",
            store="demo-kafka",
            memory="support-bot-kafka",
            admin_secret="demo-kafka-admin",
            admin_username=env["KAFKA_ADMIN_USER"],
            admin_password=env["KAFKA_ADMIN_PASSWORD"],
            store_spec={
                "bootstrapServers": env["KAFKA_SASL_BOOTSTRAP"],
                "securityProtocol": "SASL_PLAINTEXT",
                "saslMechanism": env.get("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
            },
            memory_spec={"ttl": "3d", "kafka": {"partitions": 3}},
        ),
        Backend(
            kind="tidb",
            label="TiDB",
            store="demo-tidb",
            memory="support-bot-tidb",
            admin_secret="demo-tidb-admin",
            admin_username=tidb.username or "root",
            admin_password=tidb.password or "",
            store_spec={"host": tidb.hostname, "port": tidb.port or 4000},
            memory_spec={"ttl": "30d"},
        ),
    ]


# -- step 1 and 2: the chart, the stores, the operator ----------------------------------------------


def adopt_crds(p: Platform) -> bool:
    """Let the release own CRDs applied earlier with kubectl; returns whether the CRDs existed."""
    existed = False
    for name in CRDS:
        crd = p.get_json("crd", name)
        if crd is None:
            continue
        existed = True
        annotations = crd["metadata"].get("annotations") or {}
        if annotations.get("meta.helm.sh/release-name") == RELEASE:
            continue
        ui.note(f"CRD {name} exists already (applied with kubectl): adopting it into the release")
        p.kubectl("label", "--overwrite", "crd", name, "app.kubernetes.io/managed-by=Helm")
        p.kubectl(
            "annotate", "--overwrite", "crd", name,
            f"meta.helm.sh/release-name={RELEASE}", f"meta.helm.sh/release-namespace={SYSTEM_NS}",
        )  # fmt: skip
    return existed


def ensure_namespace(p: Platform, name: str) -> None:
    """Create the namespace; one still terminating from a previous run is waited for first."""

    def usable() -> bool:
        ns = p.get_json("namespace", name)
        return ns is None or (ns.get("status") or {}).get("phase") != "Terminating"

    if not usable():
        ui.note(f"namespace {name} is still being deleted by a previous run: waiting")
        wait_for(f"namespace {name} to be deleted", usable, timeout=120)
    p.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}])


def install_chart(p: Platform, bs: list[Backend], workdir: Path) -> None:
    ui.step("Install the Helm chart into the local API server")
    ensure_namespace(p, SYSTEM_NS)
    crds_existed = adopt_crds(p)
    base = ["upgrade", "--install", RELEASE, rel(CHART), "--namespace", SYSTEM_NS]
    base += ["--set", "crds.install=true", "--set", "operator.enabled=false"]
    ui.note("The local API server has no nodes, so no pod would ever run: the chart installs the")
    ui.note("CRDs, RBAC and roles with operator.enabled=false, and the operator runs as a local process.")
    stores = workdir / "stores.yaml"
    stores.write_text(json.dumps({"stores": [store_value(b) for b in bs]}, indent=2))
    if crds_existed:
        p.helm(*base, "--values", str(stores))
    else:
        p.helm(*base)
    for name in CRDS:
        p.kubectl("wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}")
    ui.ok(f"release {RELEASE!r} in namespace {SYSTEM_NS}: CRDs ChatMemory, ChatMemoryStore; RBAC; roles")

    ui.step("Register one backend server per kind (ChatMemoryStore) and start the operator")
    p.apply([admin_secret(b) for b in bs])
    ui.ok("admin Secrets " + ", ".join(b.admin_secret for b in bs) + f" in {SYSTEM_NS}")
    if not crds_existed:
        ui.note("stores go in with `helm upgrade`: a release cannot create objects of CRDs it creates itself")
        p.helm(*base, "--values", str(stores))
    ui.table(
        ["STORE", "BACKEND", "SERVER"],
        [[b.store, b.label, server_of(b)] for b in bs],
    )


def store_value(b: Backend) -> dict[str, Any]:
    spec = {**b.store_spec, "adminSecretRef": {"name": b.admin_secret}}
    return {"name": b.store, "default": b.kind == "redis", b.kind: spec}


def server_of(b: Backend) -> str:
    s = b.store_spec
    return str(s.get("bootstrapServers") or f"{s['host']}:{s['port']}")


def admin_secret(b: Backend) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": b.admin_secret, "namespace": SYSTEM_NS},
        "type": "Opaque",
        "stringData": {"username": b.admin_username, "password": b.admin_password},
    }


class Operator:
    """The operator as a local process (``python -m chatmemory_operator``), logging to a file."""

    def __init__(self, p: Platform) -> None:
        self.p = p
        state = Path(p.env.get("PLATFORM_DIR") or ROOT / ".platform")
        self.log = state / "logs" / "demo-operator.log"
        self.pidfile = state / "demo-operator.pid"
        self.proc: subprocess.Popen[bytes] | None = None
        self.liveness_port = free_port()
        self.metrics_port = free_port()

    def stop_previous(self) -> None:
        """A previous ``KEEP_PLATFORM=1`` run left its operator running: stop it (by its pid)."""
        if not self.pidfile.exists():
            return
        pid = int(self.pidfile.read_text().strip() or 0)
        self.pidfile.unlink()
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return
        if b"chatmemory_operator" in cmdline:
            ui.note(f"stopping the operator a previous demo left running (pid {pid})")
            os.kill(pid, signal.SIGTERM)
            wait_for("the previous operator to stop", lambda: not Path(f"/proc/{pid}").exists(), timeout=30)

    def start(self) -> None:
        self.stop_previous()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "KUBECONFIG": self.p.env["KUBECONFIG"],
            # the memories' namespace, and the stores' Secrets' (a namespaced operator manages the
            # stores whose Secrets it watches)
            "CHATMEMORY_NAMESPACES": f"{DEMO_NS},{SYSTEM_NS}",
            # its own namespace, as the chart's pod gets it: the stores' admin Secrets live there,
            # and the operator keeps its name claims (Leases) there
            "CHATMEMORY_OPERATOR_NAMESPACE": SYSTEM_NS,
            "CHATMEMORY_LIVENESS": f"http://127.0.0.1:{self.liveness_port}/healthz",
            "CHATMEMORY_METRICS_PORT": str(self.metrics_port),
            "CHATMEMORY_METRICS_ADDR": "127.0.0.1",
            # a quick demo: re-check stores and memories every 10 s, retry soon
            "CHATMEMORY_STORE_INTERVAL": "10",
            "CHATMEMORY_DRIFT_INTERVAL": "30",
            "CHATMEMORY_RETRY_DELAY": "2",
            "CHATMEMORY_RETRY_MAX_DELAY": "10",
        }
        argv = [sys.executable, "-m", "chatmemory_operator"]
        ui.cmd(["python", "-m", "chatmemory_operator"])
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(  # a session of its own: KEEP_PLATFORM=1 leaves it running
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
            )
        self.pidfile.write_text(str(self.proc.pid))
        wait_for("the operator's liveness endpoint", self.alive, timeout=60)
        ui.ok(f"operator running (pid {self.proc.pid}), watching {DEMO_NS} and {SYSTEM_NS}")
        ui.note(f"log: {rel(self.log)}")
        ui.note(f"liveness http://127.0.0.1:{self.liveness_port}/healthz, "
                f"metrics http://127.0.0.1:{self.metrics_port}/metrics")  # fmt: skip

    def alive(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise StepFailed(f"the operator exited (code {self.proc.returncode if self.proc else '?'})")
        try:
            url = f"http://127.0.0.1:{self.liveness_port}/healthz"
            with urllib.request.urlopen(url, timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as resp:
            text: str = resp.read().decode()
            return text

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.pidfile.unlink(missing_ok=True)

    def tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return "(no operator log)"
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def rel(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(ROOT))
    return str(path)


def ready_condition(obj: dict[str, Any] | None) -> dict[str, Any]:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return dict(cond)
    return {}


def wait_ready(
    p: Platform, kind: str, names: list[str], namespace: str | None = None
) -> dict[str, dict[str, Any]]:
    """Poll until every object is Ready, printing each condition change as it happens."""
    seen: dict[str, tuple[str, str, str]] = {}
    objs: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        for name in names:
            args = [kind, name] + (["-n", namespace] if namespace else [])
            obj = p.get_json(*args)
            cond = ready_condition(obj)
            state = (cond.get("status", "Unknown"), cond.get("reason", "Pending"), cond.get("message", ""))
            if obj is not None:
                objs[name] = obj
            if seen.get(name) != state:
                seen[name] = state
                mark = "✓" if state[0] == "True" else "…"
                msg = f" - {state[2]}" if state[2] else ""
                ui.say(
                    f"{mark} {name:<20} Ready={state[0]:<7} {state[1]}{msg}",
                    "green" if state[0] == "True" else "",
                )
        if all(s[0] == "True" for s in seen.values()) and len(seen) == len(names):
            return objs
        if time.monotonic() > deadline:
            stuck = ", ".join(f"{n} ({s[1]}: {s[2]})" for n, s in seen.items() if s[0] != "True")
            raise StepFailed(f"not Ready after {READY_TIMEOUT:.0f}s: {stuck}")
        time.sleep(0.5)


# -- step 3: memories --------------------------------------------------------------------------------


def memory_manifest(b: Backend) -> dict[str, Any]:
    return {
        "apiVersion": "chatmemory.io/v1alpha1",
        "kind": "ChatMemory",
        "metadata": {"name": b.memory, "namespace": DEMO_NS},
        # Delete: removing the memory removes its data too, so the demo leaves nothing behind
        "spec": {"storeRef": {"name": b.store}, "deletionPolicy": "Delete", **b.memory_spec},
    }


def create_memories(p: Platform, bs: list[Backend]) -> dict[str, dict[str, Any]]:
    ui.step("Ask for one ChatMemory per backend and wait until each is Ready")
    ensure_namespace(p, DEMO_NS)
    p.apply([memory_manifest(b) for b in bs])
    example = memory_manifest(bs[1])
    ui.note("for example (kubectl apply -f):")
    ui.block(to_yaml(example))
    return wait_ready(p, "chatmemories.chatmemory.io", [b.memory for b in bs], DEMO_NS)


def to_yaml(doc: dict[str, Any]) -> str:
    import yaml

    return str(yaml.safe_dump(doc, sort_keys=False))


# -- step 4: conversations ---------------------------------------------------------------------------


def mount_secret(p: Platform, memory: dict[str, Any], root: Path) -> Path:
    """Write the memory's Secret as a Secret volume would: one file per key, under root/<name>."""
    name = memory["metadata"]["name"]
    secret_name = ((memory.get("status") or {}).get("binding") or {}).get("name")
    if not secret_name:
        raise StepFailed(f"{name} is Ready but status.binding.name is empty")
    secret = p.get_json("secret", secret_name, "-n", DEMO_NS)
    if secret is None:
        raise StepFailed(f"the Secret {DEMO_NS}/{secret_name} of {name} does not exist")
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    for key, value in (secret.get("data") or {}).items():
        (directory / key).write_bytes(base64.b64decode(value))
        (directory / key).chmod(0o600)
    return directory


def deterministic_model() -> Any:
    """A chat model that needs no API key and shows it sees the history it was given."""
    from langchain_core.language_models.chat_models import BaseChatModel
    from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    class HistoryAwareFakeModel(BaseChatModel):
        @property
        def _llm_type(self) -> str:
            return "history-aware-fake"

        def _generate(self, messages: list[BaseMessage], stop: Any = None, **kwargs: Any) -> ChatResult:
            humans = [m for m in messages if isinstance(m, HumanMessage)]
            earlier = len(messages) - 2  # minus the system prompt and this question
            first = str(humans[0].content)
            name = first.rsplit(" ", 1)[-1].strip(".!") if "name is" in first else "there"
            replies = [
                f"Nice to meet you, {name}! I will remember this conversation.",
                f"I can see {earlier} earlier messages. You told me your name is {name}.",
                f"Still here, {name}: {earlier} earlier messages, all read back from the store.",
            ]
            text = replies[min(len(humans), len(replies)) - 1]
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])

    return HistoryAwareFakeModel()


QUESTIONS = ("Hi, my name is Ada.", "What is my name?", "How many messages do you remember?")


def converse(bs: list[Backend], bindings: dict[str, Path]) -> dict[str, list[Any]]:
    import chatmemory
    from langchain_core._api.deprecation import LangChainDeprecationWarning
    from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
    from langchain_core.runnables.history import RunnableWithMessageHistory

    ui.step("Talk: a 3-turn conversation per backend through RunnableWithMessageHistory")
    ui.note("each memory's Secret is written as files, exactly as a pod's Secret volume mounts it;")
    ui.note('in a pod: SERVICE_BINDING_ROOT=/bindings and chatmemory.connect("<name>")')
    prompt = ChatPromptTemplate.from_messages(
        [
            ("system", "You are a friendly support bot."),
            MessagesPlaceholder("history"),
            ("human", "{question}"),
        ]
    )
    stored: dict[str, list[Any]] = {}
    for b in bs:
        path = bindings[b.memory]
        files = sorted(f.name for f in path.iterdir())
        with chatmemory.connect(b.memory, path=path) as memory:
            ui.say(f"{b.label}: chatmemory.connect({b.memory!r}, path={rel(path)!r}) -> {memory!r}", "bold")
            ui.note(f"files: {', '.join(files)}")
            memory.history(SESSION).clear()  # a fresh session on every run
            with warnings.catch_warnings():
                # LangChain 1.x points new code at LangGraph; this class is still what most apps use
                warnings.simplefilter("ignore", LangChainDeprecationWarning)
                chain = RunnableWithMessageHistory(
                    prompt | deterministic_model(),
                    memory.history,
                    input_messages_key="question",
                    history_messages_key="history",
                )
            for question in QUESTIONS:
                answer = chain.invoke(
                    {"question": question}, config={"configurable": {"session_id": SESSION}}
                )
                ui.turn("you", question)
                ui.turn("bot", str(answer.content))
            stored[b.memory] = list(memory.history(SESSION).messages)
    return stored


# -- step 5: what is stored, where to look -------------------------------------------------------------


def show_results(p: Platform, bs: list[Backend], stored: dict[str, list[Any]], op: Operator) -> None:
    ui.step("What is stored, and where to look next")
    for b in bs:
        messages = stored[b.memory]
        ui.say(f"{b.label} - session {SESSION!r} in {b.memory}: {len(messages)} messages", "bold")
        for i, m in enumerate(messages, 1):
            ui.say(f"  {i}. {m.type:<5} {m.content}")
    ui.say(f"$ kubectl get chatmem -n {DEMO_NS}", "dim")
    ui.block(p.kubectl("get", "chatmem", "-n", DEMO_NS))
    ui.say("$ kubectl get chatmemstore", "dim")
    ui.block(p.kubectl("get", "chatmemstore"))
    with contextlib.suppress(OSError):
        lines = [ln for ln in op.metrics().splitlines() if ln.startswith("chatmemory_memories{")]
        if lines:
            ui.say("operator metrics (chatmemory_memories):", "dim")
            ui.block("\n".join(lines))
    first = bs[0].memory
    ui.say("Where to look next:", "bold")
    ui.say(f"  kubectl describe chatmem -n {DEMO_NS} {first}     conditions, what was provisioned, events")
    ui.say(
        f"  kubectl get secret -n {DEMO_NS} {first}-chatmemory -o yaml   the binding (Service Binding keys)"
    )
    ui.say("  kubectl explain chatmemory.spec                    every field, from the schema")
    ui.say(f"  {rel(op.log)}                     the operator's log")
    ui.say("  README.md: 'The two commands', the ChatMemory reference, SDK usage per backend;")
    ui.say(f"  {rel(CHART / 'README.md')}: install on a real cluster")


def cleanup(p: Platform, bs: list[Backend], op: Operator) -> None:
    ui.say("\nCleaning up (KEEP_PLATFORM=1 keeps everything running)", "bold")
    p.kubectl(
        "delete",
        "chatmemories.chatmemory.io",
        "-n",
        DEMO_NS,
        *[b.memory for b in bs],
        "--ignore-not-found",
        "--wait=false",
    )
    wait_for(
        "the memories' finalizers (the operator deletes their users and data)",
        lambda: all(p.get_json("chatmemories.chatmemory.io", b.memory, "-n", DEMO_NS) is None for b in bs),
        timeout=120,
    )
    ui.ok("memories deleted; their users, keys, topic and database removed (deletionPolicy: Delete)")
    p.helm("uninstall", RELEASE, "--namespace", SYSTEM_NS, show=False)
    wait_for(
        "the stores to go",
        lambda: all(p.get_json("chatmemorystores.chatmemory.io", b.store) is None for b in bs),
        60,
    )
    ui.ok(
        f"helm uninstall {RELEASE}: stores, RBAC and roles removed; CRDs kept (helm.sh/resource-policy: keep)"
    )
    op.stop()
    ui.ok("operator stopped")
    p.kubectl("delete", "secret", "-n", SYSTEM_NS, *[b.admin_secret for b in bs], "--ignore-not-found")
    p.kubectl("delete", "namespace", DEMO_NS, SYSTEM_NS, "--ignore-not-found", "--wait=false")
    ui.ok(f"admin Secrets and namespaces {DEMO_NS}, {SYSTEM_NS} deleted")


@contextlib.contextmanager
def bindings_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="chatmemory-demo-") as tmp:
        yield Path(tmp)


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main() -> int:
    keep = bool(os.environ.get("KEEP_PLATFORM"))
    signal.signal(signal.SIGTERM, _interrupted)  # `kill` or CI's timeout: clean up as for Ctrl-C
    ui.title(
        "chatmemory demo",
        "One ChatMemory per backend (Redis, Kafka, TiDB), used through LangChain.",
    )
    op: Operator | None = None
    try:
        p = Platform(read_env())
        bs = backends(p.env)
        with bindings_dir() as workdir:
            install_chart(p, bs, workdir)
            op = Operator(p)
            op.start()
            wait_ready(p, "chatmemorystores.chatmemory.io", [b.store for b in bs])
            memories = create_memories(p, bs)
            mounted = {name: mount_secret(p, m, workdir / "bindings") for name, m in memories.items()}
            stored = converse(bs, mounted)
            show_results(p, bs, stored, op)
        ui.current = "cleanup"
        if keep:
            ui.say(
                "\nKEEP_PLATFORM=1: leaving the platform, the release, the memories and the operator running",
                "bold",
            )
            ui.say(
                f"  operator pid {op.proc.pid if op.proc else '?'}, log {rel(op.log)}; "
                "re-running the demo replaces it"
            )
            ui.say(
                f"  stop it with `kill {op.proc.pid if op.proc else '<pid>'}`, "
                "the platform with `make platform-down`"
            )
        else:
            cleanup(p, bs, op)
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - say where, show the log, exit 1
        what = "INTERRUPTED" if isinstance(e, KeyboardInterrupt) else "FAILED"
        ui.say(f"\n✗ {what} at {ui.current or 'start-up'}: {e}", "bold red")
        if op is not None:
            ui.say("operator log (last lines):", "dim")
            ui.block(op.tail())
            if not keep:  # leave nothing behind: memories (by the operator), release, operator
                with contextlib.suppress(Exception, KeyboardInterrupt):
                    cleanup(p, bs, op)
                op.stop()
        return 1
    ui.say("\nDone: three memories, three backends, one API.", "bold green")
    return 0


if __name__ == "__main__":
    sys.exit(main())
