"""Fixtures of the reconcile tests: the fake Kubernetes, the fake backend and a Context over them."""

from __future__ import annotations

from typing import Any, cast

import pytest
from chatmemory.contract import BackendKind
from chatmemory_operator import reconcile
from chatmemory_operator.backends.base import Backend
from chatmemory_operator.config import OperatorConfig
from chatmemory_operator.k8s import KubeClient

from tests.unit.operator.fakes import FakeBackend, FakeKube, store_body


@pytest.fixture
def kube() -> FakeKube:
    k = FakeKube()
    k.stores["redis-store"] = store_body()
    k.put_secret("ops", "admin", {"username": "admin", "password": "admin-pw"})
    return k


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend()


@pytest.fixture
def ctx(kube: FakeKube, backend: FakeBackend) -> reconcile.Context:
    return reconcile.Context(
        backends={BackendKind.REDIS: cast(Backend[Any, Any], backend)},
        kube=cast(KubeClient, kube),
        config=OperatorConfig(store_secret_namespaces=("ops",)),
    )
