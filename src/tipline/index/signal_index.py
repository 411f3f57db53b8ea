"""Per-signal-type indexes (python-threatexchange's ``SignalTypeIndex``), keyed by entry id.

A signal type names its index kind (``SignalType.index``); this module maps the kind to a class:

* ``exact``: a dict from signal to entry ids, plus prefix lookups (a cited 10/12-hex model hash
  finds full 64-hex entries) over a sorted array rebuilt on the first prefix query after a change;
* ``hamming``: 256-bit codes in a ``HammingIndex`` (MIH once the bank is not tiny), searched at a
  radius the caller gives (the largest threshold of the banks asked for);
* ``vpdq``: every frame of every video hash in a ``VpdqFrameIndex``, matched by frame overlap;
* ``tlsh``: TLSH digests of texts, a vectorised scan with an exact check (``tipline.index.tlsh``),
  searched at the signal type's own threshold.

Every index adds, removes and queries incrementally, so the service updates it in place.
A new index kind is one class and a ``register_index_kind`` call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from tipline.errors import InvalidSignalError
from tipline.index.hamming import HammingIndex, codes_from_hex
from tipline.index.mih import default_index
from tipline.index.prefix import HexPrefixIndex
from tipline.index.tlsh import TlshSignalIndex
from tipline.index.vpdq import VpdqFrameIndex
from tipline.registry import Registry
from tipline.signals.vpdq import VpdqHash, VpdqMatchOptions

Ids = npt.NDArray[np.int64]
Dists = npt.NDArray[np.int32]


@dataclass(slots=True)
class IndexHits:
    """Entries found for a query: ids with their distance (closest per id when a query had
    several values), and per-id details some kinds add (vPDQ: query/index match %)."""

    ids: Ids
    distances: Dists
    details: dict[int, tuple[float, float]] | None = None

    @classmethod
    def empty(cls) -> IndexHits:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int32))


class SignalIndex(Protocol):
    def add(self, ids: Sequence[int], signals: Sequence[str]) -> None: ...
    def remove(self, ids: Sequence[int]) -> None: ...
    def query(self, values: Sequence[str], radius: int) -> IndexHits: ...
    def prefix(self, prefix: str) -> list[int]:
        """Entries whose signal starts with ``prefix`` (kinds without prefixes: none)."""
        ...

    def __len__(self) -> int: ...


def _merge(ids: list[int], dists: list[int]) -> IndexHits:
    """Closest distance per id."""
    if not ids:
        return IndexHits.empty()
    a = np.asarray(ids, np.int64)
    d = np.asarray(dists, np.int32)
    order = np.lexsort((d, a))
    a, d = a[order], d[order]
    first = np.ones(len(a), bool)
    first[1:] = a[1:] != a[:-1]
    return IndexHits(a[first], d[first])


merge_hits = _merge


class ExactIndex:
    """Signal -> entry ids. A signal held by one entry maps to its id, by several to a set (a
    set per entry would cost ~200 bytes and a set construction per add)."""

    def __init__(self, size_hint: int | None = None) -> None:
        self._by_signal: dict[str, int | set[int]] = {}
        self._signal_of: dict[int, str] = {}
        self._prefix: HexPrefixIndex | None = None

    def __len__(self) -> int:
        return len(self._signal_of)

    def add(self, ids: Sequence[int], signals: Sequence[str]) -> None:
        ids = [int(i) for i in ids]
        if len(ids) != len(signals):
            raise ValueError(f"{len(ids)} ids for {len(signals)} signals")
        signal_of, by_signal = self._signal_of, self._by_signal
        if len(set(ids)) != len(ids):  # one id twice: one at a time, the last signal wins
            for i, sig in zip(ids, signals, strict=True):
                self.add([i], [sig])
            return
        if not signal_of.keys().isdisjoint(ids):
            self.remove([i for i in ids if i in signal_of])  # re-added: its new signal wins
        signal_of.update(zip(ids, signals, strict=True))
        get = by_signal.get
        for i, sig in zip(ids, signals, strict=True):
            held = get(sig)
            if held is None:
                by_signal[sig] = i
            elif isinstance(held, int):
                if held != i:
                    by_signal[sig] = {held, i}
            else:
                held.add(i)
        self._prefix = None

    def remove(self, ids: Sequence[int]) -> None:
        for i in ids:
            i = int(i)
            s = self._signal_of.pop(i, None)
            if s is None:
                continue
            held = self._by_signal.get(s)
            if isinstance(held, int):
                if held == i:
                    del self._by_signal[s]
            elif held is not None:
                held.discard(i)
                if len(held) == 1:
                    self._by_signal[s] = next(iter(held))
                elif not held:
                    del self._by_signal[s]
            self._prefix = None

    def query(self, values: Sequence[str], radius: int) -> IndexHits:
        ids: list[int] = []
        for v in values:
            held = self._by_signal.get(v)
            if held is None:
                continue
            if isinstance(held, int):
                ids.append(held)
            else:
                ids.extend(held)
        return _merge(ids, [0] * len(ids))

    def prefix(self, prefix: str) -> list[int]:
        if self._prefix is None:
            full = [(i, s) for i, s in self._signal_of.items() if len(s) >= 16]
            self._prefix = HexPrefixIndex([i for i, _ in full], [s for _, s in full])
        return self._prefix.lookup(prefix)


class HammingSignalIndex:
    def __init__(self, size_hint: int | None = None) -> None:
        self._index: HammingIndex = default_index(size_hint)

    @property
    def hamming(self) -> HammingIndex:
        return self._index

    def __len__(self) -> int:
        return len(self._index)

    def add(self, ids: Sequence[int], signals: Sequence[str]) -> None:
        if len(ids):
            self._index.add(np.asarray(ids, np.int64), codes_from_hex(list(signals)))

    def remove(self, ids: Sequence[int]) -> None:
        if len(ids):
            self._index.remove(np.asarray(ids, np.int64))

    def query(self, values: Sequence[str], radius: int) -> IndexHits:
        if radius < 0 or not values or not len(self._index):
            return IndexHits.empty()
        res = self._index.search(codes_from_hex(list(values)), radius)
        if len(res) == 1:
            ids, dists = res[0]
            return IndexHits(ids.astype(np.int64, copy=False), dists.astype(np.int32, copy=False))
        all_ids = [i for ids, _ in res for i in ids.tolist()]
        all_d = [d for _, dists in res for d in dists.tolist()]
        return _merge(all_ids, all_d)

    def prefix(self, prefix: str) -> list[int]:
        return []


class VpdqSignalIndex:
    """Matches where python-threatexchange's vPDQ rule does (``VpdqMatchOptions``); the
    distance reported is the closest frame pair's."""

    def __init__(self, size_hint: int | None = None, opts: VpdqMatchOptions | None = None):
        self.opts = opts or VpdqMatchOptions()
        self._index = VpdqFrameIndex(self.opts)

    def __len__(self) -> int:
        return len(self._index)

    def add(self, ids: Sequence[int], signals: Sequence[str]) -> None:
        for i, s in zip(ids, signals, strict=True):
            try:
                self._index.add(int(i), VpdqHash.from_te_json(s))
            except InvalidSignalError:
                continue  # validated on import; a damaged row cannot match anything

    def remove(self, ids: Sequence[int]) -> None:
        self._index.remove([int(i) for i in ids])

    def query(self, values: Sequence[str], radius: int) -> IndexHits:
        best: dict[int, int] = {}
        details: dict[int, tuple[float, float]] = {}
        for v in values:
            try:
                q = VpdqHash.from_te_json(v)
            except InvalidSignalError:
                continue
            for key, res in self._index.search(q):
                d = res.best_distance
                if d is None or not res.is_match(self.opts):
                    continue
                if key not in best or d < best[key]:
                    best[key] = d
                    details[key] = (res.query_pct, res.index_pct)
        hits = _merge(list(best), list(best.values()))
        hits.details = details
        return hits

    def prefix(self, prefix: str) -> list[int]:
        return []


IndexFactory = Callable[[int | None], SignalIndex]

_KINDS: Registry[IndexFactory] = Registry(
    "index kind",
    error=InvalidSignalError,
    items=[
        ("exact", ExactIndex),
        ("hamming", HammingSignalIndex),
        ("vpdq", VpdqSignalIndex),
        ("tlsh", TlshSignalIndex),
    ],
)


def register_index_kind(name: str, factory: IndexFactory) -> None:
    """Make index kind ``name`` known (a signal type's ``index``); re-registering replaces it."""
    _KINDS.register(name, factory, replace=True)


def unregister_index_kind(name: str) -> None:
    _KINDS.unregister(name, missing_ok=True)


def new_index(kind: str, size_hint: int | None = None) -> SignalIndex:
    return _KINDS.get(kind)(size_hint)


def index_kinds() -> list[str]:
    return _KINDS.names()
