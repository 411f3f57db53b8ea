"""Benign demo video clips, made by encoding our own frames with PyAV.

Frames are pans and zooms over sample photographs that scikit-image ships (none shows a
person), a slideshow with hard cuts between them, and a procedural animation (coloured discs
drifting over a gradient). Copies are made the way videos travel: re-encoded at another
quality and resized to a smaller frame.

    from tipline.demo.clips import build_clips
    clips = build_clips(Path("corpus/video"))            # 4 originals + 2 copies of each
    for c in clips: print(c.path, c.original, c.variant, c.banked)

Everything here is deterministic: the same arguments give the same frames (the encoded bytes
may differ between FFmpeg builds).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

RGB = npt.NDArray[np.uint8]
FrameFn = Callable[[float], RGB]

#: name -> (kind, scikit-image samples used). No sample shows a person.
CLIP_KINDS: dict[str, tuple[str, tuple[str, ...]]] = {
    "pan-coffee": ("pan", ("coffee",)),
    "zoom-hubble": ("zoom", ("hubble_deep_field",)),
    "slideshow": ("slideshow", ("rocket", "chelsea", "immunohistochemistry", "coins")),
    "shapes": ("shapes", ()),
}
#: clips whose originals the demo banks; the others are the "unrelated" controls
BANKED = ("pan-coffee", "slideshow")


@dataclass(slots=True)
class DemoClip:
    path: Path
    #: the clip name (a key of CLIP_KINDS) this file is, or is a copy of
    original: str
    #: "original", "reencoded" (same size, lower quality) or "resized" (smaller frame)
    variant: str
    banked: bool
    width: int
    height: int
    seconds: float


def _sample(name: str) -> Image.Image:
    import skimage.data

    arr = getattr(skimage.data, name)()
    return Image.fromarray(arr).convert("RGB")


def _fit_box(
    src: Image.Image, size: tuple[int, int], zoom: float, cx: float, cy: float
) -> tuple[float, float, float, float]:
    """A crop box of the output's aspect ratio, 1/zoom of the largest one, centred near cx, cy
    (0..1), kept inside the source."""
    sw, sh = src.size
    aspect = size[0] / size[1]
    bw = min(sw, sh * aspect) / zoom
    bh = bw / aspect
    x0 = min(max(cx * sw - bw / 2, 0.0), sw - bw)
    y0 = min(max(cy * sh - bh / 2, 0.0), sh - bh)
    return (x0, y0, x0 + bw, y0 + bh)


def _render(src: Image.Image, size: tuple[int, int], box: tuple[float, ...]) -> RGB:
    img = src.resize(size, Image.Resampling.BILINEAR, box=box)  # type: ignore[arg-type]
    out: RGB = np.asarray(img, dtype=np.uint8)
    return out


def frame_source(kind: str, size: tuple[int, int], seconds: float) -> FrameFn:
    """A function of time (seconds) returning an RGB frame of ``size`` (width, height)."""
    name_kind, samples = CLIP_KINDS[kind]
    if name_kind == "pan":
        src = _sample(samples[0])

        def pan(t: float) -> RGB:
            u = t / max(seconds, 1e-6)
            return _render(src, size, _fit_box(src, size, 1.6, 0.2 + 0.6 * u, 0.5))

        return pan
    if name_kind == "zoom":
        src = _sample(samples[0])

        def zoom(t: float) -> RGB:
            u = t / max(seconds, 1e-6)
            return _render(src, size, _fit_box(src, size, 1.0 + 1.5 * u, 0.5, 0.45))

        return zoom
    if name_kind == "slideshow":
        srcs = [_sample(s) for s in samples]
        shot = max(seconds / len(srcs), 1e-6)

        def slides(t: float) -> RGB:
            i = min(int(t / shot), len(srcs) - 1)
            u = (t - i * shot) / shot
            return _render(srcs[i], size, _fit_box(srcs[i], size, 1.2 + 0.2 * u, 0.5, 0.5))

        return slides
    # "shapes": coloured discs drifting over a slowly shifting gradient (procedural)
    w, h = size
    rng = np.random.default_rng(7)
    n = 40
    pos = rng.random((n, 2)) * (w, h)
    vel = (rng.random((n, 2)) - 0.5) * (w / 12, h / 12)
    radius = rng.uniform(0.03, 0.12, n) * min(w, h)
    colours = [tuple(int(c) for c in rng.integers(30, 226, 3)) for _ in range(n)]
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)

    def shapes(t: float) -> RGB:
        from PIL import ImageDraw

        base = np.stack(
            [
                128 + 90 * np.sin(gx / w * 17.0 + t * 0.2) * np.cos(gy / h * 11.0),
                128 + 90 * np.cos(gy / h * 13.0 - t * 0.15),
                128 + 90 * np.sin((gx + gy) / (w + h) * 19.0),
            ],
            -1,
        )
        img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for (px, py), (vx, vy), r, c in zip(pos, vel, radius, colours, strict=True):
            cx = (px + vx * t) % (w + 2 * r) - r
            cy = (py + vy * t) % (h + 2 * r) - r
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=c)
        out: RGB = np.asarray(img, dtype=np.uint8)
        return out

    return shapes


def encode_frames(
    path: Path,
    frames: Iterator[RGB],
    size: tuple[int, int],
    fps: int = 25,
    *,
    crf: int = 23,
    preset: str = "veryfast",
    gop: int | None = None,
    container: str | None = None,
    codec: str = "libx264",
) -> Path:
    """Encode RGB frames to an H.264 (or ``codec``) file with PyAV. ``gop`` None keeps the
    encoder's default keyframe placement (x264: at most 250 frames apart, plus scene cuts)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = container or {".webm": "webm", ".mkv": "matroska", ".mov": "mov"}.get(
        path.suffix.lower(), "mp4"
    )
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=Fraction(fps, 1))
        assert isinstance(stream, av.video.stream.VideoStream)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        options = {"threads": "1"}
        if codec == "libx264":
            options.update({"preset": preset, "crf": str(crf)})
        if gop is not None:
            options["g"] = str(gop)
        stream.codec_context.options = options
        for arr in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def render_clip(
    path: Path,
    kind: str,
    size: tuple[int, int] = (320, 240),
    seconds: float = 10.0,
    fps: int = 25,
    **encode: object,
) -> Path:
    """Render clip ``kind`` (a key of CLIP_KINDS) and encode it to ``path``."""
    fn = frame_source(kind, size, seconds)
    n = round(seconds * fps)
    return encode_frames(path, (fn(i / fps) for i in range(n)), size, fps, **encode)  # type: ignore[arg-type]


def transcode(
    src: Path,
    dst: Path,
    size: tuple[int, int] | None = None,
    *,
    crf: int = 30,
    preset: str = "veryfast",
    gop: int | None = None,
) -> Path:
    """Decode ``src`` and encode it again (lower quality by default), optionally resized."""
    import av

    with av.open(str(src)) as inp:
        stream = inp.streams.video[0]
        fps = round(float(stream.average_rate or 25))
        w, h = size or (stream.codec_context.width, stream.codec_context.height)

        def frames() -> Iterator[RGB]:
            for frame in inp.decode(stream):
                arr = frame.to_ndarray(width=w, height=h, format="rgb24", interpolation="AREA")
                yield np.asarray(arr, dtype=np.uint8)

        return encode_frames(dst, frames(), (w, h), fps, crf=crf, preset=preset, gop=gop)


def build_clips(
    out_dir: Path,
    size: tuple[int, int] = (320, 240),
    seconds: float = 10.0,
    fps: int = 25,
    kinds: tuple[str, ...] = tuple(CLIP_KINDS),
) -> list[DemoClip]:
    """Write the demo clips under ``out_dir``: each kind as ``<kind>.mp4`` plus a re-encoded copy
    (``<kind>-reencoded.mp4``, crf 32) and a resized copy (``<kind>-resized.mp4``, 2/3 size).
    Takes about a second per clip at 320x240."""
    out: list[DemoClip] = []
    small = (max(2, size[0] * 2 // 3 // 2 * 2), max(2, size[1] * 2 // 3 // 2 * 2))
    for kind in kinds:
        banked = kind in BANKED
        orig = render_clip(out_dir / f"{kind}.mp4", kind, size, seconds, fps)
        out.append(DemoClip(orig, kind, "original", banked, size[0], size[1], seconds))
        re = transcode(orig, out_dir / f"{kind}-reencoded.mp4", crf=32)
        out.append(DemoClip(re, kind, "reencoded", banked, size[0], size[1], seconds))
        rs = transcode(orig, out_dir / f"{kind}-resized.mp4", small, crf=26)
        out.append(DemoClip(rs, kind, "resized", banked, small[0], small[1], seconds))
    return out
