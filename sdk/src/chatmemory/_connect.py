"""Client settings from a :class:`~chatmemory.contract.Binding`, one function per client library.

Called by the history modules (:mod:`chatmemory.histories`) and the checkpointers
(:mod:`chatmemory.checkpoint`) so TLS, ACL users, SASL and cluster mode are turned into client
options in exactly one place. Client libraries are imported lazily: a missing extra raises
:class:`~chatmemory.errors.MissingExtra` naming the extra to install. :func:`close_idle` empties the
histories' pools of idle clients.
"""

from __future__ import annotations

import contextlib
import importlib
import queue
import ssl
from types import ModuleType
from typing import TYPE_CHECKING, Any

from chatmemory.contract import Binding
from chatmemory.errors import MissingExtra

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


def redis_kwargs(binding: Binding) -> dict[str, Any]:
    """redis-py connection keyword arguments (shared by the sync, async and cluster clients)."""
    kwargs: dict[str, Any] = {
        "host": binding.host,
        "port": binding.port,
        "username": binding.username or None,
        "password": binding.password or None,
    }
    if binding.tls:
        kwargs["ssl"] = True
        if binding.ca_cert:
            kwargs["ssl_ca_data"] = binding.ca_cert
        if binding.insecure_skip_verify:
            kwargs["ssl_cert_reqs"] = "none"
            kwargs["ssl_check_hostname"] = False
    return kwargs


def redis_client(binding: Binding) -> redis.Redis | redis.cluster.RedisCluster:
    """A pooled redis-py client for the binding: a RedisCluster when the store is a cluster."""
    require("redis", "redis")
    import redis
    import redis.cluster

    if binding.cluster:
        return redis.cluster.RedisCluster(**redis_kwargs(binding))
    return redis.Redis(**redis_kwargs(binding))


def async_redis_client(binding: Binding) -> redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster:
    """The asyncio twin of :func:`redis_client` (``redis.asyncio``: native async, no threads)."""
    require("redis", "redis")
    import redis.asyncio
    import redis.asyncio.cluster

    if binding.cluster:
        return redis.asyncio.cluster.RedisCluster(**redis_kwargs(binding))
    return redis.asyncio.Redis(**redis_kwargs(binding))


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


def mysql_kwargs(binding: Binding) -> dict[str, Any]:
    """PyMySQL ``connect`` keyword arguments for the memory's database (TiDB, MySQL, MariaDB)."""
    kwargs: dict[str, Any] = {
        "host": binding.host,
        "port": binding.port,
        "user": binding.username,
        "password": binding.password,
        "database": binding.database,
        "charset": "utf8mb4",
        "autocommit": True,
    }
    if binding.tls:
        ctx = ssl.create_default_context(cadata=binding.ca_cert or None)
        if binding.insecure_skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        kwargs["ssl"] = ctx
    return kwargs
