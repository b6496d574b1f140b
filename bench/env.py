"""Where the servers are, unique names for this run, the chatmemory classes, and versions.

Used by :mod:`bench.__main__` and every area module. Endpoints come only from the platform env file
(``.platform/env`` or ``CHATMEMORY_PLATFORM_ENV``), parsed as ``KEY=value`` lines.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.harness import Settings

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"

#: Packages whose versions the report lists (what is measured and what it runs on).
PACKAGES = (
    "chatmemory",
    "chatmemory-operator",
    "langchain-core",
    "langchain-community",
    "langchain-redis",
    "redisvl",
    "redis",
    "hiredis",
    "confluent-kafka",
    "PyMySQL",
    "SQLAlchemy",
    "langgraph",
    "langgraph-checkpoint",
    "langgraph-checkpoint-redis",
    "langgraph-checkpoint-mysql",
    "langgraph-checkpoint-plainredis",
    "asyncmy",
    "kopf",
    "kubernetes",
    "orjson",
)


def env_path() -> Path:
    return Path(os.environ.get("CHATMEMORY_PLATFORM_ENV", ROOT / ".platform" / "env"))


def read_env(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def mysql_params(url: str, database: str | None = None) -> dict[str, Any]:
    u = urlsplit(url)
    p: dict[str, Any] = {
        "host": u.hostname or "127.0.0.1",
        "port": u.port or 3306,
        "user": u.username or "root",
        "password": u.password or "",
        "autocommit": True,
        "charset": "utf8mb4",
    }
    if database:
        p["database"] = database
    return p


def sqlalchemy_url(url: str, database: str) -> str:
    """``mysql://u:p@h:port/`` -> ``mysql+pymysql://u:p@h:port/<database>``."""
    u = urlsplit(url)
    return f"mysql+pymysql://{u.netloc}/{database}"


def with_db(url: str, database: str) -> str:
    u = urlsplit(url)
    return f"{u.scheme}://{u.netloc}/{database}"


def cm(*names: str) -> Any | None:
    """A chatmemory attribute if the SDK has it yet: ``cm("RedisChatMessageHistory")``,
    ``cm("checkpoint", "RedisSaver")``; None (the caller skips with a reason) when missing."""
    try:
        obj: Any = importlib.import_module("chatmemory")
    except ImportError:
        return None
    for i, n in enumerate(names):
        nxt = getattr(obj, n, None)
        if nxt is None and isinstance(obj, type(importlib)):
            try:
                nxt = importlib.import_module(".".join(["chatmemory", *names[: i + 1]]))
            except ImportError:
                nxt = None
            except Exception as e:  # noqa: BLE001 - half-written module during parallel work
                print(f"  (chatmemory.{'.'.join(names[: i + 1])} failed to import: {e})")
                nxt = None
        if nxt is None:
            return None
        obj = nxt
    return obj


def missing(*names: str) -> str:
    return f"chatmemory.{'.'.join(names)} is not available in this checkout"


@dataclass
class Ctx:
    """What every area module gets."""

    env: dict[str, str]
    s: Settings
    scale: int
    run_id: str = field(default_factory=lambda: f"bench{int(time.time()) % 100000}{secrets.token_hex(2)}")
    servers: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    cleanups: list[Any] = field(default_factory=list)

    def need(self, *keys: str) -> str | None:
        """None when all keys are present, else the skip reason."""
        gone = [k for k in keys if not self.env.get(k)]
        return f"{', '.join(gone)} not in {env_path()}" if gone else None

    def name(self, kind: str) -> str:
        """A unique, identifier-safe name for this run (prefix, topic, database)."""
        return re.sub(r"[^a-z0-9_]", "_", f"{self.run_id}_{kind}".lower())


def package_versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for p in PACKAGES:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


def server_versions(env: dict[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        import redis

        for key in ("REDIS_URL", "REDIS_SEARCH_URL", "VALKEY_URL"):
            if env.get(key):
                try:
                    info = redis.Redis.from_url(env[key], socket_timeout=3).info("server")
                    v = info.get("valkey_version") or info.get("redis_version")
                    mods = ""
                    if key == "REDIS_SEARCH_URL":
                        try:
                            ml = redis.Redis.from_url(env[key], protocol=2).execute_command("MODULE", "LIST")
                            mods = ", ".join(
                                f"{m[1].decode()} {m[3]}" for m in ml if isinstance(m, list) and len(m) > 3
                            )
                        except Exception:  # noqa: BLE001
                            mods = ""
                    out[key] = f"{info.get('server_name', 'redis')} {v}" + (f" ({mods})" if mods else "")
                except Exception as e:  # noqa: BLE001
                    out[key] = f"unreachable: {e}"
    except ImportError:
        pass
    try:
        import pymysql

        for key in ("TIDB_URL", "MARIADB_URL"):
            if env.get(key):
                try:
                    c = pymysql.connect(**mysql_params(env[key]), connect_timeout=3)
                    with c.cursor() as cur:
                        cur.execute("SELECT VERSION()")
                        out[key] = str(cur.fetchone()[0])
                    c.close()
                except Exception as e:  # noqa: BLE001
                    out[key] = f"unreachable: {e}"
    except ImportError:
        pass
    if env.get("KAFKA_BOOTSTRAP"):
        out["KAFKA_BOOTSTRAP"] = kafka_version(env)
        try:
            import confluent_kafka

            out["librdkafka"] = confluent_kafka.libversion()[0]
        except ImportError:
            pass
    if env.get("KUBECTL") and env.get("KUBECONFIG"):
        import json
        import subprocess

        try:
            r = subprocess.run(
                [env["KUBECTL"], "--kubeconfig", env["KUBECONFIG"], "version", "-o", "json"],
                capture_output=True,
                text=True,
                timeout=15,
            )
            out["kube-apiserver"] = json.loads(r.stdout).get("serverVersion", {}).get("gitVersion", "?")
        except Exception as e:  # noqa: BLE001
            out["kube-apiserver"] = f"unknown: {e}"
    return out


def kafka_version(env: dict[str, str]) -> str:
    """Kafka has no version in its protocol replies; read the broker's own start-up log line."""
    found = ""
    try:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": env["KAFKA_BOOTSTRAP"]})  # kept alive for the future
        md = admin.describe_cluster().result(timeout=10)
        found = f"cluster {md.cluster_id}, {len(md.nodes)} broker(s)"
    except Exception as e:  # noqa: BLE001
        return f"unreachable: {e}"
    logs = Path(env.get("PLATFORM_DIR", ROOT / ".platform")) / "logs"
    for p in sorted(logs.glob("*kafka*")) if logs.exists() else []:
        try:
            m = re.search(r"Kafka version: ([\w.\-]+)", p.read_text(errors="replace")[:2_000_000])
        except OSError:
            continue
        if m:
            return f"Kafka {m.group(1)} ({found}; version from the broker log)"
    return f"Kafka ({found}; version not found in the broker log)"
