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

    #: Largest file read at all. Non-image files are hashed by streaming (flat memory), so this
    #: only bounds time; 64 GiB admits full SDXL/Flux checkpoints and long videos.
    max_file_bytes: int = 64 * GiB
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
    #: Videos whose headers claim a longer duration are refused; decoding also stops there.
    max_video_seconds: float = 6 * 3600.0
    #: Videos whose headers claim more frames are refused; decoding also stops there.
    max_video_frames: int = 2_000_000
    #: Frames hashed per video at most (vPDQ samples about one a second).
    max_video_hashes: int = 25_000
    #: Video frames with more pixels (width x height) are refused before decoding (8K fits).
    max_video_pixels: int = 36_000_000
    #: Video frames wider or taller than this are refused before decoding.
    max_video_side: int = 16_384
    #: Wall-clock seconds allowed for decoding and hashing one video.
    max_video_decode_seconds: float = 600.0
