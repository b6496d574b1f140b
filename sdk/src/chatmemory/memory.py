"""``ChatMemory``: one memory's pooled clients and its sessions' histories.

Called by applications through :func:`chatmemory.connect` (a binding found by
:mod:`chatmemory.loaders`) or :func:`chatmemory.connect_url` (a URL, without Kubernetes). A
``ChatMemory`` holds one connector (:mod:`chatmemory.histories`): the backend clients, built once and
shared by every session and thread. ``memory.history`` is cheap and does no I/O, so it can be
passed as ``get_session_history`` to ``RunnableWithMessageHistory``::

    memory = chatmemory.connect("support-bot")
    chain = RunnableWithMessageHistory(model, memory.history)

``memory.checkpointer()`` gives the LangGraph checkpointer of the same memory
(:mod:`chatmemory.checkpoint`, the ``langgraph`` extra), and ``memory.store()`` its long-term
store, a LangGraph ``BaseStore`` (:mod:`chatmemory.store`, same extra).

``timeout=`` (seconds, or :class:`Timeouts` for the connect and the operation timeouts apart) sets
the timeouts of every client the memory builds, its checkpointers' included; default 5 s to connect
and 10 s per reply. A URL takes ``?timeout=`` and ``?connect_timeout=`` too.
"""

from __future__ import annotations

import importlib
import inspect
import os
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, Final
from urllib.parse import parse_qsl, unquote, urlsplit

from langchain_core.chat_history import BaseChatMessageHistory

from chatmemory._connect import Timeouts, TimeoutSpec
from chatmemory.contract import BINDING_TYPES, CONTRACT_VERSION, BackendKind, Binding, Key
from chatmemory.errors import BindingError, MissingExtra, NotSupported
from chatmemory.histories import Connector, connector_for
from chatmemory.loaders import BindingSource, load_binding


class ChatMemory:
    """A memory: its binding, its pooled clients, and a history per session.

    Use as a context manager (``with chatmemory.connect(...) as memory:``) or call :meth:`close`.
    """

    def __init__(
        self,
        binding: Binding,
        connector: Connector | None = None,
        *,
        source: str = "",
        timeout: TimeoutSpec = None,
    ) -> None:
        self.binding = binding
        self.source = source
        #: The timeouts of the memory's clients (connect, operation), its checkpointers' too.
        self.timeouts = Timeouts.of(timeout)
        self._connector = connector if connector is not None else _connector(binding, self.timeouts, {})

    @property
    def backend(self) -> BackendKind:
        """Which backend the memory lives on."""
        return self.binding.backend

    @property
    def connector(self) -> Connector:
        """The memory's clients (backend specific; shared by every history)."""
        return self._connector

    def history(self, session_id: str) -> BaseChatMessageHistory:
        """The history of ``session_id`` (no I/O until it is used); usable as ``get_session_history``."""
        return self._connector.history(session_id)

    def checkpointer(self, **kwargs: Any) -> Any:
        """A LangGraph checkpointer on the same memory (``chatmemory[langgraph]``)."""
        if self.timeouts != Timeouts():  # the defaults are checkpointer_for's own
            kwargs.setdefault("timeout", self.timeouts)
        return _checkpoint_function("checkpointer_for")(self.binding, **kwargs)

    async def acheckpointer(self, **kwargs: Any) -> Any:
        """The asyncio LangGraph checkpointer on the same memory."""
        if self.timeouts != Timeouts():  # the defaults are checkpointer_for's own
            kwargs.setdefault("timeout", self.timeouts)
        return await _checkpoint_function("acheckpointer_for")(self.binding, **kwargs)

    def store(self, index: Any = None, ttl: Any = None, **kwargs: Any) -> Any:
        """A LangGraph ``BaseStore`` on the same memory: long-term memory across threads.

        ``index``: LangGraph's ``IndexConfig`` (``dims``, ``embed``, ``fields``) for semantic search;
        ``ttl``: its ``TTLConfig`` (``default_ttl`` in minutes, ``refresh_on_read``). Redis and
        TiDB/MySQL memories serve it; a Kafka memory raises ``NotSupported``.
        """
        if self.timeouts != Timeouts():  # the defaults are store_for's own
            kwargs.setdefault("timeout", self.timeouts)
        return _lazy_function("chatmemory.store", "store_for")(self.binding, index=index, ttl=ttl, **kwargs)

    async def astore(self, index: Any = None, ttl: Any = None, **kwargs: Any) -> Any:
        """:meth:`store` for async code (its ``a*`` methods are native asyncio on Redis)."""
        if self.timeouts != Timeouts():
            kwargs.setdefault("timeout", self.timeouts)
        function = _lazy_function("chatmemory.store", "astore_for")
        return await function(self.binding, index=index, ttl=ttl, **kwargs)

    def close(self) -> None:
        """Close the memory's clients; histories from it stop working."""
        self._connector.close()

    async def aclose(self) -> None:
        """Close the memory's clients, the asyncio ones too."""
        await self._connector.aclose()

    def __enter__(self) -> ChatMemory:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> ChatMemory:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        where = f" from {self.source}" if self.source else ""
        return f"<ChatMemory {self.backend.value} {self.binding.provider}{where}>"


def connect(
    name: str | None = None,
    *,
    path: str | os.PathLike[str] | None = None,
    namespace: str | None = None,
    timeout: TimeoutSpec = None,
) -> ChatMemory:
    """The memory ``name`` from its binding (mounted Secret, ``CHATMEMORY_*`` variables or the API).

    ``timeout``: seconds for a connect and for each reply (or ``Timeouts(connect=, operation=)``);
    default 5 s and 10 s. A server that does not answer raises ``BackendUnavailable``.

    A binding read from a mounted Secret or the Kubernetes API is followed: each new Redis or
    MySQL connection takes the credentials the Secret holds then (read again at most every 2 s),
    so a rotated password needs no restart. Variables (``CHATMEMORY_*``) cannot change in a running
    pod: mount the Secret instead.
    """
    binding, source = load_binding(name, path=path, namespace=namespace)
    if source.startswith(("dir:", "secret:")):
        reload = BindingSource(lambda: load_binding(name, path=path, namespace=namespace)[0], binding)
        binding = binding.with_source(reload)
    return ChatMemory(binding, source=source, timeout=timeout)


def _connector(binding: Binding, timeouts: Timeouts, options: dict[str, Any]) -> Connector:
    """The binding's connector with the memory's timeouts, for connectors that take ``timeout``
    (all of ours do; a connector without the parameter gets none rather than an unknown option)."""
    module, cls = _CONNECTORS[binding.backend]
    params = inspect.signature(getattr(importlib.import_module(module), cls).__init__).parameters
    if "timeout" in params:
        options = {"timeout": timeouts, **options}
    return connector_for(binding, **options)


_CONNECTORS: Final[dict[BackendKind, tuple[str, str]]] = {
    BackendKind.REDIS: ("chatmemory.histories.redis", "RedisConnector"),
    BackendKind.KAFKA: ("chatmemory.histories.kafka", "KafkaConnector"),
    BackendKind.TIDB: ("chatmemory.histories.tidb", "TiDBConnector"),
}


_SCHEMES: Final[dict[str, BackendKind]] = {
    "redis": BackendKind.REDIS,
    "rediss": BackendKind.REDIS,
    "valkey": BackendKind.REDIS,
    "valkeys": BackendKind.REDIS,
    "kafka": BackendKind.KAFKA,
    "mysql": BackendKind.TIDB,
    "tidb": BackendKind.TIDB,
    "mariadb": BackendKind.TIDB,
}
_ALIASES: Final = {"ttl": Key.TTL_SECONDS.value, "ca_cert": Key.CA_CERT.value, "table_name": Key.TABLE.value}
_KEYS: Final = {k.value for k in Key}


def binding_from_url(url: str, **options: Any) -> tuple[Binding, dict[str, Any]]:
    """A binding from a URL plus options; returns it and the options that are not binding keys.

    Query parameters and keyword options take binding keys (``key_prefix``, ``ttl``/``ttl_seconds``,
    ``max_messages``, ``cluster``, ``topic``, ``table``, ``security_protocol``, ...), ``ca_file`` a
    CA bundle path. ``rediss://`` turns TLS on. ``timeout`` and ``connect_timeout`` are returned
    with the other options (see :func:`connect_url`).
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    source = f"url:{scheme}://{parts.netloc.rpartition('@')[2]}"
    if scheme not in _SCHEMES:
        raise BindingError(
            f"URL scheme {scheme!r} is not one of {sorted(_SCHEMES)}", key=Key.TYPE.value, source=source
        )
    kind = _SCHEMES[scheme]
    data: dict[str, str] = {
        Key.CONTRACT_VERSION.value: CONTRACT_VERSION,
        Key.TYPE.value: BINDING_TYPES[kind],
        Key.PROVIDER.value: {"rediss": "redis", "valkeys": "valkey", "mysql": "mysql"}.get(scheme, scheme),
    }
    if parts.username:
        data[Key.USERNAME.value] = unquote(parts.username)
    if parts.password:
        data[Key.PASSWORD.value] = unquote(parts.password)
    rest: dict[str, Any] = {}
    merged: dict[str, Any] = dict(parse_qsl(parts.query))
    merged.update(options)
    for raw_key, value in merged.items():
        key = _ALIASES.get(raw_key, raw_key)
        if value is None:
            continue  # an option left at None means "not set"
        if key == "ca_file":
            data[Key.CA_CERT.value] = Path(value).read_text()
        elif key in _KEYS:
            data[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
        else:
            rest[raw_key] = value
    if kind is BackendKind.KAFKA:
        data[Key.BOOTSTRAP_SERVERS.value] = parts.netloc.rpartition("@")[2]
        if parts.username and Key.SECURITY_PROTOCOL.value not in data:
            data[Key.SECURITY_PROTOCOL.value] = "SASL_PLAINTEXT"
    else:
        try:
            port = parts.port
        except ValueError as e:
            raise BindingError(f"bad port in URL: {e}", key=Key.PORT.value, source=source) from None
        data[Key.HOST.value] = parts.hostname or "localhost"
        data[Key.PORT.value] = str(port or {BackendKind.REDIS: 6379, BackendKind.TIDB: 4000}[kind])
        path = parts.path.strip("/")
        if kind is BackendKind.REDIS:
            if scheme in ("rediss", "valkeys"):
                data.setdefault(Key.TLS.value, "true")
            if path not in ("", "0"):
                raise BindingError(
                    f"database {path} in the URL: chat memories live in database 0", key="uri", source=source
                )
        else:
            if path:
                data.setdefault(Key.DATABASE.value, path)
            data.setdefault(Key.TABLE.value, "langchain_message_store")
            data.setdefault(Key.USERNAME.value, "root")
    return Binding.from_mapping(data, source=source), rest


def connect_url(url: str, **options: Any) -> ChatMemory:
    """A memory from a URL, without Kubernetes: ``redis://``, ``rediss://``, ``kafka://``, ``mysql://``, ``tidb://``.

    Examples::

        connect_url("redis://user:pw@host:6379", key_prefix="bot:", ttl=3600)
        connect_url("kafka://broker:9092", topic="bot.chat")
        connect_url("tidb://user:pw@host:4000/app", table="messages")

    Options that are not binding keys go to the backend's connector. ``timeout`` (seconds or
    :class:`Timeouts`) and ``connect_timeout`` (seconds), as options or query parameters, set the
    clients' timeouts (default 5 s to connect, 10 s per reply)::

        connect_url("redis://host:6379?timeout=2")
        connect_url("tidb://user:pw@host:4000/app", timeout=30, connect_timeout=3)
    """
    binding, rest = binding_from_url(url, **options)
    timeouts = _url_timeouts(rest)
    return ChatMemory(
        binding,
        _connector(binding, timeouts, rest),
        source=f"url:{urlsplit(url).scheme}",
        timeout=timeouts,
    )


def _url_timeouts(rest: dict[str, Any]) -> Timeouts:
    """Take ``timeout`` and ``connect_timeout`` out of a URL's options (text from a query)."""
    raw = rest.pop("timeout", None)
    raw_connect = rest.pop("connect_timeout", None)
    try:
        base = Timeouts.of(float(raw) if isinstance(raw, str) else raw)
        if raw_connect is None:
            return base
        return Timeouts(connect=float(raw_connect), operation=base.operation)
    except (TypeError, ValueError) as e:
        raise BindingError(f"bad timeout option: {e}", key="timeout") from None


def _checkpoint_function(name: str) -> Any:
    """``chatmemory.checkpoint.<name>``, imported on first use (the ``langgraph`` extra)."""
    return _lazy_function("chatmemory.checkpoint", name)


def _lazy_function(module_name: str, name: str) -> Any:
    """``<module_name>.<name>``, imported on first use: the module needs the ``langgraph`` extra."""
    what = {"chatmemory.checkpoint": "LangGraph checkpointer", "chatmemory.store": "LangGraph store"}
    label = what.get(module_name, module_name)
    try:
        module: ModuleType = importlib.import_module(module_name)
    except MissingExtra:
        raise
    except ImportError as e:
        if e.name and e.name.startswith("chatmemory"):
            raise NotSupported(f"this chatmemory build has no {label}: {e}") from e
        raise MissingExtra("langgraph", e.name or "langgraph-checkpoint") from e
    function = getattr(module, name, None)
    if function is None:
        raise NotSupported(f"{module_name} has no {name}(): no {label} in this build")
    return function


__all__ = ["ChatMemory", "Timeouts", "binding_from_url", "connect", "connect_url"]
