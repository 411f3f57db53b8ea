"""Signal types: the kinds of hash Tipline computes, stores in banks and matches.

In the spirit of python-threatexchange's ``SignalType``: each type says how its signals are
normalised and validated, which index holds them (``index``: a name registered in
``tipline.index.signal_index``), how an item record is queried (``record_queries``), whether a
bank's PDQ-style distance threshold applies (``uses_bank_threshold``), how two signals compare,
which short model hashes an image may cite for it (``cited_queries``), and examples used by the
contract tests. Adding a signal type is one module with one ``register`` call (or a
``tipline.signal_types`` entry point in another package, see docs/extending.md).

Names follow python-threatexchange where it has one (``pdq``, ``video_md5``) so hash lists move
between the tools unchanged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from tipline.errors import InvalidSignalError
from tipline.record import ItemRecord
from tipline.registry import Registry

log = logging.getLogger("tipline.signals")

#: how a cited short hash finds entries of a type: the signal equal to it, or starting with it
CiteMode = Literal["exact", "prefix"]

_HEX = re.compile(r"[0-9a-f]+")

#: Entry-point group through which other packages add signal types.
ENTRY_POINT_GROUP = "tipline.signal_types"


@dataclass(frozen=True)
class SignalType:
    """A hex signal of fixed length, matched exactly (md5, sha1, sha256, model hashes)."""

    name: str
    hex_len: int
    description: str
    #: the index kind holding this type's signals (``tipline.index.signal_index``)
    index: str = "exact"
    #: shorter forms also accepted (Civitai shows AutoV3 as its first 12 hex)
    short_lens: tuple[int, ...] = ()
    #: valid signals, for the docs and the contract tests (two distinct ones at least)
    examples: tuple[str, ...] = ()
    #: ItemRecord attribute holding an item's own signal of this type ("" for none)
    record_field: str = ""
    #: per-bank distance threshold applies (PDQ); exact types match at distance 0
    uses_bank_threshold: bool = False
    #: lengths of cited hashes this type answers: length -> ((mode, cut), ...): the cited
    #: hash, cut to ``cut`` hex (0 = whole), looked up exactly or as a prefix
    cites: dict[int, tuple[tuple[CiteMode, int], ...]] = field(default_factory=dict)

    def normalise(self, signal: str) -> str:
        """Canonical form (lowercase hex) or InvalidSignalError with a one-line reason."""
        s = signal.strip().lower()
        if (len(s) != self.hex_len and len(s) not in self.short_lens) or not _HEX.fullmatch(s):
            raise InvalidSignalError(
                f"not a valid {self.name} signal (want "
                f"{' or '.join(str(n) for n in (self.hex_len, *self.short_lens))} hex characters): "
                f"{signal[:80]!r}"
            )
        return s

    def record_query_groups(self, record: ItemRecord) -> list[tuple[str | None, list[str]]]:
        """``record_queries`` grouped by how each value was derived: ``(via, values)``, via
        None for the item's own signal; a match found only through a group names it in its
        ``via``. Default: one group, the item's own."""
        values = self.record_queries(record)
        return [(None, values)] if values else []

    def record_queries(self, record: ItemRecord) -> list[str]:
        """The normalised values an item record is looked up under (empty: none)."""
        value = getattr(record, self.record_field, None) if self.record_field else None
        if not isinstance(value, str) or not value:
            return []
        v = value.lower()
        extra = [v[:n] for n in self.short_lens if n < len(v)]
        return [v, *extra]

    def cited_queries(self, cited: str) -> list[tuple[CiteMode, str]]:
        """How a model hash cited by an image (lowercase hex) finds entries of this type."""
        rules = self.cites.get(len(cited), ())
        return [(mode, cited[:cut] if cut else cited) for mode, cut in rules]

    def distance(self, a: str, b: str) -> int:
        """Distance between two normalised signals (exact types: 0 or 1)."""
        return 0 if a == b else 1

    @property
    def default_threshold(self) -> int:
        return 0

    @property
    def has_distance(self) -> bool:
        """Matches at a distance worth showing (PDQ, TLSH); exact types only ever match at 0."""
        return self.uses_bank_threshold or self.default_threshold > 0


@dataclass(frozen=True)
class PdqSignalType(SignalType):
    """256-bit PDQ, matched by Hamming distance within each bank's threshold. The item's own
    hash; with dihedral hashing on, its 7 other rotations/flips (via ``dihedral``); and every
    extra query hash in ``record.pdq_variants`` (via its name: ``rgb``, ``border_trimmed``,
    ``crop_...``), which were kept only where usable (quality >= 50), so they are queried even
    when the item's own hash is not usable."""

    def record_query_groups(self, record: ItemRecord) -> list[tuple[str | None, list[str]]]:
        groups: list[tuple[str | None, list[str]]] = []
        if record.pdq_usable:
            own = (record.pdq or "").lower()
            groups.append((None, [own]))
            rotations = [h.lower() for h in (record.pdq_dihedral or [])[1:]]
            if rotations:
                groups.append(("dihedral", rotations))
        for name, value in (record.pdq_variants or {}).items():
            if value:
                groups.append((name, [value.lower()]))
        return groups

    def record_queries(self, record: ItemRecord) -> list[str]:
        return [v for _, values in self.record_query_groups(record) for v in values]

    def distance(self, a: str, b: str) -> int:
        return (int(a, 16) ^ int(b, 16)).bit_count()

    @property
    def default_threshold(self) -> int:
        return 31


@dataclass(frozen=True)
class VpdqSignalType(SignalType):
    """vPDQ: a JSON list of ``pdq_hex,quality,timestamp`` frames, matched by frame overlap."""

    def normalise(self, signal: str) -> str:
        from tipline.signals.vpdq import normalise_signal

        return normalise_signal(signal)

    def record_queries(self, record: ItemRecord) -> list[str]:
        if not record.vpdq:
            return []
        from tipline.signals.vpdq import VpdqHash

        try:
            return [VpdqHash.from_strings(record.vpdq).to_te_json()]
        except InvalidSignalError:
            return []

    def distance(self, a: str, b: str) -> int:
        from tipline.signals.vpdq import VpdqHash, match_vpdq

        res = match_vpdq(VpdqHash.from_te_json(a), VpdqHash.from_te_json(b))
        return res.best_distance if res.best_distance is not None else 256


@dataclass(frozen=True)
class TlshSignalType(SignalType):
    """TLSH of a text (``tipline.signals.tlsh``): ``T1`` + 70 hex, matched by python-
    threatexchange's distance (``diffxlen``) within the type's ``threshold`` (30), whatever the
    bank's PDQ threshold."""

    threshold: int = 30

    def normalise(self, signal: str) -> str:
        from tipline.signals.tlsh import normalise_signal

        return normalise_signal(signal)

    def record_queries(self, record: ItemRecord) -> list[str]:
        value = getattr(record, self.record_field, None) if self.record_field else None
        if not isinstance(value, str) or not value:
            return []
        try:
            return [self.normalise(value)]
        except InvalidSignalError:
            return []

    def distance(self, a: str, b: str) -> int:
        from tipline.signals.tlsh import distance

        return distance(a, b)

    @property
    def default_threshold(self) -> int:
        return self.threshold


_PDQ_EXAMPLES = (
    "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22",
    "0000000000000000000000000000000000000000000000000000000000000000"[:-8] + "ffffffff",
)

MD5 = SignalType(
    "md5",
    32,
    "MD5 of the file bytes",
    examples=("d41d8cd98f00b204e9800998ecf8427e", "900150983cd24fb0d6963f7d28e17f72"),
    record_field="md5",
)
SHA1 = SignalType(
    "sha1",
    40,
    "SHA-1 of the file bytes",
    examples=(
        "da39a3ee5e6b4b0d3255bfef95601890afd80709",
        "a9993e364706816aba3e25717850c26c9cd0d89d",
    ),
    record_field="sha1",
)
SHA256 = SignalType(
    "sha256",
    64,
    "SHA-256 of the file bytes",
    examples=(
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
    ),
    record_field="sha256",
    # A1111 cites a checkpoint by 10 hex of its SHA-256, a non-safetensors LoRA by 12
    cites={10: (("prefix", 0),), 12: (("prefix", 0),), 64: (("exact", 0),)},
)
PDQ = PdqSignalType(
    "pdq",
    64,
    "PDQ perceptual hash of an image (256 bits)",
    index="hamming",
    examples=_PDQ_EXAMPLES,
    record_field="pdq",
    uses_bank_threshold=True,
)
VPDQ = VpdqSignalType(
    "vpdq",
    0,
    "vPDQ video hash: JSON list of 'pdq_hex,quality,timestamp' frames",
    index="vpdq",
    examples=(
        '["' + _PDQ_EXAMPLES[0] + ',100,0.000", "' + _PDQ_EXAMPLES[1] + ',90,1.000"]',
        '["' + "0f" * 32 + ',100,0.000"]',
    ),
    record_field="vpdq",
)
# Model files (AI checkpoints and LoRAs; see tipline.provenance.model_files and ai-provenance.md).
AUTOV1 = SignalType(
    "autov1",
    8,
    "A1111 legacy model hash: sha256(file[1 MiB:+64 KiB])[:8]",
    examples=("0123abcd", "ffee0011"),
    record_field="autov1",
    cites={8: (("exact", 0),)},
)
AUTOV2 = SignalType(
    "autov2",
    10,
    "A1111 model hash: first 10 hex of the file's SHA-256",
    examples=("0123456789", "abcdefabcd"),
    record_field="autov2",
    cites={10: (("exact", 0),)},
)
AUTOV3 = SignalType(
    "autov3",
    64,
    "kohya/addnet hash: SHA-256 of a safetensors file's tensor data (metadata edits keep it); "
    "Civitai's 12-hex form accepted",
    short_lens=(12,),
    examples=("a1" * 32, "0123456789ab"),
    record_field="autov3",
    # "Lora hashes" cite 12 hex of the AutoV3: a 12-hex entry, or a full one it starts
    cites={12: (("exact", 0), ("prefix", 0)), 64: (("exact", 0), ("exact", 12))},
)
# Text (guides found by the crawler, documents): a fuzzy hash, python-threatexchange's text TLSH.
TLSH = TlshSignalType(
    "tlsh",
    70,
    "TLSH fuzzy hash of a text (T1 + 70 hex), normalised as tipline.signals.tlsh says; "
    "a match is a diffxlen distance of 30 or less",
    index="tlsh",
    examples=(
        "T1F3C08C163ABE486104A26E02672BC31519A99538050C48045888E0B093888A12A70A82",
        "T1C9C02B176110C37530EA081F390FC0C0C0008435A12E8722203CF45D34082BF71F93D4",
    ),
    record_field="tlsh",
)

#: every signal type by name; lookups read its snapshot (replaced whole on every change, never
#: mutated), so they take no lock and copy nothing
_TYPES: Registry[SignalType] = Registry("signal type", error=InvalidSignalError)
_PLUGINS_LOADED = False


def register(st: SignalType) -> SignalType:
    """Make ``st`` known to banks, formats and matching. Re-registering a name replaces it."""
    return _TYPES.register(st.name, st, replace=True)


def unregister(name: str) -> None:
    _TYPES.unregister(name, missing_ok=True)


for _builtin in (MD5, SHA1, SHA256, PDQ, VPDQ, AUTOV1, AUTOV2, AUTOV3, TLSH):
    register(_builtin)


def _load_plugins() -> None:
    """Signal types other packages declare under the ``tipline.signal_types`` entry points
    (each names a SignalType instance, or a callable returning one). A broken plugin is logged
    and skipped: it must not take the built-in types down with it."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            st = obj() if callable(obj) and not isinstance(obj, SignalType) else obj
            if not isinstance(st, SignalType):
                raise TypeError(f"{ep.value} is not a SignalType")
            register(st)
        except Exception:
            log.exception("could not load signal type plugin %s", ep.name)


def registered() -> dict[str, SignalType]:
    """Every known signal type by name (built-in, registered, and entry-point plugins).
    Read-only: use ``register`` / ``unregister`` to change it."""
    if not _PLUGINS_LOADED:
        _load_plugins()
    return _TYPES.snapshot()


def iter_types() -> Iterator[SignalType]:
    return iter(registered().values())


class _RegistryView(Mapping[str, SignalType]):
    """``SIGNAL_TYPES``: a live read-only view of the registry."""

    def __getitem__(self, key: str) -> SignalType:
        return registered()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(registered())

    def __len__(self) -> int:
        return len(registered())


SIGNAL_TYPES: Mapping[str, SignalType] = _RegistryView()

#: Names other tools use for the same signal. python-threatexchange calls file MD5 of a video
#: ``video_md5``; the bytes hashed are the same, so they match the same entries.
ALIASES = {
    "video_md5": "md5",
    "photo_md5": "md5",
    "sha-256": "sha256",
    "sha-1": "sha1",
    "addnet": "autov3",
    "text_tlsh": "tlsh",  # python-threatexchange's TextTLSHSignal
}


def signal_type(name: str) -> SignalType:
    if _PLUGINS_LOADED:  # the common case, a registered name as is: one dict lookup
        found = _TYPES.find(name)
        if found is not None:
            return found
    key = name.strip().lower()
    key = ALIASES.get(key, key)
    found = registered().get(key)
    if found is None:
        raise _TYPES.unknown(name)
    return found


def guess_signal_type(signal: str) -> SignalType | None:
    """For bare hex lines: 32 hex is MD5, 40 is SHA-1, ``T1`` + 70 hex is TLSH; 64 is
    ambiguous (PDQ or SHA-256)."""
    s = signal.strip().lower()
    if len(s) == 72 and s.startswith("t1") and _HEX.fullmatch(s[2:]):
        return TLSH  # "T1" + 70 hex is TLSH and nothing else
    if not _HEX.fullmatch(s):
        return None
    return {32: MD5, 40: SHA1}.get(len(s))
