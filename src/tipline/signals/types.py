"""Signal types: the kinds of hash Tipline computes, stores in banks and matches.

Names follow python-threatexchange where it has one (``pdq``, ``video_md5``) so hash lists move
between the tools unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from tipline.errors import InvalidSignalError

MatchKind = Literal["exact", "hamming", "vpdq"]


@dataclass(frozen=True, slots=True)
class SignalType:
    name: str
    #: exact string equality, Hamming distance between fixed-width bit strings, or vPDQ frame
    #: overlap (``tipline.signals.vpdq``)
    kind: MatchKind
    hex_len: int
    description: str
    #: shorter forms also accepted (Civitai shows AutoV3 as its first 12 hex)
    short_lens: tuple[int, ...] = ()

    def normalise(self, signal: str) -> str:
        """Canonical form (lowercase hex) or InvalidSignalError with a one-line reason."""
        if self.kind == "vpdq":
            from tipline.signals.vpdq import normalise_signal

            return normalise_signal(signal)
        s = signal.strip().lower()
        if (len(s) != self.hex_len and len(s) not in self.short_lens) or not _HEX.fullmatch(s):
            raise InvalidSignalError(
                f"not a valid {self.name} signal (want "
                f"{' or '.join(str(n) for n in (self.hex_len, *self.short_lens))} hex characters): "
                f"{signal[:80]!r}"
            )
        return s


_HEX = re.compile(r"[0-9a-f]+")

MD5 = SignalType("md5", "exact", 32, "MD5 of the file bytes")
SHA1 = SignalType("sha1", "exact", 40, "SHA-1 of the file bytes")
SHA256 = SignalType("sha256", "exact", 64, "SHA-256 of the file bytes")
PDQ = SignalType("pdq", "hamming", 64, "PDQ perceptual hash of an image (256 bits)")
VPDQ = SignalType(
    "vpdq", "vpdq", 0, "vPDQ video hash: JSON list of 'pdq_hex,quality,timestamp' frames"
)
# Model files (AI checkpoints and LoRAs; see tipline.provenance.models and ai-provenance.md).
AUTOV1 = SignalType(
    "autov1", "exact", 8, "A1111 legacy model hash: sha256(file[1 MiB:+64 KiB])[:8]"
)
AUTOV2 = SignalType("autov2", "exact", 10, "A1111 model hash: first 10 hex of the file's SHA-256")
AUTOV3 = SignalType(
    "autov3",
    "exact",
    64,
    "kohya/addnet hash: SHA-256 of a safetensors file's tensor data (metadata edits keep it); "
    "Civitai's 12-hex form accepted",
    short_lens=(12,),
)
MODEL_SIGNAL_TYPES = ("autov1", "autov2", "autov3")

SIGNAL_TYPES: dict[str, SignalType] = {
    t.name: t for t in (MD5, SHA1, SHA256, PDQ, VPDQ, AUTOV1, AUTOV2, AUTOV3)
}

#: Names other tools use for the same signal. python-threatexchange calls file MD5 of a video
#: ``video_md5``; the bytes hashed are the same, so they match the same entries.
ALIASES = {
    "video_md5": "md5",
    "photo_md5": "md5",
    "sha-256": "sha256",
    "sha-1": "sha1",
    "addnet": "autov3",
}


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
