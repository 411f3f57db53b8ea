"""Keyword lists: user-supplied terms matched, after normalisation, in any text an item carries.

The repository ships only a neutral demo list (``data/demo-keywords.txt``: placeholder words like
``bluebird``). Real lists are licensed to hotlines and imported by the user at run time.

Normalisation (applied identically to the terms and to the text, so both meet in the middle):

1. Unicode NFKC (fullwidth and mathematical letters, ligatures), then a small table of Cyrillic
   and Greek capitals that look like Latin ones, then ``casefold``; combining diacritics are
   stripped (``café`` -> ``cafe``, "zalgo" text); zero-width and other format characters are
   deleted; lowercase Cyrillic/Greek lookalikes map to Latin letters.
2. Leetspeak folding into letter classes: ``0``->o, ``1`` and ``l``->i, ``3``->e, ``4``->a,
   ``5``->s, ``7``->t, ``8``->b, ``9``->g; ``@ $ ! |`` count as a/s/i/i only *between* two word
   characters (``p@$$w0rd``), so a mention (``@name``) or a sentence end (``word!``) is untouched.
   ``l`` and ``1`` fold to ``i`` because ``1`` stands for either.
3. Every other non-letter, non-digit character becomes a separator and runs of separators become
   one space. The result is a sequence of words separated by single spaces.

Matching uses one Aho-Corasick automaton (pyahocorasick) over the normalised text, padded with
a space at each end. Each term is added as ``" term "``, so every hit is a whole-word (or
whole-phrase) hit without a per-hit boundary check; a phrase matches across any separators
(``blue, bird`` or ``blue\\nbird`` for ``blue bird``). Terms in scripts written without spaces
(CJK, Thai, Lao, Khmer, Myanmar) are added unpadded: substring matching.

Separators inserted between letters (``b.l.u.e.b.i.r.d``, ``b l u e b i r d``, ``b-l-u-e``): the
text is never re-joined (joining single letters across a text invents words: ``a b c`` before a
word, initials, lists). Instead each term of 4 or more letters is also added in its spaced-out
form, ``" b i u e b i r d "`` (after folding), which is exactly what any of those spellings
normalise to. Only a term spelled out completely, letter by letter, matches; ``a b l u e b i r d``
still matches ``bluebird`` because the match needs a space on each side, not a word start. A
phrase is also added joined (``teapot42`` and ``teapot 42`` both match ``teapot-42``).
Known misses (documented, by design): separators at only some positions (``blue.bird``: use the
phrase ``blue bird`` or list both), elongation (``bluebiiird``), and lookalikes outside the table.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import ahocorasick
import numpy as np

from tipline.findings import Finding

DEFAULT_CATEGORY = "default"
MAX_TERM_CHARS = 256
MAX_TERMS = 2_000_000
#: Terms with at least this many letters also match spelled out letter by letter.
SPACED_MIN_LETTERS = 4
#: Text normalised per call when scanning a long text (keeps memory flat).
CHUNK_CHARS = 1 << 20
#: Text taken from one item's fields (file names, prompts, tags...) at most.
MAX_FIELD_CHARS = 16 << 20
DEMO_LIST = Path(__file__).with_name("data") / "demo-keywords.txt"

# ---- normalisation tables --------------------------------------------------------------------

_LEET = {"0": "o", "1": "i", "l": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g"}
_LEET_SYMBOLS = {"@": "a", "$": "s", "!": "i", "|": "i"}
#: Capitals that only look Latin once case is gone (Greek Eta is H, lowercase eta is n).
_UPPER_CONFUSABLES = str.maketrans(
    {
        "А": "a", "В": "b", "Е": "e", "К": "k", "М": "m", "Н": "h", "О": "o", "Р": "p", "С": "c",
        "Т": "t", "У": "y", "Х": "x", "І": "i", "Ј": "j", "Ѕ": "s", "Ү": "y", "Ԛ": "q", "Ԝ": "w",
        "Α": "a", "Β": "b", "Ε": "e", "Ζ": "z", "Η": "h", "Ι": "i", "Κ": "k", "Μ": "m", "Ν": "n",
        "Ο": "o", "Ρ": "p", "Τ": "t", "Υ": "y", "Χ": "x",
    }
)  # fmt: skip
_LOWER_CONFUSABLES = {
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p",
    "с": "c", "т": "t", "у": "y", "х": "x", "і": "i", "ї": "i", "ј": "j", "ѕ": "s", "ԁ": "d",
    "һ": "h", "ӏ": "i", "ԛ": "q", "ԝ": "w", "ү": "y", "ь": "b", "α": "a", "β": "b", "ε": "e",
    "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ω": "w",
    "η": "n", "μ": "u", "ɑ": "a", "ɡ": "g", "ı": "i", "ȷ": "j", "ℓ": "i", "ß": "ss",
}  # fmt: skip
_NOSPACE_SCRIPTS = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uf900-\ufaff\U00020000-\U0002fa1f]"
)
_COMBINING = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]+")


_NON_ASCII = re.compile(r"[^\x00-\x7f](?:[\x00-\x7f]{0,64}[^\x00-\x7f])*")
_WHITESPACE = re.compile(r"[ \t\n\r\f\v]")
#: Below this many characters the pure-Python collapse is faster than numpy's.
_NUMPY_MIN = 4096


def _ascii_table() -> dict[int, str]:
    """Every ASCII character: folded letter or digit, or a space (case is folded here too)."""
    table: dict[int, str] = {}
    for c in range(128):
        ch = chr(c).lower()
        table[c] = _LEET.get(ch, ch) if ch.isalnum() else " "
    return table


_ASCII_TABLE = _ascii_table()
_FULL_TABLE: dict[int, str | None] | None = None


def _full_table() -> dict[int, str | None]:
    """ASCII table + lookalikes + every non-ASCII separator (built once, on first non-ASCII)."""
    global _FULL_TABLE
    if _FULL_TABLE is not None:
        return _FULL_TABLE
    table: dict[int, str | None] = dict(_ASCII_TABLE)
    for r in (range(0x80, 0x20000), range(0xE0000, 0xE0080)):
        for c in r:
            cat = unicodedata.category(chr(c))
            if cat == "Cf":
                table[c] = None  # zero-width space/joiners, soft hyphen, bidi controls, tags
            elif cat[0] in "PSZ" or cat == "Cc":
                table[c] = " "
    for k, v in _LOWER_CONFUSABLES.items():
        table[ord(k)] = v
    _FULL_TABLE = table
    return table


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def _fix_symbols(s: str) -> str:
    """A run of ``@ $ ! |`` between two word characters becomes the letters it stands for
    (``p@$$w0rd``); at a word's edge (``@name``, ``word!!``) it stays a separator.

    Runs on the raw text, before any other step, in every path (``str.find`` is memchr-fast;
    only actual occurrences cost Python time).
    """
    n = len(s)
    found: list[int] = []
    for sym in _LEET_SYMBOLS:
        i = s.find(sym)
        while i != -1:
            found.append(i)
            i = s.find(sym, i + 1)
    if not found:
        return s
    found.sort()
    hits: list[int] = []
    k = 0
    while k < len(found):
        j = k
        while j + 1 < len(found) and found[j + 1] == found[j] + 1:
            j += 1
        a, b = found[k], found[j]
        if a > 0 and b < n - 1 and _is_word(s[a - 1]) and _is_word(s[b + 1]):
            hits.extend(found[k : j + 1])
        k = j + 1
    if not hits:
        return s
    parts: list[str] = []
    prev = 0
    for i in hits:
        parts.append(s[prev:i])
        parts.append(_LEET_SYMBOLS[s[i]])
        prev = i + 1
    parts.append(s[prev:])
    return "".join(parts)


def _fold_unicode(text: str) -> str:
    s = unicodedata.normalize("NFKC", text)
    s = s.translate(_UPPER_CONFUSABLES).casefold()
    s = _COMBINING.sub("", unicodedata.normalize("NFD", s))
    return s.translate(_full_table())


#: Joins the non-ASCII regions of one text so they are folded in one call; a private-use
#: character no folding step changes. Texts that contain it are folded region by region.
_SENTINEL = "\ue000"


_BLOCK = 256


def _next_non_ascii(text: str, pos: int, n: int) -> re.Match[str] | None:
    """The next run of non-ASCII characters from ``pos``: ASCII blocks are skipped with
    ``str.isascii`` (C speed); the regex only scans the block that holds one."""
    i = pos
    while i < n:
        j = min(n, i + _BLOCK)
        if not text[i:j].isascii():
            return _NON_ASCII.search(text, i)
        i = j
    return None


def _fold_regions(text: str) -> str:
    """Long mixed text: only the words around non-ASCII characters take the Unicode path.

    Regions are cut next to ASCII whitespace, which no folding step looks across, so the
    result equals ``_fold_unicode(text)``.
    """
    gaps: list[str] = []
    regions: list[str] = []
    pos = 0
    n = len(text)
    while pos < n:
        m = _next_non_ascii(text, pos, n)
        if m is None:
            break
        start = m.start()
        a = max(pos, text.rfind(" ", pos, start) + 1, text.rfind("\n", pos, start) + 1)
        ws = _WHITESPACE.search(text, m.end())
        b = ws.start() if ws else n
        gaps.append(text[pos:a])
        regions.append(text[a:b])
        pos = b
    tail = text[pos:]
    if _SENTINEL in text:
        folded = [_fold_unicode(r) for r in regions]
    else:
        folded = _fold_unicode(_SENTINEL.join(regions)).split(_SENTINEL) if regions else []
    parts: list[str] = []
    for gap, region in zip(gaps, folded, strict=True):
        parts.append(gap.translate(_ASCII_TABLE))  # ASCII: translate's fast path
        parts.append(region)
    parts.append(tail.translate(_ASCII_TABLE))
    return "".join(parts)


def _collapse(s: str) -> str:
    """Runs of spaces become one space."""
    if len(s) < _NUMPY_MIN:
        while "  " in s:
            s = s.replace("  ", " ")
        return s
    # UTF-8 never uses byte 0x20 inside a multi-byte character, so this is safe for any text.
    b = np.frombuffer(s.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    sp = b == 32
    keep = np.empty(b.shape[0], dtype=bool)
    keep[0] = True
    np.logical_not(sp[1:] & sp[:-1], out=keep[1:])
    return b[keep].tobytes().decode("utf-8", "surrogatepass")


def normalise(text: str) -> str:
    """The matching form of ``text``: lowercase words of folded letters, single spaces.

    May start or end with a space. Idempotent: ``normalise(normalise(t)) == normalise(t)``.
    """
    s = _fix_symbols(text)
    if s.isascii():
        return _collapse(s.translate(_ASCII_TABLE))
    if len(s) < _NUMPY_MIN:
        return _collapse(_fold_unicode(s))
    return _collapse(_fold_regions(s))


def _normalise_term(term: str) -> str:
    return normalise(term).strip()


# ---- keyword lists ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Keyword:
    term: str
    category: str = DEFAULT_CATEGORY


class KeywordListError(ValueError):
    """A keyword list could not be read; the message names the line."""


@dataclass(slots=True)
class KeywordList:
    """Terms with categories, in the order given, without duplicates."""

    keywords: list[Keyword] = field(default_factory=list)
    #: lines skipped on import (empty after normalisation, too long...): "line N: why"
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        unique = list(dict.fromkeys(self.keywords))
        self.keywords = unique

    def __len__(self) -> int:
        return len(self.keywords)

    def __iter__(self) -> Iterator[Keyword]:
        return iter(self.keywords)

    def categories(self) -> list[str]:
        return list(dict.fromkeys(k.category for k in self.keywords))

    def add(self, term: str, category: str = DEFAULT_CATEGORY, where: str = "") -> bool:
        """Add one term; a term that cannot be matched goes to ``problems`` instead."""
        why = _term_problem(term)
        if why is None and (not category.strip() or "\n" in category or "\r" in category):
            why = "empty or multi-line category"
        if why is not None:
            if len(self.problems) < 1000:
                self.problems.append(f"{where}{why}: {term[:60]!r}")
            return False
        if len(self.keywords) >= MAX_TERMS:
            raise KeywordListError(f"more than {MAX_TERMS:,} terms")
        self.keywords.append(Keyword(term.strip(), category.strip()))
        return True

    # -- import ------------------------------------------------------------------------------

    @classmethod
    def parse(
        cls, text: str, fmt: str = "list", default_category: str = DEFAULT_CATEGORY
    ) -> KeywordList:
        """Read a plain list (``fmt="list"``) or a ``term,category`` CSV (``fmt="csv"``)."""
        kl = cls()
        if fmt == "csv":
            reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
            for n, row in enumerate(reader, 1):
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                if n == 1 and [c.strip().lower() for c in row[:2]] == ["term", "category"]:
                    continue
                cat = row[1] if len(row) > 1 and row[1].strip() else default_category
                kl.add(row[0], cat, f"line {n}: ")
        elif fmt == "list":
            category = default_category
            for n, raw in enumerate(text.removeprefix("\ufeff").split("\n"), 1):
                line = raw.rstrip("\r").strip()
                if not line:
                    continue
                if line.startswith("#"):
                    m = re.match(r"#\s*category\s*:\s*(.+)$", line, re.IGNORECASE)
                    if m:
                        category = m.group(1).strip()
                    continue
                if line.startswith("\\"):
                    line = line[1:]
                kl.add(line, category, f"line {n}: ")
        else:
            raise KeywordListError(f"unknown keyword list format {fmt!r} (list or csv)")
        kl.keywords = list(dict.fromkeys(kl.keywords))
        return kl

    @classmethod
    def load(
        cls, path: str | Path, fmt: str | None = None, default_category: str | None = None
    ) -> KeywordList:
        p = Path(path)
        fmt = fmt or guess_format(p)
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise KeywordListError(f"{p}: not UTF-8 (byte {err.start})") from None
        except OSError as err:
            raise KeywordListError(f"{p}: {err.strerror or err}") from None
        return cls.parse(text, fmt, default_category or DEFAULT_CATEGORY)

    # -- export ------------------------------------------------------------------------------

    def dumps(self, fmt: str = "list") -> str:
        if fmt == "csv":
            buf = io.StringIO(newline="")
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(["term", "category"])
            for k in self.keywords:
                w.writerow([k.term, k.category])
            return buf.getvalue()
        if fmt != "list":
            raise KeywordListError(f"unknown keyword list format {fmt!r} (list or csv)")
        lines = ["# Tipline keyword list: one term per line; '# category: NAME' starts a section"]
        current = DEFAULT_CATEGORY
        for k in self.keywords:
            if k.category != current:
                lines.append(f"# category: {k.category}")
                current = k.category
            term = "\\" + k.term if k.term.startswith(("#", "\\")) else k.term
            lines.append(term)
        return "\n".join(lines) + "\n"

    def dump(self, path: str | Path, fmt: str | None = None) -> None:
        p = Path(path)
        p.write_text(self.dumps(fmt or guess_format(p)), encoding="utf-8")


def guess_format(path: Path) -> str:
    return "csv" if path.suffix.lower() in (".csv", ".tsv") else "list"


def _term_problem(term: str) -> str | None:
    t = term.strip()
    if not t:
        return "empty term"
    if "\n" in t or "\r" in t:
        return "multi-line term"
    if len(t) > MAX_TERM_CHARS:
        return f"term longer than {MAX_TERM_CHARS} characters"
    if not _normalise_term(t):
        return "term has no letters or digits"
    return None


def load_demo_list() -> KeywordList:
    """The neutral placeholder list shipped with Tipline (for demos and tests only)."""
    return KeywordList.load(DEMO_LIST)


# ---- matching --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeywordHit:
    term: str
    category: str
    count: int


class KeywordMatcher:
    """One automaton for a whole list. Build it once; ``find`` is thread- and fork-safe."""

    def __init__(self, keywords: KeywordList | Iterable[Keyword]) -> None:
        self.keywords = list(dict.fromkeys(keywords))
        _full_table()  # built before scan workers fork, so they share it
        self._auto: Any = ahocorasick.Automaton()
        patterns: dict[str, list[int]] = {}
        for i, kw in enumerate(self.keywords):
            norm = _normalise_term(kw.term)
            if not norm:
                continue
            for p in _patterns(norm):
                ids = patterns.setdefault(p, [])
                if i not in ids:
                    ids.append(i)
        for p, ids in patterns.items():
            self._auto.add_word(p, tuple(ids))
        self.patterns = len(patterns)
        if patterns:
            self._auto.make_automaton()

    def __len__(self) -> int:
        return len(self.keywords)

    def count_normalised(self, norm: str, counts: Counter[int]) -> None:
        """Add the hits in already-normalised text to ``counts`` (term index -> hits)."""
        if not self.patterns:
            return
        for _end, ids in self._auto.iter(" " + norm + " "):
            for i in ids:
                counts[i] += 1

    def counts(self, text: str) -> Counter[int]:
        counts: Counter[int] = Counter()
        for chunk in _chunks(text):
            self.count_normalised(normalise(chunk), counts)
        return counts

    def find(self, text: str) -> list[KeywordHit]:
        """Every term found in ``text`` (whole words / phrases), with its number of hits."""
        return self._hits(self.counts(text))

    def find_stream(self, stream: BinaryIO, encoding: str = "utf-8") -> list[KeywordHit]:
        """Like ``find`` for a (large) text file: read 1 MiB at a time, cut at line ends."""
        dec = codecs.getincrementaldecoder(encoding)(errors="replace")
        counts: Counter[int] = Counter()
        carry = ""
        while True:
            raw = stream.read(CHUNK_CHARS)
            text = carry + dec.decode(raw, final=not raw)
            if not raw:
                if text:
                    self.count_normalised(normalise(text), counts)
                break
            cut = text.rfind("\n")
            if cut < len(text) // 2:
                cut = max(text.rfind(" "), cut)
            if cut <= 0:
                cut = len(text)
            self.count_normalised(normalise(text[:cut]), counts)
            carry = text[cut:]
        return self._hits(counts)

    def _hits(self, counts: Counter[int]) -> list[KeywordHit]:
        return [
            KeywordHit(self.keywords[i].term, self.keywords[i].category, n)
            for i, n in sorted(counts.items())
        ]

    def findings(self, fields: Iterable[tuple[str, str]]) -> list[Finding]:
        """One ``keyword`` finding per (category, field); the terms only in evidence["text"]."""
        per: dict[tuple[str, str], Counter[int]] = {}
        budget = MAX_FIELD_CHARS
        for name, value in fields:
            if not value or budget <= 0:
                continue
            value = value[:budget]
            budget -= len(value)
            counts = self.counts(value)
            for i, n in counts.items():
                key = (self.keywords[i].category, name)
                per.setdefault(key, Counter())[i] += n
        out = []
        for (category, name), counts in per.items():
            terms = sorted({self.keywords[i].term for i in counts})
            out.append(
                Finding(
                    "keyword",
                    "unknown",
                    evidence={
                        "category": category,
                        "field": name,
                        "count": sum(counts.values()),
                        "terms": len(terms),
                        "text": terms,
                    },
                )
            )
        return out


def _patterns(norm: str) -> list[str]:
    """Automaton keys of one normalised term: padded whole word/phrase, and spelled out."""
    if _NOSPACE_SCRIPTS.search(norm):
        return [norm]
    out = [f" {norm} "]
    letters = norm.replace(" ", "")
    if " " in norm:  # a phrase also matches written as one word: "teapot42", "redrobin"
        out.append(f" {letters} ")
    if len(letters) >= SPACED_MIN_LETTERS:
        spaced = " " + " ".join(letters) + " "
        if spaced != out[0]:
            out.append(spaced)
    return out


def _chunks(text: str) -> Iterator[str]:
    if len(text) <= CHUNK_CHARS:
        yield text
        return
    i = 0
    n = len(text)
    while i < n:
        end = min(n, i + CHUNK_CHARS)
        if end < n:
            cut = text.rfind("\n", i + CHUNK_CHARS // 2, end)
            if cut < 0:
                cut = text.rfind(" ", i + CHUNK_CHARS // 2, end)
            if cut > i:
                end = cut
        yield text[i:end]
        i = end


# ---- what a scanned item offers --------------------------------------------------------------

#: evidence["text"] keys whose dict *keys* are names (dataset folders) rather than labels
_DIR_KEYS = ("dataset_dirs", "reg_dataset_dirs")
_NAME_KEYS = {
    "model": "model_name",
    "vae": "model_name",
    "ss_output_name": "model_name",
    "ss_sd_model_name": "model_name",
    "modelspec.title": "model_name",
}


def item_fields(path: str, findings: Iterable[Finding] = ()) -> Iterator[tuple[str, str]]:
    """(field, text) pairs of one scanned item: its file name(s) and its provenance text.

    Fields: ``file_name`` (the file's own name and, inside archives, each member path),
    ``prompt``/``negative_prompt``/... (keys of a finding's evidence["text"]), ``model_tags``
    and ``dataset_dirs`` (kohya training captions and folders), ``model_name`` (model, LoRA and
    output names).
    """
    outer, *members = path.split("!")
    yield "file_name", os.path.basename(outer)
    for m in members:
        yield "file_name", m
    for f in findings:
        if f.signal == "keyword":
            continue
        ev = f.evidence
        for key, name in _NAME_KEYS.items():
            v = ev.get(key)
            if isinstance(v, str):
                yield name, v
        meta = ev.get("metadata")
        if isinstance(meta, dict):
            for key, name in _NAME_KEYS.items():
                v = meta.get(key)
                if isinstance(v, str):
                    yield name, v
        loras = ev.get("loras")
        if isinstance(loras, list):
            for lo in loras[:256]:
                if isinstance(lo, dict) and isinstance(lo.get("name"), str):
                    yield "model_name", lo["name"]
        text = ev.get("text")
        if isinstance(text, dict):
            for key, v in text.items():
                if key == "tag_frequency" and isinstance(v, dict):
                    for d, tags in v.items():
                        yield "dataset_dirs", str(d)
                        if isinstance(tags, dict):
                            yield "model_tags", "\n".join(str(t) for t in tags)
                elif key in _DIR_KEYS and isinstance(v, dict):
                    yield "dataset_dirs", "\n".join(str(d) for d in v)
                else:
                    yield from _strings(str(key), v, 0)
        elif text is not None:
            yield from _strings("text", text, 0)


def _strings(name: str, v: object, depth: int) -> Iterator[tuple[str, str]]:
    if depth > 6:
        return
    if isinstance(v, str):
        yield name, v
    elif isinstance(v, list):
        for x in v[:10_000]:
            yield from _strings(name, x, depth + 1)
    elif isinstance(v, dict):
        for x in list(v.values())[:10_000]:
            yield from _strings(name, x, depth + 1)
