"""Deterministic benign test images for the benchmarks.

Every image is either procedural (drawn by this code) or a transformed copy of one of the
photographs that scikit-image ships (no people: astronaut and camera are never used). No image
generation models.

Classes:

* ``photo``: a random 4:3 crop of a scikit-image colour photograph, upscaled with Lanczos to the
  target size, with mild sensor-like noise, saved at JPEG quality 90 (looks like camera output).
* ``texture``: fine detail where naive nearest-neighbour resizing aliases: pages of small text
  drawn with Pillow, brick/grass/gravel tiled at native resolution, fine stripes and checkers
  under a low-frequency envelope.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFilter, ImageFont

#: Bump when the generated pixels change, so cached files are not reused.
GEN_VERSION = 5
JPEG_QUALITY = 90

SIZES: dict[str, tuple[int, int]] = {"12MP": (4000, 3000), "2.8MP": (2048, 1365)}
CLASSES = ("photo", "texture")
ENCODINGS = ("baseline", "progressive")

PHOTOS = ("coffee", "chelsea", "rocket", "hubble_deep_field", "retina", "immunohistochemistry")
TEXTURES = ("text", "brick", "stripes", "grass", "checker", "gravel")

FONT_DIRS = ("/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu")

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class BenchImage:
    path: Path
    size: str
    cls: str
    encoding: str
    index: int
    source: str

    @property
    def name(self) -> str:
        return self.path.name


def _rng(seed: int, *key: object) -> np.random.Generator:
    digest = hashlib.sha256(repr((seed, *key)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _noise(rgb: U8 | F32, rng: np.random.Generator, sigma: float) -> U8:
    arr = np.asarray(rgb, dtype=np.float32)
    noise = rng.standard_normal(arr.shape, dtype=np.float32)
    noise *= np.float32(sigma)
    arr = arr + noise
    np.clip(arr, 0, 255, out=arr)
    return np.rint(arr).astype(np.uint8)


def _smooth_field(w: int, h: int, rng: np.random.Generator, terms: int = 6) -> F32:
    """A random low-frequency field in [0, 1] (sum of a few oriented cosines)."""
    y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
    out = np.zeros((h, w), dtype=np.float32)
    for _ in range(terms):
        fx, fy = rng.uniform(-3.0, 3.0, size=2)
        phase = rng.uniform(0, 2 * np.pi)
        amp = rng.uniform(0.5, 1.0)
        out += np.float32(amp) * np.cos(
            np.float32(2 * np.pi * fx) * x + np.float32(2 * np.pi * fy) * y + np.float32(phase)
        )
    out -= out.min()
    out /= max(float(out.max()), 1e-6)
    return out


def _shapes(w: int, h: int, rng: np.random.Generator, n: int = 5) -> F32:
    """A few large filled ellipses and rectangles: hard-edged low-frequency structure in [0, 1]."""
    im = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(im)
    for _ in range(n):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        rx, ry = rng.uniform(0.08, 0.3) * w, rng.uniform(0.08, 0.3) * h
        box = (cx - rx, cy - ry, cx + rx, cy + ry)
        value = int(rng.integers(60, 256))
        if rng.random() < 0.5:
            draw.ellipse(box, fill=value)
        else:
            draw.rectangle(box, fill=value)
    return np.asarray(im, dtype=np.float32) / np.float32(255)


# ---------------------------------------------------------------- photos


def _photo(w: int, h: int, index: int, rng: np.random.Generator) -> tuple[U8, str]:
    import skimage.data

    source = PHOTOS[index % len(PHOTOS)]
    src = getattr(skimage.data, source)()
    sh, sw = src.shape[:2]
    # Random crop with the target aspect ratio covering 70-100% of the largest such crop.
    aspect = w / h
    cw_max = min(sw, sh * aspect)
    scale = rng.uniform(0.7, 1.0)
    cw = cw_max * scale
    ch = cw / aspect
    x0 = rng.uniform(0, sw - cw)
    y0 = rng.uniform(0, sh - ch)
    im = Image.fromarray(src).convert("RGB")
    if rng.random() < 0.5:
        im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        x0 = sw - cw - x0
    im = im.resize((w, h), Image.Resampling.LANCZOS, box=(x0, y0, x0 + cw, y0 + ch))
    # Mild exposure / white-balance variation, sensor-like noise, then the unsharp masking
    # camera pipelines apply (it also brings file sizes to those of real 12 MP JPEGs).
    gain = rng.uniform(0.92, 1.08, size=3).astype(np.float32)
    arr = np.asarray(im, dtype=np.float32) * gain
    noisy = Image.fromarray(_noise(arr, rng, rng.uniform(2.0, 3.0)), "RGB")
    sharp = noisy.filter(ImageFilter.UnsharpMask(radius=2, percent=150, threshold=0))
    return np.asarray(sharp), source


# ---------------------------------------------------------------- textures


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for d in FONT_DIRS:
        for name in ("DejaVuSerif.ttf", "DejaVuSans.ttf"):
            p = Path(d) / name
            if p.exists():
                return ImageFont.truetype(str(p), size)
    return ImageFont.load_default(size)


def _words(rng: np.random.Generator, n: int) -> list[str]:
    letters = np.array(list(string.ascii_lowercase))
    # Rough English letter frequencies keep the text looking like text.
    freq = np.array(
        [8.2, 1.5, 2.8, 4.3, 12.7, 2.2, 2.0, 6.1, 7.0, 0.2, 0.8, 4.0, 2.4,
         6.7, 7.5, 1.9, 0.1, 6.0, 6.3, 9.1, 2.8, 1.0, 2.4, 0.2, 2.0, 0.1]
    )  # fmt: skip
    p = freq / freq.sum()
    lengths = np.clip(rng.poisson(4.5, size=n), 1, 12)
    return ["".join(rng.choice(letters, size=k, p=p)) for k in lengths]


def _text_page(w: int, h: int, rng: np.random.Generator) -> U8:
    paper = tuple(int(v) for v in rng.integers(235, 256, size=3))
    ink = tuple(int(v) for v in rng.integers(0, 60, size=3))
    im = Image.new("RGB", (w, h), paper)
    draw = ImageDraw.Draw(im)
    scale = w / 4000
    size = max(9, round(rng.uniform(14, 22) * scale))
    body = _font(size)
    head = _font(max(14, round(size * rng.uniform(1.8, 2.6))))
    margin = int(w * rng.uniform(0.05, 0.09))
    columns = int(rng.integers(1, 3))
    gutter = int(w * 0.03)
    col_w = (w - 2 * margin - (columns - 1) * gutter) // columns
    line_h = int(size * rng.uniform(1.25, 1.5))
    char_w = max(1.0, float(draw.textlength("abcdefghij klmnopqrst", font=body)) / 21)
    chars_per_line = int(col_w / char_w)
    words = _words(rng, 60000)
    wi = 0
    for c in range(columns):
        x = margin + c * (col_w + gutter)
        y = margin
        while y < h - margin - line_h:
            if rng.random() < 0.04:  # a heading
                text = " ".join(words[wi : wi + 4]).title()
                wi += 4
                draw.text((x, y), text, fill=ink, font=head)
                y += int(line_h * 2.4)
                continue
            if rng.random() < 0.08:  # paragraph break
                y += line_h
                continue
            line: list[str] = []
            length = 0
            target = chars_per_line * (rng.uniform(0.4, 1.0) if rng.random() < 0.15 else 1.0)
            while length + len(words[wi % len(words)]) + 1 <= target:
                word = words[wi % len(words)]
                line.append(word)
                length += len(word) + 1
                wi += 1
            draw.text((x, y), " ".join(line), fill=ink, font=body)
            y += line_h
    return _noise(np.asarray(im), rng, 1.5)


def _tiled(w: int, h: int, kind: str, rng: np.random.Generator) -> U8:
    import skimage.data

    tile = getattr(skimage.data, kind)().astype(np.float32)
    th, tw = tile.shape
    # Mirror-tile (no seams), at native resolution, from a random offset.
    block = np.block([[tile, tile[:, ::-1]], [tile[::-1, :], tile[::-1, ::-1]]])
    reps_y = h // (2 * th) + 2
    reps_x = w // (2 * tw) + 2
    big = np.tile(block, (reps_y, reps_x))
    oy = int(rng.integers(0, 2 * th))
    ox = int(rng.integers(0, 2 * tw))
    gray = big[oy : oy + h, ox : ox + w]
    # Low-frequency illumination and a few hard-edged patches (shadows, stains, paint) so the
    # image has structure PDQ can see once the texture is averaged away.
    light = 0.3 + 0.2 * _smooth_field(w, h, rng, terms=4) + 0.8 * _shapes(w, h, rng, n=8)
    gray = gray * light
    tint = {
        "brick": (1.05, 0.72, 0.55),
        "grass": (0.65, 1.0, 0.55),
        "gravel": (0.95, 0.93, 0.9),
    }[kind]
    rgb = gray[..., None] * np.asarray(tint, dtype=np.float32)
    return _noise(rgb, rng, 2.0)


def _fine_pattern(w: int, h: int, kind: str, rng: np.random.Generator) -> U8:
    """Fine stripes or checkers (2-7 px) under a low-frequency envelope, as a camera sees them.

    A lens does not pass a full-contrast 2 px pattern: the pattern gets moderate contrast and a
    slight blur, which also keeps the JPEG sizes in the range of real 12 MP photos. A naive
    nearest-neighbour resize still aliases it into moiré.
    """
    y = np.arange(h, dtype=np.float32)[:, None]
    x = np.arange(w, dtype=np.float32)[None, :]
    if kind == "stripes":
        period = rng.uniform(3.0, 7.0)
        angle = rng.uniform(0, np.pi)
        phase = (x * np.float32(np.cos(angle)) + y * np.float32(np.sin(angle))) / np.float32(period)
        pattern = np.where((phase % 1.0) < 0.5, 1.0, -1.0).astype(np.float32)
    else:
        cell = int(rng.integers(2, 5))
        pattern = np.where(((x // cell) + (y // cell)) % 2 == 0, 1.0, -1.0).astype(np.float32)
    base = 0.6 * _smooth_field(w, h, rng) + 0.4 * _shapes(w, h, rng)
    amp = 25.0 + 45.0 * _smooth_field(w, h, rng, terms=3)
    gray = 30.0 + 190.0 * base + amp * pattern
    colour = rng.uniform(0.7, 1.0, size=3).astype(np.float32)
    rgb = np.clip(gray[..., None] * colour, 0, 255).astype(np.uint8)
    blurred = Image.fromarray(rgb, "RGB").filter(ImageFilter.GaussianBlur(0.6))
    return _noise(np.asarray(blurred), rng, 2.0)


def _texture(w: int, h: int, index: int, rng: np.random.Generator) -> tuple[U8, str]:
    kind = TEXTURES[index % len(TEXTURES)]
    if kind == "text":
        return _text_page(w, h, rng), kind
    if kind in ("brick", "grass", "gravel"):
        return _tiled(w, h, kind, rng), kind
    return _fine_pattern(w, h, kind, rng), kind


def render(size: str, cls: str, index: int, seed: int) -> tuple[U8, str]:
    """Pixels (H x W x 3 uint8) and the source/kind name of one benchmark image."""
    w, h = SIZES[size]
    rng = _rng(seed, GEN_VERSION, size, cls, index)
    if cls == "photo":
        return _photo(w, h, index, rng)
    return _texture(w, h, index, rng)


def generate(
    root: Path, count: int, seed: int = 20240601, sizes: tuple[str, ...] = tuple(SIZES)
) -> list[BenchImage]:
    """Write (or reuse cached) JPEGs under ``root``; both encodings share the same pixels."""
    out_dir = root / f"v{GEN_VERSION}-seed{seed}"
    out_dir.mkdir(parents=True, exist_ok=True)
    images: list[BenchImage] = []
    for size in sizes:
        for cls in CLASSES:
            for i in range(count):
                kinds = PHOTOS if cls == "photo" else TEXTURES
                source = kinds[i % len(kinds)]
                paths = {
                    enc: out_dir / f"{size}-{cls}-{i:02d}-{source}-{enc}.jpg" for enc in ENCODINGS
                }
                if not all(p.exists() for p in paths.values()):
                    pixels, source = render(size, cls, i, seed)
                    im = Image.fromarray(pixels, "RGB")
                    for enc, p in paths.items():
                        tmp = p.with_suffix(".tmp")
                        im.save(
                            tmp,
                            "JPEG",
                            quality=JPEG_QUALITY,
                            progressive=enc == "progressive",
                            optimize=enc == "progressive",
                            subsampling="4:2:0",
                        )
                        tmp.replace(p)
                for enc, p in paths.items():
                    images.append(BenchImage(p, size, cls, enc, i, source))
    return images
