"""Match item signals against the entries of one or more banks.

Cryptographic signals are looked up exactly; PDQ goes through a ``HammingIndex`` searched at the
largest threshold of the banks involved, then filtered by each bank's own threshold.

Ignore banks (known benign) suppress false positives: an alert match is suppressed when the same
item matches an ignore-bank entry of the same signal type at a distance no larger than the alert
match's. Suppressed matches stay in the output, marked, so an analyst can see why.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from tipline.banks.model import Bank, Entry
from tipline.index.hamming import FlatHammingIndex, HammingIndex, codes_from_hex
from tipline.scan.record import ItemRecord, Match
from tipline.signals.types import SIGNAL_TYPES


@dataclass(slots=True)
class _EntryInfo:
    bank: int
    label: str
    signal_type: str


class BankMatcher:
    def __init__(self, banks: Sequence[Bank], entries: Iterable[Entry]) -> None:
        self.banks = list(banks)
        bank_index = {b.name: i for i, b in enumerate(self.banks)}
        self._info: dict[int, _EntryInfo] = {}
        self._exact: dict[tuple[str, str], list[int]] = {}
        pdq_ids: list[int] = []
        pdq_hex: list[str] = []
        for e in entries:
            if not e.enabled or e.bank not in bank_index or e.id is None:
                continue
            self._info[e.id] = _EntryInfo(bank_index[e.bank], e.label, e.signal_type)
            kind = SIGNAL_TYPES[e.signal_type].kind if e.signal_type in SIGNAL_TYPES else "exact"
            if kind == "hamming":
                pdq_ids.append(e.id)
                pdq_hex.append(e.signal)
            else:
                self._exact.setdefault((e.signal_type, e.signal), []).append(e.id)
        self.index: HammingIndex = FlatHammingIndex()
        if pdq_ids:
            self.index.add(np.asarray(pdq_ids, dtype=np.int64), codes_from_hex(pdq_hex))
        self.radius = max((b.pdq_threshold for b in self.banks if b.enabled), default=-1)
        self.size = len(self._info)

    def match(self, record: ItemRecord) -> list[Match]:
        found: dict[int, int] = {}  # entry id -> best distance
        for st in ("md5", "sha1", "sha256"):
            value = getattr(record, st)
            if value:
                for eid in self._exact.get((st, value), ()):
                    found[eid] = 0
        if record.pdq_usable and self.radius >= 0 and len(self.index):
            queries = record.pdq_dihedral or [record.pdq or ""]
            for ids, dists in self.index.search(codes_from_hex(queries), self.radius):
                for eid, dist in zip(ids.tolist(), dists.tolist(), strict=True):
                    info = self._info[eid]
                    if dist <= self.banks[info.bank].pdq_threshold:
                        found[eid] = min(dist, found.get(eid, dist))
        matches = []
        for eid, dist in sorted(found.items(), key=lambda kv: (kv[1], kv[0])):
            info = self._info[eid]
            bank = self.banks[info.bank]
            matches.append(
                Match(bank.name, eid, info.signal_type, dist, info.label, role=bank.role)
            )
        _suppress(matches)
        return matches


def _suppress(matches: list[Match]) -> None:
    ignores = [m for m in matches if m.role == "ignore"]
    if not ignores:
        return
    for m in matches:
        if m.role != "alert":
            continue
        for ig in ignores:
            if ig.signal_type == m.signal_type and ig.distance <= m.distance:
                m.suppressed_by = ig.entry_id
                break
