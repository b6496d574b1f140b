"""The Redis / Valkey backend: one ACL user per ChatMemory, confined to the memory's key prefix.

Called by the reconcile layer through :class:`~chatmemory_operator.backends.base.Backend` (built by
:func:`chatmemory_operator.backends.build_backends`). A memory owns no server object besides its ACL
user: its data is the SDK's session lists at ``<key_prefix>{<session_id>}``, created and expired
(sliding TTL) by the SDK itself. This module therefore:

- sets the user (``ACL SETUSER <user> reset on #<sha256> ~<prefix>* resetchannels -@all +...``) on
  the server, or on **every node** of a Redis Cluster (ACLs are per node);
- adds the store's vector-set commands (``VADD VREM VSIM VCARD``: Redis 8+, keyed, so the key
  pattern confines them) only where every node has them (``COMMAND INFO``): Redis 7 and Valkey
  refuse an ACL rule naming a command they do not know. The answer is kept per store with the
  server's rendering of the rules, so ``ensure`` and the drift check of ``observe`` always agree
  (an operator restart asks again, e.g. after an upgrade to Redis 8);
- on servers without ACLs (Memorystore-like, AUTH only) hands out the store's own credentials and
  says ``isolated=False`` in the binding;
- on ``Delete`` removes the memory's keys (SCAN on the prefix + UNLINK, node by node) and the user;
  on ``Retain`` only the user.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import redis
from chatmemory import contract
from chatmemory.checkpoint.redis import REDIS_COMMANDS as CHECKPOINT_COMMANDS
from chatmemory.contract import BackendKind, Binding
from chatmemory.store.redis import STORE_REDIS_COMMANDS, STORE_VECTOR_SET_COMMANDS
from redis.backoff import ExponentialBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

from chatmemory_operator import naming
from chatmemory_operator.api import v1alpha1 as api
from chatmemory_operator.backends import base
from chatmemory_operator.backends._common import (
    CONNECT_TIMEOUT,
    REQUEST_TIMEOUT,
    ClientCache,
    fingerprint,
    redact,
)
from chatmemory_operator.backends.base import DeletionPolicy, Drift, MemoryPlan, Observed, Prior, StoreInfo
from chatmemory_operator.errors import BackendUnavailable, InvalidSpec

#: The commands the SDK's chat histories run (no KEYS, FLUSHALL, CONFIG, EVAL, ...).
#: Writes: MULTI RPUSH EXPIRE LTRIM EXEC (DISCARD to abort); reads: LRANGE LLEN TTL PTTL EXISTS;
#: clear: DEL UNLINK; connection: HELLO AUTH PING; WAIT after a turn's EXEC when the memory asks
#: for replicas (redis_wait_replicas: it names no key). Nothing keyless that names other keys: no SCAN,
#: KEYS or RANDOMKEY (an ACL key pattern does not filter them: they would list every tenant's keys).
HISTORY_COMMANDS: Final[tuple[str, ...]] = (
    "ping",
    "hello",
    "auth",
    "multi",
    "exec",
    "discard",
    "rpush",
    "expire",
    "ltrim",
    "lrange",
    "llen",
    "del",
    "unlink",
    "ttl",
    "pttl",
    "exists",
    "wait",
)
#: What the memory's user may run: the histories' commands plus the LangGraph checkpointer's and
#: store's (hashes and sorted sets), whose lists the SDK defines next to the classes that send them.
SDK_COMMANDS: Final[tuple[str, ...]] = tuple(
    dict.fromkeys(HISTORY_COMMANDS + CHECKPOINT_COMMANDS + STORE_REDIS_COMMANDS)
)
#: Added where every node has vector sets (Redis 8+): the store ranks query searches with them.
VECTOR_SET_COMMANDS: Final[tuple[str, ...]] = STORE_VECTOR_SET_COMMANDS
#: Added on a Redis Cluster: the client reads the slot map and the command table (COMMAND, to find
#: key positions) and follows ASK redirects. All read-only metadata.
CLUSTER_COMMANDS: Final[tuple[str, ...]] = ("cluster|slots", "command", "asking", "readonly")

_SCAN_COUNT: Final = 1000
_SHARED: Final = (
    "the Redis server has no ACLs: this memory uses the store's own credentials and can reach every key; "
    "use a server with ACLs (Redis 6+) to isolate memories"
)


@dataclass(frozen=True, kw_only=True)
class RedisConnection(base.HostPortConnection):
    """A Redis, Valkey or Redis Cluster store: one node's address (a seed node on a cluster)."""

    cluster: bool = False  # host:port is a seed node of a Redis Cluster


@dataclass(frozen=True, kw_only=True)
class RedisPlan(MemoryPlan):
    """A memory on Redis: the key prefix its user is confined to."""

    key_prefix: str


def key_pattern(key_prefix: str) -> str:
    """The glob every key of the memory matches (the SDK's rule); an empty prefix is refused."""
    try:
        return contract.key_pattern(key_prefix)
    except ValueError:
        raise InvalidSpec(
            "the memory's key prefix is empty: that would grant every key on the server"
        ) from None


def password_hash(password: str) -> str:
    """The SHA-256 hex Redis stores for a password: sent as ``#<hash>`` so no plaintext travels."""
    return hashlib.sha256(password.encode()).hexdigest()


def command_rules(*, cluster: bool, vector_sets: bool = False) -> list[str]:
    """The command part of the rules: ``-@all`` then each command the SDK needs (no ``FT.*``, even
    where the search module is loaded: a user allowed FT.CREATE can index another memory's keys),
    plus the vector-set commands where the server has them (``vector_sets``)."""
    commands = (
        SDK_COMMANDS + (VECTOR_SET_COMMANDS if vector_sets else ()) + (CLUSTER_COMMANDS if cluster else ())
    )
    return ["-@all", *(f"+{c}" for c in commands)]


def has_commands(command_info: Any) -> bool:
    """Whether a ``COMMAND INFO <names...>`` reply (raw, one entry per name) knows every name:
    an unknown command's entry is nil."""
    entries = list(command_info.values()) if isinstance(command_info, dict) else list(command_info or [])
    return bool(entries) and all(e is not None and e != [] for e in entries)


def acl_rules(
    key_prefix: str, password: str, *, cluster: bool, previous_sha256: str = "", vector_sets: bool = False
) -> list[str]:
    """The full ``ACL SETUSER`` rule list: starts from ``reset`` so repeated calls converge exactly.

    ``reset`` also drops every other password, which is what makes a password change a rotation;
    during a rotation's grace period the previous password (``previous_sha256``) stays as a second
    one (Redis users may hold several), and the next ensure after it ends drops it.
    """
    previous = [f"#{previous_sha256}"] if previous_sha256 else []
    return [
        "reset",
        "on",
        f"#{password_hash(password)}",
        *previous,
        f"~{key_pattern(key_prefix)}",
        "resetchannels",
        *command_rules(cluster=cluster, vector_sets=vector_sets),
    ]


def permissions(getuser: dict[str, Any] | None) -> tuple[frozenset[str], frozenset[str]]:
    """(commands, categories) of an ``ACL GETUSER`` reply as parsed by redis-py.

    Servers compact rules differently (Redis 7.0 turns ``+multi +exec +discard`` into
    ``+@transaction -watch -unwatch``), so compare against what the same server made of our rules.
    """
    if not getuser:
        return frozenset(), frozenset()
    return (
        frozenset(_text(c).lower() for c in getuser.get("commands") or []),
        frozenset(_text(c).lower() for c in getuser.get("categories") or []),
    )


def rules_match(
    getuser: dict[str, Any] | None, key_prefix: str, canonical: tuple[frozenset[str], frozenset[str]]
) -> bool:
    """Whether an ``ACL GETUSER`` reply grants exactly our rules (``canonical``: the server's
    rendering of our command rules, from :func:`permissions` of a probe user)."""
    if not getuser:
        return False
    keys = [_text(k) for k in getuser.get("keys") or []]
    channels = [_text(c) for c in getuser.get("channels") or []]
    return (
        bool(getuser.get("enabled"))
        and permissions(getuser) == canonical
        and keys == [f"~{key_pattern(key_prefix)}"]
        and not channels
        and not (getuser.get("selectors") or [])
    )


def is_unknown_command(message: str) -> bool:
    """True for the error a server without ACL support gives to ``ACL ...`` (Memorystore-like)."""
    m = message.lower()
    return "unknown command" in m or "unknown subcommand" in m


def _cmd(node: redis.Redis, *args: str) -> Any:
    """One raw command on one node (redis-py's execute_command is untyped)."""
    return node.execute_command(*args)  # type: ignore[no-untyped-call]


def _text(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _provider(info: dict[str, Any]) -> str:
    """``valkey`` or ``redis`` from an INFO server reply (Valkey also reports a redis_version)."""
    valkey = "valkey_version" in info or str(info.get("server_name", "")).lower() == "valkey"
    return "valkey" if valkey else "redis"


_Client = redis.Redis | RedisCluster


class RedisBackend:
    """Provisions memories on a Redis, Valkey or Redis Cluster store. Thread-safe."""

    kind = BackendKind.REDIS

    def __init__(self) -> None:
        self._clients: ClientCache[_Client] = ClientCache(lambda c: c.close())
        self._lock = threading.Lock()
        self._canonical_cache: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
        self._vector_sets_cache: dict[str, bool] = {}

    def close(self) -> None:
        """Release every cached admin client (called at operator cleanup)."""
        self._clients.close()

    # -- Backend protocol -------------------------------------------------------------------------

    def connection(self, store: api.ChatMemoryStore, admin: base.AdminAccess) -> RedisConnection:
        spec = store.spec.redis
        assert spec is not None  # the registry picks this backend for stores with a redis block
        fields = base.connection_fields(store, admin)
        return RedisConnection(host=spec.host, port=spec.port, cluster=spec.cluster, **fields)

    def plan(self, common: MemoryPlan, memory: api.ChatMemory, store: api.ChatMemoryStore) -> RedisPlan:
        spec = memory.spec.redis or api.RedisMemorySpec()
        custom = ("spec.redis.keyPrefix",) if spec.key_prefix else ()
        prefix = spec.key_prefix or naming.key_prefix(common.namespace, common.name)
        return base.extend(common, RedisPlan, key_prefix=prefix, custom=custom)

    def claims(self, plan: RedisPlan) -> tuple[base.Claim, ...]:
        return base.claims_of(plan, "key-prefix", plan.key_prefix, "spec.redis.keyPrefix", prefix=True)

    def exists(self, store: RedisConnection, plan: RedisPlan, claim: base.Claim) -> bool:
        """Any key under the prefix, on any primary (SCAN as the admin; stops at the first)."""
        pattern = key_pattern(plan.key_prefix)
        with self._errors(store):
            client = self._client(store)
            return any(
                next(iter(node.scan_iter(match=pattern, count=_SCAN_COUNT)), None) is not None
                for node in self._nodes(client, primaries=True)
            )

    def binding_current(self, binding: Binding, store: RedisConnection, plan: RedisPlan) -> bool:
        return (binding.username, binding.host, binding.port, binding.key_prefix, binding.cluster) == (
            plan.username,
            store.host,
            store.port,
            plan.key_prefix,
            store.cluster,
        )

    def provisioned(self, plan: RedisPlan, binding: Binding) -> api.Provisioned:
        return api.Provisioned(
            key_prefix=plan.key_prefix,
            username=binding.username if binding.isolated else None,
            isolated=binding.isolated,
            expiry="redis-expire",
        )

    def describe(self, plan: RedisPlan) -> str:
        return f"key prefix {plan.key_prefix!r}"

    def isolation(self, binding: Binding) -> base.Isolation:
        return base.isolation(binding, isolated=binding.isolated, shared=_SHARED)

    def check(self, store: RedisConnection) -> StoreInfo:
        with self._errors(store):
            client = self._client(store)
            node = self._nodes(client, primaries=True)[0]
            info = node.info("server")
            cluster_info = node.info("cluster")
            modules = self._modules(node)
            acl = self._has_acl(node)
        provider = _provider(info)
        version = str(info.get("valkey_version") if provider == "valkey" else info.get("redis_version", ""))
        return StoreInfo(
            version=version,
            provider=provider,
            capabilities={
                "acl": acl,
                "search": "search" in modules,
                "json": "rejson" in modules or "json" in modules,
                "cluster": bool(int(cluster_info.get("cluster_enabled", 0) or 0)),
                "vector_sets": self._has_vector_sets(node),
            },
        )

    def observe(self, store: RedisConnection, plan: RedisPlan, prior: Prior = base.NO_PRIOR) -> Observed:
        key_pattern(plan.key_prefix)
        with self._errors(store):
            client = self._client(store)
            nodes = self._nodes(client, primaries=False)
            if not self._has_acl(nodes[0]):
                return Observed(exists=True, user_exists=True, details={"acl": "false", "isolated": "false"})
            canonical = self._canonical(store, nodes[0], vector_sets=self._vector_sets(store, nodes))
            users = [n.acl_getuser(plan.username) for n in nodes]
        present = [u for u in users if u]
        match = len(present) == len(nodes) and all(
            rules_match(u, plan.key_prefix, canonical) for u in present
        )
        drift = base.presence_drift(plan, exists=True, user_exists=len(present) == len(nodes))
        if not drift and not match:
            drift.append(Drift("the ACL rules differed", "reset the user's rules"))
        return Observed(
            exists=True,  # a memory's data has no container: the prefix exists once the store answers
            user_exists=len(present) == len(nodes),
            drift=tuple(drift),
            details={
                "acl": "true",
                "isolated": "true",
                "user": plan.username,
                "nodes": str(len(nodes)),
                "nodes_with_user": str(len(present)),
                "rules_match": str(match).lower(),
            },
        )

    def ensure(
        self, store: RedisConnection, plan: RedisPlan, password: str, prior: Prior = base.NO_PRIOR
    ) -> Binding:
        key_pattern(plan.key_prefix)  # refuses an empty prefix before touching the server
        if not plan.username:
            raise InvalidSpec("the memory has no Redis user name")
        with self._errors(store, secrets=(password,)):
            client = self._client(store)
            nodes = self._nodes(client, primaries=False)
            provider = _provider(nodes[0].info("server"))
            acl = self._has_acl(nodes[0])
            if acl:
                previous = prior.previous_password_sha256
                rules = acl_rules(
                    plan.key_prefix,
                    password,
                    cluster=store.cluster,
                    previous_sha256=previous,
                    vector_sets=self._vector_sets(store, nodes),
                )
                for node in nodes:
                    _cmd(node, "ACL", "SETUSER", plan.username, *rules)
        username, pw = (plan.username, password) if acl else (store.admin_username, store.admin_password)
        scheme = "rediss" if store.tls.enabled else "redis"
        auth = ""
        if pw:
            auth = f"{quote(username, safe='')}:{quote(pw, safe='')}@"
        return Binding(
            backend=BackendKind.REDIS,
            provider=provider,
            host=store.host,
            port=store.port,
            username=username,
            password=pw,
            uri=f"{scheme}://{auth}{store.host}:{store.port}/0",
            **base.binding_fields(store, plan),
            key_prefix=plan.key_prefix,
            cluster=store.cluster,
            isolated=acl,
        )

    def delete(self, store: RedisConnection, plan: RedisPlan, policy: DeletionPolicy) -> None:
        pattern = key_pattern(plan.key_prefix)
        with self._errors(store):
            client = self._client(store)
            nodes = self._nodes(client, primaries=False)
            if self._has_acl(nodes[0]):
                for node in nodes:
                    _cmd(node, "ACL", "DELUSER", plan.username)  # 0 when already gone
            if policy is DeletionPolicy.DELETE:
                for node in self._nodes(client, primaries=True):
                    self._unlink_matching(node, pattern)

    # -- helpers ----------------------------------------------------------------------------------

    def _vector_sets(self, store: RedisConnection, nodes: Sequence[redis.Redis]) -> bool:
        """Whether every node has the vector-set commands; asked once per store and kept (the one
        place this is decided: the rules ``ensure`` sets and those ``observe`` expects use it)."""
        key = fingerprint(store)
        with self._lock:
            cached = self._vector_sets_cache.get(key)
        if cached is not None:
            return cached
        found = all(self._has_vector_sets(n) for n in nodes)
        with self._lock:
            return self._vector_sets_cache.setdefault(key, found)

    @staticmethod
    def _has_vector_sets(node: redis.Redis) -> bool:
        """``COMMAND INFO`` of the store's vector-set commands on one node (as one word: redis-py's
        parser for ``COMMAND`` fails on the nil entry of an unknown command)."""
        try:
            return has_commands(_cmd(node, "COMMAND INFO", *VECTOR_SET_COMMANDS))
        except redis.ResponseError:
            return False

    def _canonical(
        self, store: RedisConnection, node: redis.Redis, *, vector_sets: bool
    ) -> tuple[frozenset[str], frozenset[str]]:
        """How this server renders our command rules, from a disabled, password-less probe user.

        Computed once per store (and cached): observe compares each memory's user against it.
        """
        key = fingerprint(store)
        with self._lock:
            cached = self._canonical_cache.get(key)
        if cached is not None:
            return cached
        probe = f"chatmemory-probe-{uuid.uuid4().hex[:12]}"
        try:
            _cmd(
                node,
                "ACL",
                "SETUSER",
                probe,
                "reset",
                "off",
                *command_rules(cluster=store.cluster, vector_sets=vector_sets),
            )
            result = permissions(node.acl_getuser(probe))
        finally:
            _cmd(node, "ACL", "DELUSER", probe)
        with self._lock:
            self._canonical_cache[key] = result
        return result

    @staticmethod
    def _unlink_matching(node: redis.Redis, pattern: str) -> None:
        """SCAN one node for ``pattern`` and UNLINK what it finds (one key per command: no CROSSSLOT)."""
        batch: list[bytes] = []
        for key in node.scan_iter(match=pattern, count=_SCAN_COUNT):
            batch.append(key)
            if len(batch) >= _SCAN_COUNT:
                RedisBackend._unlink(node, batch)
                batch = []
        if batch:
            RedisBackend._unlink(node, batch)

    @staticmethod
    def _unlink(node: redis.Redis, keys: Sequence[bytes]) -> None:
        pipe = node.pipeline(transaction=False)
        for k in keys:
            pipe.unlink(k)
        pipe.execute()

    @staticmethod
    def _has_acl(node: redis.Redis) -> bool:
        try:
            _cmd(node, "ACL", "WHOAMI")
        except redis.ResponseError as e:
            if is_unknown_command(str(e)):
                return False
            raise
        return True

    @staticmethod
    def _modules(node: redis.Redis) -> set[str]:
        """Lower-cased names of the loaded modules; empty when MODULE LIST is unavailable."""
        try:
            mods = _cmd(node, "MODULE", "LIST")
        except redis.ResponseError:
            return set()
        names: set[str] = set()
        for m in mods or []:
            if isinstance(m, dict):
                name = m.get(b"name", m.get("name", ""))
            else:  # RESP2: flat [b"name", b"search", b"ver", ...]
                pairs = dict(zip(m[::2], m[1::2], strict=False))
                name = pairs.get(b"name", pairs.get("name", ""))
            names.add(_text(name).lower())
        return names

    @staticmethod
    def _nodes(client: _Client, *, primaries: bool) -> list[redis.Redis]:
        """The per-node clients to run node-local commands on (ACL, SCAN); one for a standalone."""
        if isinstance(client, RedisCluster):
            nodes = client.get_primaries() if primaries else client.get_nodes()  # type: ignore[no-untyped-call]
            out = []
            for n in nodes:
                conn = client.get_redis_connection(n)
                out.append(conn)
            return out
        return [client]

    def _client(self, store: RedisConnection) -> _Client:
        return self._clients.get(store, lambda: self._connect(store))

    @staticmethod
    def _connect(store: RedisConnection) -> _Client:
        if not store.host or not store.port:
            raise InvalidSpec(f"store {store.name!r} has no Redis host and port")
        kwargs: dict[str, Any] = {
            "username": store.admin_username or None,
            "password": store.admin_password or None,
            "socket_connect_timeout": CONNECT_TIMEOUT,
            "socket_timeout": REQUEST_TIMEOUT,
            "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 1),
            "client_name": "chatmemory-operator",
        }
        if store.tls.enabled:
            kwargs["ssl"] = True
            if store.tls.ca_cert:
                kwargs["ssl_ca_data"] = store.tls.ca_cert
            if store.tls.insecure_skip_verify:
                kwargs["ssl_cert_reqs"] = "none"
                kwargs["ssl_check_hostname"] = False
        if store.cluster:
            return RedisCluster(
                startup_nodes=[ClusterNode(store.host, store.port)],  # type: ignore[no-untyped-call]
                **kwargs,
            )
        client = redis.Redis(host=store.host, port=store.port, **kwargs)
        try:
            # fail here, with the store's address, rather than in the first command; and refuse a
            # cluster node addressed as a standalone (SCAN would miss keys, the SDK would see MOVED)
            enabled = client.info("cluster").get("cluster_enabled", 0)
        except BaseException:
            client.close()
            raise
        if int(enabled or 0):
            client.close()
            raise InvalidSpec(
                f"redis {store.address} (store {store.name!r}) is a Redis Cluster node: set cluster: true"
            )
        return client

    @contextmanager
    def _errors(self, store: RedisConnection, secrets: Sequence[str] = ()) -> Iterator[None]:
        """Turn client errors into ``BackendUnavailable`` naming host:port; never leak a password."""
        hidden = (store.admin_password, *secrets)
        where = f"redis {store.address} (store {store.name!r})"
        try:
            yield
        except (InvalidSpec, BackendUnavailable):
            raise
        except redis.AuthenticationError as e:
            self._clients.discard(store)
            raise BackendUnavailable(
                f"{where}: the admin credentials were refused (user {store.admin_username!r}): "
                f"{redact(str(e), hidden)}"
            ) from None
        except redis.exceptions.NoPermissionError as e:
            msg = redact(str(e), hidden)
            raise BackendUnavailable(
                f"{where}: the admin user {store.admin_username!r} lacks a permission: {msg}"
            ) from None
        except (redis.ConnectionError, redis.TimeoutError) as e:
            self._clients.discard(store)
            raise BackendUnavailable(f"{where}: unreachable: {redact(str(e), hidden)}") from None
        except redis.exceptions.RedisClusterException as e:
            self._clients.discard(store)
            msg = redact(str(e), hidden)
            if "cluster mode is not enabled" in msg.lower():
                raise InvalidSpec(
                    f"{where}: the store says cluster: true but the server is standalone"
                ) from None
            raise BackendUnavailable(f"{where}: {msg}") from None
        except redis.ResponseError as e:
            msg = redact(str(e), hidden)
            if "cluster support disabled" in msg.lower() or "moved" in msg.lower():
                raise InvalidSpec(
                    f"{where}: the server answered {msg!r}: does the store's cluster flag match the server?"
                ) from None
            raise BackendUnavailable(f"{where}: {msg}") from None
        except redis.RedisError as e:
            self._clients.discard(store)
            raise BackendUnavailable(f"{where}: {type(e).__name__}: {redact(str(e), hidden)}") from None
