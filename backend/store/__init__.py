"""Persistent state: the request history."""

from backend.store.history import HistoryStore

__all__ = ["HistoryStore"]
