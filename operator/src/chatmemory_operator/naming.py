"""Backend names derived from a ChatMemory's namespace and name: stable, unique, within limits.

Called by :mod:`chatmemory_operator.reconcile` when it builds a
:class:`~chatmemory_operator.backends.base.MemoryPlan`. Pure functions: the same namespace and name
always give the same names, so a restarted operator finds what it created before, and a memory
deleted with ``Retain`` and created again finds its data.

Every name that has to be shortened or squeezed into a smaller alphabet carries a short hash of
``<namespace>/<name>``, so two memories never share a name (``a-b/c`` and ``a/b-c`` differ):

- Redis key prefix ``cm:<namespace>:<name>:`` (``:`` never occurs in a namespace or a name, and the
  trailing ``:`` keeps ``cm:ns:a:`` from matching memory ``a2``'s keys);
- Kafka topic ``cm.<namespace>.<name>`` (249 characters at most; hashed when longer), consumer
  group prefix ``cm.g.<hash>.`` (a fixed-length prefix: no memory's group prefix contains
  another's);
- TiDB/MySQL database ``cm_<namespace>_<name>_<hash>`` (64 characters, ``[A-Za-z0-9_]``), table
  ``messages``;
- the memory's own user ``cm_<namespace>_<name>_<hash>`` (32 characters: MySQL's limit, used on
  every backend for one name per memory).
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

PREFIX: Final = "cm"
HASH_LEN: Final = 8
MAX_TOPIC_LEN: Final = 249
MAX_DATABASE_LEN: Final = 64
MAX_USER_LEN: Final = 32
DEFAULT_TABLE: Final = "messages"
SECRET_SUFFIX: Final = "-chatmemory"
MAX_SECRET_NAME_LEN: Final = 253

_NOT_IDENT: Final = re.compile(r"[^A-Za-z0-9_]+")


def short_hash(namespace: str, name: str, length: int = HASH_LEN) -> str:
    """A stable hex digest of ``<namespace>/<name>`` (sha256, first ``length`` characters)."""
    return hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:length]


def key_prefix(namespace: str, name: str) -> str:
    """The Redis key prefix of a memory: ``cm:<namespace>:<name>:``."""
    return f"{PREFIX}:{namespace}:{name}:"


def topic(namespace: str, name: str) -> str:
    """The Kafka topic: ``cm.<namespace>.<name>``, or shortened with the hash past 249 characters."""
    full = f"{PREFIX}.{namespace}.{name}"
    if len(full) <= MAX_TOPIC_LEN:
        return full
    tail = f"-{short_hash(namespace, name)}"
    return full[: MAX_TOPIC_LEN - len(tail)] + tail


def consumer_group_prefix(namespace: str, name: str) -> str:
    """The consumer-group prefix the memory's Kafka user may use: ``cm.g.<hash16>.``."""
    return f"{PREFIX}.g.{short_hash(namespace, name, 16)}."


def _ident(namespace: str, name: str, max_len: int) -> str:
    """``cm_<namespace>_<name>_<hash>`` in ``[a-z0-9_]``, the readable part cut to fit ``max_len``."""
    tail = f"_{short_hash(namespace, name)}"
    readable = _NOT_IDENT.sub("_", f"{PREFIX}_{namespace}_{name}").lower()
    return readable[: max_len - len(tail)].rstrip("_") + tail


def database(namespace: str, name: str) -> str:
    """The TiDB/MySQL database of a memory (64 characters at most, ``[a-z0-9_]``)."""
    return _ident(namespace, name, MAX_DATABASE_LEN)


def username(namespace: str, name: str) -> str:
    """The memory's own user on its backend (32 characters at most, ``[a-z0-9_]``)."""
    return _ident(namespace, name, MAX_USER_LEN)


def secret_name(name: str) -> str:
    """The default Secret name: ``<name>-chatmemory`` (a memory's name leaves room for the suffix
    up to 253 characters; longer names are cut and hashed)."""
    full = f"{name}{SECRET_SUFFIX}"
    if len(full) <= MAX_SECRET_NAME_LEN:
        return full
    tail = f"-{short_hash('', name)}{SECRET_SUFFIX}"
    return name[: MAX_SECRET_NAME_LEN - len(tail)].rstrip("-.") + tail
