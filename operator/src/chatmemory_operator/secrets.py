"""Pure builders for a ChatMemory's connection Secret, and readers of an existing one.

Called by :mod:`chatmemory_operator.reconcile`; :mod:`chatmemory_operator.k8s` writes what these
functions build. The keys and the ``type`` come from :class:`chatmemory.contract.Binding` (the
SDK's contract): nothing here spells a key of its own except where a password is read back.
Passwords stay inside the Secret body: no function here logs or returns them in messages.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets as _random
import string
from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any, Final

from chatmemory.contract import Binding, Key
from chatmemory.errors import BindingError

#: Labels on every Secret the operator writes (and the selector to find them).
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "chatmemory-operator"
MEMORY_LABEL: Final = "chatmemory.io/memory"
PASSWORD_LENGTH: Final = 32
_ALPHABET: Final = string.ascii_letters + string.digits


def generate_password(length: int = PASSWORD_LENGTH) -> str:
    """A random password of letters and digits (safe in URIs, SQL parameters and ACL rules)."""
    return "".join(_random.choice(_ALPHABET) for _ in range(length))


def owner_reference(*, api_version: str, kind: str, name: str, uid: str) -> dict[str, Any]:
    """The controller ownerReference that makes the Secret go with its memory."""
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def secret_body(
    binding: Binding,
    *,
    name: str,
    namespace: str,
    owner: Mapping[str, Any],
    memory_name: str,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The whole Secret for ``binding``: Service Binding type, contract keys, labels, owner, and
    the operator's own annotations (a rotation's grace period)."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY, MEMORY_LABEL: memory_name[:63]},
            "annotations": dict(annotations or {}),
            "ownerReferences": [dict(owner)],
        },
        "type": binding.secret_type,
        "stringData": binding.to_secret_data(),
    }


def decode_data(data: Mapping[str, str] | None) -> dict[str, str]:
    """A Secret's base64 ``data`` as text; undecodable entries are skipped."""
    out: dict[str, str] = {}
    for key, value in (data or {}).items():
        try:
            out[key] = base64.b64decode(value or "").decode()
        except (binascii.Error, UnicodeDecodeError):
            continue
    return out


#: While a rotation's grace period runs, the Secret carries the previous password's SHA-256 (the
#: form Redis keeps; never the password) and when it stops, so a restarted operator finishes the
#: rotation as planned. Readers of the Secret already hold the previous password.
PREVIOUS_SHA256_ANNOTATION: Final = "chatmemory.io/previous-password-sha256"
PREVIOUS_UNTIL_ANNOTATION: Final = "chatmemory.io/previous-password-until"


def previous_password(secret: Mapping[str, Any] | None) -> tuple[str, datetime] | None:
    """(SHA-256 of the previous password, when it stops) from a Secret, or None."""
    annotations = ((secret or {}).get("metadata") or {}).get("annotations") or {}
    digest, until = annotations.get(PREVIOUS_SHA256_ANNOTATION), annotations.get(PREVIOUS_UNTIL_ANNOTATION)
    if not digest or not until:
        return None
    try:
        return str(digest), datetime.fromisoformat(str(until))
    except ValueError:
        return None


def previous_annotations(digest: str, until: datetime | None) -> dict[str, str]:
    if not digest or until is None:
        return {}
    return {PREVIOUS_SHA256_ANNOTATION: digest, PREVIOUS_UNTIL_ANNOTATION: until.isoformat()}


def password_sha256(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def existing_password(secret: Mapping[str, Any] | None, username: str | Collection[str]) -> str:
    """The password in an existing Secret when it belongs to ``username`` (or to one of the
    memory's users, for a backend that uses two in turn); else empty.

    A Secret that carries another user's credentials (the store's, on a Redis without ACLs) never
    seeds the memory's own password.
    """
    if not secret:
        return ""
    users = {username} if isinstance(username, str) else set(username)
    data = decode_data(secret.get("data"))
    if data.get(Key.USERNAME.value, "") not in users:
        return ""
    return data.get(Key.PASSWORD.value, "")


def current_binding(secret: Mapping[str, Any] | None) -> Binding | None:
    """The binding an existing Secret carries; None when there is none or it does not parse."""
    if not secret:
        return None
    try:
        return Binding.from_mapping(decode_data(secret.get("data")), source="the memory's Secret")
    except BindingError:
        return None


def is_owned_by(secret: Mapping[str, Any], uid: str) -> bool:
    """Whether a Secret's ownerReferences name the memory with ``uid``."""
    refs = (secret.get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == uid for r in refs)


def needs_write(existing: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """Whether the Secret in the cluster differs from ``desired`` (data, type, labels or owner)."""
    if not existing:
        return True
    if existing.get("type") != desired["type"]:
        return True
    if decode_data(existing.get("data")) != dict(desired["stringData"]):
        return True
    labels = (existing.get("metadata") or {}).get("labels") or {}
    if any(labels.get(k) != v for k, v in desired["metadata"]["labels"].items()):
        return True
    ours = (PREVIOUS_SHA256_ANNOTATION, PREVIOUS_UNTIL_ANNOTATION)
    annotations = (existing.get("metadata") or {}).get("annotations") or {}
    if {k: annotations.get(k) for k in ours} != {k: desired["metadata"]["annotations"].get(k) for k in ours}:
        return True
    owners = (existing.get("metadata") or {}).get("ownerReferences") or []
    want = desired["metadata"]["ownerReferences"][0]
    return not any(o.get("uid") == want["uid"] and o.get("controller") for o in owners)
