"""Prefix lookups of full-length hex signals (SHA-256, AutoV3) by their short forms.

AUTOMATIC1111 cites a checkpoint by the first 10 hex of its SHA-256 ("Model hash", AutoV2) and a
LoRA by the first 12 hex of its AutoV3 (or SHA-256) ("Lora hashes"). A bank may hold only the full
64-hex hash. This index keeps the first 64 bits of every full signal as a sorted ``uint64`` array
(16 bytes per entry with its id, shared copy-on-write by the scan workers), so a short hash of up
to 16 hex finds every entry that starts with it by binary search.
"""

from __future__ import annotations

import numpy as np


class HexPrefixIndex:
    def __init__(self, ids: list[int], signals: list[str]) -> None:
        if len(ids) != len(signals):
            raise ValueError("ids and signals differ in length")
        if signals:
            raw = bytes.fromhex("".join(s[:16].ljust(16, "0") for s in signals))
            keys = np.frombuffer(raw, dtype=">u8").astype(np.uint64)
        else:
            keys = np.zeros(0, dtype=np.uint64)
        order = np.argsort(keys, kind="stable")
        self._keys = keys[order]
        self._ids = np.asarray(ids, dtype=np.int64)[order]

    def __len__(self) -> int:
        return int(self._keys.shape[0])

    def lookup(self, prefix: str) -> list[int]:
        """Ids of the entries whose signal starts with ``prefix`` (1 to 16 lowercase hex)."""
        n = len(prefix)
        if not 1 <= n <= 16 or not len(self):
            return []
        try:
            p = int(prefix, 16)
        except ValueError:
            return []
        shift = 64 - 4 * n
        lo = p << shift
        hi = ((p + 1) << shift) - 1
        i = int(np.searchsorted(self._keys, np.uint64(lo), side="left"))
        j = int(np.searchsorted(self._keys, np.uint64(hi), side="right"))
        return [int(x) for x in self._ids[i:j]]
