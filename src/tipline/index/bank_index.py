"""One bank index: what `tipline scan` and the service both match with.

``BankIndex`` holds the entries of any number of banks, one ``SignalIndex`` per signal type
(``tipline.index.signal_index``), and per bank its role (alert / ignore), PDQ threshold and
enabled flag. It is updated in place (add, remove, enable, disable, bank changes), so the
service keeps one live copy, and built in bulk for a scan.

Per-entry state is columnar (numpy arrays indexed by entry id: bank slot, enabled flag, signal
type), so filtering the hits of a lookup is vectorised and a large bank costs a few bytes per
entry beyond its signal index.

Matching an item record (``match``): every registered signal type's queries for the record
(its own hashes; PDQ with all 8 dihedral variants when the scan computed them and its extra
query hashes, ``record.pdq_variants``, a match found only through one of those saying so in
its ``via``; vPDQ frames),
then every model hash its provenance cites ("Model hash", "Lora hashes", a LoRA's base model),
each found through the types that answer a hash of that length (``SignalType.cited_queries``).

HMA's per-entry and per-bank switches are honoured here too: an entry disabled until a time
(``disabled_until``, HMA's future ``disable_until_ts``) is left out until that time passes and
matches again by itself; a bank's ``enabled_ratio`` below 1.0 is a coin flip per query (HMA's
``matching_enabled_ratio``): the bank is searched when ``ratio >= coinflip``, the coin flip
drawn by the caller (the HMA routes, seeded by the request's ``seed``) or, in ``match``, seeded
by the item's SHA-256, so one item always gets the same answer. Banks at 1.0 (the default) are
always searched, so scans are unchanged by it.

Ignore banks (known benign) suppress false positives: an alert match is suppressed when the same
item matches an ignore-bank entry of the same signal type at a distance no larger than the alert
match's. Suppressed matches stay in the output, marked, so an analyst can see why.
"""

from __future__ import annotations

import itertools
import logging
import operator
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from tipline.findings import cited_model_hashes
from tipline.index.signal_index import IndexHits, SignalIndex, new_index
from tipline.record import ItemRecord, Match
from tipline.signals.types import SignalType, registered, signal_type

log = logging.getLogger("tipline.index")


class BankLike(Protocol):
    """What the index needs of a bank (``tipline.banks.bank.Bank`` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def pdq_threshold(self) -> int: ...
    @property
    def enabled(self) -> bool: ...


class EntryLike(Protocol):
    """What the index needs of a bank entry (``tipline.banks.bank.Entry`` is one)."""

    @property
    def id(self) -> int | None: ...
    @property
    def bank(self) -> str: ...
    @property
    def signal_type(self) -> str: ...
    @property
    def signal(self) -> str: ...
    @property
    def label(self) -> str: ...
    @property
    def enabled(self) -> bool: ...


@dataclass(slots=True)
class Hit:
    """One entry found for a signal."""

    entry_id: int
    bank: str
    signal_type: str
    distance: int
    label: str


class BankIndex:
    """Not thread-safe by itself: the service serialises access (``MatchService``)."""

    def __init__(self, grows: bool = False) -> None:
        #: entries keep arriving one by one (the service): pick index structures that scale,
        #: not the one that suits the first add's size
        self._grows = grows
        # per entry id (0 in _slot: no such entry)
        self._slot = np.zeros(0, np.int32)
        self._on = np.zeros(0, bool)
        #: disabled until this epoch time (0: no such time)
        self._until = np.zeros(0, np.float64)
        self._tcode = np.zeros(0, np.int16)
        self._labels: dict[int, str] = {}
        # per bank slot (slot 0 is "none")
        self._slots: dict[str, int] = {}
        self._names: list[str] = [""]
        self._roles: list[str] = ["alert"]
        self._bank_on = np.zeros(1, bool)
        self._thr = np.full(1, -1, np.int32)
        #: the bank's threshold whether or not it is enabled (-1: no such bank)
        self._thr_all = np.full(1, -1, np.int32)
        self._ratio = np.ones(1, np.float64)
        # per signal type
        self._types: list[SignalType] = []
        self._tcodes: dict[str, int] = {}
        self._indexes: dict[str, SignalIndex] = {}

    # ------------------------------------------------------------------ building

    @classmethod
    def build(
        cls, banks: Iterable[BankLike], entries: Iterable[EntryLike], grows: bool = False
    ) -> BankIndex:
        """A full index in one pass (a scan; the service at start-up, with ``grows``)."""
        idx = cls(grows)
        for b in banks:
            idx.put_bank(b)
        idx.add(entries)
        return idx

    def put_bank(self, bank: BankLike) -> None:
        """Add a bank or change its role, threshold or enabled flag."""
        s = self._slot_for(bank.name)
        self._roles[s] = bank.role
        self._bank_on[s] = bool(bank.enabled)
        self._thr[s] = int(bank.pdq_threshold) if bank.enabled else -1
        self._thr_all[s] = int(bank.pdq_threshold)
        self._ratio[s] = float(getattr(bank, "enabled_ratio", 1.0))

    def rename_bank(self, old: str, new: str) -> None:
        """A bank's new name (its entries stay where they are)."""
        s = self._slots.pop(old, None)
        if s is None or new in self._slots:
            if s is not None:
                self._slots[old] = s
            return
        self._slots[new] = s
        self._names[s] = new

    def delete_bank(self, name: str) -> None:
        s = self._slots.get(name)
        if s is None:
            return
        self._bank_on[s] = False
        self._thr[s] = -1
        self._thr_all[s] = -1
        ids = np.nonzero(self._slot == s)[0]
        self._drop(ids)

    def banks(self) -> list[str]:
        return [n for n, s in self._slots.items() if self._bank_on[s]]

    def _slot_for(self, name: str) -> int:
        s = self._slots.get(name)
        if s is None:
            s = self._slots[name] = len(self._names)
            self._names.append(name)
            self._roles.append("alert")
            self._bank_on = np.append(self._bank_on, False)
            self._thr = np.append(self._thr, np.int32(-1))
            self._thr_all = np.append(self._thr_all, np.int32(-1))
            self._ratio = np.append(self._ratio, 1.0)
        return s

    def _type_code(self, st: SignalType) -> int:
        code = self._tcodes.get(st.name)
        if code is None:
            code = self._tcodes[st.name] = len(self._types)
            self._types.append(st)
        return code

    def _grow(self, top: int) -> None:
        n = len(self._slot)
        if top < n:
            return
        size = max(top + 1, 2 * n, 1024)
        for name, dtype in (
            ("_slot", np.int32),
            ("_on", bool),
            ("_until", np.float64),
            ("_tcode", np.int16),
        ):
            old = getattr(self, name)
            grown = np.zeros(size, dtype)
            grown[:n] = old
            setattr(self, name, grown)

    # ------------------------------------------------------------------ entries

    def add(self, entries: Iterable[EntryLike]) -> int:
        """Index entries (normalised signals); an id already indexed is left as it is.
        Returns how many were added."""
        by_type: dict[str, tuple[list[int], list[str]]] = {}
        rows: list[tuple[int, int, bool, str, float]] = []
        types = registered()
        for e in entries:
            eid = e.id
            if eid is None or (eid < len(self._slot) and self._slot[eid]):
                continue
            st = types.get(e.signal_type)
            if st is None:
                log.warning("entry %s has unknown signal type %r; not indexed", eid, e.signal_type)
                continue
            ids, sigs = by_type.setdefault(st.name, ([], []))
            ids.append(eid)
            sigs.append(e.signal)
            until = getattr(e, "disabled_until", None) or 0.0
            rows.append((eid, self._slot_for(e.bank), bool(e.enabled), e.label, until))
        if not rows:
            return 0
        self._grow(max(r[0] for r in rows))
        for st_name, (ids, sigs) in by_type.items():
            st = types[st_name]
            index = self._indexes.get(st_name)
            if index is None:
                index = self._indexes[st_name] = new_index(
                    st.index, None if self._grows else len(ids)
                )
            index.add(ids, sigs)
            self._tcode[np.asarray(ids, np.int64)] = self._type_code(st)
        arr = np.asarray([r[0] for r in rows], np.int64)
        self._slot[arr] = np.asarray([r[1] for r in rows], np.int32)
        self._on[arr] = np.asarray([r[2] for r in rows], bool)
        self._until[arr] = np.asarray([r[4] for r in rows], np.float64)
        for eid, _, _, label, _ in rows:
            if label:
                self._labels[eid] = label
        return len(rows)

    def add_rows(self, rows: Sequence[Sequence[Any]]) -> int:
        """``add`` for change-journal rows ``[id, bank, signal_type, signal, label, enabled,
        disabled_until]`` (the last optional), column by column rather than an object per row:
        what a serving process follows a large fetch with. The same entries end up indexed as
        with ``add`` (an id already indexed, or seen earlier in ``rows``, is left as it is)."""
        n = len(rows)
        if not n:
            return 0
        cols = list(itertools.zip_longest(*rows))
        if len(cols) < 6:
            raise ValueError("a journal entry row needs at least 6 fields")
        ids = np.asarray(cols[0], dtype=np.int64)
        # the first row of each id, not indexed yet
        _, first = np.unique(ids, return_index=True)
        keep = np.zeros(n, bool)
        keep[first] = True
        keep &= ids >= 0
        known = np.flatnonzero(keep & (ids < len(self._slot)))
        if len(known):
            keep[known[self._slot[ids[known]] > 0]] = False
        types = registered()
        type_col = cols[2]
        names = list(dict.fromkeys(_pick(type_col, np.flatnonzero(keep).tolist())))
        codes = {name: c for c, name in enumerate(names)}
        tcode = np.fromiter(map(codes.get, type_col, itertools.repeat(-1)), np.int32, n)
        for c, name in enumerate(names):
            if not isinstance(name, str) or name not in types:
                sel = keep & (tcode == c)
                log.warning(
                    "%d entries have unknown signal type %r; not indexed",
                    int(sel.sum()),
                    str(name)[:40],
                )
                keep &= ~sel
        rows_kept = np.flatnonzero(keep)
        k = len(rows_kept)
        if not k:
            return 0
        kept = rows_kept.tolist()
        banks = _pick(cols[1], kept)
        bank_slots = {b: self._slot_for(str(b)) for b in dict.fromkeys(banks)}
        slot = np.fromiter(map(bank_slots.__getitem__, banks), np.int32, k)
        enabled = np.fromiter(map(bool, _pick(cols[5], kept)), bool, k)
        until_col = _pick(cols[6], kept) if len(cols) > 6 else ()
        until = (
            np.fromiter((float(u or 0.0) for u in until_col), np.float64, k)
            if any(until_col)
            else np.zeros(k, np.float64)
        )
        eids = ids[rows_kept]
        self._grow(int(eids.max()))
        sig_col, kcode = cols[3], tcode[rows_kept]
        for c, name in enumerate(names):
            st = types.get(name) if isinstance(name, str) else None
            if st is None:
                continue
            sel = np.flatnonzero(kcode == c)
            if not len(sel):
                continue
            index = self._indexes.get(st.name)
            if index is None:
                index = self._indexes[st.name] = new_index(
                    st.index, None if self._grows else len(sel)
                )
            index.add(eids[sel].tolist(), _pick(sig_col, rows_kept[sel].tolist()))
            self._tcode[eids[sel]] = self._type_code(st)
        self._slot[eids] = slot
        self._on[eids] = enabled
        self._until[eids] = until
        labels = _pick(cols[4], kept)
        if any(labels):
            self._labels.update(
                (eid, str(label)) for eid, label in zip(eids.tolist(), labels, strict=True) if label
            )
        return k

    def add_columns(
        self,
        *,
        ids: npt.NDArray[np.int64],
        bank_names: Sequence[str],
        bank: npt.NDArray[np.int32],
        enabled: npt.NDArray[np.bool_],
        until: npt.NDArray[np.float64],
        type_names: Sequence[str],
        type_code: npt.NDArray[np.int16],
        signals: Callable[[npt.NDArray[np.int64]], list[str]],
        labels: Callable[[npt.NDArray[np.int64]], list[str]],
    ) -> int:
        """Index a columnar entry table (``tipline.index.columns``) without a Python object
        per entry; ``signals``/``labels`` give the strings of the rows asked for."""
        if not len(ids):
            return 0
        fresh = ~np.isin(ids, np.nonzero(self._slot)[0]) if len(self._slot) else None
        rows = np.arange(len(ids), dtype=np.int64)
        if fresh is not None:
            rows = rows[fresh]
        types = registered()
        keep = np.zeros(len(ids), bool)
        for code, name in enumerate(type_names):
            st = types.get(name)
            sel = rows[type_code[rows] == code]
            if not len(sel):
                continue
            if st is None:
                log.warning("%d entries have unknown signal type %r; not indexed", len(sel), name)
                continue
            keep[sel] = True
        rows = np.nonzero(keep)[0].astype(np.int64)
        if not len(rows):
            return 0
        slots = np.asarray([self._slot_for(n) for n in bank_names], np.int32)
        self._grow(int(ids[rows].max()))
        for code, name in enumerate(type_names):
            sel = rows[type_code[rows] == code]
            if not len(sel):
                continue
            st = types[name]
            index = self._indexes.get(st.name)
            if index is None:
                index = self._indexes[st.name] = new_index(
                    st.index, None if self._grows else len(sel)
                )
            index.add(ids[sel].tolist(), signals(sel))
            self._tcode[ids[sel]] = self._type_code(st)
        eids = ids[rows]
        self._slot[eids] = slots[bank[rows]]
        self._on[eids] = enabled[rows]
        self._until[eids] = until[rows]
        for eid, label in zip(eids.tolist(), labels(rows), strict=True):
            if label:
                self._labels[eid] = label
        return len(rows)

    def remove(self, ids: Iterable[int], bank: str | None = None) -> None:
        """Drop entries (only those of ``bank`` when given)."""
        arr = self._known(ids)
        if bank is not None:
            arr = arr[self._slot[arr] == self._slots.get(bank, -1)]
        self._drop(arr)

    def set_enabled(
        self,
        ids: Iterable[int],
        enabled: bool,
        bank: str | None = None,
        until: float | None = None,
    ) -> None:
        """Enable or disable entries; ``until``: disabled until that epoch time, then enabled
        by itself (with ``enabled`` True)."""
        arr = self._known(ids)
        if bank is not None:
            arr = arr[self._slot[arr] == self._slots.get(bank, -1)]
        self._on[arr] = enabled
        self._until[arr] = until or 0.0

    def contains(self, entry_id: int) -> bool:
        return 0 <= entry_id < len(self._slot) and bool(self._slot[entry_id])

    def bank_of(self, entry_id: int) -> str | None:
        return self._names[int(self._slot[entry_id])] if self.contains(entry_id) else None

    def _known(self, ids: Iterable[int]) -> npt.NDArray[np.int64]:
        arr = np.asarray([int(i) for i in ids], np.int64)
        arr = arr[(arr >= 0) & (arr < len(self._slot))]
        return arr[self._slot[arr] > 0]

    def _drop(self, ids: npt.NDArray[np.int64]) -> None:
        if not len(ids):
            return
        codes = self._tcode[ids]
        for code in np.unique(codes).tolist():
            st = self._types[code]
            index = self._indexes.get(st.name)
            if index is not None:
                index.remove(ids[codes == code].tolist())
        self._slot[ids] = 0
        self._on[ids] = False
        self._until[ids] = 0.0
        for i in ids.tolist():
            self._labels.pop(i, None)

    # ------------------------------------------------------------------ queries

    def type_index(self, name: str) -> SignalIndex | None:
        return self._indexes.get(name)

    def radius(self, banks: set[str] | None = None, all_banks: bool = False) -> int:
        """Largest PDQ threshold of the enabled banks asked for (-1: none); ``all_banks``:
        of every bank, enabled or not."""
        thr = self._thr_all if all_banks else self._thr
        if banks is None:
            return int(thr.max()) if len(thr) else -1
        slots = [self._slots[b] for b in banks if b in self._slots]
        return int(thr[slots].max()) if slots else -1

    def _allowed(
        self,
        banks: set[str] | None,
        coinflip: float | None = None,
        all_banks: bool = False,
    ) -> npt.NDArray[np.bool_]:
        """Bank slots searched: the enabled banks (or ``all_banks``) of ``banks`` (None: all),
        those whose ratio is below ``coinflip`` left out."""
        on = self._thr_all >= 0 if all_banks else self._bank_on
        if coinflip is not None:
            on = on & (self._ratio >= coinflip)
        if banks is None:
            return on
        mask = np.zeros(len(on), bool)
        for b in banks:
            s = self._slots.get(b)
            if s is not None:
                mask[s] = on[s]
        return mask

    def _query(
        self,
        st: SignalType,
        values: Sequence[str],
        allowed: npt.NDArray[np.bool_],
        radius: int,
        all_banks: bool = False,
        all_entries: bool = False,
    ) -> tuple[IndexHits, npt.NDArray[np.int32]]:
        """Hits of ``st`` for ``values`` kept by entry and bank state (and bank threshold);
        returns the hits and their bank slots."""
        index = self._indexes.get(st.name)
        if index is None or not values:
            return IndexHits.empty(), np.zeros(0, np.int32)
        # PDQ: the banks' thresholds; a fuzzy type with its own threshold (TLSH): that one
        hits = index.query(values, radius if st.uses_bank_threshold else st.default_threshold)
        return self._keep(st, hits, allowed, all_banks, all_entries)

    def _keep(
        self,
        st: SignalType,
        hits: IndexHits,
        allowed: npt.NDArray[np.bool_],
        all_banks: bool = False,
        all_entries: bool = False,
    ) -> tuple[IndexHits, npt.NDArray[np.int32]]:
        ids, dists = hits.ids, hits.distances
        if not len(ids):
            return hits, np.zeros(0, np.int32)
        slot = self._slot[ids]
        if all_entries:
            on = slot > 0
        else:
            on = self._on[ids]
            until = self._until[ids]
            if until.any():
                on = on & (until <= time.time())
        if st.uses_bank_threshold:
            # slot 0 (gone) and disabled banks have threshold -1: nothing is within it
            thr = self._thr_all if all_banks else self._thr
            keep = (dists <= thr[slot]) & on
            if allowed is not self._bank_on:
                keep &= allowed[slot]
        else:
            keep = allowed[slot] & on  # allowed[0] is False: slot 0 is "gone"
        return IndexHits(ids[keep], dists[keep], hits.details), slot[keep]

    def lookup(
        self,
        st_name: str | SignalType,
        value: str,
        banks: set[str] | None = None,
        labels: bool = True,
        *,
        coinflip: float | None = None,
        all_banks: bool = False,
        all_entries: bool = False,
    ) -> list[Hit]:
        """Enabled entries of enabled banks matching a normalised ``value`` (PDQ within each
        bank's threshold), closest first, then by id. ``labels=False`` leaves labels empty.

        ``coinflip``: leave out banks whose ``enabled_ratio`` is below it (HMA's lookup).
        ``all_banks``: disabled banks too (HMA's ``bypass_coinflip``); ``all_entries`` as well:
        disabled entries too (HMA's ``raw_lookup``, which checks no enabled state)."""
        st = st_name if isinstance(st_name, SignalType) else signal_type(st_name)
        all_banks = all_banks or all_entries
        hits, slot = self._query(
            st,
            [value],
            self._allowed(banks, coinflip, all_banks),
            self.radius(banks, all_banks),
            all_banks,
            all_entries,
        )
        if not len(hits.ids):
            return []
        order = np.lexsort((hits.ids, hits.distances)) if len(hits.ids) > 1 else [0]
        names, lab = self._names, self._labels
        return [
            Hit(eid, names[sl], st.name, dist, lab.get(eid, "") if labels else "")
            for eid, dist, sl in zip(
                hits.ids[order].tolist(),
                hits.distances[order].tolist(),
                slot[order].tolist(),
                strict=True,
            )
        ]

    def match(self, record: ItemRecord, banks: set[str] | None = None) -> list[Match]:
        """Every match of a hashed item, closest first, with the ignore-bank rule applied.
        Banks with an ``enabled_ratio`` below 1 take part by a coin flip seeded by the item's
        SHA-256 (the same item always gets the same answer)."""
        coinflip = None
        if (self._ratio[self._bank_on] < 1.0).any():
            coinflip = random.Random(record.sha256 or None).random()
        allowed = self._allowed(banks, coinflip)
        radius = self.radius(banks)
        types = registered()
        found: dict[int, tuple[int, str]] = {}  # entry id -> (distance, signal type)
        details: dict[int, tuple[float, float]] = {}
        derived: dict[int, str | None] = {}  # entry id -> query group that found it closest
        for name in self._indexes:
            st = types.get(name)
            if st is None:
                continue
            # the item's own signal first: an entry as close through a derived query hash
            # (a rotation, a trimmed or cropped copy) is the item's own match
            for group, values in st.record_query_groups(record):
                hits, _ = self._query(st, values, allowed, radius)
                for eid, dist in zip(hits.ids.tolist(), hits.distances.tolist(), strict=True):
                    if eid not in found or dist < found[eid][0]:
                        found[eid] = (dist, name)
                        derived[eid] = group
                if hits.details:
                    details.update(hits.details)
        via = self._cited(record, allowed, found, types)
        for eid, group in derived.items():
            if group is not None:
                via.setdefault(eid, group)
        matches = []
        for eid, (dist, st_name) in sorted(found.items(), key=lambda kv: (kv[1][0], kv[0])):
            s = int(self._slot[eid])
            m = Match(
                self._names[s], eid, st_name, dist, self._labels.get(eid, ""), role=self._roles[s]
            )
            m.via = via.get(eid)
            if eid in details:
                m.query_match_pct, m.index_match_pct = details[eid]
            matches.append(m)
        suppress(matches)
        return matches

    def _cited(
        self,
        record: ItemRecord,
        allowed: npt.NDArray[np.bool_],
        found: dict[int, tuple[int, str]],
        types: dict[str, SignalType],
    ) -> dict[int, str]:
        """Entries found only through a model hash the item's provenance cites: entry id ->
        ``cited_<role>``. Hex compares lowercase."""
        via: dict[int, str] = {}
        if not record.provenance:
            return via
        for role, h in cited_model_hashes(record.provenance):
            for name, index in self._indexes.items():
                st = types.get(name)
                if st is None:
                    continue
                for mode, value in st.cited_queries(h):
                    if mode == "prefix":
                        ids = np.asarray(index.prefix(value), np.int64)
                        hits = IndexHits(ids, np.zeros(len(ids), np.int32))
                    else:
                        hits = index.query([value], 0)
                    kept, _ = self._keep(st, hits, allowed)
                    for eid in kept.ids.tolist():
                        if eid not in found:
                            found[eid] = (0, name)
                            via[eid] = f"cited_{role}"
        return via

    # ------------------------------------------------------------------ status

    def __len__(self) -> int:
        return int(np.count_nonzero((self._slot > 0) & self._on))

    @property
    def size(self) -> int:
        return len(self)

    def by_signal_type(self, all_entries: bool = False) -> dict[str, int]:
        """Entries per signal type: enabled ones (or ``all_entries``, disabled ones too)."""
        live = self._slot > 0 if all_entries else (self._slot > 0) & self._on
        counts = np.bincount(self._tcode[live], minlength=len(self._types))
        return {st.name: int(c) for st, c in zip(self._types, counts.tolist(), strict=True) if c}

    def index_size(self) -> int:
        return sum(len(i) for i in self._indexes.values())


def _pick(col: tuple[Any, ...], rows: list[int]) -> tuple[Any, ...]:
    """``col``'s values at ``rows`` (ascending, distinct), picked in C."""
    if len(rows) == len(col):
        return col
    if len(rows) == 1:
        return (col[rows[0]],)
    return operator.itemgetter(*rows)(col) if rows else ()


def suppress(matches: list[Match]) -> None:
    """The ignore-bank rule: an alert match equalled or beaten by an ignore-bank match of the
    same signal type is marked ``suppressed_by`` that entry."""
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
