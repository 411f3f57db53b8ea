"""Deterministic benign high-frequency images: where a scaled decode is most likely to drift.

All drawn by this code, full contrast and unblurred (unlike the camera-like ``texture`` class of
``_images.py``): hard checkerboards, AM halftone screens, fine line screens and dense small text,
each over a low-frequency layout (a few large shapes) so PDQ has structure to hash, and pure
checkerboards (no layout) like HMA's own test images.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from _images import _font, _rng, _shapes, _smooth_field, _words

#: Bump when the pixels change.
HF_VERSION = 1
KINDS = ("checker", "checker-pure", "halftone", "lines", "microtext")
#: (width, height) of the generated set: phone photo, web sizes, a 12 MP scan.
HF_SIZES = ((4000, 3000), (2048, 1365), (1200, 900), (640, 480))

U8 = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class HfImage:
    name: str
    kind: str
    width: int
    height: int
    pixels: U8  # H x W x 3


def _layout(w: int, h: int, rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """Low-frequency structure in [0, 1]: a smooth field and a few hard-edged shapes."""
    return 0.45 * _smooth_field(w, h, rng, terms=4) + 0.55 * _shapes(w, h, rng, n=6)


def checker(w: int, h: int, cell: int, rng: np.random.Generator, pure: bool = False) -> U8:
    """A hard black/white checkerboard of ``cell`` px squares; unless ``pure``, its two colours
    follow a low-frequency layout (dark/light regions), as a printed pattern under light."""
    y = np.arange(h)[:, None]
    x = np.arange(w)[None, :]
    on = ((x // cell + y // cell) % 2).astype(bool)
    if pure:
        g = np.where(on, 255, 0).astype(np.uint8)
    else:
        base = _layout(w, h, rng)
        g = np.where(on, 110 + 145 * base, 110 * base).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


def halftone(w: int, h: int, period: float, rng: np.random.Generator) -> U8:
    """An AM halftone screen (round dots on a grid rotated by a screen angle) of a layout:
    binary ink/paper pixels, dot area proportional to darkness."""
    tone = 1.0 - _layout(w, h, rng)  # ink coverage
    angle = np.deg2rad(rng.choice([15.0, 45.0, 75.0]))
    y = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(w, dtype=np.float32)[None, :]
    u = (x * np.float32(np.cos(angle)) + y * np.float32(np.sin(angle))) / np.float32(period)
    v = (-x * np.float32(np.sin(angle)) + y * np.float32(np.cos(angle))) / np.float32(period)
    du = u - np.floor(u) - 0.5
    dv = v - np.floor(v) - 0.5
    r2 = du * du + dv * dv
    # A dot of area a (fraction of the cell) has radius sqrt(a / pi) in cell units.
    ink = r2 < tone / np.float32(np.pi)
    paper = np.array([248, 246, 240], np.uint8)
    colour = np.array([20, 20, 30], np.uint8)
    return np.where(ink[..., None], colour, paper)


def lines(w: int, h: int, period: int, rng: np.random.Generator) -> U8:
    """A full-contrast line screen (1-2 px lines every ``period`` px, at an angle), masked by a
    layout: where the layout is dark the lines are drawn, elsewhere paper."""
    angle = rng.uniform(0, np.pi)
    y = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(w, dtype=np.float32)[None, :]
    phase = (x * np.float32(np.cos(angle)) + y * np.float32(np.sin(angle))) % np.float32(period)
    on = (phase < 1.5) & (_layout(w, h, rng) < 0.55)
    return np.where(on[..., None], np.uint8(0), np.uint8(255)).repeat(3, axis=2)


def microtext(w: int, h: int, rng: np.random.Generator) -> U8:
    """Dense small text (7-10 px glyphs), black on white, no antialiasing, with a few large
    filled blocks (a layout a page of fine print has: headings, pictures, columns)."""
    im = Image.new("L", (w, h), 255)
    draw = ImageDraw.Draw(im)
    draw.fontmode = "1"
    size = int(rng.integers(7, 11))
    font = _font(size)
    words = _words(rng, 40000)
    wi = 0
    y = 2
    line_h = size + 2
    while y < h - line_h:
        line = []
        length = 0
        while length < w // max(1, size // 2):
            word = words[wi % len(words)]
            line.append(word)
            length += len(word) + 1
            wi += 1
        draw.text((2, y), " ".join(line), fill=0, font=font)
        y += line_h
    for _ in range(4):
        x0, y0 = rng.uniform(0, 0.8) * w, rng.uniform(0, 0.8) * h
        x1, y1 = x0 + rng.uniform(0.1, 0.3) * w, y0 + rng.uniform(0.1, 0.3) * h
        draw.rectangle((x0, y0, x1, y1), fill=int(rng.integers(0, 140)))
    g = np.asarray(im)
    return np.repeat(g[..., None], 3, axis=2)


def generate(
    seed: int = 20240601, sizes: tuple[tuple[int, int], ...] = HF_SIZES
) -> Iterator[HfImage]:
    """The high-frequency set: every kind at every size, a few parameters each."""
    for w, h in sizes:
        for kind in KINDS:
            params: list[float] = {
                "checker": [1, 2, 3, 5, 8],
                "checker-pure": [8, 16, 37],
                "halftone": [4.0, 6.0, 9.0],
                "lines": [2, 3, 5],
                "microtext": [0, 1],
            }[kind]
            for p in params:
                rng = _rng(seed, HF_VERSION, kind, w, h, p)
                if kind == "checker":
                    px = checker(w, h, int(p), rng)
                elif kind == "checker-pure":
                    px = checker(w, h, int(p), rng, pure=True)
                elif kind == "halftone":
                    px = halftone(w, h, float(p), rng)
                elif kind == "lines":
                    px = lines(w, h, int(p), rng)
                else:
                    px = microtext(w, h, rng)
                yield HfImage(f"{kind}-{p:g}-{w}x{h}", kind, w, h, px)


def digest(img: HfImage) -> str:
    return hashlib.sha256(img.pixels.tobytes()).hexdigest()[:12]
