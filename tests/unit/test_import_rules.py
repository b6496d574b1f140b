"""The import rules in pyproject.toml hold, and each one fails when a module breaks it.

``lint-imports`` (run by ``make lint``) checks the layers of the operator, kopf's place, the
backends' distance from the Kubernetes API and the public-SDK rule. These tests prove the rules
can fail: each plants one forbidden import in a copy of the operator package and runs the check.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _contracts() -> list[dict[str, object]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts: list[dict[str, object]] = config["tool"]["importlinter"]["contracts"]
    return contracts


def _lint(package: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports with the project's contracts, the operator package taken from ``package``."""
    env = dict(os.environ, PYTHONPATH=str(package.parent))
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.fixture
def operator_copy(tmp_path: Path) -> Path:
    src = ROOT / "operator" / "src" / "chatmemory_operator"
    dst = tmp_path / "chatmemory_operator"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def test_every_private_sdk_module_is_forbidden_to_the_operator() -> None:
    sdk = ROOT / "sdk" / "src"
    private = {
        ".".join(p.relative_to(sdk).with_suffix("").parts)
        for p in sdk.rglob("_*.py")
        if p.name != "__init__.py"
    }
    rule = next(c for c in _contracts() if c["name"] == "The operator imports only public SDK modules")
    assert private == set(rule["forbidden_modules"])  # type: ignore[arg-type]


def test_the_unchanged_operator_keeps_every_contract(operator_copy: Path) -> None:
    result = _lint(operator_copy)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("reconcile.py", "from chatmemory_operator import handlers", "The operator's layers"),
        ("backends/redis.py", "from chatmemory_operator import reconcile", "The operator's layers"),
        ("api/v1alpha1.py", "from chatmemory_operator import k8s", "The operator's layers"),
        ("reconcile.py", "import kopf", "kopf only in the handler layer"),
        ("backends/kafka.py", "import kubernetes", "Backends never talk to the Kubernetes API"),
        ("backends/tidb.py", "from chatmemory import _connect", "imports only public SDK modules"),
    ],
)
def test_a_forbidden_import_fails_the_check(
    operator_copy: Path, module: str, line: str, contract: str
) -> None:
    target = operator_copy / module
    target.write_text(target.read_text() + f"\n{line}  # planted by the test\n")
    result = _lint(operator_copy)
    assert result.returncode != 0
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout
