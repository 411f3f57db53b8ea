"""Settings shared by the CLI and (later) the service: data directory and input limits."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

MiB = 1024 * 1024
GiB = 1024 * MiB


def data_dir(explicit: str | Path | None = None) -> Path:
    """Where Tipline keeps banks and the demo corpus.

    ``--data-dir`` wins, then ``$TIPLINE_DATA_DIR``, then ``$XDG_DATA_HOME/tipline``
    (``~/.local/share/tipline``).
    """
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("TIPLINE_DATA_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "tipline"


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps that keep hostile input from exhausting memory, disk or time.

    Every one is a command-line flag on ``tipline scan`` and ``tipline hash``.
    """

    #: Largest file read at all (images, archives, other files are hashed by streaming).
    max_file_bytes: int = 4 * GiB
    #: Largest image file decoded (larger files still get cryptographic hashes).
    max_image_bytes: int = 256 * MiB
    #: Decompression-bomb guard: width x height above this is refused before decoding.
    max_pixels: int = 150_000_000
    #: Wall-clock seconds allowed for decoding and hashing one image.
    max_decode_seconds: float = 30.0
    #: Archive members scanned per archive; the rest are reported, not scanned.
    max_archive_members: int = 10_000
    #: Total uncompressed bytes read from one archive (nested archives count too).
    max_archive_bytes: int = 2 * GiB
    #: Largest single member read from an archive.
    max_member_bytes: int = 512 * MiB
    #: Uncompressed/compressed ratio above which a member is treated as a bomb.
    max_compression_ratio: float = 200.0
    #: Archives inside archives deeper than this are not opened.
    max_archive_depth: int = 4
