"""The single-box store: state in this process, a journal on disk."""

from services.cache.memory.store import MemoryStore

__all__ = ["MemoryStore"]
