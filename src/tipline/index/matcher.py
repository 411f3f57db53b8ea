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
from tipline.errors import InvalidSignalError
from tipline.index.hamming import HammingIndex, codes_from_hex
from tipline.index.mih import default_index
from tipline.index.prefix import HexPrefixIndex
from tipline.record import ItemRecord, Match
from tipline.signals.types import MODEL_SIGNAL_TYPES, SIGNAL_TYPES
from tipline.signals.vpdq import VpdqFrameIndex, VpdqHash, VpdqMatchOptions, VpdqMatchResult


@dataclass(slots=True)
class _EntryInfo:
    bank: int
    label: str
    signal_type: str


class BankMatcher:
    """``vpdq`` entries match an item's vPDQ frames by the overlap rule of ``vpdq_options``
    (python-threatexchange's defaults: query >= 80%, index >= 0%, frame distance <= 31,
    frame quality >= 50); their ``distance`` is the closest frame pair's."""

    def __init__(
        self,
        banks: Sequence[Bank],
        entries: Iterable[Entry],
        vpdq_options: VpdqMatchOptions | None = None,
    ) -> None:
        self.banks = list(banks)
        self.vpdq_options = vpdq_options or VpdqMatchOptions()
        self.vpdq_index = VpdqFrameIndex(self.vpdq_options)
        bank_index = {b.name: i for i, b in enumerate(self.banks)}
        self._info: dict[int, _EntryInfo] = {}
        self._exact: dict[tuple[str, str], list[int]] = {}
        pdq_ids: list[int] = []
        pdq_hex: list[str] = []
        full: dict[str, tuple[list[int], list[str]]] = {"sha256": ([], []), "autov3": ([], [])}
        for e in entries:
            if not e.enabled or e.bank not in bank_index or e.id is None:
                continue
            self._info[e.id] = _EntryInfo(bank_index[e.bank], e.label, e.signal_type)
            kind = SIGNAL_TYPES[e.signal_type].kind if e.signal_type in SIGNAL_TYPES else "exact"
            if kind == "hamming":
                pdq_ids.append(e.id)
                pdq_hex.append(e.signal)
            elif kind == "vpdq":
                try:
                    self.vpdq_index.add(e.id, VpdqHash.from_te_json(e.signal))
                except InvalidSignalError:
                    continue  # validated on import; a damaged row cannot match anything
            else:
                self._exact.setdefault((e.signal_type, e.signal), []).append(e.id)
                if e.signal_type in full and len(e.signal) == 64:
                    full[e.signal_type][0].append(e.id)
                    full[e.signal_type][1].append(e.signal.lower())
        #: short model hashes cited by images (10/12 hex) find full SHA-256 / AutoV3 entries
        self._prefix = {st: HexPrefixIndex(ids, sigs) for st, (ids, sigs) in full.items()}
        self.index: HammingIndex = default_index(len(pdq_ids))
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
        via = self._model_matches(record, found)
        if record.pdq_usable and self.radius >= 0 and len(self.index):
            queries = record.pdq_dihedral or [record.pdq or ""]
            for ids, dists in self.index.search(codes_from_hex(queries), self.radius):
                for eid, dist in zip(ids.tolist(), dists.tolist(), strict=True):
                    info = self._info[eid]
                    if dist <= self.banks[info.bank].pdq_threshold:
                        found[eid] = min(dist, found.get(eid, dist))
        video: dict[int, VpdqMatchResult] = {}
        if record.vpdq and len(self.vpdq_index):
            try:
                query = VpdqHash.from_strings(record.vpdq)
            except InvalidSignalError:
                query = VpdqHash()
            for eid, res in self.vpdq_index.search(query):
                if res.is_match(self.vpdq_options) and res.best_distance is not None:
                    video[eid] = res
                    found[eid] = min(res.best_distance, found.get(eid, res.best_distance))
        matches = []
        for eid, dist in sorted(found.items(), key=lambda kv: (kv[1], kv[0])):
            info = self._info[eid]
            bank = self.banks[info.bank]
            m = Match(bank.name, eid, info.signal_type, dist, info.label, role=bank.role)
            if eid in via:
                m.via = via[eid]
            if eid in video:
                m.query_match_pct = video[eid].query_pct
                m.index_match_pct = video[eid].index_pct
            matches.append(m)
        _suppress(matches)
        return matches

    def _model_matches(self, record: ItemRecord, found: dict[int, int]) -> dict[int, str]:
        """A model file's own AutoV1/V2/V3, then every model hash its provenance cites.

        Returns entry id -> ``cited_<role>`` for entries found only through a cited hash (an
        image's "Model hash" / "Lora hashes", a LoRA's base model). Hex compares lowercase.
        """
        for st in MODEL_SIGNAL_TYPES:
            value = getattr(record, st, None)
            if value:
                value = value.lower()
                for eid in self._exact.get((st, value), ()):
                    found[eid] = 0
                if st == "autov3":  # Civitai's 12-hex AutoV3 entries
                    for eid in self._exact.get((st, value[:12]), ()):
                        found[eid] = 0
        via: dict[int, str] = {}
        if not record.provenance:
            return via
        from tipline.provenance.models import cited_model_hashes

        for role, h in cited_model_hashes(record.provenance):
            for eid in self._cited(h):
                if eid not in found:
                    found[eid] = 0
                    via[eid] = f"cited_{role}"
        return via

    def _cited(self, h: str) -> list[int]:
        """Entries a cited hash names: 8 hex AutoV1, 10 hex AutoV2 or a SHA-256 prefix, 12 hex
        an AutoV3 (or, for non-safetensors LoRAs, SHA-256) prefix, 64 hex a full hash."""
        n = len(h)
        if n == 8:
            return list(self._exact.get(("autov1", h), ()))
        if n == 10:
            return [*self._exact.get(("autov2", h), ()), *self._prefix["sha256"].lookup(h)]
        if n == 12:
            return [
                *self._exact.get(("autov3", h), ()),
                *self._prefix["autov3"].lookup(h),
                *self._prefix["sha256"].lookup(h),
            ]
        if n == 64:
            return [
                *self._exact.get(("sha256", h), ()),
                *self._exact.get(("autov3", h), ()),
                *self._exact.get(("autov3", h[:12]), ()),
            ]
        return []


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
