"""Leader election settings and the pure parts of :mod:`chatmemory_operator.startup`'s Lease."""

from __future__ import annotations

import pytest
from chatmemory_operator import startup
from chatmemory_operator.config import ConfigError, OperatorConfig


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
