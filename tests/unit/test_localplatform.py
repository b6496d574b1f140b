"""Pure parts of scripts/localplatform.py (its servers are tested in tests/integration/platform)."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from tests.support.platform import ROOT


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("localplatform", ROOT / "scripts" / "localplatform.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("localplatform", module)
    spec.loader.exec_module(module)
    return module


def test_kafka_cluster_ids_never_start_with_a_dash_that_kafka_storage_would_read_as_an_option() -> None:
    make = load_script().kafka_cluster_id
    ids = [make() for _ in range(2000)]  # about 31 would start with "-" without the rule
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)
    assert len(set(ids)) == len(ids)
