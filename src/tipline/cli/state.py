"""Process-wide CLI state set by the top-level options."""

from __future__ import annotations

from pathlib import Path

from tipline.config import data_dir as _resolve

_data_dir: Path | None = None


def set_data_dir(path: Path | None) -> None:
    global _data_dir
    _data_dir = _resolve(path)


def data_dir() -> Path:
    return _data_dir if _data_dir is not None else _resolve(None)
