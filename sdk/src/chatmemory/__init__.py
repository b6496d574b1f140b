"""chatmemory: durable, isolated LangChain chat memory from a ChatMemory binding.

Public API only; everything else is an implementation detail. ``__all__`` is pinned by a test.
"""

from chatmemory.contract import CONTRACT_VERSION, BackendKind, Binding
from chatmemory.errors import (
    BackendError,
    BindingError,
    BindingNotFound,
    ChatMemoryError,
    MissingExtra,
    NotSupported,
)

__all__ = [
    "CONTRACT_VERSION",
    "BackendError",
    "BackendKind",
    "Binding",
    "BindingError",
    "BindingNotFound",
    "ChatMemoryError",
    "MissingExtra",
    "NotSupported",
]
