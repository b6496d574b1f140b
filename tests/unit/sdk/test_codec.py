"""The message codec: the fast decoder yields exactly LangChain's objects, and falls back when unsure."""

from __future__ import annotations

import json
from typing import Any

import pytest
from chatmemory import _codec
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    HumanMessageChunk,
    RemoveMessage,
    SystemMessage,
    ToolMessage,
    ToolMessageChunk,
    message_to_dict,
    messages_from_dict,
)

SAMPLES: list[BaseMessage] = [
    HumanMessage("hi", id="h1", name="alice", additional_kwargs={"x": [1, 2]}),
    HumanMessage([{"type": "text", "text": "part"}, "plain"], id="h2"),
    SystemMessage("be brief", id="s1"),
    AIMessage(
        "",
        id="a1",
        name="bot",
        tool_calls=[
            {"name": "lookup", "args": {"q": "x", "n": [1, 2]}, "id": "call_1", "type": "tool_call"},
            {"name": "other", "args": {}, "id": None, "type": "tool_call"},
        ],
        invalid_tool_calls=[
            {"name": "bad", "args": "{oops", "id": "c2", "error": "parse", "type": "invalid_tool_call"}
        ],
        response_metadata={"model_name": "fake", "finish_reason": "tool_calls"},
        usage_metadata={
            "input_tokens": 3,
            "output_tokens": 4,
            "total_tokens": 7,
            "input_token_details": {"cache_read": 1},
            "output_token_details": {"reasoning": 2},
        },
    ),
    ToolMessage("42", tool_call_id="call_1", name="lookup", id="t1", artifact={"raw": [1]}, status="error"),
    ToolMessage([{"type": "text", "text": "ok"}], tool_call_id="call_2"),
    AIMessage("the answer is 42", id="a2", response_metadata={"stop": True}),
    ChatMessage("custom", role="critic", id="c1"),
    FunctionMessage("result", name="fn", id="f1"),
    AIMessage("ünïcødé ✓ \u2028 line", id="a3"),
]


def roundtrip_langchain(messages: list[BaseMessage]) -> list[BaseMessage]:
    return messages_from_dict([json.loads(json.dumps(message_to_dict(m))) for m in messages])


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: f"{m.type}-{m.id}")
def test_fast_decode_equals_langchains_decode_field_for_field(message: BaseMessage) -> None:
    ours = _codec.decode(_codec.encode(message))
    theirs = roundtrip_langchain([message])[0]
    assert type(ours) is type(theirs)
    assert ours == theirs == message
    assert ours.model_dump() == theirs.model_dump()
    assert ours.__pydantic_fields_set__ == theirs.__pydantic_fields_set__
    assert ours.__pydantic_extra__ == theirs.__pydantic_extra__
    assert repr(ours) == repr(theirs)


def test_fast_path_is_taken_for_canonical_documents(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(_: Any) -> list[BaseMessage]:
        raise AssertionError("slow path used")

    monkeypatch.setattr(_codec, "messages_from_dict", fail)
    assert _codec.decode_all(_codec.encode_all(SAMPLES)) == SAMPLES


def test_tool_calls_survive_with_ids_names_and_metadata() -> None:
    ai, tool = _codec.decode_all(_codec.encode_all([SAMPLES[3], SAMPLES[4]]))
    assert isinstance(ai, AIMessage) and isinstance(tool, ToolMessage)
    assert ai.tool_calls[0] == {
        "name": "lookup",
        "args": {"q": "x", "n": [1, 2]},
        "id": "call_1",
        "type": "tool_call",
    }
    assert ai.usage_metadata is not None and ai.usage_metadata["total_tokens"] == 7
    assert ai.response_metadata["finish_reason"] == "tool_calls"
    assert (tool.tool_call_id, tool.name, tool.id, tool.artifact, tool.status) == (
        "call_1",
        "lookup",
        "t1",
        {"raw": [1]},
        "error",
    )


def test_decoded_messages_are_independent_and_mutable_like_langchains() -> None:
    a, b = _codec.decode_all([_codec.encode(SAMPLES[0])] * 2)
    a.additional_kwargs["x"].append(3)
    assert b.additional_kwargs == {"x": [1, 2]}
    a.content = "changed"
    assert a.content == "changed"


@pytest.mark.parametrize(
    ("chunk", "expected"),
    [
        (AIMessageChunk(content="par", id="c1", tool_call_chunks=[]), AIMessage(content="par", id="c1")),
        (HumanMessageChunk(content="hu", id="c2"), HumanMessage(content="hu", id="c2")),
        (
            ToolMessageChunk(content="t", tool_call_id="x", id="c3"),
            ToolMessage(content="t", tool_call_id="x", id="c3"),
        ),
    ],
)
def test_chunks_are_stored_as_the_messages_they_stand_for(chunk: BaseMessage, expected: BaseMessage) -> None:
    decoded = _codec.decode(_codec.encode(chunk))
    assert type(decoded) is type(expected)
    assert decoded == expected


def test_merged_ai_chunks_keep_their_tool_calls() -> None:
    merged = AIMessageChunk(
        content="", id="m1", tool_call_chunks=[{"name": "f", "args": '{"a": ', "id": "t1", "index": 0}]
    ) + AIMessageChunk(content="", tool_call_chunks=[{"name": None, "args": "1}", "id": None, "index": 0}])
    decoded = _codec.decode(_codec.encode(merged))
    assert isinstance(decoded, AIMessage)
    assert decoded.tool_calls == [{"name": "f", "args": {"a": 1}, "id": "t1", "type": "tool_call"}]


def doc(message: BaseMessage) -> dict[str, Any]:
    return json.loads(json.dumps(message_to_dict(message)))


def legacy_ai() -> dict[str, Any]:
    d = doc(AIMessage("", id="l1"))
    d["data"]["additional_kwargs"]["tool_calls"] = [
        {"id": "call_9", "function": {"name": "f", "arguments": '{"a": 1}'}, "type": "function"}
    ]
    return d


def old_document_without_new_fields() -> dict[str, Any]:
    return {"type": "ai", "data": {"content": "old", "example": False}}


def reordered() -> dict[str, Any]:
    d = doc(HumanMessage("x", id="r"))
    d["data"] = dict(reversed(list(d["data"].items())))
    return d


def numeric_id() -> dict[str, Any]:
    d = doc(HumanMessage("x"))
    d["data"]["id"] = 7
    return d


def extra_key_tool_call() -> dict[str, Any]:
    d = doc(AIMessage("", tool_calls=[{"name": "f", "args": {}, "id": "1", "type": "tool_call"}]))
    d["data"]["tool_calls"][0]["extras"] = {"k": 1}
    return d


@pytest.mark.parametrize(
    "make",
    [legacy_ai, old_document_without_new_fields, reordered, numeric_id, extra_key_tool_call],
    ids=lambda f: f.__name__,
)
def test_non_canonical_documents_decode_exactly_as_langchain_does(make: Any) -> None:
    ours = _codec.message_from_dict(make())
    theirs = messages_from_dict([make()])[0]
    assert ours == theirs
    assert ours.model_dump() == theirs.model_dump()
    assert ours.__pydantic_fields_set__ == theirs.__pydantic_fields_set__


def test_remove_message_round_trips_through_langchain() -> None:
    decoded = _codec.decode(_codec.encode(RemoveMessage(id="gone")))
    assert isinstance(decoded, RemoveMessage) and decoded.id == "gone"


def test_unknown_type_raises_langchains_value_error() -> None:
    with pytest.raises(ValueError, match="unexpected message type"):
        _codec.decode('{"type": "alien", "data": {"content": "x"}}')


def test_invalid_canonical_looking_document_is_still_rejected() -> None:
    d = doc(ToolMessage("x", tool_call_id="1"))
    d["data"]["status"] = "weird"
    with pytest.raises(ValueError, match="status"):
        _codec.message_from_dict(d)


def test_bytes_and_text_documents_decode_alike() -> None:
    text = _codec.encode(SAMPLES[3])
    assert _codec.decode(text.encode()) == _codec.decode(text)


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: f"{m.type}-{m.id}")
def test_fast_decode_leaves_the_same_pydantic_state_as_validation(message: BaseMessage) -> None:
    ours = _codec.decode(_codec.encode(message))
    theirs = roundtrip_langchain([message])[0]
    assert ours.__getstate__() == theirs.__getstate__()
