"""Signal types: the kinds of hash Tipline computes, stores in banks and matches.

Names follow python-threatexchange where it has one (``pdq``, ``video_md5``) so hash lists move
between the tools unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from tipline.errors import InvalidSignalError

MatchKind = Literal["exact", "hamming"]


@dataclass(frozen=True, slots=True)
class SignalType:
    name: str
    #: exact string equality, or Hamming distance between fixed-width bit strings
    kind: MatchKind
    hex_len: int
    description: str

    def normalise(self, signal: str) -> str:
        """Canonical form (lowercase hex) or InvalidSignalError with a one-line reason."""
        s = signal.strip().lower()
        if len(s) != self.hex_len or not _HEX.fullmatch(s):
            raise InvalidSignalError(
                f"not a valid {self.name} signal (want {self.hex_len} hex characters): "
                f"{signal[:80]!r}"
            )
        return s


_HEX = re.compile(r"[0-9a-f]+")

MD5 = SignalType("md5", "exact", 32, "MD5 of the file bytes")
SHA1 = SignalType("sha1", "exact", 40, "SHA-1 of the file bytes")
SHA256 = SignalType("sha256", "exact", 64, "SHA-256 of the file bytes")
PDQ = SignalType("pdq", "hamming", 64, "PDQ perceptual hash of an image (256 bits)")

SIGNAL_TYPES: dict[str, SignalType] = {t.name: t for t in (MD5, SHA1, SHA256, PDQ)}

#: Names other tools use for the same signal. python-threatexchange calls file MD5 of a video
#: ``video_md5``; the bytes hashed are the same, so they match the same entries.
ALIASES = {"video_md5": "md5", "photo_md5": "md5", "sha-256": "sha256", "sha-1": "sha1"}


def signal_type(name: str) -> SignalType:
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    try:
        return SIGNAL_TYPES[key]
    except KeyError:
        known = ", ".join(sorted(SIGNAL_TYPES))
        raise InvalidSignalError(f"unknown signal type {name!r} (known: {known})") from None


def guess_signal_type(signal: str) -> SignalType | None:
    """For bare hex lines: 32 hex is MD5, 40 is SHA-1; 64 is ambiguous (PDQ or SHA-256)."""
    s = signal.strip().lower()
    if not _HEX.fullmatch(s):
        return None
    return {32: MD5, 40: SHA1}.get(len(s))
