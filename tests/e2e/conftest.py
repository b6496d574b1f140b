"""e2e fixtures: one operator process per session, one ChatMemoryStore per platform backend.

The operator runs as a real process (:mod:`tests.support.operator`) against the platform's API
server and watches only namespaces named ``cm-e2e-*``; every object here is created in one such
session namespace (or, for cluster-scoped stores, with a unique name) and removed at the end.
Tests look at the backends themselves with admin clients built from the platform env.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pymysql
import pytest
import redis
from chatmemory.contract import Binding
from confluent_kafka.admin import AdminClient
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.support.kafka import poll_one
from tests.support.operator import OperatorProcess, install_crds, running_operator
from tests.support.platform import Platform

GROUP, VERSION = "chatmemory.io", "v1alpha1"
NAMESPACE_PREFIX = "cm-e2e-"
T = TypeVar("T")

#: The stores every e2e session registers: key -> what it is.
STORE_KEYS = ("redis7", "cluster", "valkey", "kafka", "kafka-sasl", "tidb", "mariadb")
REDIS_KEYS = ("redis7", "cluster", "valkey")
KAFKA_KEYS = ("kafka", "kafka-sasl")
SQL_KEYS = ("tidb", "mariadb")


def uid() -> str:
    return uuid.uuid4().hex[:8]


def wait_until(
    fn: Callable[[], T | None], *, timeout: float = 60, what: str = "condition", interval: float = 0.3
) -> T:
    """Poll ``fn`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = fn()
            if value:
                return value
        except Exception as e:
            last_error = e
        if time.monotonic() > deadline:
            suffix = f" (last error: {last_error!r})" if last_error else ""
            pytest.fail(f"timed out after {timeout}s waiting for {what}{suffix}")
        time.sleep(interval)


def condition(obj: Mapping[str, Any] | None, ctype: str = "Ready") -> dict[str, Any]:
    for c in ((obj or {}).get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return dict(c)
    return {}


@dataclass
class Store:
    """A registered ChatMemoryStore and how tests reach the same server as admin."""

    key: str
    name: str
    kind: str  # redis, kafka, tidb
    spec: dict[str, Any]


class E2E:
    """Kubernetes helpers over the platform's API server, scoped to one session namespace."""

    def __init__(
        self, platform: Platform, api: client.ApiClient, namespace: str, operator: OperatorProcess
    ) -> None:
        self.platform = platform
        self.api = api
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.operator = operator
        self.stores: dict[str, Store] = {}
        self._created_stores: list[str] = []

    # -- stores -------------------------------------------------------------------------------------

    def create_secret(self, name: str, data: Mapping[str, str]) -> None:
        self.core.create_namespaced_secret(
            self.namespace,
            client.V1Secret(metadata=client.V1ObjectMeta(name=name), string_data=dict(data)),
        )

    def create_store(
        self, name: str, spec: Mapping[str, Any], annotations: Mapping[str, str] | None = None
    ) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ChatMemoryStore",
            "metadata": {"name": name, "annotations": dict(annotations or {})},
            "spec": dict(spec),
        }
        self.custom.create_cluster_custom_object(GROUP, VERSION, "chatmemorystores", body)
        self._created_stores.append(name)

    def store(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(self.custom.get_cluster_custom_object(GROUP, VERSION, "chatmemorystores", name))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def patch_store(self, name: str, patch: Mapping[str, Any]) -> None:
        self.custom.patch_cluster_custom_object(GROUP, VERSION, "chatmemorystores", name, dict(patch))

    def delete_store(self, name: str, *, wait: bool = True) -> None:
        with contextlib.suppress(ApiException):
            self.custom.delete_cluster_custom_object(GROUP, VERSION, "chatmemorystores", name)
        if wait:
            wait_until(lambda: self.store(name) is None, timeout=60, what=f"store {name} to go")

    def wait_store(
        self, name: str, *, status: str = "True", reason: str | None = None, timeout: float = 60
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            s = self.store(name)
            c = condition(s)
            if c.get("status") == status and (reason is None or c.get("reason") == reason):
                return s
            return None

        return wait_until(check, timeout=timeout, what=f"store {name} Ready={status} {reason or ''}")

    # -- memories -----------------------------------------------------------------------------------

    def create_memory(
        self,
        name: str,
        store: str | None,
        *,
        annotations: Mapping[str, str] | None = None,
        **spec: Any,
    ) -> None:
        full: dict[str, Any] = {"ttl": "1h"}
        if store is not None:
            full["storeRef"] = {"name": store}
        full.update(spec)
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "ChatMemory",
            "metadata": {"name": name, "annotations": dict(annotations or {})},
            "spec": full,
        }
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, "chatmemories", body)

    @contextlib.contextmanager
    def ready_memories(
        self,
        prefix: str,
        keys: Iterable[str],
        *,
        per_key: Mapping[str, Mapping[str, Any]] | None = None,
        **spec: Any,
    ) -> Iterator[dict[str, str]]:
        """key -> name of a memory ``<prefix>-<key>-<uid>`` on each store of ``keys`` (with ``spec``,
        and ``per_key[key]``), once all are Ready; deleted afterwards without waiting."""
        names = {key: f"{prefix}-{key}-{uid()}" for key in keys}
        for key, name in names.items():
            self.create_memory(name, self.stores[key].name, **spec, **(per_key or {}).get(key, {}))
        for name in names.values():
            self.wait_memory(name)
        yield names
        for name in names.values():
            self.delete_memory(name, wait=False)

    def memory(self, name: str) -> dict[str, Any] | None:
        try:
            return dict(
                self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, "chatmemories", name)
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def patch_memory(self, name: str, patch: Mapping[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "chatmemories", name, dict(patch)
        )

    def delete_memory(self, name: str, *, wait: bool = True, timeout: float = 60) -> None:
        with contextlib.suppress(ApiException):
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, "chatmemories", name)
        if wait:
            wait_until(
                lambda: self.memory(name) is None, timeout=timeout, what=f"memory {name} to be deleted"
            )

    def wait_memory(
        self,
        name: str,
        *,
        status: str = "True",
        reason: str | None = None,
        timeout: float = 60,
        check: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            m = self.memory(name)
            c = condition(m)
            if m is None or c.get("status") != status or (reason is not None and c.get("reason") != reason):
                return None
            if c.get("observedGeneration") != m["metadata"].get("generation"):
                return None
            if check is not None and not check(m):
                return None
            return m

        def describe() -> str:
            c = condition(self.memory(name))
            now = f"{c.get('status')} {c.get('reason')}: {c.get('message')}"
            return f"memory {name} Ready={status} {reason or ''} (now {now})"

        deadline = time.monotonic() + timeout
        while True:
            m = probe()
            if m is not None:
                return m
            if time.monotonic() > deadline:
                log = self.operator.log_path
                pytest.fail(f"timed out after {timeout}s waiting for {describe()}; operator log {log}")
            time.sleep(0.3)

    def secret(self, name: str) -> client.V1Secret | None:
        try:
            return self.core.read_namespaced_secret(name, self.namespace)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def secret_data(self, name: str) -> dict[str, str]:
        s = self.secret(name)
        assert s is not None, f"Secret {name} does not exist"
        return {k: base64.b64decode(v).decode() for k, v in (s.data or {}).items()}

    def binding(self, memory: str) -> Binding:
        m = self.memory(memory)
        assert m is not None
        secret_name = m["status"]["binding"]["name"]
        return Binding.from_mapping(
            self.secret_data(secret_name), source=f"Secret {self.namespace}/{secret_name}"
        )

    def events(self, name: str) -> list[client.CoreV1Event]:
        out = self.core.list_namespaced_event(self.namespace, field_selector=f"involvedObject.name={name}")
        return list(out.items)

    def cleanup(self) -> None:
        for name in self._created_stores:
            with contextlib.suppress(ApiException):
                self.custom.delete_cluster_custom_object(GROUP, VERSION, "chatmemorystores", name)


# -- admin clients to look at the backends ----------------------------------------------------------


def redis_admin(platform: Platform, key: str) -> redis.Redis | redis.cluster.RedisCluster:
    if key == "cluster":
        host, _, port = platform["REDIS_CLUSTER_NODES"].split(",")[0].partition(":")
        return redis.cluster.RedisCluster(
            host=host,
            port=int(port),
            username=platform["REDIS_ADMIN_USER"],
            password=platform["REDIS_ADMIN_PASSWORD"],
        )
    url = platform["REDIS_URL" if key == "redis7" else "VALKEY_URL"]
    return redis.Redis.from_url(url)


def redis_nodes(admin: redis.Redis | redis.cluster.RedisCluster) -> list[redis.Redis]:
    if isinstance(admin, redis.cluster.RedisCluster):
        return [admin.get_redis_connection(n) for n in admin.get_nodes()]
    return [admin]


def kafka_admin(platform: Platform, *, sasl: bool) -> AdminClient:
    if not sasl:
        return AdminClient({"bootstrap.servers": platform["KAFKA_BOOTSTRAP"]})
    return AdminClient(
        {
            "bootstrap.servers": platform["KAFKA_SASL_BOOTSTRAP"],
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": platform["KAFKA_SASL_MECHANISM"],
            "sasl.username": platform["KAFKA_ADMIN_USER"],
            "sasl.password": platform["KAFKA_ADMIN_PASSWORD"],
        }
    )


def mysql_admin(platform: Platform, key: str) -> pymysql.connections.Connection[Any]:
    return pymysql.connect(**platform.mysql_params("TIDB_URL" if key == "tidb" else "MARIADB_URL"))  # type: ignore[arg-type]


# -- store specs from the platform ------------------------------------------------------------------


def store_specs(
    platform: Platform, secret_namespace: str
) -> dict[str, tuple[str, dict[str, Any], dict[str, str]]]:
    """key -> (backend kind, store spec, admin Secret data)."""
    redis_url = urlsplit(platform["REDIS_URL"])
    valkey_url = urlsplit(platform["VALKEY_URL"])
    cluster_host, _, cluster_port = platform["REDIS_CLUSTER_NODES"].split(",")[0].partition(":")
    tidb = platform.mysql_params("TIDB_URL")
    maria = platform.mysql_params("MARIADB_URL")

    def ref(key: str) -> dict[str, str]:
        return {"name": f"admin-{key}", "namespace": secret_namespace}

    return {
        "redis7": (
            "redis",
            {"redis": {"host": redis_url.hostname, "port": redis_url.port, "adminSecretRef": ref("redis7")}},
            {"username": redis_url.username or "", "password": redis_url.password or ""},
        ),
        "cluster": (
            "redis",
            {
                "redis": {
                    "host": cluster_host,
                    "port": int(cluster_port),
                    "cluster": True,
                    "adminSecretRef": ref("cluster"),
                }
            },
            {"username": platform["REDIS_ADMIN_USER"], "password": platform["REDIS_ADMIN_PASSWORD"]},
        ),
        "valkey": (
            "redis",
            {
                "redis": {
                    "host": valkey_url.hostname,
                    "port": valkey_url.port,
                    "adminSecretRef": ref("valkey"),
                }
            },
            {"username": valkey_url.username or "", "password": valkey_url.password or ""},
        ),
        "kafka": ("kafka", {"kafka": {"bootstrapServers": platform["KAFKA_BOOTSTRAP"]}}, {}),
        "kafka-sasl": (
            "kafka",
            {
                "kafka": {
                    "bootstrapServers": platform["KAFKA_SASL_BOOTSTRAP"],
                    "securityProtocol": "SASL_PLAINTEXT",
                    "saslMechanism": platform["KAFKA_SASL_MECHANISM"],
                    "adminSecretRef": ref("kafka-sasl"),
                }
            },
            {"username": platform["KAFKA_ADMIN_USER"], "password": platform["KAFKA_ADMIN_PASSWORD"]},
        ),
        "tidb": (
            "tidb",
            {"tidb": {"host": tidb["host"], "port": tidb["port"], "adminSecretRef": ref("tidb")}},
            {"username": str(tidb["user"]), "password": str(tidb["password"])},
        ),
        "mariadb": (
            "tidb",
            {"tidb": {"host": maria["host"], "port": maria["port"], "adminSecretRef": ref("mariadb")}},
            {"username": str(maria["user"]), "password": str(maria["password"])},
        ),
    }


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kube_api(platform: Platform) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=platform["KUBECONFIG"])
    yield api
    api.close()


@pytest.fixture(scope="session")
def operator_process(platform: Platform) -> Iterator[OperatorProcess]:
    """The operator, once per session, watching ``cm-e2e-*`` namespaces."""
    install_crds(platform)
    with running_operator(platform, namespaces=f"{NAMESPACE_PREFIX}*") as op:
        yield op


@pytest.fixture(scope="session")
def e2e(platform: Platform, kube_api: client.ApiClient, operator_process: OperatorProcess) -> Iterator[E2E]:
    """The session namespace (admin Secrets, memories) and every store, created at once."""
    namespace = f"{NAMESPACE_PREFIX}{uid()}"
    core = client.CoreV1Api(kube_api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    helper = E2E(platform, kube_api, namespace, operator_process)
    session = uid()
    try:
        for key, (kind, spec, admin) in store_specs(platform, namespace).items():
            if admin:
                helper.create_secret(f"admin-{key}", admin)
            name = f"e2e-{key}-{session}"
            helper.create_store(name, spec)
            helper.stores[key] = Store(key=key, name=name, kind=kind, spec=spec)
        for store in helper.stores.values():
            helper.wait_store(store.name, timeout=90)
        yield helper
    finally:
        custom = client.CustomObjectsApi(kube_api)
        with contextlib.suppress(ApiException):
            custom.delete_collection_namespaced_custom_object(GROUP, VERSION, namespace, "chatmemories")
        # let the operator run the finalizers (users removed) before the stores go
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            left = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "chatmemories")["items"]
            if not left:
                break
            time.sleep(0.5)
        helper.cleanup()
        with contextlib.suppress(ApiException):
            core.delete_namespace(namespace)


# -- raw clients with a memory's own credentials (from its Secret) ----------------------------------


def redis_for(binding: Binding) -> redis.Redis | redis.cluster.RedisCluster:
    kwargs: dict[str, Any] = {
        "host": binding.host,
        "port": binding.port,
        "username": binding.username or None,
        "password": binding.password or None,
        "socket_timeout": 5,
    }
    if binding.cluster:
        return redis.cluster.RedisCluster(**kwargs)
    return redis.Redis(**kwargs)


def kafka_conf_for(binding: Binding) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "bootstrap.servers": binding.bootstrap_servers,
        "security.protocol": binding.security_protocol,
        "socket.timeout.ms": 10000,
        "message.timeout.ms": 15000,
    }
    if binding.security_protocol.startswith("SASL"):
        conf.update(
            {
                "sasl.mechanism": binding.sasl_mechanism,
                "sasl.username": binding.username,
                "sasl.password": binding.password,
            }
        )
    return conf


def mysql_for(binding: Binding, *, database: str | None = None) -> pymysql.connections.Connection[Any]:
    return pymysql.connect(
        host=binding.host,
        port=binding.port,
        user=binding.username,
        password=binding.password,
        database=database if database is not None else binding.database,
        autocommit=True,
        connect_timeout=5,
    )


def kafka_roundtrip(binding: Binding, payload: bytes, *, topic: str | None = None) -> bytes:
    """Produce ``payload`` to partition 0 and read it back from there (no group join needed)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

    topic = topic or binding.topic
    errors: list[str] = []
    producer = Producer({**kafka_conf_for(binding), "error_cb": lambda e: errors.append(e.str())})
    delivered: list[Any] = []
    producer.produce(topic, payload, partition=0, on_delivery=lambda err, msg: delivered.append(err or msg))
    producer.flush(20)
    if not delivered or not hasattr(delivered[0], "offset"):
        raise KafkaException(delivered[0] if delivered else f"not delivered: {errors}")
    offset = delivered[0].offset()
    consumer = Consumer(
        {
            **kafka_conf_for(binding),
            "group.id": f"{binding.consumer_group_prefix or 'e2e.'}reader",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, 0, offset if offset >= 0 else OFFSET_BEGINNING)])
        msg = poll_one(consumer, 20)
    finally:
        consumer.close()
    if msg is None:
        raise TimeoutError("no message read back")
    return bytes(msg.value())


def write_turn(b: Binding, session: str, text: str) -> None:
    """One message into ``session`` with the memory's own credentials, the raw way for each backend."""
    if b.backend.value == "redis":
        c = redis_for(b)
        c.rpush(f"{b.key_prefix}{{{session}}}", text)
        c.close()
    elif b.backend.value == "kafka":
        assert kafka_roundtrip(b, text.encode()) == text.encode()
    else:
        with mysql_for(b) as conn, conn.cursor() as cur:
            cur.execute(
                f"INSERT INTO `{b.table}` (session_id, message) VALUES (%s, %s)", (session, f'"{text}"')
            )


def drop_redis_user(platform: Platform, username: str) -> None:
    """Remove a memory's user from the platform's Redis 7 by hand (a test's cleanup)."""
    admin = redis_admin(platform, "redis7")
    admin.acl_deluser(username)
    admin.close()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_unreachable(e2e: E2E, store: str) -> None:
    """Point a Redis store at a port nothing listens on, and wait until it says so."""
    e2e.patch_store(store, {"spec": {"redis": {"port": closed_port()}}})
    e2e.wait_store(store, status="False")


@contextlib.contextmanager
def redis_memory(e2e: E2E, store: str, **spec: Any) -> Iterator[tuple[str, str]]:
    """A Ready memory on the Redis 7 store ``store``: (its name, its user). Afterwards the store
    goes, and the user with it (a test that breaks the deletion leaves it behind otherwise)."""
    name = f"m-{uid()}"
    e2e.create_memory(name, store, **spec)
    username = e2e.wait_memory(name)["status"]["provisioned"]["username"]
    try:
        yield name, username
    finally:
        e2e.delete_store(store)
        drop_redis_user(e2e.platform, username)


def redis7_spec(e2e: E2E, redis: Mapping[str, Any] | None = None, **store: Any) -> dict[str, Any]:
    """The session's Redis 7 store spec, with ``redis`` merged into its block and ``store`` beside it."""
    spec = copy.deepcopy(e2e.stores["redis7"].spec)
    spec["redis"].update(redis or {})
    spec.update(store)
    return spec


# -- an application under load through a rotation (test_rotation_under_load, test_checkpoint_rotation)

#: Seconds each application runs: the issue's minute, with the rotation and the blip inside it.
LOAD_SECONDS = 60.0
#: Pause between an application's turns.
TURN_EVERY = 0.05
#: A rotation's grace period: longer than the kubelet-like lag of the mounted Secret (2 s) plus the
#: SDK's re-read (at most 2 s), as the docs ask of a real one (minutes, against the kubelet's sync).
LOAD_GRACE_PERIOD = "8s"


def logs_in(b: Binding) -> bool:
    """Whether the server accepts the binding's credentials (a new connection)."""
    try:
        if b.backend.value == "redis":
            c = redis_for(b)
            try:
                return bool(c.ping())
            finally:
                c.close()
        if b.backend.value == "kafka":
            from tests.integration.sdk.test_follow_secret import kafka_allows

            return kafka_allows(b)
        mysql_for(b).close()
        return True
    except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException, pymysql.MySQLError):
        return False


def blip(e2e: E2E, key: str, users: set[str]) -> None:
    """Close every connection of the memory's users (the app's), as a network blip would: the
    server kills them on Redis (each node of a cluster) and TiDB; Kafka has no such command, so the
    application's own connections to the broker are shut down (the app runs in this process)."""
    if key in REDIS_KEYS:
        admin = redis_admin(e2e.platform, key)
        for node in redis_nodes(admin):
            for user in users:
                node.execute_command("CLIENT", "KILL", "USER", user)
        admin.close()
    elif key in KAFKA_KEYS:
        from tests.integration.sdk.test_follow_secret import drop_connections

        port = int(
            e2e.platform["KAFKA_SASL_BOOTSTRAP" if key == "kafka-sasl" else "KAFKA_BOOTSTRAP"].rpartition(
                ":"
            )[2]
        )
        assert drop_connections(port) > 0, "the application had no connection to the broker"
    else:
        with mysql_admin(e2e.platform, key) as conn, conn.cursor() as cur:
            cur.execute("SELECT ID, USER FROM information_schema.PROCESSLIST")
            for conn_id, user in cur.fetchall():
                if user in users:
                    cur.execute(f"KILL {int(conn_id)}")


class LoadedApp:
    """An application thread running ``turn(i)`` every :data:`TURN_EVERY` seconds until stopped,
    recording the turns that returned and the errors of those that raised. ``paused()`` holds it
    between two turns (a blip then lands on idle connections: a turn in flight would be reported
    as possibly applied, which is the truth, not a failure of following the Secret)."""

    def __init__(self, name: str, turn: Callable[[int], None]) -> None:
        import threading  # here: this module's imports above are not ours to change

        self.done: list[int] = []
        self.failures: list[BaseException] = []
        self._turn = turn
        self._running, self._hold, self._idle = threading.Event(), threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        i = 0
        while self._running.is_set():
            if self._hold.is_set():
                self._idle.set()
                time.sleep(0.01)
                continue
            self._idle.clear()
            try:
                self._turn(i)
                self.done.append(i)
            except Exception as e:
                self.failures.append(e)
            i += 1
            time.sleep(TURN_EVERY)

    def start(self) -> None:
        self._running.set()
        self._thread.start()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self._hold.set()
        self._idle.wait(30)
        try:
            yield
        finally:
            self._hold.clear()

    def stop(self) -> None:
        self._running.clear()
        self._thread.join(30)


def rotate_under_load(e2e: E2E, key: str, name: str, mounted: Any, app: LoadedApp) -> Binding:
    """Rotate memory ``name`` while ``app`` runs: the annotation, the Secret copied into ``mounted``
    (a ``MountedSecret``) 2 s after the operator wrote it, the grace period's end awaited (the
    previous credentials refused by the server), then a blip between two turns. Returns the
    previous binding."""
    old = e2e.binding(name)
    tag = f"load-{uid()}"
    e2e.patch_memory(name, {"metadata": {"annotations": {"chatmemory.io/rotate-credentials": tag}}})
    e2e.wait_memory(name, check=lambda m: m["status"].get("credentialsRotation") == tag)
    new = e2e.binding(name)
    time.sleep(2)  # the kubelet's sync lag
    mounted.write(new)
    wait_until(lambda: not logs_in(old), timeout=60, what=f"{key}: the previous credentials to stop")
    with app.paused():
        blip(e2e, key, {old.username, new.username})
    return old
