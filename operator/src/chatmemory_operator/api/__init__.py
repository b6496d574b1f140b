"""The operator's API package: the custom resources' models and the CRD generator.

- :mod:`.v1alpha1`: the ``chatmemory.io/v1alpha1`` models (``ChatMemoryStore``, ``ChatMemory``),
  constants (annotations, condition reasons) and status helpers; imported by the reconcile layer
  and the handlers.
- :mod:`.durations`: ``parse_duration`` / ``format_duration`` for the ``ttl`` fields.
- :mod:`.crdgen`: ``python -m chatmemory_operator.api.crdgen`` (``make crds``, console script
  ``chatmemory-crdgen``) writes ``crds/``, the chart's copy and ``docs/reference.md`` from the models.

This package is the bottom layer of the operator: it imports nothing from the rest of
``chatmemory_operator``.
"""
