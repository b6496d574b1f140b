"""chatmemory-operator: reconciles ChatMemory and ChatMemoryStore resources.

Started by ``kopf run -m chatmemory_operator``.
"""
