"""How a message is stored: one JSON document per message, LangChain's ``message_to_dict`` form.

Called by every history module (Redis, Memorystore, Kafka, TiDB) and by the Streamlit history, so
all backends share one lossless layout (``tool_calls``, ids, names and metadata round-trip) that
LangChain's own histories can also read. Chunks are stored as the whole messages they stand for.

Reading is where a history spends its time: for 100 messages LangChain's
``messages_from_dict`` (a full pydantic validation per message, plus the tool-call re-parsing of
``AIMessage``) costs several times the Redis round trip. :func:`decode_all` therefore builds the
message objects directly from a document when the document is exactly what ``message_to_dict``
writes (every field present, canonical tool calls, plain JSON types); the objects it returns
compare equal to LangChain's, field for field, including ``__pydantic_fields_set__``. Anything
else (an older or foreign document, a chunk type, ``RemoveMessage``, legacy tool calls in
``additional_kwargs``) goes through ``messages_from_dict`` unchanged, so its errors are LangChain's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import orjson  # a declared dependency: encoding and parsing are the hot path of every history
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    BaseMessageChunk,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
    message_chunk_to_message,
    message_to_dict,
    messages_from_dict,
)
from pydantic import BaseModel

_loads: Callable[[str | bytes], Any] = orjson.loads


def _dumps(doc: Any) -> str:
    """Compact JSON text; LangChain's own ``json.dumps`` for what orjson refuses (huge ints, ...)."""
    try:
        return orjson.dumps(doc).decode()
    except TypeError:
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def encode(message: BaseMessage) -> str:
    """One message as compact JSON text (chunks are stored as the message they stand for)."""
    if isinstance(message, BaseMessageChunk):
        message = message_chunk_to_message(message)
    return _dumps(message_to_dict(message))


def encode_all(messages: Sequence[BaseMessage]) -> list[str]:
    """:func:`encode` for each message, in order."""
    return [encode(m) for m in messages]


def decode(raw: str | bytes) -> BaseMessage:
    """One stored document back to its message object."""
    return message_from_dict(_loads(raw))


def decode_all(raw: Iterable[str | bytes]) -> list[BaseMessage]:
    """Stored documents back to message objects, in the order given."""
    loads, from_dict = _loads, message_from_dict
    return [from_dict(loads(r)) for r in raw]


def message_from_dict(doc: Any) -> BaseMessage:
    """A ``{"type": ..., "data": ...}`` document to its message: fast when canonical, else LangChain's."""
    if type(doc) is dict:
        kind = doc.get("type")
        data = doc.get("data")
        if type(kind) is str and type(data) is dict:
            spec = _SPECS.get(kind)
            if spec is not None:
                cls, fields, field_set, check = spec
                canonical = tuple(data) == fields
                if not canonical and data.keys() == field_set:
                    data = {k: data[k] for k in fields}  # same keys, other order: as validation orders them
                    canonical = True
                if canonical and check(data):
                    return _trusted(cls, data, field_set)
    return messages_from_dict([doc])[0]


# -- the fast path --------------------------------------------------------------------------------

_FAST: Final[dict[str, type[BaseMessage]]] = {
    "human": HumanMessage,
    "ai": AIMessage,
    "system": SystemMessage,
    "tool": ToolMessage,
    "chat": ChatMessage,
    "function": FunctionMessage,
}
#: The keys ``message_to_dict`` writes for each class, in field order.
_FIELDS: Final[dict[type[BaseMessage], tuple[str, ...]]] = {
    cls: tuple(cls.model_fields) for cls in _FAST.values()
}
_FIELD_SETS: Final[dict[type[BaseMessage], frozenset[str]]] = {
    cls: frozenset(f) for cls, f in _FIELDS.items()
}

_new = object.__new__
_setstate = BaseModel.__setstate__


def _trusted(cls: type[BaseMessage], data: dict[str, Any], field_set: frozenset[str]) -> BaseMessage:
    """The message validation would build from ``data`` (already checked), without validating.

    Through pydantic's public pickle protocol (``__setstate__``, which every pydantic version
    keeps loading) with the state ``__getstate__`` gives for a validated message (the classes allow
    extras, so an empty dict). ``model_construct()`` walks every field on each call: decoding
    10,000 messages took 58 ms with it, 33 ms this way (31 ms writing pydantic's private slots).
    """
    obj = _new(cls)
    _setstate(
        obj,
        {
            "__dict__": data,
            "__pydantic_fields_set__": set(field_set),
            "__pydantic_extra__": {},
            "__pydantic_private__": None,
        },
    )
    return obj


def _base_ok(d: dict[str, Any]) -> bool:
    """The fields every message has, with the types validation would accept unchanged."""
    c = d["content"]
    if type(c) is not str:
        if type(c) is not list:
            return False
        for x in c:
            if type(x) is not str and type(x) is not dict:
                return False
    name, ident = d["name"], d["id"]
    return (
        type(d["additional_kwargs"]) is dict
        and type(d["response_metadata"]) is dict
        and (name is None or type(name) is str)
        and (ident is None or type(ident) is str)
    )


_TOOL_CALL_KEYS: Final = ("name", "args", "id", "type")
_INVALID_TOOL_CALL_KEYS: Final = ("type", "id", "name", "args", "error")  # the TypedDict order
_USAGE_REQUIRED: Final = frozenset({"input_tokens", "output_tokens", "total_tokens"})
_USAGE_DETAILS: Final = frozenset({"input_token_details", "output_token_details"})


def _usage_ok(u: object) -> bool:
    if u is None:
        return True
    if type(u) is not dict or not u.keys() >= _USAGE_REQUIRED:
        return False
    for k, v in u.items():
        if k in _USAGE_REQUIRED:
            if type(v) is not int:
                return False
        elif k in _USAGE_DETAILS:
            if type(v) is not dict or not all(type(x) is int for x in v.values()):
                return False
        else:
            return False
    return True


def _ai_ok(d: dict[str, Any]) -> bool:
    if d["type"] != "ai" or not _base_ok(d):
        return False
    tool_calls, invalid = d["tool_calls"], d["invalid_tool_calls"]
    if type(tool_calls) is not list or type(invalid) is not list:
        return False
    if not tool_calls and not invalid:
        if "tool_calls" in d["additional_kwargs"]:
            return False  # legacy provider tool calls: LangChain parses them into tool_calls
    else:
        for tc in tool_calls:
            if (
                type(tc) is not dict
                or tuple(tc) != _TOOL_CALL_KEYS
                or tc["type"] != "tool_call"
                or type(tc["name"]) is not str
                or type(tc["args"]) is not dict
                or not (tc["id"] is None or type(tc["id"]) is str)
            ):
                return False
        for tc in invalid:
            if (
                type(tc) is not dict
                or tuple(tc) != _INVALID_TOOL_CALL_KEYS
                or tc["type"] != "invalid_tool_call"
                or not all(tc[k] is None or type(tc[k]) is str for k in ("name", "args", "id", "error"))
            ):
                return False
    u = d["usage_metadata"]
    return u is None or _usage_ok(u)


def _tool_ok(d: dict[str, Any]) -> bool:
    return (
        d["type"] == "tool"
        and _base_ok(d)
        and type(d["tool_call_id"]) is str
        and d["status"] in ("success", "error")
    )


def _typed(kind: str) -> Callable[[dict[str, Any]], bool]:
    def check(d: dict[str, Any]) -> bool:
        return d["type"] == kind and _base_ok(d)

    return check


def _chat_ok(d: dict[str, Any]) -> bool:
    return d["type"] == "chat" and _base_ok(d) and type(d["role"]) is str


def _function_ok(d: dict[str, Any]) -> bool:
    return d["type"] == "function" and _base_ok(d) and type(d["name"]) is str


_CHECKS: Final[dict[type[BaseMessage], Callable[[dict[str, Any]], bool]]] = {
    HumanMessage: _typed("human"),
    AIMessage: _ai_ok,
    SystemMessage: _typed("system"),
    ToolMessage: _tool_ok,
    ChatMessage: _chat_ok,
    FunctionMessage: _function_ok,
}
#: type -> (class, its fields in order, the same as a set, its shape check)
_SPECS: Final[
    dict[str, tuple[type[BaseMessage], tuple[str, ...], frozenset[str], Callable[[dict[str, Any]], bool]]]
] = {kind: (cls, _FIELDS[cls], _FIELD_SETS[cls], _CHECKS[cls]) for kind, cls in _FAST.items()}
