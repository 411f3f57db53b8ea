"""A registry of named things (signal types, index kinds, provenance readers): the one
implementation of register / unregister / get behind each of them.

Writers take a lock and replace the snapshot whole; readers (every lookup, often in a hot
loop) read the current snapshot with no lock and no copy. The snapshot keeps registration
order: a replaced name keeps its place, a removed and re-registered one goes last.

Errors are the caller's own type (``error``), with one wording::

    unknown signal type 'x' (known: md5, pdq)
    signal type 'md5' is already registered
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    """Things of one kind by name. ``kind`` names them in error messages ("signal type");
    ``error`` is the exception type raised for an unknown or duplicate name."""

    __slots__ = ("_error", "_items", "_kind", "_lock")

    def __init__(
        self,
        kind: str,
        *,
        error: Callable[[str], Exception] = KeyError,
        items: Iterable[tuple[str, T]] = (),
    ) -> None:
        self._kind = kind
        self._error = error
        self._lock = threading.Lock()
        self._items: dict[str, T] = {}
        for name, item in items:
            self.register(name, item)

    @property
    def kind(self) -> str:
        return self._kind

    def register(self, name: str, item: T, *, replace: bool = False) -> T:
        """Add ``item`` under ``name``; a name already taken is an error unless ``replace``."""
        if not isinstance(name, str) or not name:
            raise self._error(f"a {self._kind} needs a non-empty name, not {name!r}")
        with self._lock:
            if not replace and name in self._items:
                raise self._error(f"{self._kind} {name!r} is already registered")
            items = dict(self._items)
            items[name] = item
            self._items = items
        return item

    def unregister(self, name: str, *, missing_ok: bool = False) -> T | None:
        """Remove ``name`` and return what it held; an unknown name is an error unless
        ``missing_ok`` (then None)."""
        with self._lock:
            if name not in self._items:
                if missing_ok:
                    return None
                raise self.unknown(name)
            items = dict(self._items)
            item = items.pop(name)
            self._items = items
        return item

    def get(self, name: str) -> T:
        """The item registered as ``name``, or the error naming the known ones."""
        found = self._items.get(name)
        if found is None and name not in self._items:
            raise self.unknown(name)
        return found  # type: ignore[return-value]  # None only where None was registered

    def find(self, name: str) -> T | None:
        """The item registered as ``name``, or None."""
        return self._items.get(name)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._items)

    def snapshot(self) -> dict[str, T]:
        """Every item by name, in registration order. Shared and never changed in place (a
        change replaces it): read it, do not mutate it."""
        return self._items

    def unknown(self, name: str) -> Exception:
        """The error for an unknown ``name`` (for callers that look up a spelling of it)."""
        known = ", ".join(sorted(self._items)) or "none"
        return self._error(f"unknown {self._kind} {name!r} (known: {known})")

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self._kind!r}, {len(self._items)} registered)"
