"""Extra PDQ query hashes of one image: recall beyond plain PDQ.

A partner's list holds the PDQ of an original; the copy a scan meets has often been framed
(a border, letterbox bars, a caption band, the blurred-fill pillarbox of social video stills)
or re-cropped by a few percent. Plain PDQ hashes the whole frame, so those copies land 40-120
bits away. Each function here derives from the copy's luma plane a picture closer to the
original and hashes it; the hashes go to ``record.pdq_variants`` by name and are looked up
beside the item's own hash (``PdqSignalType.record_query_groups``), never stored as the item's
hash. They are computed with the fast implementation on a plane of at most ~512 px a side (a few
bits from the reference; matching is within a threshold of 31).

* ``border_trimmed`` (``trim_box``): the picture inside uniform or near-uniform borders
  (a colour, JPEG noise around it, letterbox bars), a caption band (a uniform band carrying
  text) and a blurred-fill frame (``_blur_frame``: the picture centred on a blurred copy of
  itself; found by its two boundary lines, a step the quiet margins beside them lack, at the
  same distance from both ends).
* ``uncrop_N`` (``uncrop``): a centre crop undone: the plane padded back by N% per side by
  repeating its edge pixels, so the picture has the scale and place it had in the original.
* ``crop_N``: a centre crop of N% per side (the other direction: the bank holds a crop of what
  the scan sees).

Measured by ``bench/recall.py`` (recall per transform, false positives on >= 100,000 unrelated
benign images, cost per item).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from tipline.signals.pdq import PdqHash, fast_hash

Plane = npt.NDArray[np.float32] | npt.NDArray[np.uint8]

#: a border line: its pixels within this many grey levels of the border colour ...
_LEVEL_TOL = 14.0
#: ... for at least this share of the line (a caption band's text lines stay above it)
_UNIFORM_SHARE = 0.97
_BAND_SHARE = 0.25
#: trims smaller than this share of a side are noise; larger than this leave too little
_MIN_TRIM = 0.02
_MAX_TRIM = 0.45


def _line_share(lines: npt.NDArray[np.float32], level: float) -> npt.NDArray[np.float64]:
    """Per line (row of ``lines``): share of its pixels within ``_LEVEL_TOL`` of ``level``."""
    out: npt.NDArray[np.float64] = (np.abs(lines - level) <= _LEVEL_TOL).mean(axis=1)
    return out


def _uniform_run(lines: npt.NDArray[np.float32]) -> int:
    """How many leading lines are border: lines (from the edge) of the outermost line's
    colour. A caption band's text lines count while at least ``_BAND_SHARE`` of them is that
    colour, but the run must end on a fully uniform line (a caption band has a margin), so
    text never cuts into the picture."""
    if len(lines) < 8:
        return 0
    lines = lines[: int(_MAX_TRIM * len(lines)) + 2]  # a longer run is refused anyway
    level = float(np.median(lines[0]))
    share = _line_share(lines, level)
    if share[0] < _UNIFORM_SHARE:
        return 0
    below = share < _BAND_SHARE
    n = int(np.argmax(below)) if below.any() else len(share)
    uniform = np.flatnonzero(share[:n] >= _UNIFORM_SHARE)
    return int(uniform[-1]) + 1 if len(uniform) else 0


#: a blurred-fill frame's boundary line: its step at least this many times the margin's
#: activity next to it (+0.5 grey levels) ...
_EDGE_CONTRAST = 2.0
#: ... the margins' activity at most this share of the picture's (the central half's) ...
_BLUR_SHARE = 0.5
#: ... and the picture next to the boundary at least this share of the margin's there
_INSIDE_SHARE = 0.5


def _blur_frame(lines: npt.NDArray[np.float32]) -> tuple[int, int] | None:
    """A blurred-fill frame along the first axis (the picture pasted centred on a blurred,
    zoomed copy of itself, as on social video stills): ``(start, end)`` of the picture's lines,
    or None.

    The picture's two boundary lines are each a step (a sharp picture meets a blurred
    background) that the lines beside it do not have, at the same distance from both ends
    (one line of slack on the far side for odd margins), and the margins are quiet against the
    picture. Of the symmetric candidates the one whose steps stand out most from the margin
    wins. Activity of a line: mean absolute neighbour difference along it plus half the steps
    to its two neighbours."""
    n = lines.shape[0]
    if n < 32 or lines.shape[1] < 16:
        return None
    step = np.abs(np.diff(lines, axis=0)).mean(axis=1)  # step[k]: between line k and k + 1
    act = np.abs(np.diff(lines, axis=1)).mean(axis=1)
    act[:-1] += step
    act[1:] += step
    act *= 0.5
    w = max(3, round(0.03 * n))
    lo = max(w + 3, int(np.ceil(_MIN_TRIM * n)))
    hi = min(int(_MAX_TRIM * n), n - w - 4)
    if hi <= lo:
        return None
    m = np.arange(lo, hi + 1)
    csum = np.concatenate([[0.0], np.cumsum(act, dtype=np.float64)])

    def mean(a: npt.NDArray[np.int64], b: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        out: npt.NDArray[np.float64] = (csum[b] - csum[a]) / np.maximum(b - a, 1)
        return out

    far = n - m - 1  # the last picture line, give or take one
    ends = np.stack([step[far - 1], step[far], step[far + 1]])
    spike = np.minimum(step[m - 1], ends.max(axis=0))
    # the lines beside the boundary (one skipped: JPEG ringing), outside and inside
    out = np.maximum(mean(m - w - 2, m - 2), mean(n - m + 2, n - m + 2 + w))
    inside = np.minimum(mean(m + 1, m + 1 + w), mean(n - m - w - 1, n - m - 1))
    margin = np.maximum(mean(np.zeros_like(m), m - 2), mean(n - m + 2, np.full_like(m, n)))
    picture = float(act[n // 4 : n - n // 4].mean())
    score = spike / (out + 0.5)
    ok = (
        (score >= _EDGE_CONTRAST)
        & (margin <= _BLUR_SHARE * picture)
        & (inside >= _INSIDE_SHARE * out)
    )
    if not ok.any():
        return None
    k = int(np.argmax(np.where(ok, score, -1.0)))
    start = int(m[k])
    end = int(far[k]) + int(np.argmax(ends[:, k]))  # the picture's last line + 1
    return start, end


def trim_box(y: Plane) -> tuple[int, int, int, int] | None:
    """``(top, bottom, left, right)``: the picture inside a frame as plane rows top..bottom-1
    and columns left..right-1, or None where no frame is found. Per axis a blurred-fill frame
    wins over uniform borders (its margins can pass for near-uniform ones); a blurred-fill
    frame on one axis only keeps the other axis whole (a dark or flat edge of the picture
    itself is no border there: bench/recall.py's hubble_deep_field and moon)."""
    plane = np.asarray(y, dtype=np.float32)
    h, w = plane.shape
    if h < 16 or w < 16:
        return None
    top = _uniform_run(plane)
    bottom = h - _uniform_run(plane[::-1])
    left = _uniform_run(plane.T)
    right = w - _uniform_run(plane.T[::-1])
    rows = _blur_frame(plane)
    cols = _blur_frame(np.ascontiguousarray(plane.T))
    # a blurred-fill frame frames the picture on one axis and the picture spans the other:
    # uniform runs there are the picture's own dark or flat edges
    if rows is not None:
        top, bottom = rows
        if cols is None:
            left, right = 0, w
    if cols is not None:
        left, right = cols
        if rows is None:
            top, bottom = 0, h
    ih, iw = bottom - top, right - left
    if ih < 16 or iw < 16 or ih < (1 - 2 * _MAX_TRIM) * h or iw < (1 - 2 * _MAX_TRIM) * w:
        return None
    if (h - ih) < _MIN_TRIM * h and (w - iw) < _MIN_TRIM * w:
        return None
    return top, bottom, left, right


def _scaled(y: Plane, full_h: int, full_w: int, h: int, w: int) -> tuple[int, int]:
    """Full-resolution size of an ``h`` x ``w`` region of a plane standing in for
    ``full_h`` x ``full_w`` pixels."""
    ph, pw = y.shape[:2]
    return max(1, round(h * full_h / ph)), max(1, round(w * full_w / pw))


def _hash(region: Plane, y: Plane, full_h: int, full_w: int) -> PdqHash:
    fh, fw = _scaled(y, full_h, full_w, region.shape[0], region.shape[1])
    return fast_hash(np.ascontiguousarray(region, dtype=np.float32), fh, fw)[0]


def border_trimmed(y: Plane, full_h: int, full_w: int) -> PdqHash | None:
    box = trim_box(y)
    if box is None:
        return None
    top, bottom, left, right = box
    return _hash(y[top:bottom, left:right], y, full_h, full_w)


def centre_crop(y: Plane, full_h: int, full_w: int, percent: float) -> PdqHash | None:
    h, w = y.shape[:2]
    dy, dx = round(h * percent / 100), round(w * percent / 100)
    if dy < 1 or dx < 1 or h - 2 * dy < 16 or w - 2 * dx < 16:
        return None
    return _hash(y[dy : h - dy, dx : w - dx], y, full_h, full_w)


def uncrop(y: Plane, full_h: int, full_w: int, percent: float) -> PdqHash | None:
    """The plane as the centre of an original ``percent``% per side larger, its edge pixels
    repeated into the margins (measured closer to the original than mirrored margins or a
    flat fill: bench/recall.py)."""
    h, w = y.shape[:2]
    f = percent / 100 / (1 - 2 * percent / 100)
    dy, dx = round(h * f), round(w * f)
    if dy < 1 or dx < 1 or dy >= h or dx >= w:
        return None
    padded = np.pad(np.asarray(y, dtype=np.float32), ((dy, dy), (dx, dx)), mode="edge")
    return _hash(padded, y, full_h, full_w)


#: the default set of re-crop query hashes: name -> (kind, percent per side)
CROPS: dict[str, tuple[str, float]] = {
    "uncrop_2": ("uncrop", 2.0),
    "uncrop_3.5": ("uncrop", 3.5),
    "uncrop_5": ("uncrop", 5.0),
}


def variants(
    y: Plane,
    full_h: int,
    full_w: int,
    trim: bool = True,
    crops: bool = True,
    crop_set: dict[str, tuple[str, float]] | None = None,
) -> dict[str, str]:
    """The usable (quality >= 50) extra query hashes of a luma plane standing in for a
    ``full_h`` x ``full_w`` image, by name."""
    out: dict[str, str] = {}
    if trim:
        h = border_trimmed(y, full_h, full_w)
        if h is not None and h.usable:
            out["border_trimmed"] = h.hex
    if crops:
        for name, (kind, pct) in (CROPS if crop_set is None else crop_set).items():
            fn = uncrop if kind == "uncrop" else centre_crop
            c = fn(y, full_h, full_w, pct)
            if c is not None and c.usable:
                out[name] = c.hex
    return out
