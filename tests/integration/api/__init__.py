"""Admission tests of the generated CRDs against the real API server."""
