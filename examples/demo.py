"""The main job (``make demo``): for now, print the platform's endpoints."""

from __future__ import annotations

import os
from pathlib import Path


def main() -> None:
    env_file = Path(os.environ.get("CHATMEMORY_PLATFORM_ENV", ".platform/env"))
    print(f"The local platform is up. Endpoints ({env_file}):")
    for line in env_file.read_text().splitlines():
        key, _, value = line.partition("=")
        if "PASSWORD" in key:
            value = "********"
        print(f"  {key:24s} {value}")


if __name__ == "__main__":
    main()
