"""AI provenance: what an item's bytes say (or a classifier suspects) about how it was made.

``analyse(data, media_type)`` runs every registered *reader* that applies to the item's media
kind, cheapest first, and returns their findings. A reader that raises does not stop the others:
its exception becomes an ``error`` finding for its signal.

Readers live in their own modules and plug in by calling :func:`register_reader` at import time::

    from tipline.provenance import ReadContext, register_reader
    from tipline.findings import Finding

    def read_c2pa(ctx: ReadContext) -> list[Finding]:
        if not ctx.container.c2pa_present:   # parsed once, shared by every reader
            return []
        ...

    register_reader("c2pa", read_c2pa, kinds=("image",), signal="c2pa", cost=20)

Modules named in ``PLUGIN_MODULES`` are imported on first use, so a new reader needs no edit
here beyond that list (a module that is absent is skipped silently). ``analyse`` imports only
those its call can need (``PLUGIN_NEEDS``: the media kinds their readers apply to, and the
watermark and detector modules only when asked for); ``registered_readers`` imports them all.

Privacy: readers always put free text (prompts, captions, authors) under
``evidence["text"]``; ``analyse`` drops it unless ``include_text=True``.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from tipline.findings import Evidence, Finding, Signal, ai_evidence
from tipline.media.sniff import SNIFF_BYTES, MediaType, sniff
from tipline.registry import Registry

if TYPE_CHECKING:
    from tipline.provenance.containers import ContainerInfo

__all__ = [
    "Evidence",
    "Finding",
    "ReadContext",
    "Reader",
    "ai_evidence",
    "analyse",
    "has_readers",
    "register_reader",
    "registered_readers",
    "unregister_reader",
]

#: Modules under ``tipline.provenance`` imported on first use so their readers register.
PLUGIN_MODULES: tuple[tuple[str, Signal], ...] = (
    ("c2pa", "c2pa"),
    ("watermark", "watermark"),
    ("detector", "detector"),
    ("models", "model_file"),
    ("keywords", "keyword"),
)

#: What ``analyse`` must be doing before it imports a module of ``PLUGIN_MODULES``: the media
#: kinds its readers apply to, and the option without which they find nothing
#: (``include_watermarks`` / ``include_detectors``), or None. A module not named here is
#: imported for every call; ``keywords`` registers no reader (the keyword pass runs after it).
PLUGIN_NEEDS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "c2pa": (("image", "video"), None),
    "watermark": (("image",), "watermarks"),
    "detector": (("image",), "detectors"),
    "models": (("model",), None),
    "keywords": ((), None),
}

#: Defaults used when the caller passes no limits (same as ``tipline.config.Limits``).
DEFAULT_MAX_PIXELS = 150_000_000
DEFAULT_MAX_DECODE_SECONDS = 30.0


class ReadContext:
    """What a reader gets: the item, its media type, options, and the findings so far."""

    def __init__(
        self,
        data: bytes,
        media_type: MediaType,
        *,
        include_text: bool = False,
        include_detectors: bool = False,
        include_watermarks: bool | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_decode_seconds: float = DEFAULT_MAX_DECODE_SECONDS,
    ) -> None:
        self.data = data
        self.media_type = media_type
        #: whether the caller keeps free text; readers still put it under evidence["text"]
        self.include_text = include_text
        self.include_detectors = include_detectors
        #: decode invisible watermarks (costly on generator-sized images); None: environment
        self.include_watermarks = include_watermarks
        self.max_pixels = max_pixels
        self.max_decode_seconds = max_decode_seconds
        #: findings of the readers that ran before this one (cheaper ones), text included
        self.findings: list[Finding] = []
        #: scratch space readers share (parsed XMP...), keyed by reader-chosen names
        self.cache: dict[str, Any] = {}

    @cached_property
    def container(self) -> ContainerInfo:
        """The item's metadata containers (PNG chunks, JPEG segments, EXIF, XMP...), parsed once.

        Never raises: structural problems are listed in ``container.errors``.
        """
        from tipline.provenance.containers import parse_container

        return parse_container(self.data, self.media_type)


ReaderFn = Callable[[ReadContext], Iterable[Finding]]


@dataclass(frozen=True, slots=True)
class Reader:
    name: str
    fn: ReaderFn
    #: media kinds (``MediaType.kind``) this reader applies to
    kinds: tuple[str, ...]
    #: the signal its error findings are reported under
    signal: Signal
    #: lower runs first; built-ins: container metadata 10, IPTC 12, stealth LSB 40
    cost: int
    #: learned classifiers run only with ``include_detectors=True``
    detector: bool


#: the readers by name, in registration order (``registered_readers`` breaks cost ties by it)
_READERS: Registry[Reader] = Registry("reader", error=ValueError)
#: False: nothing loaded yet, or everything to load again (tests set it back to False)
_plugins_loaded = False
#: what is loaded since ``_plugins_loaded`` was last False: "builtins", "entry_points" and
#: module names of ``PLUGIN_MODULES``; ``_ALL`` once everything is
_loaded: set[str] = set()
_ALL = "*"
_plugin_errors: list[tuple[str, Signal, str]] = []


def register_reader(
    name: str,
    fn: ReaderFn,
    kinds: Iterable[str] = ("image",),
    *,
    signal: Signal = "generator_metadata",
    cost: int = 50,
    detector: bool = False,
) -> None:
    """Add (or replace, by name) a reader. Call it at import time of the reader's module."""
    _READERS.register(name, Reader(name, fn, tuple(kinds), signal, cost, detector), replace=True)


def unregister_reader(name: str) -> None:
    """Forget a reader (tests; a plugin that withdraws one)."""
    _READERS.unregister(name, missing_ok=True)


#: Entry-point group through which other packages add readers (docs/extending.md).
READER_ENTRY_POINTS = "tipline.readers"


def registered_readers() -> list[Reader]:
    """Every reader, in the order ``analyse`` runs them."""
    _load_plugins()
    return _sorted_readers()


def _sorted_readers() -> list[Reader]:
    return sorted(_READERS.snapshot().values(), key=lambda r: r.cost)  # stable: ties in order


def has_readers(kind: str) -> bool:
    """Whether any reader applies to media of this kind (``image``, ``model``...)."""
    _load_plugins(kind, watermarks=True, detectors=True)
    return any(kind in r.kinds for r in _sorted_readers())


def _needed(mod: str, kind: str | None, watermarks: bool, detectors: bool) -> bool:
    if kind is None or mod not in PLUGIN_NEEDS:
        return True
    kinds, option = PLUGIN_NEEDS[mod]
    if kind not in kinds:
        return False
    return option is None or (watermarks if option == "watermarks" else detectors)


def _load_plugins(
    kind: str | None = None, *, watermarks: bool = True, detectors: bool = True
) -> None:
    """Import the reader modules a call needs: all of them (``kind`` None), or those whose
    readers can find something in media of ``kind`` with these options (``PLUGIN_NEEDS``);
    the built-in readers and other packages' entry points always."""
    global _plugins_loaded
    if not _plugins_loaded:
        _plugins_loaded = True
        _loaded.clear()
        _plugin_errors.clear()
    if _ALL in _loaded:
        return
    if "builtins" not in _loaded:
        _loaded.add("builtins")
        _register_builtins()
    for mod, signal in PLUGIN_MODULES:
        if mod in _loaded or not _needed(mod, kind, watermarks, detectors):
            continue
        _loaded.add(mod)
        full = f"{__name__}.{mod}"
        try:
            importlib.import_module(full)
        except ModuleNotFoundError as err:
            if err.name != full:
                _plugin_errors.append((mod, signal, f"{type(err).__name__}: {err}"))
        except Exception as err:  # a broken plugin must not break scanning
            _plugin_errors.append((mod, signal, f"{type(err).__name__}: {err}"))
    if "entry_points" not in _loaded:
        _loaded.add("entry_points")
        _load_entry_points()
    if all(mod in _loaded for mod, _ in PLUGIN_MODULES):
        _loaded.add(_ALL)


def _load_entry_points() -> None:
    """Readers of other packages: each ``tipline.readers`` entry point names a module that
    calls ``register_reader`` when imported, or a callable that does when called."""
    if not _may_declare(READER_ENTRY_POINTS):
        return
    from importlib.metadata import entry_points

    for ep in entry_points(group=READER_ENTRY_POINTS):
        try:
            obj = ep.load()
            if callable(obj):
                obj()
        except Exception as err:  # a broken plugin must not break scanning
            _plugin_errors.append((ep.name, "generator_metadata", f"{type(err).__name__}: {err}"))


def _may_declare(group: str) -> bool:
    """Whether an installed distribution may declare entry points of ``group``: False only
    where no ``entry_points.txt`` of a ``*.dist-info`` / ``*.egg-info`` folder on ``sys.path``
    names it and nothing else could hold distributions (a zip or an egg on the path, a finder
    of another kind). Importing ``importlib.metadata`` and parsing every distribution's entry
    points costs ~24 ms of each ``tipline hash``; reading those files ~2 ms."""
    from importlib.machinery import PathFinder

    if any(hasattr(f, "find_distributions") and f is not PathFinder for f in sys.meta_path):
        return True
    needle = group.encode()
    for entry in sys.path:
        folder = entry or "."
        if folder.endswith(".egg"):
            return True
        try:
            with os.scandir(folder) as it:
                names = [e.name for e in it]
        except NotADirectoryError:
            return True  # a zip file on the path
        except OSError:
            continue  # absent or unreadable: importlib.metadata finds nothing there either
        for name in names:
            lower = name.lower()
            if lower.endswith(".egg"):
                return True
            if not lower.endswith((".dist-info", ".egg-info")):
                continue
            try:
                with open(os.path.join(folder, name, "entry_points.txt"), "rb") as f:
                    if needle in f.read():
                        return True
            except OSError:
                continue
    return False


def _register_builtins() -> None:
    from tipline.provenance import generators

    register_reader(
        "generator_metadata", generators.read_metadata, signal="generator_metadata", cost=10
    )
    register_reader("iptc", generators.read_iptc, signal="iptc", cost=12)
    register_reader("stealth_metadata", generators.read_stealth, signal="stealth_metadata", cost=40)


def analyse(
    data: bytes,
    media_type: MediaType | None = None,
    *,
    include_text: bool = False,
    include_detectors: bool = False,
    include_watermarks: bool | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_decode_seconds: float = DEFAULT_MAX_DECODE_SECONDS,
    only: Iterable[str] | None = None,
) -> list[Finding]:
    """Every provenance finding for one item. Never raises for bad input.

    ``only`` restricts the run to the named readers (used by benchmarks and tests).
    """
    mt = media_type or sniff(data[:SNIFF_BYTES])
    ctx = ReadContext(
        data,
        mt,
        include_text=include_text,
        include_detectors=include_detectors,
        include_watermarks=include_watermarks,
        max_pixels=max_pixels,
        max_decode_seconds=max_decode_seconds,
    )
    wanted = set(only) if only is not None else None
    if wanted is None:
        _load_plugins(mt.kind, watermarks=bool(include_watermarks), detectors=include_detectors)
        readers = _sorted_readers()
    else:
        readers = registered_readers()
    for mod, signal, msg in _plugin_errors:
        if wanted is None or mod in wanted:
            ctx.findings.append(
                Finding(signal, "error", error=f"reader module {mod!r} failed to load: {msg}")
            )
    for reader in readers:
        if mt.kind not in reader.kinds or (reader.detector and not include_detectors):
            continue
        if wanted is not None and reader.name not in wanted:
            continue
        try:
            ctx.findings.extend(reader.fn(ctx))
        except Exception as err:  # one reader's bug or surprise must not cost the others
            text = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
            ctx.findings.append(
                Finding(
                    reader.signal,
                    "error",
                    error=f"{reader.name}: {type(err).__name__}{': ' + text if text else ''}",
                )
            )
    if not include_text:
        for f in ctx.findings:
            f.evidence.pop("text", None)
    return ctx.findings
