"""vPDQ: video hashing as a list of PDQ frame hashes, and matching by frame overlap.

A vPDQ hash is a list of frames ``(pdq hex, quality, timestamp seconds)``, sampled about once a
second (see ``tipline.media.video`` for the two sampling modes). python-threatexchange's
``vpdq`` signal type serialises it as a JSON list of ``"<pdq hex>,<quality>,<timestamp>"``
strings, the timestamp written with Python's ``:.3`` format (three significant digits: ``1.0``,
``12.5``, ``1.23e+02``); ``VpdqHash.to_te_json`` writes exactly that string, so a video hashed
here in reference mode gives the very signal string python-threatexchange and HMA give, and
``VpdqHash.from_te_json`` reads any float spelling.

Matching (python-threatexchange's ``match_VPDQ_hash_brute``): in each hash drop frames whose
PDQ string was seen before in that hash, then frames with quality < 50; a query frame "matches"
when some frame of the other hash is within Hamming distance 31. ``query %`` is the share of
the query's frames that match the indexed hash, ``index %`` the share of the indexed hash's
frames matched by the query. The defaults are python-threatexchange's: a match needs
query % >= 80 and index % >= 0. So a clip cut from a banked video matches it (its frames are
all in the banked video), but a long video that merely contains a banked clip does not (most
of its frames are not in the bank); ``VpdqMatchOptions(query_pct=0, index_pct=80)`` finds
those instead, and raising ``index_pct`` demands that most of the banked video is present.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tipline.errors import InvalidSignalError
from tipline.signals.pdq import PDQ_HEX_LEN, PdqHash, buffer_from_luma, hash_from_buffer

QUALITY_THRESHOLD = 50
DISTANCE_THRESHOLD = 31
QUERY_MATCH_THRESHOLD_PERCENT = 80.0
INDEX_MATCH_THRESHOLD_PERCENT = 0.0
#: Frames accepted in one vpdq signal read from a hash list (a 1 fps hash of ~28 hours).
MAX_SIGNAL_FRAMES = 100_000

_HEXDIGITS = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class VpdqFrame:
    pdq_hex: str
    quality: int
    timestamp: float

    def te_str(self) -> str:
        """python-threatexchange's ``VpdqCompactFeature.__str__``."""
        return f"{self.pdq_hex},{self.quality},{float(self.timestamp):.3}"

    def precise_str(self) -> str:
        """Same fields, timestamp to the millisecond (what scan records carry)."""
        return f"{self.pdq_hex},{self.quality},{float(self.timestamp):.3f}"

    @classmethod
    def parse(cls, text: object, where: str = "") -> VpdqFrame:
        """Read ``"<64 hex>,<quality 0..100>,<timestamp >= 0>"``; InvalidSignalError if not."""
        at = f"{where}: " if where else "vpdq frame: "
        if not isinstance(text, str):
            raise InvalidSignalError(f"{at}must be a string, got {type(text).__name__}")
        parts = text.split(",")
        if len(parts) != 3:
            raise InvalidSignalError(f"{at}must be 'pdq_hex,quality,timestamp', got {text[:90]!r}")
        hex_, qual, ts = (p.strip() for p in parts)
        hex_ = hex_.lower()
        if len(hex_) != PDQ_HEX_LEN or not set(hex_) <= _HEXDIGITS:
            raise InvalidSignalError(f"{at}PDQ is not 64 hex characters: {hex_[:80]!r}")
        if not qual.isdigit() or not 0 <= int(qual) <= 100:
            raise InvalidSignalError(f"{at}quality must be 0..100, got {qual[:20]!r}")
        try:
            t = float(ts)
        except ValueError:
            raise InvalidSignalError(f"{at}timestamp is not a number: {ts[:30]!r}") from None
        if not math.isfinite(t) or t < 0:
            raise InvalidSignalError(f"{at}timestamp must be >= 0, got {ts[:30]!r}")
        return cls(hex_, int(qual), t)


@dataclass(frozen=True, slots=True)
class VpdqHash:
    frames: tuple[VpdqFrame, ...] = ()

    def __len__(self) -> int:
        return len(self.frames)

    def to_te_json(self) -> str:
        """python-threatexchange's ``vpdq_to_json``: the ``vpdq`` signal string."""
        return json.dumps([f.te_str() for f in self.frames])

    def to_strings(self) -> list[str]:
        """``"hex,quality,timestamp"`` per frame, timestamps to the millisecond."""
        return [f.precise_str() for f in self.frames]

    @classmethod
    def from_strings(cls, items: Iterable[object], max_frames: int = MAX_SIGNAL_FRAMES) -> VpdqHash:
        frames = []
        for i, item in enumerate(items):
            if i >= max_frames:
                raise InvalidSignalError(f"vpdq signal has more than {max_frames:,} frames")
            frames.append(VpdqFrame.parse(item, f"vpdq frame {i + 1}"))
        return cls(tuple(frames))

    @classmethod
    def from_te_json(cls, text: str, max_frames: int = MAX_SIGNAL_FRAMES) -> VpdqHash:
        """Read a ``vpdq`` signal string (a JSON list of frame strings)."""
        if not isinstance(text, str):
            raise InvalidSignalError("vpdq signal must be a JSON list of strings")
        stripped = text.strip()
        if not stripped.startswith("["):
            raise InvalidSignalError(
                f"vpdq signal must be a JSON list of 'pdq_hex,quality,timestamp' strings, "
                f"got {stripped[:60]!r}"
            )
        try:
            items = json.loads(stripped)
        except (json.JSONDecodeError, RecursionError) as err:
            msg = err.msg if isinstance(err, json.JSONDecodeError) else "nested too deeply"
            raise InvalidSignalError(f"vpdq signal is not valid JSON ({msg})") from None
        if not isinstance(items, list):
            raise InvalidSignalError("vpdq signal must be a JSON list of strings")
        return cls.from_strings(items, max_frames)

    def unique_usable(self, quality: int = QUALITY_THRESHOLD) -> list[str]:
        """python-threatexchange's order: drop repeated PDQ strings, then low quality."""
        seen: set[str] = set()
        out: list[str] = []
        for f in self.frames:
            if f.pdq_hex in seen:
                continue
            seen.add(f.pdq_hex)
            if f.quality >= quality:
                out.append(f.pdq_hex)
        return out


def normalise_signal(signal: str) -> str:
    """Canonical ``vpdq`` bank signal: python-threatexchange's own string for the frames."""
    return VpdqHash.from_te_json(signal).to_te_json()


@dataclass(frozen=True, slots=True)
class VpdqMatchOptions:
    """When two vPDQ hashes match. Defaults: python-threatexchange's."""

    query_pct: float = QUERY_MATCH_THRESHOLD_PERCENT
    index_pct: float = INDEX_MATCH_THRESHOLD_PERCENT
    distance: int = DISTANCE_THRESHOLD
    quality: int = QUALITY_THRESHOLD


@dataclass(frozen=True, slots=True)
class VpdqMatchResult:
    #: % of the query's unique usable frames within ``distance`` of an indexed frame
    query_pct: float
    #: % of the indexed hash's unique usable frames within ``distance`` of a query frame
    index_pct: float
    #: smallest frame distance seen (None when no frame pair is within ``distance``)
    best_distance: int | None = None

    def is_match(self, opts: VpdqMatchOptions) -> bool:
        return (
            self.best_distance is not None
            and self.query_pct >= opts.query_pct
            and self.index_pct >= opts.index_pct
        )


def _words(hexes: Sequence[str]) -> npt.NDArray[np.uint64]:
    raw = bytes.fromhex("".join(hexes))
    out: npt.NDArray[np.uint64] = (
        np.frombuffer(raw, dtype=np.uint8).reshape(-1, 32).copy().view(np.uint64).reshape(-1, 4)
    )
    return out


def _pct(count: int, total: int) -> float:
    # python-threatexchange divides by zero here; an empty side matches nothing.
    return count * 100 / total if total else 0.0


def match_vpdq(
    query: VpdqHash, index: VpdqHash, opts: VpdqMatchOptions | None = None
) -> VpdqMatchResult:
    """Compare two hashes directly (python-threatexchange's brute-force rule, vectorised)."""
    opts = opts or VpdqMatchOptions()
    q = query.unique_usable(opts.quality)
    x = index.unique_usable(opts.quality)
    if not q or not x:
        return VpdqMatchResult(0.0, 0.0, None)
    qw, xw = _words(q), _words(x)
    q_hit = np.zeros(len(q), dtype=bool)
    x_hit = np.zeros(len(x), dtype=bool)
    best: int | None = None
    step = max(1, 1_000_000 // len(x))
    for lo in range(0, len(q), step):
        d = np.bitwise_count(qw[lo : lo + step, None, :] ^ xw[None, :, :]).sum(-1)
        within = d <= opts.distance
        q_hit[lo : lo + step] |= within.any(axis=1)
        x_hit |= within.any(axis=0)
        if within.any():
            m = int(d[within].min())
            best = m if best is None else min(best, m)
    return VpdqMatchResult(_pct(int(q_hit.sum()), len(q)), _pct(int(x_hit.sum()), len(x)), best)


def hash_sample(sample: object) -> PdqHash:
    """PDQ of one ``VideoSample`` (reference: pdqhash on RGB; fast: luma plane)."""
    from tipline.media.video import VideoSample
    from tipline.signals import pdq

    assert isinstance(sample, VideoSample)
    if sample.rgb is not None:
        return pdq.reference_hash(sample.rgb)[0]
    assert sample.luma is not None
    plane = sample.luma
    buf = buffer_from_luma(plane.plane, plane.height, plane.width)
    if buf is None:
        return PdqHash("0" * PDQ_HEX_LEN, 0)
    if sample.limited_range:
        # Video luma is stored as 16..235; PDQ's luma of the RGB frame spans 0..255. The hash
        # ignores the offset and scale, the quality metric does not.
        buf = (buf - np.float32(16.0)) * np.float32(255.0 / 219.0)
    return hash_from_buffer(buf)
