"""``python -m chatmemory_operator``: run the operator with production defaults.

The equivalent of ``kopf run -m chatmemory_operator --standalone --all-namespaces
--liveness=http://0.0.0.0:8080/healthz``, with the namespaces, the liveness endpoint and the log
level taken from the environment (``CHATMEMORY_NAMESPACES``, ``CHATMEMORY_LIVENESS``,
``CHATMEMORY_VERBOSE``; see :mod:`.config`). kopf's peering is off (``--standalone``): replicas
take turns through a Lease instead (``CHATMEMORY_LEADER_ELECTION_LEASE``, see
:mod:`.startup`). The chart and the image run ``kopf run`` itself, whose options take the place of
the last two.
"""

from __future__ import annotations

import logging
import sys

import kopf

import chatmemory_operator  # noqa: F401 - registers the handlers
from chatmemory_operator import config


def main() -> int:
    try:
        cfg = config.load()
    except config.ConfigError as e:
        print(f"chatmemory-operator: {e}", file=sys.stderr)  # noqa: T201
        return 2
    verbose = cfg.verbose
    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.FULL)
    logging.getLogger("chatmemory_operator").setLevel(logging.DEBUG if verbose else logging.INFO)
    # the Kubernetes client logs whole response bodies (Secrets included) at DEBUG: never
    for noisy in ("kubernetes", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    liveness = None if cfg.liveness.lower() in ("", "off", "none") else cfg.liveness
    kopf.run(
        standalone=True,
        clusterwide=not cfg.namespaces,
        namespaces=cfg.namespaces,
        liveness_endpoint=liveness,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
