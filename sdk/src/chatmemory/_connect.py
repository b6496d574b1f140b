"""Client settings from a :class:`~chatmemory.contract.Binding`, one function per client library.

Called by the history modules (:mod:`chatmemory.histories`) and the checkpointers
(:mod:`chatmemory.checkpoint`) so TLS, ACL users, SASL and cluster mode are turned into client
options in exactly one place. Client libraries are imported lazily: a missing extra raises
:class:`~chatmemory.errors.MissingExtra` naming the extra to install. :func:`close_idle` empties the
histories' pools of idle clients.

**Timeouts** (:class:`Timeouts`): every Redis and MySQL client built here has a connect timeout
(the TCP connect) and an operation timeout (every reply, the handshake and authentication
included), so a server that accepts and never answers raises instead of hanging. redis-py's own
retry is off (its default re-sends a ``MULTI``/``EXEC`` after a timeout, up to 10 times, which can
apply a turn twice): the histories retry what is safe to retry themselves (see
:mod:`chatmemory.histories.redis`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import queue
import random
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from chatmemory.contract import Binding, Key
from chatmemory.errors import BindingError, MissingExtra

if TYPE_CHECKING:
    import redis
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.cluster


def require(module: str, extra: str) -> ModuleType:
    """Import an optional client library, or say which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(extra, module.split(".")[0]) from None


def close_idle(idle: queue.Queue[Any]) -> None:
    """Close every client waiting in a pool's queue, ignoring errors (a dead one may fail to close)."""
    while True:
        try:
            client = idle.get_nowait()
        except queue.Empty:
            return
        with contextlib.suppress(Exception):
            client.close()


#: Seconds for a TCP connect: a connect inside a cluster network takes milliseconds; 5 s leaves
#: room for two lost SYNs (Linux resends after 1 s and 3 s) before the server counts as unreachable.
DEFAULT_CONNECT_TIMEOUT: Final = 5.0
#: Seconds for one reply: the slowest legitimate reply (LRANGE of a long session, a TiDB commit
#: during a region leader change) is well under a second to a few seconds; 10 s is also the
#: operator's admin timeout (CHATMEMORY_BACKEND_TIMEOUT), so both sides give up on a server alike.
DEFAULT_OPERATION_TIMEOUT: Final = 10.0


@dataclass(frozen=True)
class Timeouts:
    """How long a client waits: ``connect`` for a TCP connect, ``operation`` for each reply.

    ``connect(..., timeout=2.5)`` sets both to 2.5 s; ``timeout=Timeouts(connect=1, operation=30)``
    sets them apart. The operation timeout also bounds the handshake (TLS, ``AUTH``/``HELLO``, the
    MySQL greeting), so a server that accepts and never answers costs at most ``connect + operation``
    (``operation`` when, as usual, the connect itself succeeds).
    """

    connect: float = DEFAULT_CONNECT_TIMEOUT
    operation: float = DEFAULT_OPERATION_TIMEOUT

    def __post_init__(self) -> None:
        for name in ("connect", "operation"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ValueError(f"timeout {name} must be a positive number of seconds, got {value!r}")

    @classmethod
    def of(cls, timeout: TimeoutSpec) -> Timeouts:
        """Timeouts from what a user passes: None (the defaults), seconds (both), or Timeouts."""
        if timeout is None:
            return cls()
        if isinstance(timeout, Timeouts):
            return timeout
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise TypeError(f"timeout must be seconds or chatmemory.Timeouts, not {type(timeout).__name__}")
        return cls(connect=float(timeout), operation=float(timeout))


#: What ``timeout=`` accepts.
TimeoutSpec: TypeAlias = "float | Timeouts | None"

#: A retry's first backoff and the longest one (exponential in between, +-50 % jitter).
RETRY_BACKOFF: Final = 0.05
RETRY_BACKOFF_CAP: Final = 1.0


def backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): 50 ms, 100 ms, ... 1 s, jittered so that
    clients that failed together do not retry together. Callers stop retrying when the next wait
    would end past their operation timeout, so a server that stays down costs about one timeout."""
    return float(min(RETRY_BACKOFF_CAP, RETRY_BACKOFF * 2**attempt) * (0.5 + random.random()))  # noqa: S311


def ca_context(binding: Binding) -> ssl.SSLContext:
    """The TLS context of a binding; a ``ca.crt`` that is not a PEM certificate raises BindingError."""
    try:
        ctx = ssl.create_default_context(cadata=binding.ca_cert or None)
    except (ssl.SSLError, ValueError) as e:
        raise BindingError(
            f"key {Key.CA_CERT.value!r} is not a PEM CA certificate: {e}",
            key=Key.CA_CERT.value,
        ) from None
    if binding.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def redis_kwargs(binding: Binding, timeouts: Timeouts | None = None) -> dict[str, Any]:
    """redis-py connection keyword arguments (shared by the sync, async and cluster clients).

    Without redis-py's retry (see the module docstring) and with the binding's timeouts.
    """
    t = timeouts or Timeouts()
    kwargs: dict[str, Any] = {
        "host": binding.host,
        "port": binding.port,
        "username": binding.username or None,
        "password": binding.password or None,
        "socket_connect_timeout": t.connect,
        "socket_timeout": t.operation,
    }
    if binding.source is not None:  # each new connection asks the Secret (rotation)
        del kwargs["username"], kwargs["password"]
        kwargs["credential_provider"] = _FollowedCredentials(binding)
    if binding.tls:
        kwargs["ssl"] = True
        if binding.ca_cert:
            ca_context(binding)  # a bad PEM fails here, named, not at the first command
            kwargs["ssl_ca_data"] = binding.ca_cert
        if binding.insecure_skip_verify:
            kwargs["ssl_cert_reqs"] = "none"
            kwargs["ssl_check_hostname"] = False
    return kwargs


class _FollowedCredentials:
    """redis-py's credential provider for a binding with a source: asked on every new connection.

    The source may read its Secret when asked (every few seconds, or after a refusal), which from
    the Kubernetes API is a blocking HTTP call: ``redis.asyncio`` clients get the answer from a
    thread, so their event loop never waits on it; sync clients ask in their own thread.
    """

    def __init__(self, binding: Binding) -> None:
        self._binding = binding

    def get_credentials(self) -> tuple[str, str] | tuple[str]:
        username, password = self._binding.credentials()
        return (username, password) if username else (password,)

    async def get_credentials_async(self) -> tuple[str, str] | tuple[str]:
        return await asyncio.to_thread(self.get_credentials)


def live_mysql_kwargs(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """PyMySQL ``connect`` arguments for a new connection: the user and password the binding's
    source holds now (see :func:`mysql_kwargs`), for the sync pools' openers (they run in the
    caller's thread; :class:`chatmemory.sql.AsyncMySQLPool` reads the source in a thread)."""
    out = dict(kwargs)
    binding = out.pop("binding", None)
    if binding is not None:
        out["user"], out["password"] = binding.credentials()
    return out


def no_retry(asyncio: bool = False) -> Any:
    """redis-py's Retry that never retries (the sync or the asyncio class)."""
    from redis.backoff import NoBackoff

    if asyncio:
        from redis.asyncio.retry import Retry as AsyncRetry

        return AsyncRetry(NoBackoff(), 0)
    from redis.retry import Retry

    return Retry(NoBackoff(), 0)


def redis_client(
    binding: Binding, timeouts: Timeouts | None = None
) -> redis.Redis | redis.cluster.RedisCluster:
    """A pooled redis-py client for the binding: a RedisCluster when the store is a cluster."""
    require("redis", "redis")
    import redis
    import redis.cluster

    if binding.cluster:
        return redis.cluster.RedisCluster(**redis_kwargs(binding, timeouts), retry=no_retry())
    return redis.Redis(**redis_kwargs(binding, timeouts), retry=no_retry())


def async_redis_client(
    binding: Binding, timeouts: Timeouts | None = None
) -> redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster:
    """The asyncio twin of :func:`redis_client` (``redis.asyncio``: native async, no threads)."""
    require("redis", "redis")
    import redis.asyncio
    import redis.asyncio.cluster

    if binding.cluster:
        return redis.asyncio.cluster.RedisCluster(**redis_kwargs(binding, timeouts), retry=no_retry(True))
    return redis.asyncio.Redis(**redis_kwargs(binding, timeouts), retry=no_retry(True))


def kafka_config(binding: Binding) -> dict[str, Any]:
    """librdkafka settings shared by producers, consumers and the admin client."""
    conf: dict[str, Any] = {
        "bootstrap.servers": binding.bootstrap_servers,
        "security.protocol": binding.security_protocol or "PLAINTEXT",
    }
    if binding.security_protocol.startswith("SASL"):
        conf["sasl.mechanism"] = binding.sasl_mechanism or "SCRAM-SHA-512"
        conf["sasl.username"] = binding.username
        conf["sasl.password"] = binding.password
    if binding.security_protocol.endswith("SSL"):
        if binding.ca_cert:
            conf["ssl.ca.pem"] = binding.ca_cert
        if binding.insecure_skip_verify:
            conf["enable.ssl.certificate.verification"] = False
    return conf


def mysql_timeouts(timeouts: Timeouts | None = None) -> dict[str, Any]:
    """PyMySQL's timeout arguments: ``connect_timeout`` (TCP), ``read_timeout``/``write_timeout``.

    PyMySQL applies ``read_timeout`` to the server's greeting and the authentication too.
    """
    t = timeouts or Timeouts()
    return {"connect_timeout": t.connect, "read_timeout": t.operation, "write_timeout": t.operation}


def mysql_kwargs(binding: Binding, timeouts: Timeouts | None = None) -> dict[str, Any]:
    """PyMySQL ``connect`` keyword arguments for the memory's database (TiDB, MySQL, MariaDB)."""
    kwargs: dict[str, Any] = {
        "host": binding.host,
        "port": binding.port,
        "user": binding.username,
        "password": binding.password,
        "database": binding.database,
        "charset": "utf8mb4",
        "autocommit": True,
        **mysql_timeouts(timeouts),
    }
    if binding.tls:
        kwargs["ssl"] = ca_context(binding)
    if binding.source is not None:  # openers pass these through live_mysql_kwargs (rotation)
        kwargs["binding"] = binding
    return kwargs
