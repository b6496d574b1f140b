"""The kopf glue: errors mapped to retries, status patched only on change, settings, registration."""

from __future__ import annotations

import kopf
import pytest
from chatmemory_operator import handlers, startup
from chatmemory_operator.errors import BackendUnavailable, InvalidSpec, NotSupportedError, StoreNotFound


def test_temporary_errors_retry_with_a_growing_capped_delay() -> None:
    delays = []
    for retry in range(12):
        with pytest.raises(kopf.TemporaryError) as exc:
            handlers.raise_for(BackendUnavailable("down"), retry)
        delays.append(exc.value.delay)
    assert delays[0] == handlers.CONFIG.retry_delay
    assert delays == sorted(delays)
    assert delays[-1] == handlers.CONFIG.retry_max_delay


@pytest.mark.parametrize("error", [StoreNotFound("x"), BackendUnavailable("y")])
def test_missing_store_and_unreachable_backend_are_temporary(error: Exception) -> None:
    with pytest.raises(kopf.TemporaryError, match=type(error).reason):  # type: ignore[attr-defined]
        handlers.raise_for(error, 0)  # type: ignore[arg-type]


@pytest.mark.parametrize("error", [InvalidSpec("x"), NotSupportedError("y")])
def test_invalid_and_unsupported_specs_are_permanent(error: Exception) -> None:
    with pytest.raises(kopf.PermanentError):
        handlers.raise_for(error, 0)  # type: ignore[arg-type]


def test_success_raises_nothing() -> None:
    handlers.raise_for(None, 3)


def test_status_is_patched_only_when_it_changed() -> None:
    body = kopf.Body({"metadata": {"name": "m"}, "status": {"store": "a", "ttl": "1h", "kopf": {"x": 1}}})
    patch = kopf.Patch()
    assert not handlers.apply_status(patch, body, {"store": "a", "ttl": "1h"})
    assert not patch
    assert handlers.apply_status(patch, body, {"store": "b"})
    assert patch["status"] == {"store": "b", "ttl": None}


def test_settings_use_our_finalizer_and_annotation_prefix() -> None:
    settings = kopf.OperatorSettings()
    startup.configure_settings(settings)
    assert settings.persistence.finalizer == "chatmemory.io/finalizer"
    progress = settings.persistence.progress_storage
    diffbase = settings.persistence.diffbase_storage
    assert isinstance(progress, kopf.AnnotationsProgressStorage)
    assert progress.prefix == "chatmemory.io"
    assert isinstance(diffbase, kopf.AnnotationsDiffBaseStorage)
    assert diffbase.prefix == "chatmemory.io"
    assert settings.posting.level > 20


def test_settings_bound_how_many_objects_are_processed_at_once() -> None:
    settings = kopf.OperatorSettings()
    startup.configure_settings(settings)
    assert settings.queueing.worker_limit == 64
    startup.configure_settings(settings, workers=8)
    assert settings.queueing.worker_limit == 8
    assert settings.queueing.idle_timeout < 1  # a slot is freed soon after an object's last event


def test_every_handler_is_registered_for_both_kinds() -> None:
    registry = kopf.get_default_registry()
    ids = {h.id for h in registry._changing.get_all_handlers()}
    assert {"memory_changed", "memory_deleted", "store_changed"} <= ids
    timers = {h.id for h in registry._spawning.get_all_handlers()}
    assert {"memory_drift", "store_check"} <= timers
    watchers = {h.id for h in registry._watching.get_all_handlers()}
    assert "memory_rotation" in watchers


def test_a_namespaced_operator_manages_only_stores_whose_secrets_it_watches() -> None:
    spec = {"redis": {"host": "h", "adminSecretRef": {"name": "a", "namespace": "team-a"}}}
    assert handlers.store_in_scope(spec, ())
    assert handlers.store_in_scope(spec, ("team-*",))
    assert not handlers.store_in_scope(spec, ("other",))
    with_ca = {"kafka": {"tls": {"caSecretRef": {"name": "ca", "namespace": "certs"}}}}
    assert not handlers.store_in_scope(with_ca, ("team-a",))
    assert handlers.store_in_scope({"kafka": {"bootstrapServers": "k:9092"}}, ("team-a",))


def test_the_drift_pacer_spaces_checks_to_its_rate_across_callers() -> None:
    from chatmemory_operator.handlers import Pacer

    pacer = Pacer(rate=20)
    waits = [pacer.delay(100.0) for _ in range(4)]  # four timers firing in the same instant
    assert waits == pytest.approx([0.0, 0.05, 0.10, 0.15])
    assert pacer.delay(200.0) == 0.0  # after a quiet spell a check runs at once
