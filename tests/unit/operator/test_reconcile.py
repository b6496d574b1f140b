"""The reconcile flow against an in-memory Kubernetes and a fake backend (no sockets)."""

from __future__ import annotations

import dataclasses

import pytest
from chatmemory.contract import BackendKind, Binding
from chatmemory_operator import reconcile
from chatmemory_operator.api import v1alpha1 as api
from chatmemory_operator.backends import kafka
from chatmemory_operator.backends.base import DeletionPolicy, Prior
from chatmemory_operator.errors import BackendUnavailable, NotSupportedError

from tests.unit.operator.fakes import FakeBackend, FakeKube, memory_body, ready, store_body, with_status


def test_a_new_memory_is_provisioned_and_its_secret_written(ctx: reconcile.Context, kube: FakeKube) -> None:
    out = reconcile.reconcile_memory(ctx, memory_body())
    assert out.error is None
    assert ready(out.status)["status"] == "True"
    assert ready(out.status)["reason"] == "Provisioned"
    assert out.status["binding"] == {"name": "chat-chatmemory"}
    assert out.status["store"] == "redis-store"
    assert out.status["backend"] == "redis"
    assert out.status["observedGeneration"] == 1
    assert out.status["provisioned"]["keyPrefix"] == "cm:team:chat:"
    secret = kube.secrets[("team", "chat-chatmemory")]
    assert secret["type"] == "servicebinding.io/redis"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid-chat"
    assert [e.reason for e in out.events] == ["Provisioned"]


def test_admin_credentials_come_from_the_admin_secret(ctx: reconcile.Context, backend: FakeBackend) -> None:
    reconcile.reconcile_memory(ctx, memory_body())
    assert backend.stores_seen[0].admin_username == "admin"
    assert backend.stores_seen[0].admin_password == "admin-pw"


def test_the_password_stays_the_same_across_reconciles(ctx: reconcile.Context, backend: FakeBackend) -> None:
    body = memory_body()
    first = reconcile.reconcile_memory(ctx, body)
    user = next(iter(backend.passwords))
    pw = backend.passwords[user]
    second = reconcile.reconcile_memory(ctx, with_status(body, first))
    assert backend.passwords[user] == pw
    assert second.events == []
    assert ready(second.status)["lastTransitionTime"] == ready(first.status)["lastTransitionTime"]


def test_passwords_never_appear_in_status_or_events(ctx: reconcile.Context, backend: FakeBackend) -> None:
    out = reconcile.reconcile_memory(ctx, memory_body())
    pw = next(iter(backend.passwords.values()))
    assert pw not in repr(out.status)
    assert all(pw not in e.message for e in out.events)


def test_a_new_rotation_value_issues_a_new_password_once(
    ctx: reconcile.Context, backend: FakeBackend, kube: FakeKube
) -> None:
    body = memory_body()
    first = reconcile.reconcile_memory(ctx, body)
    user = next(iter(backend.passwords))
    old_pw = backend.passwords[user]
    rotated = with_status(body, first)
    rotated["metadata"]["annotations"] = {"chatmemory.io/rotate-credentials": "2026-01-01"}
    out = reconcile.reconcile_memory(ctx, rotated)
    assert out.rotation == "2026-01-01"
    assert out.status["credentialsRotation"] == "2026-01-01"
    assert backend.passwords[user] != old_pw
    assert "CredentialsRotated" in [e.reason for e in out.events]
    data = kube.read_secret_data("team", "chat-chatmemory")
    assert data is not None and data["password"] == backend.passwords[user]
    again = reconcile.reconcile_memory(ctx, with_status(rotated, out))
    assert again.rotation is None
    assert data["password"] == backend.passwords[user]


def test_a_deleted_secret_is_written_again_with_a_working_password(
    ctx: reconcile.Context, backend: FakeBackend, kube: FakeKube
) -> None:
    body = memory_body()
    first = reconcile.reconcile_memory(ctx, body)
    kube.delete_secret("team", "chat-chatmemory")
    out = reconcile.reconcile_memory(ctx, with_status(body, first), check_drift=True)
    data = kube.read_secret_data("team", "chat-chatmemory")
    assert data is not None
    assert data["password"] == backend.passwords[data["username"]]
    assert any(e.reason == "DriftRepaired" and "Secret" in e.message for e in out.events)


def test_drift_found_by_observe_is_reported(ctx: reconcile.Context, backend: FakeBackend) -> None:
    body = memory_body()
    first = reconcile.reconcile_memory(ctx, body)
    backend.user_missing = True
    out = reconcile.reconcile_memory(ctx, with_status(body, first), check_drift=True)
    assert [e.reason for e in out.events] == ["DriftRepaired"]
    assert "was missing" in out.events[0].message


def test_a_drift_check_that_finds_nothing_touches_no_backend_object(
    ctx: reconcile.Context, backend: FakeBackend, kube: FakeKube
) -> None:
    body = memory_body()
    first = reconcile.reconcile_memory(ctx, body)
    secret_before = kube.read_secret_data("team", "chat-chatmemory")
    out = reconcile.reconcile_memory(ctx, with_status(body, first), check_drift=True)
    assert backend.ensures == 1  # a restart or a timer tick re-provisions nothing
    assert out.error is None and out.events == []
    assert out.status["provisioned"] == first.status["provisioned"]
    assert kube.read_secret_data("team", "chat-chatmemory") == secret_before


def test_a_drift_check_re_ensures_when_the_secret_no_longer_matches_the_spec(
    ctx: reconcile.Context, backend: FakeBackend
) -> None:
    body = memory_body()
    first = reconcile.reconcile_memory(ctx, body)
    changed = dict(body, spec=dict(body["spec"], ttl="2h"))  # as if the status lagged the spec
    reconcile.reconcile_memory(ctx, with_status(changed, first), check_drift=True)
    assert backend.ensures == 2


def test_a_missing_store_is_reported_and_retried(ctx: reconcile.Context) -> None:
    out = reconcile.reconcile_memory(ctx, memory_body(store="nope"))
    assert out.error is not None and out.error.temporary
    assert ready(out.status)["reason"] == "StoreNotFound"
    assert "'nope' does not exist" in ready(out.status)["message"]


def test_an_empty_store_ref_uses_the_default_store_and_pins_it(
    ctx: reconcile.Context, kube: FakeKube
) -> None:
    kube.stores["dflt"] = store_body("dflt", default=True)
    out = reconcile.reconcile_memory(ctx, memory_body(store=None))
    assert out.error is None
    assert out.status["store"] == "dflt"
    del kube.stores["dflt"].get("metadata")["annotations"]["chatmemory.io/is-default-store"]
    again = reconcile.reconcile_memory(ctx, with_status(memory_body(store=None), out))
    assert again.status["store"] == "dflt"


def test_no_default_store_says_how_to_fix_it(ctx: reconcile.Context) -> None:
    out = reconcile.reconcile_memory(ctx, memory_body(store=None))
    assert ready(out.status)["reason"] == "StoreNotFound"
    assert "is-default-store" in ready(out.status)["message"]


def test_a_backend_block_for_another_backend_is_an_invalid_spec(ctx: reconcile.Context) -> None:
    out = reconcile.reconcile_memory(ctx, memory_body(kafka={"partitions": 3}))
    assert out.error is not None and not out.error.temporary
    assert ready(out.status)["reason"] == "InvalidSpec"
    assert "spec.kafka" in ready(out.status)["message"]


def test_an_unavailable_backend_sets_ready_false_and_keeps_the_binding(
    ctx: reconcile.Context, backend: FakeBackend
) -> None:
    body = memory_body()
    first = reconcile.reconcile_memory(ctx, body)
    backend.fail = BackendUnavailable("redis 127.0.0.1:1: unreachable")
    out = reconcile.reconcile_memory(ctx, with_status(body, first))
    assert out.error is not None and out.error.temporary
    assert ready(out.status)["status"] == "False"
    assert ready(out.status)["reason"] == "BackendUnavailable"
    assert out.status["binding"] == {"name": "chat-chatmemory"}
    assert [(e.type, e.reason) for e in out.events] == [("Warning", "BackendUnavailable")]
    again = reconcile.reconcile_memory(ctx, with_status(body, out))
    assert again.events == []
    assert ready(again.status)["lastTransitionTime"] == ready(out.status)["lastTransitionTime"]


def test_not_supported_is_permanent(ctx: reconcile.Context, backend: FakeBackend) -> None:
    backend.fail = NotSupportedError("cannot remove partitions")
    out = reconcile.reconcile_memory(ctx, memory_body())
    assert out.error is not None and not out.error.temporary
    assert ready(out.status)["reason"] == "NotSupported"


def test_a_missing_admin_secret_is_reported(ctx: reconcile.Context, kube: FakeKube) -> None:
    kube.delete_secret("ops", "admin")
    out = reconcile.reconcile_memory(ctx, memory_body())
    assert ready(out.status)["reason"] == "SecretNotFound"
    assert "ops/admin" in ready(out.status)["message"]


def test_a_secret_of_someone_else_is_never_overwritten(ctx: reconcile.Context, kube: FakeKube) -> None:
    kube.put_secret("team", "chat-chatmemory", {"password": "theirs"})
    out = reconcile.reconcile_memory(ctx, memory_body())
    assert ready(out.status)["reason"] == "InvalidSpec"
    assert kube.read_secret_data("team", "chat-chatmemory") == {"password": "theirs"}


def test_a_server_without_acls_says_the_memory_is_not_isolated(
    ctx: reconcile.Context, backend: FakeBackend
) -> None:
    backend.acl = False
    out = reconcile.reconcile_memory(ctx, memory_body())
    assert out.status["provisioned"]["isolated"] is False
    isolated = next(c for c in out.status["conditions"] if c["type"] == "Isolated")
    assert isolated["status"] == "False"
    assert ready(out.status)["status"] == "True"


def test_ttl_falls_back_to_the_store_default(ctx: reconcile.Context, kube: FakeKube) -> None:
    kube.stores["redis-store"]["spec"]["defaults"] = {"ttl": "2d"}
    body = memory_body()
    del body["spec"]["ttl"]
    out = reconcile.reconcile_memory(ctx, body)
    assert out.status["ttl"] == "2d"


@pytest.mark.parametrize("policy", ["Retain", "Delete"])
def test_delete_removes_user_with_the_policy_and_the_secret(
    ctx: reconcile.Context, backend: FakeBackend, kube: FakeKube, policy: str
) -> None:
    body = memory_body(deletionPolicy=policy)
    first = reconcile.reconcile_memory(ctx, body)
    events = reconcile.delete_memory(ctx, with_status(body, first))
    assert backend.deleted == [(next(iter(backend.passwords)), DeletionPolicy(policy))]
    assert ("team", "chat-chatmemory") not in kube.secrets
    assert events[0].reason == "Deleted"


def test_delete_completes_when_the_store_is_gone(
    ctx: reconcile.Context, backend: FakeBackend, kube: FakeKube
) -> None:
    body = memory_body()
    first = reconcile.reconcile_memory(ctx, body)
    del kube.stores["redis-store"]
    events = reconcile.delete_memory(ctx, with_status(body, first))
    assert backend.deleted == []
    assert events[0].type == "Warning"


def test_delete_on_an_unreachable_backend_raises_for_a_retry(
    ctx: reconcile.Context, backend: FakeBackend
) -> None:
    body = memory_body()
    first = reconcile.reconcile_memory(ctx, body)
    backend.fail = BackendUnavailable("down")
    with pytest.raises(BackendUnavailable):
        reconcile.delete_memory(ctx, with_status(body, first))


def test_a_store_reports_version_provider_and_capabilities(ctx: reconcile.Context, kube: FakeKube) -> None:
    out = reconcile.reconcile_store(ctx, kube.stores["redis-store"])
    assert out.error is None
    assert out.status["version"] == "7.0.15"
    assert out.status["provider"] == "redis"
    assert out.status["capabilities"] == {"acl": True}
    assert ready(out.status)["reason"] == "Connected"


def test_an_unreachable_store_is_not_ready(
    ctx: reconcile.Context, kube: FakeKube, backend: FakeBackend
) -> None:
    backend.fail = BackendUnavailable("redis 127.0.0.1:1: unreachable")
    out = reconcile.reconcile_store(ctx, kube.stores["redis-store"])
    assert ready(out.status)["status"] == "False"
    assert ready(out.status)["reason"] == "BackendUnavailable"


def test_status_change_detection_ignores_nothing_but_kopf_bookkeeping(ctx: reconcile.Context) -> None:
    body = memory_body()
    out = reconcile.reconcile_memory(ctx, body)
    assert reconcile.status_changed(body, out.status)
    settled = dict(body, status=dict(out.status, kopf={"progress": {}}))
    assert not reconcile.status_changed(settled, out.status)


def test_a_new_secret_name_keeps_the_password_and_removes_the_old_secret(
    ctx: reconcile.Context, backend: FakeBackend, kube: FakeKube
) -> None:
    body = memory_body()
    first = reconcile.reconcile_memory(ctx, body)
    old_pw = kube.read_secret_data("team", "chat-chatmemory")["password"]  # type: ignore[index]
    renamed = with_status(memory_body(secretName="renamed"), first)
    out = reconcile.reconcile_memory(ctx, renamed)
    assert out.status["binding"] == {"name": "renamed"}
    assert kube.read_secret_data("team", "renamed")["password"] == old_pw  # type: ignore[index]
    assert ("team", "chat-chatmemory") not in kube.secrets


def test_growing_a_topic_records_every_partition_count_in_the_binding() -> None:
    def kafka_binding(history: str = "") -> Binding:
        return Binding(
            backend=BackendKind.KAFKA,
            provider="kafka",
            bootstrap_servers="b:9092",
            topic="t",
            partition_history=history,
        )

    def with_partition_history(
        binding: Binding, current: Binding | None, plan: kafka.KafkaPlan, provisioned: int | None
    ) -> Binding:
        prior = Prior(binding=current, provisioned=api.Provisioned(partitions=provisioned))
        return kafka.with_partition_history(binding, prior, plan)

    grown = kafka.KafkaPlan(
        namespace="n",
        name="m",
        uid="u",
        ttl_seconds=60,
        max_messages=None,
        username="x",
        topic="t",
        partitions=3,
    )
    first = with_partition_history(kafka_binding(), None, dataclasses.replace(grown, partitions=1), None)
    assert first.partition_counts == (1,)  # never grew: the one count, so a later growth is known
    assert with_partition_history(kafka_binding(), first, grown, 1).partition_counts == (1, 3)
    again = with_partition_history(kafka_binding(), kafka_binding("1,3"), grown, 3)
    assert again.partition_counts == (1, 3)
    bigger = dataclasses.replace(grown, partitions=6)
    assert with_partition_history(kafka_binding(), again, bigger, 3).partition_counts == (1, 3, 6)
