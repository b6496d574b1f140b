"""The public API of ``chatmemory`` is pinned, and importing it pulls in no optional client library."""

from __future__ import annotations

import json
import subprocess
import sys

import chatmemory

EXPECTED = [
    "CONTRACT_VERSION",
    "BackendError",
    "BackendKind",
    "Binding",
    "BindingError",
    "BindingNotFound",
    "ChatMemory",
    "ChatMemoryError",
    "KafkaChatMessageHistory",
    "MemorystoreChatMessageHistory",
    "MissingExtra",
    "NotSupported",
    "RedisChatMessageHistory",
    "StreamlitChatMessageHistory",
    "TiDBChatMessageHistory",
    "connect",
    "connect_url",
]

OPTIONAL = ["redis", "confluent_kafka", "pymysql", "kopf", "kubernetes", "streamlit", "langgraph"]


def test_all_is_pinned() -> None:
    assert sorted(chatmemory.__all__) == sorted(EXPECTED)
    assert len(set(chatmemory.__all__)) == len(chatmemory.__all__)


def test_every_eager_name_resolves_without_optional_libraries() -> None:
    code = (
        "import sys, json, chatmemory\n"
        "eager = [n for n in chatmemory.__all__ if not n.endswith('ChatMessageHistory')]\n"
        "[getattr(chatmemory, n) for n in eager]\n"
        f"print(json.dumps(sorted(m for m in {OPTIONAL!r} if m in sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_history_classes_load_lazily_on_first_access() -> None:
    code = (
        "import sys, chatmemory\n"
        "assert 'redis' not in sys.modules\n"
        "cls = chatmemory.RedisChatMessageHistory\n"
        "assert 'redis' in sys.modules and cls.__module__ == 'chatmemory.histories.redis'\n"
        "assert chatmemory.MemorystoreChatMessageHistory.__mro__[1] is cls\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_unknown_attribute_raises_attribute_error() -> None:
    try:
        chatmemory.NoSuchThing  # noqa: B018
    except AttributeError as e:
        assert "NoSuchThing" in str(e)
    else:
        raise AssertionError("expected AttributeError")


def test_contract_version_is_exported() -> None:
    assert chatmemory.CONTRACT_VERSION == "1"
