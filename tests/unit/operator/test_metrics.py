"""Prometheus metrics: reconcile counters by result, errors by reason, memories by Ready state."""

from __future__ import annotations

from chatmemory_operator.metrics import SUCCESS, Metrics
from prometheus_client import generate_latest


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_reconciles_are_counted_by_backend_and_result() -> None:
    m = Metrics()
    m.observe(uid="a", backend="redis", result=SUCCESS, seconds=0.1, ready=True)
    m.observe(uid="a", backend="redis", result=SUCCESS, seconds=0.2, ready=True)
    m.observe(uid="b", backend="kafka", result="BackendUnavailable", seconds=1.0, ready=False)
    assert value(m, "chatmemory_reconciliations_total", backend="redis", result="success") == 2
    assert value(m, "chatmemory_backend_errors_total", backend="kafka", reason="BackendUnavailable") == 1
    assert value(m, "chatmemory_backend_errors_total", backend="redis", reason="success") is None
    assert value(m, "chatmemory_reconcile_duration_seconds_count", backend="redis") == 2


def test_memories_gauge_follows_each_memorys_latest_state() -> None:
    m = Metrics()
    m.observe(uid="a", backend="tidb", result="StoreNotFound", seconds=0, ready=False)
    assert value(m, "chatmemory_memories", backend="tidb", ready="false") == 1
    m.observe(uid="a", backend="tidb", result=SUCCESS, seconds=0, ready=True)
    assert value(m, "chatmemory_memories", backend="tidb", ready="true") == 1
    assert value(m, "chatmemory_memories", backend="tidb", ready="false") == 0
    m.forget("a")
    assert value(m, "chatmemory_memories", backend="tidb", ready="true") == 0


def test_an_unresolved_store_is_labelled_unknown() -> None:
    m = Metrics()
    m.observe(uid="a", backend="", result="StoreNotFound", seconds=0, ready=False)
    assert value(m, "chatmemory_reconciliations_total", backend="unknown", result="StoreNotFound") == 1


def test_exposition_names_the_four_metrics() -> None:
    m = Metrics()
    m.observe(uid="a", backend="redis", result=SUCCESS, seconds=0, ready=True)
    text = generate_latest(m.registry).decode()
    for name in (
        "chatmemory_reconciliations_total",
        "chatmemory_reconcile_duration_seconds",
        "chatmemory_backend_errors_total",
        "chatmemory_memories",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in text
