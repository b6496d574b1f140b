"""The memory's Secret: built from the SDK's Binding, owned by the memory, password kept stable."""

from __future__ import annotations

import base64
from typing import Any

from chatmemory.contract import BackendKind, Binding
from chatmemory_operator import secrets

OWNER = secrets.owner_reference(
    api_version="chatmemory.io/v1alpha1", kind="ChatMemory", name="chat", uid="u-1"
)


def binding(**kw: Any) -> Binding:
    fields: dict[str, Any] = {
        "backend": BackendKind.REDIS,
        "provider": "redis",
        "host": "h",
        "port": 1,
        "username": "cm_user",
        "password": "pw-1",
        "key_prefix": "cm:ns:chat:",
    }
    fields.update(kw)
    return Binding(**fields)


def as_existing(body: dict[str, Any]) -> dict[str, Any]:
    """What the API server returns for a written body: stringData turned into base64 data."""
    out = {k: v for k, v in body.items() if k != "stringData"}
    out["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in body["stringData"].items()}
    return out


def test_secret_has_service_binding_type_contract_keys_and_owner() -> None:
    b = binding()
    body = secrets.secret_body(b, name="chat-chatmemory", namespace="ns", owner=OWNER, memory_name="chat")
    assert body["type"] == "servicebinding.io/redis"
    assert body["stringData"] == b.to_secret_data()
    assert body["metadata"]["ownerReferences"] == [OWNER]
    assert OWNER["controller"] is True
    assert body["metadata"]["labels"][secrets.MANAGED_BY_LABEL] == secrets.MANAGED_BY


def test_the_existing_password_is_reused_for_the_same_user_only() -> None:
    existing = as_existing(
        secrets.secret_body(binding(), name="s", namespace="ns", owner=OWNER, memory_name="chat")
    )
    assert secrets.existing_password(existing, "cm_user") == "pw-1"
    assert secrets.existing_password(existing, "someone_else") == ""
    assert secrets.existing_password(None, "cm_user") == ""


def test_an_identical_secret_needs_no_write_but_any_change_does() -> None:
    desired = secrets.secret_body(binding(), name="s", namespace="ns", owner=OWNER, memory_name="chat")
    existing = as_existing(desired)
    assert not secrets.needs_write(existing, desired)
    assert secrets.needs_write(None, desired)
    changed = secrets.secret_body(
        binding(password="pw-2"), name="s", namespace="ns", owner=OWNER, memory_name="chat"
    )
    assert secrets.needs_write(existing, changed)
    retyped = dict(existing, type="Opaque")
    assert secrets.needs_write(retyped, desired)
    orphan = dict(existing, metadata=dict(existing["metadata"], ownerReferences=[]))
    assert secrets.needs_write(orphan, desired)


def test_ownership_is_read_from_owner_references() -> None:
    body = secrets.secret_body(binding(), name="s", namespace="ns", owner=OWNER, memory_name="chat")
    assert secrets.is_owned_by(body, "u-1")
    assert not secrets.is_owned_by(body, "u-2")


def test_generated_passwords_are_long_random_and_uri_safe() -> None:
    passwords = {secrets.generate_password() for _ in range(50)}
    assert len(passwords) == 50
    assert all(len(p) == secrets.PASSWORD_LENGTH and p.isalnum() for p in passwords)
