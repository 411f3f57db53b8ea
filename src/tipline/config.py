"""Settings shared by the CLI and the service: data directory, input limits, and the typed
parser that reads every settings dataclass (``tipline.service.settings.ServiceSettings``) from
files, the environment and flags by its fields' type annotations."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


# ---------------------------------------------------------------------------------------------
# Typed settings: values from files, the environment and flags, parsed by each dataclass
# field's type annotation (no hand-kept lists of names).

#: Where a setting's value came from (``tipline config show``).
SOURCES = ("default", "file", "env", "flag")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """The resolved type annotation of each field of the dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def is_settings_table(tp: Any) -> bool:
    """A field whose type is itself a dataclass: a table of settings (``[triage]``)."""
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def parse_value(tp: Any, value: Any, *, minimum: float | None = None) -> Any:
    """``value`` (a string from the environment, or a TOML/JSON value) as type ``tp``.

    Raises ValueError or TypeError with a short reason."""
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        low = str(value).strip().lower()
        if low in choices:
            return low
        raise ValueError(f"want one of {', '.join(map(str, choices))}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        low = str(value).strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError("want true or false")
    if tp is int:
        if isinstance(value, bool | float):
            raise ValueError("want a whole number")
        out_i = int(str(value).strip()) if isinstance(value, str) else int(value)
        if out_i < (0 if minimum is None else minimum):
            raise ValueError("out of range")
        return out_i
    if tp is float:
        if isinstance(value, bool):
            raise ValueError("want a number")
        out_f = float(value)
        if not math.isfinite(out_f):
            raise ValueError("want a finite number")
        if minimum is not None and out_f < minimum:
            raise ValueError("out of range")
        return out_f
    if tp is Path:
        if not isinstance(value, str | Path):
            raise ValueError("want a path")
        return Path(str(value)).expanduser()
    if tp is str:
        if isinstance(value, dict | list):
            raise ValueError("want a string")
        return str(value)
    raise TypeError(f"settings of type {tp!r} are not supported")


def parse_fields(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (name -> raw value) parsed by ``cls``'s annotations; nested dataclasses from
    a mapping (or an instance). Raises ``KeyError(name)`` for an unknown name and
    ``ValueError("name: why")`` for a bad value."""
    types = field_types(cls)
    mins = {f.name: f.metadata.get("min") for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for name, raw in values.items():
        if name not in types:
            raise KeyError(name)
        tp = types[name]
        if is_settings_table(tp):
            if isinstance(raw, tp):
                out[name] = raw
                continue
            if not isinstance(raw, Mapping):
                raise ValueError(f"{name}: want a table of settings")
            try:
                out[name] = tp(**parse_fields(tp, raw))
            except KeyError as err:
                raise KeyError(f"{name}.{err.args[0]}") from None
            except ValueError as err:
                raise ValueError(f"{name}.{err}") from None
            continue
        try:
            out[name] = parse_value(tp, raw, minimum=mins[name])
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name}: invalid value {str(raw)[:80]!r}: {err}") from None
    return out


def env_values(cls: type, env: Mapping[str, str], prefix: str) -> dict[str, Any]:
    """The raw values of ``cls``'s fields set in ``env`` (``PREFIX + NAME``; a nested table's
    fields as ``PREFIX + TABLE_FIELD``). Empty variables count as unset."""
    out: dict[str, Any] = {}
    for name, tp in field_types(cls).items():
        key = prefix + name.upper()
        if is_settings_table(tp):
            sub = env_values(tp, env, key + "_")
            if sub:
                out[name] = sub
        elif env.get(key):
            out[name] = env[key]
    return out


def env_names(cls: type, prefix: str) -> dict[str, str]:
    """Each setting's environment variable: ``{"port": "TIPLINE_PORT",
    "triage.alert_match": "TIPLINE_TRIAGE_ALERT_MATCH", ...}``."""
    out: dict[str, str] = {}
    for name, tp in field_types(cls).items():
        if is_settings_table(tp):
            for sub, var in env_names(tp, prefix + name.upper() + "_").items():
                out[f"{name}.{sub}"] = var
        else:
            out[name] = prefix + name.upper()
    return out


def flat_values(obj: Any) -> dict[str, Any]:
    """A settings object's values by dotted name (nested tables flattened)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            for sub, v in flat_values(value).items():
                out[f"{f.name}.{sub}"] = v
        else:
            out[f.name] = value
    return out
