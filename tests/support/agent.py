"""Reads a checkpointed agent's thread back in a new Python process.

Used by ``tests/integration/checkpoint/test_agent.py`` and ``tests/e2e/test_checkpoint_agent.py``;
the process runs :mod:`tests.integration.checkpoint.agent_support`, which says what ``env`` names.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

from tests.support.platform import ROOT


def read_in_new_process(env: Mapping[str, str], *python_options: str) -> list[dict[str, Any]]:
    """``python <python_options> -m tests.integration.checkpoint.agent_support`` with ``env`` added to
    this process's environment (less ``SERVICE_BINDING_ROOT``); the messages it prints."""
    full = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    full.pop("SERVICE_BINDING_ROOT", None)
    out = subprocess.run(
        [sys.executable, *python_options, "-m", "tests.integration.checkpoint.agent_support"],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
