"""Fixtures: every image here is benign and made by this code or shipped by scikit-image."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings
from PIL import Image

pytest_plugins = ["conftest_db"]  # db_url, engine, session_factory (both backends)

# Examples are judged by what they find, not by how fast a shared 2-core machine runs them:
# no per-example deadline (a slow example under load is not a failure).
settings.register_profile("tipline", deadline=None)
settings.load_profile("tipline")


def photo(name: str = "coffee", size: tuple[int, int] | None = None) -> Image.Image:
    import skimage.data

    img = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    if size:
        img = img.resize(size, Image.Resampling.BICUBIC)
    return img


def noise_image(seed: int, w: int = 160, h: int = 120) -> Image.Image:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC)
    return img


def encode(img: Image.Image, fmt: str = "JPEG", **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """write(name, data_or_image, fmt=...) -> path under tmp_path."""

    def _write(name: str, data: bytes | Image.Image, fmt: str | None = None, **kw: object) -> Path:
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, Image.Image):
            data = encode(data, fmt or "JPEG", **kw)
        p.write_bytes(data)
        return p

    return _write
