"""TLSH: a fuzzy hash of text, so a known guide is found again when re-posted with small edits.

TLSH (Trend Micro's locality-sensitive hash, ``py-tlsh``) turns >= 50 bytes of varied input into
a 72-character digest: ``T1``, a 3-byte header (checksum, length, quartile ratios) and a 32-byte
body (128 buckets, 2 bits each). Similar inputs get digests at a small distance.

Tipline follows python-threatexchange's text TLSH signal (``TextTLSHSignal``, named
``text_tlsh`` there; ``tlsh`` here, ``text_tlsh`` is an alias) so hash lists move between the
tools unchanged:

* the canonical signal is ``T1`` and 70 upper-case hex (what py-tlsh prints and python-
  threatexchange validates); lower case and the prefix-less 70-hex form of TLSH 3.x are
  accepted on import;
* the distance is ``tlsh.diffxlen`` (the length component left out, as python-threatexchange
  compares), a match is a distance <= 30 (its ``TLSH_CONFIDENT_MATCH_THRESHOLD``);
* the text hashed is normalised first (``normalise_text``): Unicode NFKC, case folded, every
  run of white space one space. A re-flowed or re-cased copy hashes the same; the bytes of the
  file are covered by its SHA-256/MD5.

Input shorter than 50 bytes, or without enough variety (TLSH answers ``TNULL``), has no TLSH:
``hash_text`` says so in ``TlshResult.reason`` instead of raising.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import tlsh

from tipline.errors import InvalidSignalError

#: TLSH needs at least this many bytes of input
MIN_BYTES = 50
#: python-threatexchange's TLSH_CONFIDENT_MATCH_THRESHOLD
DEFAULT_THRESHOLD = 30
#: hex characters after the "T1" version prefix (3 header bytes, 32 body bytes)
HEX_LEN = 70
#: the body (bucket) part of a digest: hex offset after "T1" and the 3 header bytes
BODY_OFFSET = 2 + 6

_HEX70 = re.compile(r"[0-9A-F]{70}")
_SPACE = re.compile(r"\s+")


def normalise_signal(signal: str) -> str:
    """Canonical ``T1`` + 70 upper-case hex, or InvalidSignalError with a one-line reason."""
    s = signal.strip().upper()
    if len(s) == HEX_LEN + 2 and s.startswith("T1"):
        body = s[2:]
    elif len(s) == HEX_LEN:
        body = s  # TLSH 3.x printed no version prefix
    else:
        body = ""
    if not _HEX70.fullmatch(body):
        raise InvalidSignalError(
            f"not a valid tlsh signal (want 'T1' and 70 hex characters, as py-tlsh prints): "
            f"{signal[:80]!r}"
        )
    return "T1" + body


def distance(a: str, b: str) -> int:
    """python-threatexchange's TLSH comparison: ``tlsh.diffxlen`` of two normalised signals."""
    return int(tlsh.diffxlen(a, b))


def normalise_text(text: str) -> str:
    """What is hashed: NFKC, case folded, white space runs as one space, trimmed."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


@dataclass(frozen=True, slots=True)
class TlshResult:
    """A TLSH of some text, or why there is none (``signal`` None and ``reason`` set)."""

    signal: str | None
    reason: str | None = None
    #: bytes hashed (UTF-8 of the normalised text)
    length: int = 0


def hash_bytes(data: bytes) -> TlshResult:
    """TLSH of raw bytes; too short or too uniform input gives a reason, not an exception."""
    if len(data) < MIN_BYTES:
        return TlshResult(
            None, f"too short for TLSH: {len(data)} bytes, it needs at least {MIN_BYTES}", len(data)
        )
    digest = str(tlsh.hash(data))
    if digest == "TNULL" or not digest:
        return TlshResult(None, "not enough variety in the text for TLSH", len(data))
    return TlshResult(normalise_signal(digest), None, len(data))


def hash_text(text: str) -> TlshResult:
    """TLSH of ``normalise_text(text)`` (the form banks of guides are built with)."""
    return hash_bytes(normalise_text(text).encode("utf-8"))
