"""The messages every candidate writes and reads: the same objects for all, deterministic.

A turn is a human question and an AI answer with an id and usage metadata; every fifth turn the AI
calls a tool and a tool result follows (so a history holds what real agents store). LangChain's own
``message_to_dict`` / ``messages_from_dict`` are the reference encoding (:func:`lc_encode`,
:func:`lc_decode`): the "decode path" peers use.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    ToolMessage,
    message_to_dict,
    messages_from_dict,
)

_Q = "Could you summarise the open support tickets for account {n} and say which ones are urgent? "
_A = (
    "Here is the summary for account {n}: three tickets are open. Two concern delayed invoices and "
    "one reports a login failure after the password reset. The login failure is urgent because the "
    "customer cannot reach the dashboard; the invoices can wait until the billing run on Friday. "
)


def turn(n: int) -> list[BaseMessage]:
    """Two messages: what one ``RunnableWithMessageHistory`` turn appends."""
    return [
        HumanMessage(content=_Q.format(n=n), id=f"h-{n}"),
        AIMessage(
            content=_A.format(n=n),
            id=f"run-{n:08d}",
            response_metadata={"model_name": "fake-model", "finish_reason": "stop"},
            usage_metadata={"input_tokens": 120 + n % 7, "output_tokens": 64, "total_tokens": 184 + n % 7},
        ),
    ]


def tool_turn(n: int) -> list[BaseMessage]:
    call_id = f"call_{n:06d}"
    return [
        HumanMessage(content=_Q.format(n=n), id=f"h-{n}"),
        AIMessage(
            content="",
            id=f"run-{n:08d}",
            tool_calls=[{"name": "lookup_tickets", "args": {"account": n, "status": "open"}, "id": call_id}],
        ),
        ToolMessage(content=json.dumps({"open": 3, "urgent": [f"T-{n}-1"]}), tool_call_id=call_id),
        AIMessage(content=_A.format(n=n), id=f"run-{n:08d}-b"),
    ]


def history(count: int, start: int = 0) -> list[BaseMessage]:
    """``count`` messages (a mix of plain and tool turns), cut to length exactly."""
    out: list[BaseMessage] = []
    n = start
    while len(out) < count:
        out.extend(tool_turn(n) if n % 5 == 4 else turn(n))
        n += 1
    return out[:count]


def lc_encode(m: BaseMessage) -> str:
    return json.dumps(message_to_dict(m))


def lc_encode_all(ms: Iterable[BaseMessage]) -> list[str]:
    return [lc_encode(m) for m in ms]


def lc_decode(raw: Iterable[str | bytes]) -> list[BaseMessage]:
    """LangChain's decode path: ``json.loads`` each item, then ``messages_from_dict``."""
    return messages_from_dict([json.loads(r) for r in raw])


def same(a: list[BaseMessage], b: list[BaseMessage]) -> bool:
    return len(a) == len(b) and all(x == y for x, y in zip(a, b, strict=True))
