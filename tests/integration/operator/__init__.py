"""Backend modules against the real servers of the platform (no mocks)."""
