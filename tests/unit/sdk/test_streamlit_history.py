"""The Streamlit history: cached across reruns, written through, refetched in a new browser session."""

from __future__ import annotations

import uuid

from streamlit.testing.v1 import AppTest

from tests.unit.sdk import streamlit_fakes


def app() -> None:
    import streamlit as st
    from chatmemory import StreamlitChatMessageHistory
    from langchain_core.messages import AIMessage, HumanMessage

    from tests.unit.sdk.streamlit_fakes import CountingHistory

    sid = st.query_params.get("sid", "none")
    durable = None if sid == "none" else CountingHistory(sid, fail_writes=st.query_params.get("fail") == "1")
    history = StreamlitChatMessageHistory(key="msgs", history=durable)
    text = st.chat_input("say")
    if text:
        try:
            history.add_messages([HumanMessage(text), AIMessage(f"echo {text}")])
        except RuntimeError as e:
            st.error(str(e))
    if st.button("clear"):
        history.clear()
    for m in history.messages:
        st.markdown(f"{m.type}: {m.text}")


def shown(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown]


def run(sid: str, **params: str) -> AppTest:
    at = AppTest.from_function(app)
    at.query_params["sid"] = sid
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def test_reruns_read_the_durable_history_once_and_writes_go_through() -> None:
    sid = uuid.uuid4().hex
    streamlit_fakes.STORE[sid] = []
    at = run(sid)
    at.chat_input[0].set_value("hi").run()
    at.run()
    at.run()
    assert shown(at) == ["human: hi", "ai: echo hi"]
    assert [m.text for m in streamlit_fakes.STORE[sid]] == ["hi", "echo hi"]
    assert streamlit_fakes.READS[sid] == 1


def test_a_new_browser_session_sees_what_an_earlier_one_wrote() -> None:
    sid = uuid.uuid4().hex
    first = run(sid)
    first.chat_input[0].set_value("remember me").run()
    second = run(sid)  # a new AppTest is a new session_state: a new tab or a restarted server
    assert shown(second) == ["human: remember me", "ai: echo remember me"]
    assert streamlit_fakes.READS[sid] == 2


def test_clear_empties_the_durable_history_and_the_cache() -> None:
    sid = uuid.uuid4().hex
    at = run(sid)
    at.chat_input[0].set_value("x").run()
    at.button[0].click().run()
    assert shown(at) == []
    assert sid not in streamlit_fakes.STORE


def test_a_failed_write_raises_and_leaves_the_cache_unchanged() -> None:
    sid = uuid.uuid4().hex
    at = run(sid, fail="1")
    at.chat_input[0].set_value("lost").run()
    assert [e.value for e in at.error] == ["backend down"]
    assert shown(at) == []


def test_without_a_durable_history_it_behaves_like_the_seed() -> None:
    at = run("none")
    at.chat_input[0].set_value("ephemeral").run()
    assert shown(at) == ["human: ephemeral", "ai: echo ephemeral"]
    assert shown(run("none")) == []
