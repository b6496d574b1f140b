"""Failure topologies the fault tests start on demand: a 3-node Kafka, a Redis Cluster with replicas,
a private TiDB.

Used by ``tests/integration/failover/`` (``make test-faults``). ``scripts/localplatform.py up`` never
starts these (``make test`` keeps its time); they run the binaries the platform built (its Kafka jars,
Debian's redis-server, its tidb-server), each node on free 127.0.0.1 ports with its own data
directory under the test's ``tmp_path``. Every node is one child process, started, stopped (SIGTERM)
or killed (SIGKILL) by its pid, never by name; each topology is a context manager that kills what
is still running and removes its directories however the test ends.

- :func:`kafka_cluster`: 3 combined controller+broker KRaft nodes, SASL/SCRAM-SHA-512 beside
  plaintext (an ``admin`` super user, as the platform's Kafka), default replication factor 3,
  ``min.insync.replicas=2``; a killed broker is fenced after 3 s (``broker.session.timeout.ms``).
  :meth:`KafkaCluster.leader` finds a partition's leader.
- :func:`redis_cluster`: 3 primaries and 3 replicas, ``cluster-node-timeout`` 1500 ms, an ``admin``
  ACL user on every node; :meth:`RedisClusterTopology.primary_of` finds a slot's primary and
  :meth:`RedisClusterTopology.wait_primary_change` how long a failover took.
- :func:`tidb_server`: one tidb-server on unistore, restartable on the same port and store.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pymysql
import pytest
import redis
from confluent_kafka.admin import AdminClient

from tests.support.operator import free_port
from tests.support.platform import ROOT

HOST = "127.0.0.1"


def _localplatform() -> ModuleType:
    """scripts/localplatform.py as a module: binary locations and versions live there only."""
    name = "localplatform"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "localplatform.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _wait(check: Callable[[], bool], timeout: float, what: str, node: Node | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node is not None and node.proc is not None and node.proc.poll() is not None:
            raise RuntimeError(f"{what}: exited with {node.proc.returncode}; log {node.log}:\n{node.tail()}")
        with contextlib.suppress(Exception):  # readiness probes fail in many ways until ready
            if check():
                return
        time.sleep(0.1)
    raise RuntimeError(
        f"{what}: not ready after {timeout:.0f} s" + (f"; log {node.log}:\n{node.tail()}" if node else "")
    )


class Node:
    """One server process: started in its own session, stopped or killed by its pid."""

    def __init__(self, name: str, cmd: list[str], log: Path, *, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:  # fmt: skip
        self.name, self.cmd, self.log, self.env, self.cwd = name, cmd, log, env, cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, **(self.env or {})}, cwd=self.cwd, start_new_session=True,
            )  # fmt: skip

    def kill(self) -> None:
        """SIGKILL: a crash; only what the server had on disk or on another node survives."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM: an orderly shutdown (a SIGKILL after 30 s)."""
        self._signal(signal.SIGTERM)

    def _signal(self, sig: signal.Signals) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.proc = None

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def _binary(path: Path | str | None, what: str) -> str:
    if path is None or not Path(path).exists():
        pytest.fail(f"{what} not found ({path}): run `make platform-build` first")
    return str(path)


# -- Kafka: 3 combined KRaft nodes ---------------------------------------------------------------------

_KAFKA_LOG4J = """status = warn
shutdownHook = disable
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
logger.broker.name = kafka.server.BrokerServer
logger.broker.level = INFO
"""


class KafkaCluster:
    """Three KRaft nodes, each a controller and a broker; clients use the SASL listeners as ``admin``."""

    def __init__(self, workdir: Path, size: int = 3) -> None:
        lp = _localplatform()
        self.workdir = workdir
        self.password = secrets.token_urlsafe(16)
        self.libs = lp.kafka_libs()
        _binary(self.libs, "Kafka jars")
        self.ports = [
            {"plain": free_port(), "sasl": free_port(), "controller": free_port()} for _ in range(size)
        ]
        voters = ",".join(f"{i + 1}@{HOST}:{p['controller']}" for i, p in enumerate(self.ports))
        cluster_id = lp.kafka_cluster_id()
        self.nodes: list[Node] = []
        self._admin: AdminClient | None = None
        for i, p in enumerate(self.ports):
            d = workdir / f"kafka-{i + 1}"
            d.mkdir(parents=True)
            props = d / "server.properties"
            props.write_text(self._properties(i + 1, p, voters, d, lp.SCRAM_LOGIN))
            (d / "log4j2.properties").write_text(_KAFKA_LOG4J)
            log4j = f"-Dlog4j2.configurationFile={d / 'log4j2.properties'}"
            cp = f"{self.libs}/*"
            subprocess.run(
                ["java", "-cp", cp, log4j, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c",
                 str(props), "--add-scram", f"SCRAM-SHA-512=[name=admin,password={self.password}]"],
                check=True, capture_output=True, timeout=120,
            )  # fmt: skip
            cmd = ["java", "-Xms32m", "-Xmx192m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                   "-XX:ActiveProcessorCount=1", "-Djava.awt.headless=true",
                   "-Djava.net.preferIPv4Stack=true", log4j, "-cp", cp, "kafka.Kafka",
                   str(props)]  # fmt: skip
            self.nodes.append(Node(f"kafka-{i + 1}", cmd, d / "server.log"))

    @staticmethod
    def _properties(node_id: int, p: dict[str, int], voters: str, d: Path, scram_login: str) -> str:
        return f"""process.roles=broker,controller
node.id={node_id}
controller.quorum.voters={voters}
listeners=PLAINTEXT://{HOST}:{p["plain"]},SASL_PLAINTEXT://{HOST}:{p["sasl"]},CONTROLLER://{HOST}:{p["controller"]}
advertised.listeners=PLAINTEXT://{HOST}:{p["plain"]},SASL_PLAINTEXT://{HOST}:{p["sasl"]}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config={scram_login}
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:admin;User:ANONYMOUS
allow.everyone.if.no.acl.found=false
log.dirs={d / "data"}
num.partitions=1
default.replication.factor=3
min.insync.replicas=2
unclean.leader.election.enable=false
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
broker.session.timeout.ms=3000
broker.heartbeat.interval.ms=500
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=2
background.threads=2
num.replica.fetchers=1
log.cleaner.dedupe.buffer.size=4194304
auto.create.topics.enable=false
"""

    @property
    def bootstrap(self) -> str:
        """Every node's SASL listener, ``host:port,...``."""
        return ",".join(f"{HOST}:{p['sasl']}" for p in self.ports)

    def url(self, topic: str) -> str:
        """A ``connect_url`` URL for ``topic`` as the admin user."""
        return f"kafka://admin:{self.password}@{self.bootstrap}?topic={topic}&sasl_mechanism=SCRAM-SHA-512"

    def client_config(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": "admin",
            "sasl.password": self.password,
            "log_level": 2,  # a killed node's connection errors are expected: only critical ones
        }

    def admin(self) -> AdminClient:
        """One admin client for the topology's life (a dropped one cancels its pending requests)."""
        if self._admin is None:
            self._admin = AdminClient(self.client_config())
        return self._admin

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        for node in self.nodes:
            self._wait_started(node)
        _wait(
            lambda: len(self.admin().list_topics(timeout=2).brokers) == len(self.nodes), 60, "kafka brokers"
        )

    def _wait_started(self, node: Node, since: int = 0) -> None:
        def started() -> bool:
            return "Kafka Server started" in node.log.read_text(errors="replace")[since:]

        _wait(started, 120, node.name, node)

    def kill(self, i: int) -> None:
        self.nodes[i].kill()

    def restart(self, i: int) -> None:
        """Start node ``i`` again on its data directory and wait until it serves."""
        node = self.nodes[i]
        since = node.log.stat().st_size if node.log.exists() else 0
        node.start()
        self._wait_started(node, since)

    def create_topic(self, topic: str, partitions: int = 1) -> None:
        from confluent_kafka.admin import NewTopic

        fut = self.admin().create_topics(
            [NewTopic(topic, partitions, 3, config={"min.insync.replicas": "2"})]
        )
        fut[topic].result(timeout=30)
        _wait(lambda: self.leader(topic, 0) >= 0, 30, f"topic {topic} leader")

    def leader(self, topic: str, partition: int) -> int:
        """The index in :attr:`nodes` of the partition's leader (-1 while there is none)."""
        md = self.admin().list_topics(topic, timeout=5)
        return int(md.topics[topic].partitions[partition].leader) - 1

    def in_sync(self, topic: str, partition: int) -> int:
        """How many replicas of the partition are in sync."""
        md = self.admin().list_topics(topic, timeout=5)
        return len(md.topics[topic].partitions[partition].isrs)

    def close(self) -> None:
        for node in self.nodes:
            node.kill()


@contextlib.contextmanager
def kafka_cluster(workdir: Path) -> Iterator[KafkaCluster]:
    """A started :class:`KafkaCluster`; every node is killed and its directory removed afterwards."""
    cluster = KafkaCluster(workdir / "kafka")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
        shutil.rmtree(workdir / "kafka", ignore_errors=True)


# -- Redis Cluster: 3 primaries, 3 replicas ------------------------------------------------------------

#: Milliseconds before a node that does not answer is failed over (Redis' default is 15000).
NODE_TIMEOUT_MS = 1500


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too (Redis refuses ports above 55535)."""
    while True:
        port = random.randint(20000, 55000)
        with contextlib.ExitStack() as stack:
            try:
                for p in (port, port + 10000):
                    s = stack.enter_context(socket.socket())
                    s.bind((HOST, p))
            except OSError:
                continue
            return port


class RedisClusterTopology:
    """Six redis-server nodes in one cluster, each primary with one replica, an ``admin`` ACL user."""

    def __init__(self, workdir: Path) -> None:
        lp = _localplatform()
        self.workdir = workdir
        self.password = secrets.token_urlsafe(16)
        self.server = _binary(lp.find_system("redis-server"), "redis-server")
        self.cli = _binary(lp.find_system("redis-cli"), "redis-cli")
        self.ports = [_cluster_port() for _ in range(6)]
        self.nodes: dict[int, Node] = {}
        for port in self.ports:
            d = workdir / f"redis-{port}"
            d.mkdir(parents=True)
            cmd = [self.server, *lp.redis_args(port, d, self.password), "--cluster-enabled", "yes",
                   "--cluster-config-file", str(d / "nodes.conf"),
                   "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                   "--masteruser", "admin", "--masterauth", self.password]  # fmt: skip
            self.nodes[port] = Node(f"redis-{port}", cmd, d / "redis.log", cwd=d)

    @property
    def startup_nodes(self) -> str:
        """``host:port,...`` of every node (the platform's ``REDIS_CLUSTER_NODES`` form)."""
        return ",".join(f"{HOST}:{p}" for p in self.ports)

    def url(self, port: int | None = None) -> str:
        """A ``connect_url`` URL for the cluster (any node bootstraps the client)."""
        return f"redis://admin:{self.password}@{HOST}:{port or self.ports[0]}?cluster=true"

    def node_client(self, port: int) -> redis.Redis:
        return redis.Redis(host=HOST, port=port, username="admin", password=self.password, socket_timeout=2,
                           socket_connect_timeout=1)  # fmt: skip

    def start(self) -> None:
        for node in self.nodes.values():
            node.start()
        for port, node in self.nodes.items():
            _wait(lambda p=port: bool(self.node_client(p).ping()), 20, node.name, node)
        subprocess.run(
            [self.cli, "--user", "admin", "--pass", self.password, "--no-auth-warning", "--cluster", "create",
             *(f"{HOST}:{p}" for p in self.ports), "--cluster-replicas", "1", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        _wait(self._healthy, 30, "redis cluster")

    def _healthy(self) -> bool:
        """Every live node says ``cluster_state:ok`` and every primary has a replica streaming."""
        for port, node in self.nodes.items():
            if node.running and self.node_client(port).cluster("info")["cluster_state"] != "ok":
                return False
        return all(self.replica_online(p) for p in self.primaries())

    def primaries(self) -> list[int]:
        """The ports of the primaries that serve slots, as a live node sees the cluster."""
        slots = self._slots()
        return sorted({p for _, _, p in slots})

    def _slots(self) -> list[tuple[int, int, int]]:
        for port, node in self.nodes.items():
            if not node.running:
                continue
            with contextlib.suppress(redis.RedisError):
                out = self.node_client(port).execute_command("CLUSTER", "SLOTS")
                return [(int(r[0]), int(r[1]), int(r[2][1])) for r in out]
        raise RuntimeError("no live node answers CLUSTER SLOTS")

    def primary_of(self, slot: int) -> int:
        """The port of the primary serving ``slot``, as a live node sees it."""
        return next(p for lo, hi, p in self._slots() if lo <= slot <= hi)

    def slot_of(self, key: str) -> int:
        return int(
            self.node_client(next(p for p, n in self.nodes.items() if n.running)).cluster("keyslot", key)
        )

    def replica_online(self, primary: int) -> bool:
        """The primary on ``primary`` has a replica in ``online`` state (its replication link is up)."""
        info = self.node_client(primary).info("replication")
        return int(info.get("connected_slaves", 0)) > 0 and all(
            v.get("state") == "online"
            for k, v in info.items()
            if k.startswith("slave") and isinstance(v, dict)
        )

    def wait_primary_change(self, slot: int, old: int, timeout: float = 30) -> float:
        """Seconds until a node other than ``old`` serves ``slot`` as primary (the failover)."""
        start = time.monotonic()

        def moved() -> bool:
            for port, node in self.nodes.items():
                if port == old or not node.running:
                    continue
                role = self.node_client(port).execute_command("ROLE")
                if role[0] in (b"master", "master") and self.primary_of(slot) == port:
                    return True
            return False

        _wait(moved, timeout, f"failover of slot {slot}")
        return time.monotonic() - start

    def kill(self, port: int) -> None:
        self.nodes[port].kill()

    def restart(self, port: int) -> None:
        """Start the node again (empty, with its nodes.conf): it rejoins as a replica."""
        node = self.nodes[port]
        node.start()
        _wait(lambda: bool(self.node_client(port).ping()), 20, node.name, node)

    def wait_healthy(self, timeout: float = 30) -> None:
        _wait(self._healthy, timeout, "redis cluster with a replica per primary")

    def close(self) -> None:
        for node in self.nodes.values():
            node.kill()


@contextlib.contextmanager
def redis_cluster(workdir: Path) -> Iterator[RedisClusterTopology]:
    """A started :class:`RedisClusterTopology`; every node is killed and its directory removed afterwards."""
    cluster = RedisClusterTopology(workdir / "redis-cluster")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()
        shutil.rmtree(workdir / "redis-cluster", ignore_errors=True)


# -- TiDB: a private unistore server, restartable ------------------------------------------------------


class TiDBServer:
    """The platform's tidb-server on its own ports and store; ``root`` without a password."""

    def __init__(self, workdir: Path) -> None:
        lp = _localplatform()
        binary = _binary(lp.BIN / f"tidb-server-{lp.TIDB_MODULE_VERSION}", "tidb-server")
        self.workdir = workdir
        self.port, self.status_port = free_port(), free_port()
        tmp = workdir / "tmp"
        tmp.mkdir(parents=True)
        conf = workdir / "tidb.toml"
        conf.write_text(f'temp-dir = "{tmp}"\ntmp-storage-path = "{tmp / "oom"}"\n\n[log]\nlevel = "warn"\n')
        cmd = [binary, f"-config={conf}", "-store=unistore", f"-path={workdir / 'store'}", f"-host={HOST}",
               f"-P={self.port}", f"-status-host={HOST}", f"-status={self.status_port}", "-socket=",
               f"-temp-dir={tmp}", "-L=warn", f"-log-file={workdir / 'tidb.log'}"]  # fmt: skip
        self.node = Node("tidb", cmd, workdir / "stdout.log", env={"TMPDIR": str(tmp)}, cwd=workdir)

    @property
    def url(self) -> str:
        return f"mysql://root@{HOST}:{self.port}/"

    def connect(self, **kwargs: Any) -> pymysql.Connection[Any]:
        return pymysql.connect(host=HOST, port=self.port, user="root", autocommit=True, **kwargs)

    def start(self) -> None:
        self.node.start()
        _wait(self._answers, 90, "tidb", self.node)

    def _answers(self) -> bool:
        with self.connect(connect_timeout=1) as conn, conn.cursor() as cur:
            cur.execute("SELECT 1")
            return cur.fetchone() == (1,)

    def kill(self) -> None:
        self.node.kill()

    def stop(self) -> None:
        self.node.stop()

    def close(self) -> None:
        self.node.kill()


@contextlib.contextmanager
def tidb_server(workdir: Path) -> Iterator[TiDBServer]:
    """A started :class:`TiDBServer`; killed and its directory removed afterwards."""
    server = TiDBServer(workdir / "tidb")
    try:
        server.start()
        yield server
    finally:
        server.close()
        shutil.rmtree(workdir / "tidb", ignore_errors=True)
