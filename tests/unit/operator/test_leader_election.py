"""Leader election: its settings, and :mod:`chatmemory_operator.startup`'s Lease election over an
in-memory Lease API with injected clocks (a wall-clock step must change nothing), and the timeouts
every Lease call carries."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import kubernetes
import pytest
import urllib3
from chatmemory_operator import k8s, startup
from chatmemory_operator.config import ConfigError, OperatorConfig
from chatmemory_operator.k8s import KubernetesError


def test_election_is_off_unless_a_lease_is_named() -> None:
    assert OperatorConfig.from_env({}).leader_lease == ""
    cfg = OperatorConfig.from_env({"CHATMEMORY_LEADER_ELECTION_LEASE": " rel-chatmemory-operator "})
    assert cfg.leader_lease == "rel-chatmemory-operator"


@pytest.mark.parametrize("duration", [2, 8, 15, 60, 3600])
def test_the_holder_gives_up_well_before_a_standby_may_take_over(duration: int) -> None:
    """The gap (3/8 of the duration) is what keeps two replicas from handling objects at once:
    a holder that could not renew exits before a standby's wait is over."""
    cfg = OperatorConfig.from_env({"CHATMEMORY_LEASE_DURATION": str(duration)})
    assert cfg.lease_duration == duration
    assert cfg.lease_retry_period >= 1
    # kubernetes.leaderelection's own rule: renewals fit in the deadline, with jitter
    assert cfg.lease_renew_deadline > 1.2 * cfg.lease_retry_period
    assert cfg.lease_duration - cfg.lease_renew_deadline >= 0.375 * duration


def test_the_default_handover_fits_in_15_seconds() -> None:
    cfg = OperatorConfig.from_env({})
    assert cfg.lease_duration + cfg.lease_retry_period <= 10


@pytest.mark.parametrize("raw", ["1", "0", "ten", "3601"])
def test_an_unusable_lease_duration_is_refused_naming_the_variable(raw: str) -> None:
    with pytest.raises(ConfigError, match="CHATMEMORY_LEASE_DURATION"):
        OperatorConfig.from_env({"CHATMEMORY_LEASE_DURATION": raw})


def test_a_standby_serves_liveness_where_kopf_will() -> None:
    chart = ["kopf", "run", "--standalone", "--liveness=http://0.0.0.0:8181/healthz", "-A"]
    assert startup.liveness_url(chart, "http://0.0.0.0:8080/healthz") == "http://0.0.0.0:8181/healthz"
    spaced = ["kopf", "run", "--liveness", "http://0.0.0.0:9000/h"]
    assert startup.liveness_url(spaced, "") == "http://0.0.0.0:9000/h"
    main = ["python", "-m", "chatmemory_operator"]
    assert startup.liveness_url(main, "http://127.0.0.1:1234/healthz") == "http://127.0.0.1:1234/healthz"
    assert startup.liveness_url(main, "off") == ""


def test_each_process_has_its_own_identity_under_one_pod_name() -> None:
    """A container restarted in the same pod must not think it already holds its predecessor's Lease."""
    first, second = startup.identity(), startup.identity()
    assert first != second
    assert first.rsplit("_", 1)[0] == second.rsplit("_", 1)[0]


# -- the election itself, over an in-memory Lease API with injected clocks --------------------------


class Leases:
    """The Lease calls leader election makes, over one dict: resourceVersion checked as the API
    server does, every call's timeout recorded, failures on demand."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.calls: list[tuple[str, float]] = []
        self.fail: Exception | None = None

    def _called(self, what: str, timeout: float) -> None:
        self.calls.append((what, timeout))
        if self.fail is not None:
            raise self.fail

    def _stored(self, body: Mapping[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.lease = copy.deepcopy(dict(body))
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(self.lease)

    def get_lease(self, namespace: str, name: str, *, timeout: float = 0) -> dict[str, Any] | None:
        self._called("get", timeout)
        return copy.deepcopy(self.lease)

    def create_lease(
        self, namespace: str, body: Mapping[str, Any], *, timeout: float = 0
    ) -> dict[str, Any] | None:
        self._called("create", timeout)
        return None if self.lease is not None else self._stored(body)

    def replace_lease(
        self, namespace: str, body: Mapping[str, Any], *, timeout: float = 0
    ) -> dict[str, Any] | None:
        self._called("replace", timeout)
        if (
            self.lease is None
            or body["metadata"]["resourceVersion"] != self.lease["metadata"]["resourceVersion"]
        ):
            return None
        return self._stored(body)

    def delete_lease(
        self, namespace: str, name: str, resource_version: str | None = None, *, timeout: float = 0
    ) -> None:
        self._called("delete", timeout)
        if self.lease is not None and resource_version in (None, self.lease["metadata"]["resourceVersion"]):
            self.lease = None


class Clocks:
    """A replica's two clocks: monotonic (what the election times with) and wall (what it writes)."""

    def __init__(self) -> None:
        self.mono = 1000.0
        self.epoch = 1_800_000_000.0

    def monotonic(self) -> float:
        return self.mono

    def wall(self) -> str:
        return datetime.fromtimestamp(self.epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.epoch += seconds


CFG = OperatorConfig.from_env(
    {"CHATMEMORY_LEADER_ELECTION_LEASE": "op", "CHATMEMORY_OPERATOR_NAMESPACE": "chatmemory-system"}
)


def replica(leases: Leases, name: str) -> tuple[startup.Leadership, Clocks]:
    clocks = Clocks()
    lost: list[str] = []
    leadership = startup.Leadership(
        CFG, name, leases, on_lost=lost.append, clock=clocks.monotonic, wall=clocks.wall
    )
    return leadership, clocks


def holder_and_standby() -> tuple[Leases, startup.Leadership, Clocks, startup.Leadership, Clocks]:
    leases = Leases()
    holder, holder_clock = replica(leases, "pod-a_1")
    assert holder.acquire()
    standby, standby_clock = replica(leases, "pod-b_2")
    assert not standby.try_acquire_or_renew()  # its first look: the wait starts now
    return leases, holder, holder_clock, standby, standby_clock


def test_a_forward_wall_clock_step_on_the_standby_does_not_let_it_take_a_live_lease() -> None:
    leases, _, _, standby, clocks = holder_and_standby()
    version = leases.version
    clocks.epoch += 3600  # NTP steps the standby's node an hour ahead; one second really passes
    clocks.mono += 1
    assert not standby.try_acquire_or_renew()
    assert leases.lease is not None
    assert leases.lease["spec"]["holderIdentity"] == "pod-a_1"
    assert leases.version == version
    assert ("replace", startup.STANDBY_CALL_TIMEOUT) not in leases.calls


def test_a_record_unchanged_for_the_lease_duration_on_the_monotonic_clock_is_taken_over() -> None:
    leases, _, _, standby, clocks = holder_and_standby()
    assert leases.lease is not None
    before = copy.deepcopy(leases.lease["spec"])
    clocks.epoch -= 3600  # the wall clock may even go back: only the monotonic one counts
    clocks.mono += CFG.lease_duration - 0.1
    assert not standby.try_acquire_or_renew()
    clocks.mono += 0.1
    assert standby.try_acquire_or_renew()
    spec = leases.lease["spec"]
    assert spec["holderIdentity"] == "pod-b_2"
    assert spec["acquireTime"] == spec["renewTime"] == clocks.wall() != before["acquireTime"]
    assert spec["leaseTransitions"] == before["leaseTransitions"] + 1
    assert spec["leaseDurationSeconds"] == CFG.lease_duration


def test_each_renewal_the_standby_sees_restarts_its_wait() -> None:
    leases, holder, holder_clock, standby, clocks = holder_and_standby()
    assert holder.leading
    for _ in range(3):
        clocks.advance(CFG.lease_duration - 1)
        holder_clock.advance(CFG.lease_duration - 1)
        assert holder.try_acquire_or_renew()  # the holder renews: the record changes
        assert not standby.try_acquire_or_renew()
    assert leases.lease is not None
    assert leases.lease["spec"]["holderIdentity"] == "pod-a_1"


def test_a_holder_renewing_keeps_its_acquire_time_and_moves_its_renew_time() -> None:
    leases = Leases()
    holder, clocks = replica(leases, "pod-a_1")
    assert holder.acquire()
    assert leases.lease is not None
    first = copy.deepcopy(leases.lease["spec"])
    clocks.advance(1)
    assert holder.try_acquire_or_renew()
    spec = leases.lease["spec"]
    assert spec["acquireTime"] == first["acquireTime"]
    assert spec["renewTime"] != first["renewTime"]
    assert spec["leaseTransitions"] == 0


def test_of_two_standbys_that_read_the_same_expired_lease_only_one_takes_it() -> None:
    """The replace is at the resourceVersion read: the second writer's is stale."""
    leases, _, _, first, first_clock = holder_and_standby()
    second, second_clock = replica(leases, "pod-c_3")
    assert not second.try_acquire_or_renew()
    first_clock.mono += CFG.lease_duration
    second_clock.mono += CFG.lease_duration
    read = leases.get_lease("chatmemory-system", "op")
    assert first.try_acquire_or_renew()
    second.kube = OneStaleRead(leases, read)
    assert not second.try_acquire_or_renew()
    assert leases.lease is not None
    assert leases.lease["spec"]["holderIdentity"] == "pod-b_2"


class OneStaleRead(Leases):
    """``leases``, except that the next read answers ``read`` (as if it raced another writer)."""

    def __init__(self, leases: Leases, read: dict[str, Any] | None) -> None:
        self.__dict__ = leases.__dict__
        self._read = read

    def get_lease(self, namespace: str, name: str, *, timeout: float = 0) -> dict[str, Any] | None:
        self._called("get", timeout)
        return copy.deepcopy(self._read)


def test_every_lease_call_carries_a_timeout_shorter_for_the_holder_than_its_renew_period() -> None:
    leases, holder, holder_clock, standby, clocks = holder_and_standby()
    assert holder.leading
    holder_clock.advance(1)
    leases.calls.clear()
    assert holder.try_acquire_or_renew()
    assert [what for what, _ in leases.calls] == ["get", "replace"]
    assert all(t > 0 and 2 * t <= CFG.lease_retry_period for _, t in leases.calls)
    leases.calls.clear()
    clocks.mono += CFG.lease_duration
    assert not standby.try_acquire_or_renew()  # the holder renewed: seen as a change
    clocks.mono += CFG.lease_duration
    assert standby.try_acquire_or_renew()
    leases.calls.clear()
    standby.leading = True
    standby.release()
    assert leases.lease is None
    assert [what for what, _ in leases.calls] == ["get", "delete"]
    assert all(t == startup.STANDBY_CALL_TIMEOUT for _, t in leases.calls)


def test_a_standby_whose_lease_calls_keep_failing_says_so_in_its_log_and_liveness(
    caplog: pytest.LogCaptureFixture,
) -> None:
    leases = Leases()
    standby, clocks = replica(leases, "pod-b_2")
    leases.fail = KubernetesError("while reading Lease chatmemory-system/op: Read timed out.")
    with caplog.at_level(logging.WARNING, logger=startup.__name__):
        assert not standby._attempt()
    assert "Read timed out" in caplog.text
    assert standby.health()[0]
    clocks.mono += startup.STANDBY_FAILING_LIMIT
    assert not standby._attempt()
    healthy, text = standby.health()
    assert not healthy
    assert "Lease call(s) failed over 60 s" in text and "Read timed out" in text
    leases.fail = None
    assert standby._attempt()
    assert standby.health() == (True, "standby")


def test_the_kube_client_passes_each_lease_calls_timeout_to_the_request_and_names_the_lease() -> None:
    """KubeClient -> ApiClient.call_api's ``_request_timeout``; a timeout is a KubernetesError."""

    timeouts: list[object] = []

    class NoServer(kubernetes.client.ApiClient):
        def call_api(self, *args: Any, _request_timeout: object = None, **kwargs: Any) -> Any:
            timeouts.append(_request_timeout)
            raise urllib3.exceptions.ReadTimeoutError(None, "/", "Read timed out.")  # type: ignore[arg-type]

    kube = k8s.KubeClient(NoServer(kubernetes.client.Configuration()))
    calls = [
        lambda: kube.get_lease("ns", "op", timeout=0.5),
        lambda: kube.create_lease("ns", {"metadata": {"name": "op"}}, timeout=0.5),
        lambda: kube.replace_lease("ns", {"metadata": {"name": "op", "resourceVersion": "1"}}, timeout=0.5),
        lambda: kube.delete_lease("ns", "op", "1", timeout=0.5),
        lambda: kube.list_leases("ns", "a=b"),
    ]
    for call in calls:
        with pytest.raises(KubernetesError, match=r"ns/op|Leases in ns"):
            call()
    assert timeouts == [0.5, 0.5, 0.5, 0.5, k8s.LEASE_TIMEOUT]
