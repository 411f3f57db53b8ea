"""A benign demo corpus: sample photographs scikit-image ships, procedural images, and
transformed copies of both. Nothing here depicts people (see the test-data policy)."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

DEMO_LABEL = "DEMO-benign-stand-in"

#: scikit-image sample images used (all shipped in the wheel; none shows a person).
SKIMAGE_SAMPLES = (
    "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry",
    "colorwheel", "brick", "grass", "coins", "moon", "page", "retina", "clock", "gravel",
)  # fmt: skip


def _skimage(name: str) -> Image.Image:
    import skimage.data

    arr = getattr(skimage.data, name)()
    img = Image.fromarray(arr)
    return img.convert("RGB")


def _procedural(kind: str, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = 640, 480
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == "waves":
        r = 128 + 100 * np.sin(x / 23.0 + seed) * np.cos(y / 31.0)
        g = 128 + 100 * np.sin((x + y) / 41.0)
        b = 128 + 100 * np.cos(np.hypot(x - w / 2, y - h / 2) / 17.0)
        arr = np.stack([r, g, b], -1)
    elif kind == "shapes":
        img = Image.new("RGB", (w, h), tuple(int(v) for v in rng.integers(0, 255, 3)))
        d = ImageDraw.Draw(img)
        for _ in range(25):
            x0, y0 = int(rng.integers(0, w - 40)), int(rng.integers(0, h - 40))
            x1, y1 = x0 + int(rng.integers(20, 200)), y0 + int(rng.integers(20, 200))
            colour = tuple(int(v) for v in rng.integers(0, 255, 3))
            if rng.random() < 0.5:
                d.ellipse([x0, y0, x1, y1], fill=colour)
            else:
                d.rectangle([x0, y0, x1, y1], fill=colour)
        return img
    elif kind == "terrain":
        noise = rng.normal(size=(h // 16 + 1, w // 16 + 1)).astype(np.float32)
        small = Image.fromarray(((noise - noise.min()) / np.ptp(noise) * 255).astype(np.uint8))
        hills = np.asarray(small.resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32)
        sky = np.clip(255 - y / 2, 0, 255)
        land = hills > 120
        arr = np.stack(
            [
                np.where(land, 60 + hills / 4, sky * 0.5),
                np.where(land, 90 + hills / 3, sky * 0.7),
                np.where(land, 40, sky),
            ],
            -1,
        )
    else:  # "textpage": a fine texture, the hard case for perceptual hashes
        img = Image.new("L", (w, h), 245)
        d = ImageDraw.Draw(img)
        font = ImageFont.load_default()
        words = ["tipline", "demo", "teapot", "bluebird", "lorem", "ipsum", "hash", "bank"]
        for row in range(0, h - 12, 12):
            line = " ".join(words[int(i)] for i in rng.integers(0, len(words), 14))
            d.text((8, row), line, fill=20, font=font)
        return img.convert("RGB")
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def originals() -> dict[str, Image.Image]:
    out = {f"sample-{n}": _skimage(n) for n in SKIMAGE_SAMPLES}
    for i, kind in enumerate(("waves", "shapes", "terrain", "textpage")):
        out[f"procedural-{kind}"] = _procedural(kind, seed=100 + i)
    return out


def _overlay(img: Image.Image) -> Image.Image:
    out = img.copy()
    d = ImageDraw.Draw(out)
    size = max(10, out.height // 18)
    try:
        font: ImageFont.ImageFont | ImageFont.FreeTypeFont = ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - very old Pillow
        font = ImageFont.load_default()
    xy = (size // 2, out.height - size * 3 // 2)
    d.text(xy, "reposted", fill=(255, 255, 255), font=font, stroke_width=1, stroke_fill=(0, 0, 0))
    return out


def _crop(img: Image.Image) -> Image.Image:
    w, h = img.size
    dx, dy = max(1, w // 100), max(1, h // 100)
    return img.crop((dx, dy, w - dx, h - dy))


def _recompress(img: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=55)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


Transform = Callable[[Image.Image], Image.Image]

#: name -> (transform, description)
VARIANTS: dict[str, tuple[Transform, str]] = {
    "resized": (
        lambda im: im.resize((im.width // 2, im.height // 2), Image.Resampling.LANCZOS),
        "half size",
    ),
    "recompressed": (_recompress, "JPEG quality 55"),
    "cropped": (_crop, "1% cropped from each edge"),
    "overlay": (_overlay, "a caption written over the image"),
    "flipped": (lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "mirrored"),
    "rotated": (lambda im: im.transpose(Image.Transpose.ROTATE_90), "rotated 90 degrees"),
}


@dataclass(slots=True)
class DemoFile:
    path: Path
    original: str
    variant: str  # "original" or a VARIANTS key
    banked: bool


def build_corpus(root: Path, banked_every: int = 3) -> list[DemoFile]:
    """Write the corpus under ``root``; two of every three originals go into the demo bank.

    Originals are saved as PNG (lossless), copies as JPEG, as they would circulate.
    """
    root.mkdir(parents=True, exist_ok=True)
    (root / "originals").mkdir(exist_ok=True)
    (root / "copies").mkdir(exist_ok=True)
    files: list[DemoFile] = []
    for i, (name, img) in enumerate(sorted(originals().items())):
        banked = i % banked_every != banked_every - 1
        p = root / "originals" / f"{name}.png"
        img.save(p, "PNG")
        files.append(DemoFile(p, name, "original", banked))
        for vname, (fn, _desc) in VARIANTS.items():
            vp = root / "copies" / f"{name}--{vname}.jpg"
            fn(img).convert("RGB").save(vp, "JPEG", quality=88)
            files.append(DemoFile(vp, name, vname, banked))
    return files


def as_array(img: Image.Image) -> npt.NDArray[np.uint8]:
    return np.asarray(img.convert("RGB"), dtype=np.uint8)
