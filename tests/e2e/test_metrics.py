"""Prometheus metrics of the running operator, scraped from its endpoint during the e2e run."""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import E2E, uid, wait_until


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def sample(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_reconciles_errors_durations_and_memories(e2e: E2E) -> None:
    before = scrape(e2e.operator.metrics_url)
    ok, missing = f"metrics-ok-{uid()}", f"metrics-missing-{uid()}"
    e2e.create_memory(ok, e2e.stores["valkey"].name, deletionPolicy="Delete")
    e2e.create_memory(missing, f"e2e-nope-{uid()}")
    try:
        e2e.wait_memory(ok)
        e2e.wait_memory(missing, status="False", reason="StoreNotFound")

        def counted() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            now = scrape(e2e.operator.metrics_url)
            errors = sample(now, "chatmemory_backend_errors_total", backend="unknown", reason="StoreNotFound")
            return (
                now
                if errors
                > sample(before, "chatmemory_backend_errors_total", backend="unknown", reason="StoreNotFound")
                else None
            )

        after = wait_until(counted, timeout=30, what="the StoreNotFound error to be counted")
        success = sample(after, "chatmemory_reconciliations_total", backend="redis", result="success")
        assert success > sample(before, "chatmemory_reconciliations_total", backend="redis", result="success")
        assert sample(after, "chatmemory_reconcile_duration_seconds_count", backend="redis") >= success
        assert sample(after, "chatmemory_memories", backend="redis", ready="true") >= 1
        assert sample(after, "chatmemory_memories", backend="unknown", ready="false") >= 1
    finally:
        e2e.delete_memory(ok)
        e2e.delete_memory(missing)
