"""A bank index's entry table as columnar numpy arrays (``BankColumns``), for a cluster scan.

A scan on Ray (``tipline.scan.ray_runner``) puts the banks in the object store once; every
worker rebuilds its ``BankIndex`` from these arrays (``index_from_columns``), cached by
``digest``. The payload is a handful of arrays plus one small row per *bank*: no per-entry
Python objects are pickled, so a worker's load time and memory scale with the bytes of the
signals, not with millions of unpickled objects. Variable-length strings (signals, labels,
signal type names) are stored Arrow-style: one ``uint8`` blob and ``int64`` offsets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tipline.index.bank_index import BankIndex, BankLike, EntryLike


@dataclass(frozen=True, slots=True)
class BankRow:
    """One bank of a snapshot (the few per-bank fields the index needs)."""

    name: str
    role: str
    pdq_threshold: int
    enabled: bool
    enabled_ratio: float = 1.0


@dataclass(frozen=True, slots=True)
class PackedStrings:
    """Strings as one UTF-8 blob and ``len + 1`` offsets (string i is blob[off[i]:off[i+1]])."""

    offsets: npt.NDArray[np.int64]
    blob: npt.NDArray[np.uint8]

    @classmethod
    def pack(cls, values: Sequence[str]) -> PackedStrings:
        encoded = [v.encode("utf-8") for v in values]
        offsets = np.zeros(len(encoded) + 1, np.int64)
        if encoded:
            np.cumsum([len(b) for b in encoded], out=offsets[1:])
        blob = np.frombuffer(b"".join(encoded), np.uint8).copy()
        return cls(offsets, blob)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def take(self, rows: npt.NDArray[np.int64]) -> list[str]:
        raw = self.blob.tobytes()
        off = self.offsets
        return [raw[off[i] : off[i + 1]].decode("utf-8") for i in rows.tolist()]


@dataclass(frozen=True, slots=True)
class BankColumns:
    """The entry table of a scan's banks, one array element per entry."""

    banks: tuple[BankRow, ...]
    ids: npt.NDArray[np.int64]
    #: index into ``banks``
    bank: npt.NDArray[np.int32]
    enabled: npt.NDArray[np.bool_]
    #: disabled until this epoch time (0: no such time)
    until: npt.NDArray[np.float64]
    #: index into ``type_names``
    type_code: npt.NDArray[np.int16]
    type_names: tuple[str, ...]
    signals: PackedStrings
    labels: PackedStrings

    def __len__(self) -> int:
        return len(self.ids)

    def arrays(self) -> dict[str, npt.NDArray[np.generic]]:
        """Every per-entry column (what a test checks holds no Python objects)."""
        return {
            "ids": self.ids,
            "bank": self.bank,
            "enabled": self.enabled,
            "until": self.until,
            "type_code": self.type_code,
            "signal_offsets": self.signals.offsets,
            "signal_blob": self.signals.blob,
            "label_offsets": self.labels.offsets,
            "label_blob": self.labels.blob,
        }

    def digest(self) -> str:
        """SHA-256 of the snapshot: workers cache the index they built under it."""
        h = hashlib.sha256()
        for b in self.banks:
            h.update(repr((b.name, b.role, b.pdq_threshold, b.enabled, b.enabled_ratio)).encode())
        h.update(repr(self.type_names).encode())
        for name, arr in self.arrays().items():
            h.update(name.encode())
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()


def bank_columns(banks: Iterable[BankLike], entries: Iterable[EntryLike]) -> BankColumns:
    """The columnar snapshot of ``banks`` and their ``entries`` (as ``BankIndex.build`` takes
    them); entries without an id or of a bank not listed are left out, as the index does."""
    rows = tuple(
        BankRow(
            b.name,
            b.role,
            int(b.pdq_threshold),
            bool(b.enabled),
            float(getattr(b, "enabled_ratio", 1.0)),
        )
        for b in banks
    )
    slot = {r.name: i for i, r in enumerate(rows)}
    ids: list[int] = []
    bank: list[int] = []
    enabled: list[bool] = []
    until: list[float] = []
    tcode: list[int] = []
    tnames: dict[str, int] = {}
    signals: list[str] = []
    labels: list[str] = []
    for e in entries:
        s = slot.get(e.bank)
        if e.id is None or s is None:
            continue
        ids.append(int(e.id))
        bank.append(s)
        enabled.append(bool(e.enabled))
        until.append(float(getattr(e, "disabled_until", None) or 0.0))
        tcode.append(tnames.setdefault(e.signal_type, len(tnames)))
        signals.append(e.signal)
        labels.append(e.label or "")
    return BankColumns(
        banks=rows,
        ids=np.asarray(ids, np.int64),
        bank=np.asarray(bank, np.int32),
        enabled=np.asarray(enabled, bool),
        until=np.asarray(until, np.float64),
        type_code=np.asarray(tcode, np.int16),
        type_names=tuple(tnames),
        signals=PackedStrings.pack(signals),
        labels=PackedStrings.pack(labels),
    )


def index_from_columns(cols: BankColumns) -> BankIndex:
    """The ``BankIndex`` of a snapshot, built straight from its arrays."""
    idx = BankIndex()
    for b in cols.banks:
        idx.put_bank(b)
    idx.add_columns(
        ids=cols.ids,
        bank_names=[b.name for b in cols.banks],
        bank=cols.bank,
        enabled=cols.enabled,
        until=cols.until,
        type_names=cols.type_names,
        type_code=cols.type_code,
        signals=cols.signals.take,
        labels=cols.labels.take,
    )
    return idx
