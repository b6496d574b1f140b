"""The committed CRDs, the chart's copy and docs/reference.md are exactly what the models generate.

Fails after a model change until ``make crds`` (``python -m chatmemory_operator.api.crdgen``) is run.
"""

from __future__ import annotations

from pathlib import Path

from chatmemory_operator.api import crdgen

ROOT = Path(__file__).resolve().parents[3]


def test_generated_files_match_the_models() -> None:
    stale = crdgen.drifted(ROOT)
    assert stale == [], f"out of date, run `make crds`: {', '.join(map(str, stale))}"


def test_generated_files_are_the_crds_the_chart_copy_and_the_reference() -> None:
    assert sorted(map(str, crdgen.outputs())) == [
        "charts/chatmemory-operator/templates/crds/chatmemory.io_chatmemories.yaml",
        "charts/chatmemory-operator/templates/crds/chatmemory.io_chatmemorystores.yaml",
        "crds/chatmemory.io_chatmemories.yaml",
        "crds/chatmemory.io_chatmemorystores.yaml",
        "docs/reference.md",
    ]
