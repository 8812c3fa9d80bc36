"""Gateway helpers (FastAPI): being filled."""

__all__: list[str] = []
