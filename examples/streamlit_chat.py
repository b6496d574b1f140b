"""A small Streamlit chat whose history survives reruns, restarts and replicas.

Run it (any chatmemory URL, or a binding found by ``chatmemory.connect``)::

    CHATMEMORY_URL=redis://localhost:6379 CHATMEMORY_URL_KEY_PREFIX=demo: \\
        streamlit run examples/streamlit_chat.py

Settings (environment): ``CHATMEMORY_URL`` (else ``chatmemory.connect(CHATMEMORY_NAME)``),
``CHATMEMORY_URL_KEY_PREFIX`` and ``CHATMEMORY_URL_CA_FILE`` (for ``rediss://``), and
``CHAT_SESSION_ID`` (default ``demo``; the ``?session=`` query parameter wins). The model is a
deterministic fake that echoes the question, so the app needs no API key; swap in a real chat
model in :func:`build_chain`.

Tested by ``tests/integration/sdk/test_streamlit_app.py`` with Streamlit's ``AppTest`` and once in
headless Chromium.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import chatmemory
import streamlit as st
from langchain_core._api.deprecation import LangChainDeprecationWarning
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.prompt_values import PromptValue
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory


@st.cache_resource
def memory() -> chatmemory.ChatMemory:
    """One ChatMemory (pooled clients) for the whole Streamlit server process."""
    url = os.environ.get("CHATMEMORY_URL")
    if not url:
        return chatmemory.connect(os.environ.get("CHATMEMORY_NAME") or None)
    options: dict[str, Any] = {}
    if prefix := os.environ.get("CHATMEMORY_URL_KEY_PREFIX"):
        options["key_prefix"] = prefix
    if ca_file := os.environ.get("CHATMEMORY_URL_CA_FILE"):
        options["ca_file"] = ca_file
    return chatmemory.connect_url(url, **options)


def echo_model(prompt: PromptValue) -> BaseMessage:
    """A deterministic chat model: answers with the turn number and the question."""
    messages = prompt.to_messages()
    turn = sum(1 for m in messages if m.type == "human")
    reply = AIMessage(f"Echo #{turn}: {messages[-1].text}")
    return GenericFakeChatModel(messages=iter([reply])).invoke(prompt)


def build_chain(history: chatmemory.StreamlitChatMessageHistory) -> Runnable[Any, BaseMessage]:
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are a helpful echo."), MessagesPlaceholder("history"), ("human", "{question}")]
    )
    with warnings.catch_warnings():  # LangChain points at LangGraph; this app keeps the classic API
        warnings.simplefilter("ignore", LangChainDeprecationWarning)
        return RunnableWithMessageHistory(
            prompt | RunnableLambda(echo_model),
            lambda session_id: history,
            input_messages_key="question",
            history_messages_key="history",
        )


def main() -> None:
    st.title("chatmemory chat")
    session_id = st.query_params.get("session") or os.environ.get("CHAT_SESSION_ID", "demo")
    history = chatmemory.StreamlitChatMessageHistory(
        key=f"messages:{session_id}", history=memory().history(session_id)
    )
    st.caption(f"session {session_id}: {len(history.messages)} messages")
    for message in history.messages:
        st.chat_message("user" if message.type == "human" else "assistant").write(message.text)
    if question := st.chat_input("Say something"):
        st.chat_message("user").write(question)
        answer = build_chain(history).invoke(
            {"question": question}, {"configurable": {"session_id": session_id}}
        )
        st.chat_message("assistant").write(answer.text)


main()
