"""Reading and writing hash lists in the formats other tools use.

Formats (``FORMATS``):

``te``
    python-threatexchange ``local_file``: ``<signal_type> <signal>`` per line. A bare signal is
    accepted when a default signal type is given, or when its length gives the type away (32 hex
    is MD5, 40 is SHA-1). Blank lines and lines starting with ``#`` are ignored.
``te-csv``
    ``threatexchange dataset --csv``: columns ``signal_type,signal_str,collab,category,tags``
    (tags space-separated). ``category`` becomes the entry's label and ``collab`` its source.
    The header row is optional on import and always written on export. Rows of just
    ``signal_type,signal_str`` are accepted too.
``hex``
    One hash per line and nothing else. The signal type comes from ``default_signal_type`` or
    from the length (32 MD5, 40 SHA-1); 64 hex could be PDQ or SHA-256, so it needs the type.
``jsonl``
    Tipline's own lossless format: one JSON object per line with keys ``id`` (written on
    export, ignored on import), ``signal_type``, ``signal``, ``label``, ``source``, ``note``,
    ``added_at``, ``enabled`` and ``tags`` (a list).

A ``vpdq`` signal is python-threatexchange's string, a JSON list of ``"pdq_hex,quality,
timestamp"`` frames (``vpdq ["f8f8...,100,0.0", ...]`` in ``te``, quoted in ``te-csv``; in
``jsonl`` the list itself is accepted too). It is checked frame by frame on import and stored
as python-threatexchange writes it.

Files are untrusted input: lines longer than :data:`MAX_LINE_BYTES`, invalid UTF-8, CSV rows
with the wrong number of columns and anything else that does not parse become
:class:`~tipline.errors.MalformedLineError` with the 1-based line number, never a crash.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, TextIO

from tipline.banks.bank import BankStore, Entry
from tipline.errors import BankError, InvalidSignalError, MalformedLineError
from tipline.signals.types import SignalType, guess_signal_type, signal_type

HashListFormat = Literal["te", "te-csv", "hex", "jsonl"]
FORMATS: tuple[HashListFormat, ...] = ("te", "te-csv", "hex", "jsonl")

#: Longest line accepted in an imported file; a longer one is a malformed line.
MAX_LINE_BYTES = 1024 * 1024

TE_CSV_HEADER = ("signal_type", "signal_str", "collab", "category", "tags")

#: What ``parse_hash_list`` reads: a whole text (str or bytes), a file object (text or binary:
#: binary is preferred, so invalid UTF-8 is reported per line), or an iterable of lines.
LineSource = str | bytes | IO[str] | IO[bytes] | Iterable[str] | Iterable[bytes]


@dataclass(slots=True)
class ParseResult:
    """Entries parsed from a hash list (``bank`` left empty, ``id`` None) and the bad lines."""

    entries: list[Entry] = field(default_factory=list)
    errors: list[MalformedLineError] = field(default_factory=list)


@dataclass(slots=True)
class ImportReport:
    added: int = 0
    duplicates: int = 0
    skipped_lines: list[MalformedLineError] = field(default_factory=list)
    format: str = ""


def check_format(fmt: str) -> HashListFormat:
    for known in FORMATS:
        if fmt == known:
            return known
    raise BankError(f"unknown hash list format {fmt!r} (known: {', '.join(FORMATS)})")


# -- reading lines safely -------------------------------------------------------------------


@dataclass(slots=True)
class _Line:
    no: int
    #: the decoded line, line ending included; None when the line is unusable (see ``error``)
    text: str | None
    error: str = ""


def _chunks(src: LineSource) -> Iterator[tuple[str | bytes, bool]]:
    """``(piece, complete)``: each piece is a whole line, or (``complete`` False) the first
    MAX_LINE_BYTES + 2 units of an overlong line whose rest follows in further pieces."""
    if isinstance(src, str):
        src = io.StringIO(src, newline="\n")
    elif isinstance(src, bytes | bytearray):
        src = io.BytesIO(bytes(src))
    readline = getattr(src, "readline", None)
    if readline is None:
        for line in src:  # an iterable of lines: each is complete
            yield line, True
        return
    limit = MAX_LINE_BYTES + 2
    while chunk := readline(limit):
        newline = b"\n" if isinstance(chunk, bytes) else "\n"
        yield chunk, len(chunk) < limit or chunk.endswith(newline)


def _lines(src: LineSource) -> Iterator[_Line]:
    no = 0
    chunks = _chunks(src)
    while True:
        try:
            chunk, complete = next(chunks)
        except StopIteration:
            return
        except UnicodeDecodeError as err:
            # A text stream that cannot decode cannot be read past this point.
            raise MalformedLineError(no + 1, f"not valid UTF-8 ({err.reason})") from None
        no += 1
        if isinstance(chunk, bytes):
            too_long = len(chunk.rstrip(b"\r\n")) > MAX_LINE_BYTES
        else:
            too_long = len(chunk.rstrip("\r\n")) > MAX_LINE_BYTES
        if too_long:
            # Skip the rest of the overlong line without keeping it in memory.
            while not complete:
                try:
                    _, complete = next(chunks)
                except (StopIteration, UnicodeDecodeError):
                    break
            yield _Line(no, None, f"line longer than {MAX_LINE_BYTES // (1024 * 1024)} MiB")
            continue
        if isinstance(chunk, bytes):
            try:
                text = chunk.decode("utf-8")
            except UnicodeDecodeError as err:
                yield _Line(no, None, f"not valid UTF-8 (byte {err.start + 1} of the line)")
                continue
        else:
            text = chunk
        if no == 1:
            text = text.removeprefix("\ufeff")
        yield _Line(no, text)


# -- parsers --------------------------------------------------------------------------------

_Item = Entry | MalformedLineError


def _new_entry(st: SignalType, signal: str, **kw: Any) -> Entry:
    return Entry(bank="", signal_type=st.name, signal=st.normalise(signal), **kw)


def _bare_signal(signal: str, default: SignalType | None) -> Entry:
    st = default or guess_signal_type(signal)
    if st is None:
        s = signal.strip()
        if len(s) == 64:
            raise InvalidSignalError(
                "a 64-hex-character hash could be PDQ or SHA-256: pass --signal-type pdq "
                "or --signal-type sha256"
            )
        raise InvalidSignalError(
            f"cannot tell the signal type of {s[:80]!r}: pass --signal-type, or write "
            "'<signal_type> <signal>'"
        )
    return _new_entry(st, signal)


def _signal_lines(
    lines: Iterator[_Line], source: str
) -> Iterator[tuple[int, str] | MalformedLineError]:
    """(line number, text) of each line that holds a signal; blank lines and # comments are
    skipped, unreadable lines become errors."""
    for line in lines:
        if line.text is None:
            yield MalformedLineError(line.no, line.error, source)
            continue
        text = line.text.strip()
        if text and not text.startswith("#"):
            yield line.no, text


def _parse_te(lines: Iterator[_Line], default: SignalType | None, source: str) -> Iterator[_Item]:
    for got in _signal_lines(lines, source):
        if isinstance(got, MalformedLineError):
            yield got
            continue
        no, text = got
        try:
            parts = text.split(None, 1)
            if len(parts) == 1:
                yield _bare_signal(parts[0], default)
            else:
                yield _new_entry(signal_type(parts[0]), parts[1])
        except InvalidSignalError as err:
            yield MalformedLineError(no, str(err), source)


def _parse_hex(lines: Iterator[_Line], default: SignalType | None, source: str) -> Iterator[_Item]:
    for got in _signal_lines(lines, source):
        if isinstance(got, MalformedLineError):
            yield got
            continue
        no, text = got
        try:
            yield _bare_signal(text, default)
        except InvalidSignalError as err:
            yield MalformedLineError(no, str(err), source)


def _parse_jsonl(lines: Iterator[_Line], source: str) -> Iterator[_Item]:
    for line in lines:
        if line.text is None:
            yield MalformedLineError(line.no, line.error, source)
            continue
        text = line.text.strip()
        if not text:
            continue
        try:
            yield _jsonl_entry(text)
        except RecursionError:
            yield MalformedLineError(line.no, "JSON nested too deeply", source)
        except (ValueError, InvalidSignalError) as err:
            yield MalformedLineError(line.no, str(err), source)


def _jsonl_entry(text: str) -> Entry:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"not valid JSON ({err.msg} at column {err.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError("expected a JSON object with signal_type and signal")

    def text_field(key: str, required: bool = False) -> str:
        value = obj.get(key)
        if value is None and not required:
            return ""
        if not isinstance(value, str):
            need = "a string" if value is not None else "present"
            raise ValueError(f"{key!r} must be {need}")
        return value

    st = signal_type(text_field("signal_type", required=True))
    if isinstance(obj.get("signal"), list):
        # a list-valued signal (vPDQ frames) given as the list itself, not its JSON text;
        # types whose signals are not lists reject it in normalise
        obj["signal"] = json.dumps(obj["signal"])
    added_at = obj.get("added_at", 0.0)
    if added_at is None:
        added_at = 0.0
    if (
        isinstance(added_at, bool)
        or not isinstance(added_at, int | float)
        or not math.isfinite(added_at)
        or added_at < 0
    ):
        raise ValueError("'added_at' must be a Unix time in seconds")
    enabled = obj.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ValueError("'enabled' must be true or false")
    raw_tags = obj.get("tags", [])
    if raw_tags is None:
        raw_tags = []
    if isinstance(raw_tags, str):
        raw_tags = raw_tags.split()
    if not isinstance(raw_tags, list) or not all(isinstance(t, str) for t in raw_tags):
        raise ValueError("'tags' must be a list of strings")
    return _new_entry(
        st,
        text_field("signal", required=True),
        label=text_field("label"),
        source=text_field("source"),
        note=text_field("note"),
        added_at=float(added_at),
        enabled=enabled,
        tags=[t for tag in raw_tags for t in tag.split()],
    )


def _parse_te_csv(lines: Iterator[_Line], source: str) -> Iterator[_Item]:
    bad: list[_Line] = []
    consumed = 0  # number of the last physical line handed to the csv reader

    def texts() -> Iterator[str]:
        nonlocal consumed
        for line in lines:
            consumed = line.no
            if line.text is None:
                # Stand in an empty line; reported when the reader returns the row holding it.
                bad.append(line)
                yield "\n"
            else:
                yield line.text

    feed = texts()
    reader = csv.reader(feed, strict=True)
    first_row = True
    while True:
        start = consumed + 1  # the reader reads no further ahead than the row it returns
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            for line in bad:
                yield MalformedLineError(line.no, line.error, source)
            bad.clear()
            yield MalformedLineError(consumed, f"not valid CSV ({err})", source)
            reader = csv.reader(feed, strict=True)  # carry on with the next line
            continue
        if bad:
            for line in bad:
                yield MalformedLineError(line.no, line.error, source)
            bad.clear()
            continue
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if first_row:
            first_row = False
            if row[0].strip().lower() == "signal_type":
                continue  # the header
        yield _csv_entry(row, start, source)
    for line in bad:
        yield MalformedLineError(line.no, line.error, source)


def _csv_entry(row: list[str], line_no: int, source: str) -> _Item:
    if len(row) not in (2, len(TE_CSV_HEADER)):
        return MalformedLineError(
            line_no,
            f"expected {len(TE_CSV_HEADER)} CSV columns ({','.join(TE_CSV_HEADER)}), "
            f"got {len(row)}",
            source,
        )
    row = row + [""] * (len(TE_CSV_HEADER) - len(row))
    try:
        return _new_entry(
            signal_type(row[0]),
            row[1],
            source=row[2],
            label=row[3],
            tags=row[4].split(),
        )
    except InvalidSignalError as err:
        return MalformedLineError(line_no, str(err), source)


def iter_hash_list(
    src: LineSource,
    fmt: str,
    *,
    default_signal_type: str | None = None,
    source_name: str = "",
) -> Iterator[Entry | MalformedLineError]:
    """Stream a hash list: each item is a parsed Entry or the MalformedLineError for a line."""
    fmt = check_format(fmt)
    default = signal_type(default_signal_type) if default_signal_type else None
    lines = _lines(src)
    if fmt == "te":
        return _parse_te(lines, default, source_name)
    if fmt == "hex":
        return _parse_hex(lines, default, source_name)
    if fmt == "jsonl":
        return _parse_jsonl(lines, source_name)
    return _parse_te_csv(lines, source_name)


def parse_hash_list(
    src: LineSource,
    fmt: str,
    *,
    default_signal_type: str | None = None,
    source_name: str = "",
) -> ParseResult:
    """Parse a whole hash list; bad lines are collected in ``.errors``, not raised.

    ``default_signal_type`` applies to bare signals (``te``, ``hex``); in the other formats each
    line names its type. Entries come back with ``bank=""`` for the caller to fill in.
    """
    result = ParseResult()
    try:
        for item in iter_hash_list(
            src, fmt, default_signal_type=default_signal_type, source_name=source_name
        ):
            if isinstance(item, MalformedLineError):
                result.errors.append(item)
            else:
                result.entries.append(item)
    except MalformedLineError as err:  # undecodable text stream: nothing after it is readable
        err.source = err.source or source_name
        result.errors.append(MalformedLineError(err.line_no, err.reason, source_name))
    return result


# -- format detection -----------------------------------------------------------------------

_EXTENSIONS: dict[str, HashListFormat] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "te-csv"}


def detect_format(path: str | Path, first_bytes: bytes = b"") -> HashListFormat:
    """Guess a hash list's format from its name and its first bytes.

    ``.jsonl``/``.ndjson`` is JSONL and ``.csv`` is ``te-csv``; otherwise (``.te``, ``.txt``,
    anything else) the first non-blank, non-comment line decides: ``{`` starts JSONL, a comma
    means CSV (as in ThreatExchange's ``simple.<type>.te`` files), and anything else is ``te``
    (which reads bare hashes exactly as ``hex`` does, and ``<type> <signal>`` lines too).
    """
    ext = Path(path).suffix.lower()
    if ext in _EXTENSIONS:
        return _EXTENSIONS[ext]
    text = first_bytes.decode("utf-8", errors="replace").removeprefix("\ufeff")
    lines = text.splitlines()
    if len(lines) > 1 and not text.endswith(("\n", "\r")):
        lines.pop()  # probably cut off by the caller's read
    for line in lines:
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if s.startswith("{"):
            return "jsonl"
        if "," in s:
            return "te-csv"
        return "te"  # also right for bare hashes: te reads those the way hex does
    return "te"


# -- writing --------------------------------------------------------------------------------


def write_hash_list(entries: Iterable[Entry], fmt: str, stream: TextIO) -> int:
    """Write entries in ``fmt``; returns how many were written.

    ``te`` and ``hex`` keep only the signals (``hex`` not even their type, so it refuses a mix
    of signal types); ``te-csv`` keeps labels, sources and tags; ``jsonl`` keeps everything.
    """
    fmt = check_format(fmt)
    n = 0
    if fmt == "te":
        for e in entries:
            stream.write(f"{e.signal_type} {e.signal}\n")
            n += 1
    elif fmt == "hex":
        first_type: str | None = None
        for e in entries:
            if first_type is None:
                first_type = e.signal_type
            elif e.signal_type != first_type:
                raise BankError(
                    f"the hex format holds one signal type but these entries have {first_type} "
                    f"and {e.signal_type}: export with --signal-type, or use --format te"
                )
            stream.write(f"{e.signal}\n")
            n += 1
    elif fmt == "te-csv":
        # The default \r\n terminator also makes the writer quote fields holding a lone \r.
        writer = csv.writer(stream)
        writer.writerow(TE_CSV_HEADER)
        for e in entries:
            writer.writerow([e.signal_type, e.signal, e.source, e.label, " ".join(e.tags)])
            n += 1
    else:
        for e in entries:
            obj = {
                "id": e.id,
                "signal_type": e.signal_type,
                "signal": e.signal,
                "label": e.label,
                "source": e.source,
                "note": e.note,
                "added_at": e.added_at,
                "enabled": e.enabled,
                "tags": list(e.tags),
            }
            stream.write(json.dumps(obj, ensure_ascii=False) + "\n")
            n += 1
    return n


# -- importing into a store -----------------------------------------------------------------


def import_file(
    store: BankStore,
    bank: str,
    path: str | Path,
    fmt: str | None = None,
    default_signal_type: str | None = None,
    skip_bad_lines: bool = False,
    *,
    label: str = "",
    source: str = "",
) -> ImportReport:
    """Import a hash list file (``-`` reads standard input) into an existing bank.

    All or nothing: unless ``skip_bad_lines``, the first malformed line raises
    :class:`MalformedLineError` (``file:line: reason``) and nothing from the file is added.
    With ``skip_bad_lines`` the good lines are added and the bad ones listed in the report.
    ``label`` and ``source`` fill in entries that have none of their own. Signals the bank
    already holds count as duplicates and are left as they are.
    """
    store.get_bank(bank)  # BankNotFoundError before reading anything
    path = Path(path)
    name = "<stdin>" if str(path) == "-" else path.name
    report = ImportReport()
    if str(path) == "-":
        stream: IO[bytes] = sys.stdin.buffer
        close = False
    else:
        try:
            stream = path.open("rb")
        except OSError as err:
            raise BankError(f"cannot read {path}: {err.strerror or err}") from None
        close = True
    try:
        if fmt is None:
            head = stream.peek(64 * 1024)[: 64 * 1024] if hasattr(stream, "peek") else b""
            fmt = detect_format(path, head)
        report.format = check_format(fmt)

        def entries() -> Iterator[Entry]:
            for item in iter_hash_list(
                stream, report.format, default_signal_type=default_signal_type, source_name=name
            ):
                if isinstance(item, MalformedLineError):
                    if not skip_bad_lines:
                        raise item
                    report.skipped_lines.append(item)
                    continue
                item.bank = bank
                if label and not item.label:
                    item.label = label
                if source and not item.source:
                    item.source = source
                yield item

        before = store.count_entries(bank)
        try:
            ids = store.add_entries(entries())
        except MalformedLineError as err:
            if not err.source:
                raise MalformedLineError(err.line_no, err.reason, name) from None
            raise
    finally:
        if close:
            stream.close()
    report.added = store.count_entries(bank) - before
    report.duplicates = len(ids) - report.added
    return report
