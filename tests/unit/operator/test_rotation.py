"""Rotation with overlap and on a schedule, in the reconcile flow (fake Kubernetes and backend).

The grace period lives in the memory's Secret (the previous password's SHA-256 and when it
stops), so an operator restarted in the middle of a rotation keeps the new password, keeps the
previous one until its time, and then drops it.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from chatmemory_operator import reconcile, secrets
from chatmemory_operator.backends.base import Prior
from chatmemory_operator.backends.redis import RedisConnection, RedisPlan

from tests.unit.operator.fakes import FakeBackend, FakeKube, memory_body, with_status


class RecordingBackend(FakeBackend):
    def __init__(self) -> None:
        super().__init__()
        self.priors: list[Prior] = []

    def ensure(self, store: RedisConnection, plan: RedisPlan, password: str, prior: Prior = Prior()) -> Any:  # noqa: B008
        self.priors.append(prior)
        return super().ensure(store, plan, password, prior)


@pytest.fixture
def recording(ctx: reconcile.Context) -> RecordingBackend:
    """The context's backend, recording what each ensure was told of the previous password."""
    backend = RecordingBackend()
    ctx.backends = dict.fromkeys(ctx.backends, backend)
    return backend


def rotate(
    ctx: reconcile.Context, body: dict[str, Any], value: str
) -> tuple[dict[str, Any], reconcile.Outcome]:
    rotated = dict(body)
    rotated["metadata"] = dict(body["metadata"], annotations={"chatmemory.io/rotate-credentials": value})
    return rotated, reconcile.reconcile_memory(ctx, rotated)


def test_a_rotation_keeps_the_previous_password_for_the_grace_period(
    kube: FakeKube, ctx: reconcile.Context, recording: RecordingBackend
) -> None:
    body = memory_body(rotation={"gracePeriod": "5m"})
    first = reconcile.reconcile_memory(ctx, body)
    old_password = kube.read_secret_data("team", "chat-chatmemory")["password"]  # type: ignore[index]
    rotated, out = rotate(ctx, with_status(body, first), "r1")
    assert recording.priors[-1].previous_password_sha256 == hashlib.sha256(old_password.encode()).hexdigest()
    until = datetime.fromisoformat(out.status["previousCredentialsUntil"].replace("Z", "+00:00"))
    assert timedelta(minutes=4) < until - datetime.now(UTC) <= timedelta(minutes=5)
    # a restarted operator (no memory of the rotation) reads the grace period from the Secret
    fresh = reconcile.Context(backends=ctx.backends, kube=ctx.kube, config=ctx.config)
    again = reconcile.reconcile_memory(fresh, with_status(rotated, out), check_drift=True, handled="r1")
    assert recording.priors[-1].previous_password_sha256 == hashlib.sha256(old_password.encode()).hexdigest()
    assert again.status["previousCredentialsUntil"] == out.status["previousCredentialsUntil"]
    assert kube.read_secret_data("team", "chat-chatmemory")["password"] != old_password  # type: ignore[index]


def test_the_previous_password_goes_when_the_grace_period_has_ended(
    kube: FakeKube, ctx: reconcile.Context, recording: RecordingBackend
) -> None:
    body = memory_body()
    first = reconcile.reconcile_memory(ctx, body)
    rotated, out = rotate(ctx, with_status(body, first), "r1")
    secret = kube.secrets[("team", "chat-chatmemory")]
    secret["metadata"]["annotations"][secrets.PREVIOUS_UNTIL_ANNOTATION] = (
        datetime.now(UTC) - timedelta(seconds=1)
    ).isoformat()
    ended = reconcile.reconcile_memory(ctx, with_status(rotated, out), check_drift=True, handled="r1")
    assert recording.priors[-1].previous_password_sha256 == ""  # re-ensured with one password
    assert "previousCredentialsUntil" not in ended.status
    assert secrets.previous_password(kube.secrets[("team", "chat-chatmemory")]) is None


def test_a_zero_grace_period_stops_the_previous_password_at_once(
    kube: FakeKube, ctx: reconcile.Context, recording: RecordingBackend
) -> None:
    body = memory_body(rotation={"gracePeriod": "0s"})
    first = reconcile.reconcile_memory(ctx, body)
    _, out = rotate(ctx, with_status(body, first), "r1")
    assert recording.priors[-1].previous_password_sha256 == ""
    assert "previousCredentialsUntil" not in out.status


def test_a_scheduled_rotation_comes_when_every_has_passed(kube: FakeKube, ctx: reconcile.Context) -> None:
    body = memory_body(rotation={"every": "1h", "gracePeriod": "0s"})
    first = reconcile.reconcile_memory(ctx, body)
    password = kube.read_secret_data("team", "chat-chatmemory")["password"]  # type: ignore[index]
    assert first.status["rotatedAt"]
    same = reconcile.reconcile_memory(ctx, with_status(body, first))
    assert kube.read_secret_data("team", "chat-chatmemory")["password"] == password  # type: ignore[index]
    past = dict(same.status, rotatedAt=(datetime.now(UTC) - timedelta(hours=2)).isoformat())
    due = reconcile.reconcile_memory(ctx, dict(body, status=past))
    assert kube.read_secret_data("team", "chat-chatmemory")["password"] != password  # type: ignore[index]
    assert [e.reason for e in due.events] == ["CredentialsRotated"]
    assert "scheduled" in due.events[0].message
