"""chatmemory-operator: reconciles ChatMemory and ChatMemoryStore resources.

Started by ``kopf run -m chatmemory_operator`` (or ``python -m chatmemory_operator``). Importing the
package registers the handlers (:mod:`.handlers`) and the start-up/clean-up hooks (:mod:`.startup`)
with kopf.
"""

from chatmemory_operator import handlers, startup

__all__ = ["handlers", "startup"]
