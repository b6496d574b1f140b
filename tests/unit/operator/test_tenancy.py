"""Tenancy rules of the reconcile flow, against an in-memory Kubernetes and a fake backend.

A namespace editor controls a ChatMemory's spec; these tests play one: names equal to or
overlapping another memory's, custom names where the store forbids them, a namespace the store
does not admit, limits, adoption, and deletion of what the attacker does not hold. The e2e module
``tests/e2e/test_tenancy.py`` runs the same attacks against real servers.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from chatmemory_operator import ownership, reconcile
from chatmemory_operator.backends.base import Claim, DeletionPolicy
from chatmemory_operator.errors import NameConflict

from tests.unit.operator.fakes import FakeBackend, FakeKube, memory_body, ready, with_status


def register(kube: FakeKube, body: dict[str, Any], namespace: str = "team") -> dict[str, Any]:
    """Make the memory exist in the fake API (claims of memories that do not exist are stale)."""
    body = copy.deepcopy(body)
    body["metadata"]["namespace"] = namespace
    kube.memories[(namespace, body["metadata"]["name"])] = body
    return body


def reconciled(ctx: reconcile.Context, kube: FakeKube, body: dict[str, Any]) -> reconcile.Outcome:
    register(kube, body, body["metadata"]["namespace"])
    return reconcile.reconcile_memory(ctx, body)


def in_namespace(body: dict[str, Any], namespace: str) -> dict[str, Any]:
    body["metadata"]["namespace"] = namespace
    return body


def allow_custom_names(kube: FakeKube, **more: Any) -> None:
    kube.stores["redis-store"]["spec"].update(allowCustomNames=True, **more)


def test_a_custom_key_prefix_is_refused_unless_the_store_allows_custom_names(
    ctx: reconcile.Context, kube: FakeKube, backend: FakeBackend
) -> None:
    out = reconciled(ctx, kube, memory_body(redis={"keyPrefix": "mine:"}))
    assert ready(out.status)["reason"] == "CustomNamesNotAllowed"
    assert "spec.redis.keyPrefix" in ready(out.status)["message"]
    assert backend.ensures == 0 and not kube.secrets.keys() - {("ops", "admin")}
    allow_custom_names(kube)
    assert reconciled(ctx, kube, memory_body(redis={"keyPrefix": "mine:"})).error is None


def test_another_namespaces_key_prefix_is_a_name_conflict_and_nothing_is_issued(
    ctx: reconcile.Context, kube: FakeKube, backend: FakeBackend
) -> None:
    allow_custom_names(kube)
    victim = reconciled(ctx, kube, memory_body("victim"))
    prefix = victim.status["provisioned"]["keyPrefix"]
    ensures = backend.ensures
    attack = in_namespace(memory_body("attacker", redis={"keyPrefix": prefix}), "b")
    out = reconciled(ctx, kube, attack)
    assert ready(out.status)["reason"] == "NameConflict"
    message = ready(out.status)["message"]
    assert "spec.redis.keyPrefix" in message and "team" not in message.replace(prefix, "")
    assert backend.ensures == ensures
    assert ("b", "attacker-chatmemory") not in kube.secrets


@pytest.mark.parametrize("prefix", ["cm:", "cm:team:victim:sub:"])
def test_a_key_prefix_overlapping_another_memorys_is_a_name_conflict(
    ctx: reconcile.Context, kube: FakeKube, backend: FakeBackend, prefix: str
) -> None:
    allow_custom_names(kube)
    reconciled(ctx, kube, memory_body("victim"))
    out = reconciled(ctx, kube, in_namespace(memory_body("attacker", redis={"keyPrefix": prefix}), "b"))
    assert ready(out.status)["reason"] == "NameConflict"
    assert "overlaps" in ready(out.status)["message"]


def test_of_two_overlapping_prefixes_the_older_claim_wins_whichever_checks_first(kube: FakeKube) -> None:
    claims = ownership.Claims(kube, "ops")  # type: ignore[arg-type]
    wide, narrow = (Claim("key-prefix", v, "spec.redis.keyPrefix", prefix=True) for v in ("a:", "a:b:"))
    first, second = ownership.Holder("u1", "x", "m1"), ownership.Holder("u2", "y", "m2")
    for h in (first, second):
        kube.memories[(h.namespace, h.name)] = {"metadata": {"uid": h.uid}}
    # both create their Lease before either checks (the race): the younger one loses
    kube.create_lease(
        "ops", ownership._lease_body(ownership.lease_name("s", wide), "s", wide, first, adopted=False)
    )
    with pytest.raises(NameConflict):
        claims.claim("s", narrow, second, existed=lambda: False, adoption=False)
    assert claims.claim("s", wide, first, existed=lambda: False, adoption=False).claim == wide


def test_a_claim_whose_memory_is_gone_is_taken_over(kube: FakeKube) -> None:
    claims = ownership.Claims(kube, "ops")  # type: ignore[arg-type]
    claim = Claim("topic", "t")
    gone, new = ownership.Holder("u1", "x", "m"), ownership.Holder("u2", "x", "m")
    claims.claim("s", claim, gone, existed=lambda: False, adoption=False)
    kube.memories[("x", "m")] = {"metadata": {"uid": "u2"}}  # same name, a new object
    assert claims.claim("s", claim, new, existed=lambda: False, adoption=False).claim == claim


def test_a_derived_user_name_held_by_another_memory_is_a_name_conflict(
    ctx: reconcile.Context, kube: FakeKube, backend: FakeBackend
) -> None:
    reconciled(ctx, kube, memory_body("victim"))
    user = next(iter(backend.passwords))
    other = in_namespace(memory_body("other"), "b")
    body = register(kube, other, "b")
    target = reconcile.resolve(ctx, reconcile.parse_memory(body))
    forged = reconcile.Target(
        target.store,
        target.backend,
        target.conn,
        type(target.plan)(**{**vars(target.plan), "username": user}),
    )
    with pytest.raises(NameConflict, match="user"):
        reconcile.admit(ctx, reconcile.parse_memory(body), forged, reconcile.old_memory_status(body))


def test_existing_keys_under_a_custom_prefix_are_not_adopted_unless_the_store_allows_it(
    ctx: reconcile.Context, kube: FakeKube, backend: FakeBackend
) -> None:
    allow_custom_names(kube)
    backend.existing.add("legacy:")
    out = reconciled(ctx, kube, memory_body("mover", redis={"keyPrefix": "legacy:"}))
    assert ready(out.status)["reason"] == "NameConflict" and "adoption" in ready(out.status)["message"]
    kube.stores["redis-store"]["spec"]["adoption"] = "Allow"
    out = reconciled(ctx, kube, memory_body("mover", redis={"keyPrefix": "legacy:"}, deletionPolicy="Delete"))
    assert out.error is None
    events = reconcile.delete_memory(
        ctx, with_status(memory_body("mover", redis={"keyPrefix": "legacy:"}, deletionPolicy="Delete"), out)
    )
    assert backend.deleted[-1][1] is DeletionPolicy.RETAIN  # the adopted data stays
    assert [e.reason for e in events] == ["DataRetained"]


def test_deleting_the_attacker_with_delete_never_touches_the_victims_user_or_data(
    ctx: reconcile.Context, kube: FakeKube, backend: FakeBackend
) -> None:
    allow_custom_names(kube)
    victim = reconciled(ctx, kube, memory_body("victim"))
    attack = in_namespace(
        memory_body(
            "attacker",
            redis={"keyPrefix": victim.status["provisioned"]["keyPrefix"]},
            deletionPolicy="Delete",
        ),
        "b",
    )
    out = reconciled(ctx, kube, attack)
    events = reconcile.delete_memory(ctx, with_status(attack, out))
    assert backend.deleted == []
    assert [e.reason for e in events] == ["NothingRemoved"]


def test_a_namespace_the_store_does_not_admit_gets_nothing_and_loses_what_it_had(
    ctx: reconcile.Context, kube: FakeKube, backend: FakeBackend
) -> None:
    kube.namespaces["team"] = {"tier": "gold"}
    selector = {"from": "Selector", "selector": {"matchLabels": {"tier": "gold"}}}
    kube.stores["redis-store"]["spec"]["allowedNamespaces"] = selector
    first = reconciled(ctx, kube, memory_body())
    assert first.error is None
    kube.namespaces["team"] = {"tier": "free"}
    out = reconcile.reconcile_memory(ctx, with_status(memory_body(), first))
    assert ready(out.status)["reason"] == "NamespaceNotAllowed"
    assert backend.deleted and backend.deleted[-1][1] is DeletionPolicy.RETAIN  # user revoked, data kept
    assert ("team", "chat-chatmemory") not in kube.secrets
    assert "binding" not in out.status
    outsider = reconciled(ctx, kube, in_namespace(memory_body("new"), "b"))
    assert ready(outsider.status)["reason"] == "NamespaceNotAllowed"


def test_limits_refuse_a_longer_ttl_than_the_store_allows(ctx: reconcile.Context, kube: FakeKube) -> None:
    kube.stores["redis-store"]["spec"]["limits"] = {"maxTTL": "1d"}
    out = reconciled(ctx, kube, memory_body(ttl="30d"))
    assert ready(out.status)["reason"] == "LimitExceeded"
    assert "spec.ttl" in ready(out.status)["message"]


def test_store_secrets_outside_the_allowed_namespaces_are_refused(
    ctx: reconcile.Context, kube: FakeKube
) -> None:
    kube.stores["redis-store"]["spec"]["redis"]["adminSecretRef"]["namespace"] = "victim"
    kube.put_secret("victim", "admin", {"username": "admin", "password": "x"})
    out = reconciled(ctx, kube, memory_body())
    assert ready(out.status)["reason"] == "InvalidSpec"
    assert "spec.redis.adminSecretRef.namespace" in ready(out.status)["message"]


def test_deleting_a_store_revokes_the_users_of_its_memories(
    ctx: reconcile.Context, kube: FakeKube, backend: FakeBackend
) -> None:
    body = register(kube, memory_body())
    first = reconcile.reconcile_memory(ctx, body)
    kube.memories[("team", "chat")] = with_status(body, first)
    events = reconcile.delete_store(ctx, kube.stores["redis-store"])
    assert backend.deleted == [(next(iter(backend.passwords)), DeletionPolicy.RETAIN)]
    assert [e.reason for e in events] == ["CredentialsRevoked"]


def test_a_ca_certificate_reaches_the_connection_only_when_tls_is_on(
    ctx: reconcile.Context, kube: FakeKube, backend: FakeBackend
) -> None:
    kube.put_secret("ops", "ca", {"ca.crt": "PEM"})
    redis = kube.stores["redis-store"]["spec"]["redis"]
    redis["tls"] = {"enabled": False, "caSecretRef": {"name": "ca", "namespace": "ops"}}
    assert reconciled(ctx, kube, memory_body()).error is None
    assert backend.stores_seen[-1].tls.ca_cert == ""
    redis["tls"]["enabled"] = True
    assert reconciled(ctx, kube, memory_body("tls")).error is None
    assert backend.stores_seen[-1].tls.ca_cert == "PEM"
