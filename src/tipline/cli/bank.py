"""``tipline bank``: create banks, fill them from hash lists, export them, and tune them."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tipline.banks import Bank, Entry
from tipline.banks.bank import DEFAULT_PDQ_THRESHOLD, BankRole
from tipline.banks.formats import FORMATS, import_file, write_hash_list
from tipline.cli import state
from tipline.cli.app import app
from tipline.cli.database import ready_url
from tipline.errors import BankError, InvalidSignalError
from tipline.signals.types import guess_signal_type, signal_type
from tipline.store.banks import SqlBankStore, open_bank_store

bank_app = typer.Typer(
    help=(
        "Create banks (named lists of known hashes), import and export hash lists, and set each "
        "bank's role and PDQ threshold.\n\n"
        "An **alert** bank reports matches; an **ignore** bank suppresses them (known false "
        "positives). Bank names follow HMA's rule: capital letters, digits and underscores."
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(bank_app, name="bank")


class Role(StrEnum):
    alert = "alert"
    ignore = "ignore"


class Format(StrEnum):
    te = "te"
    te_csv = "te-csv"
    hex = "hex"
    jsonl = "jsonl"


assert tuple(f.value for f in Format) == FORMATS

#: Malformed lines printed by ``bank import --skip-bad-lines`` before summarising the rest.
_SHOW_BAD_LINES = 20

NameArg = Annotated[str, typer.Argument(help="Bank name, e.g. KNOWN_MD5.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


@contextmanager
def _store(write: bool = False) -> Iterator[SqlBankStore]:
    """The installation's bank store. After a change, a running `tipline serve` on the same
    data directory is told to reload its index (it keeps answering from the old one meanwhile)."""
    ready_url(None)  # the schema rule every command follows (tipline.cli.database)
    store = open_bank_store(state.data_dir())
    try:
        yield store
    finally:
        store.close()
    if write:
        from tipline.service.matching import announce_reload

        announce_reload(state.data_dir() / "index")


def _err(message: str) -> None:
    typer.echo(message, err=True)


def _bank_json(bank: Bank, entries: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": bank.name,
        "role": bank.role,
        "pdq_threshold": bank.pdq_threshold,
        "enabled": bank.enabled,
        "description": bank.description,
        "created_at": bank.created_at,
    }
    if entries is not None:
        out["entries"] = entries
    return out


def _entry_json(e: Entry) -> dict[str, Any]:
    return {
        "id": e.id,
        "bank": e.bank,
        "signal_type": e.signal_type,
        "signal": e.signal,
        "label": e.label,
        "source": e.source,
        "note": e.note,
        "added_at": e.added_at,
        "enabled": e.enabled,
        "tags": list(e.tags),
    }


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else ""


@bank_app.command("create")
def create(
    name: NameArg,
    role: Annotated[
        Role, typer.Option(help="alert: report matches. ignore: suppress matches (known FPs).")
    ] = Role.alert,
    threshold: Annotated[
        int,
        typer.Option(
            min=0,
            max=255,
            help="Largest PDQ Hamming distance that counts as a match for this bank (0-255).",
        ),
    ] = DEFAULT_PDQ_THRESHOLD,
    description: Annotated[str, typer.Option(help="Free text: where the list came from.")] = "",
) -> None:
    """Create an empty bank.

    Example: `tipline bank create KNOWN_PDQ --threshold 31 --description "stand-in list"`
    """
    with _store(write=True) as store:
        bank = store.create_bank(
            Bank(name=name, role=role.value, pdq_threshold=threshold, description=description)
        )
    typer.echo(f"created bank {bank.name} ({bank.role}, PDQ threshold {bank.pdq_threshold})")


@bank_app.command("list")
def list_banks(as_json: JsonOpt = False) -> None:
    """List banks with their role, PDQ threshold, state and number of entries."""
    with _store() as store:
        banks = store.list_banks()
        counts = store.entry_counts()
    if as_json:
        typer.echo(json.dumps([_bank_json(b, counts.get(b.name, 0)) for b in banks], indent=2))
        return
    if not banks:
        typer.echo("no banks yet: create one with `tipline bank create NAME`")
        return
    table = Table("name", "role", "threshold", "enabled", "entries", "description")
    for b in banks:
        table.add_row(
            b.name,
            b.role,
            str(b.pdq_threshold),
            "yes" if b.enabled else "no",
            f"{counts.get(b.name, 0):,}",
            b.description,
        )
    Console().print(table)


@bank_app.command("import")
def import_(
    name: NameArg,
    file: Annotated[
        Path,
        typer.Argument(help="Hash list to read; - reads standard input.", show_default=False),
    ],
    fmt: Annotated[
        Format | None,
        typer.Option(
            "--format",
            "-f",
            help="te (`<type> <signal>` lines), te-csv (threatexchange dataset --csv), hex "
            "(bare hashes), jsonl (Tipline's own). Default: guessed from the name and content.",
            show_default=False,
        ),
    ] = None,
    signal_type_name: Annotated[
        str | None,
        typer.Option(
            "--signal-type",
            "-t",
            help="Signal type of bare hashes (pdq, md5, sha1, sha256; video_md5 means md5). "
            "Needed for 64-hex lists: PDQ and SHA-256 look alike.",
            show_default=False,
        ),
    ] = None,
    skip_bad_lines: Annotated[
        bool,
        typer.Option(
            "--skip-bad-lines",
            help="Import the good lines and list the bad ones. Without it one bad line "
            "stops the import and nothing is imported.",
        ),
    ] = False,
    create_missing: Annotated[
        bool, typer.Option("--create/--no-create", help="Create the bank if it does not exist.")
    ] = True,
    label: Annotated[str, typer.Option(help="Label for entries that have none in the file.")] = "",
    source: Annotated[
        str,
        typer.Option(help="Source (e.g. the list's provider) for entries that have none."),
    ] = "",
) -> None:
    """Import a hash list into a bank.

    Signals the bank already holds are skipped (counted as duplicates). The import is all or
    nothing unless `--skip-bad-lines` is given.

    Example: `tipline bank import KNOWN_PDQ list.txt --signal-type pdq --label stand-in`
    """
    if signal_type_name is not None:
        signal_type(signal_type_name)  # fail early on a typo
    if str(file) != "-" and not file.is_file():
        raise BankError(f"cannot read {file}: {'not a file' if file.exists() else 'no such file'}")
    with _store(write=True) as store:
        created = False
        if not store.has_bank(name):
            if not create_missing:
                raise BankError(f"no bank named {name!r} (drop --no-create to create it)")
            store.create_bank(Bank(name=name))
            created = True
        try:
            report = import_file(
                store,
                name,
                file,
                fmt=fmt.value if fmt else None,
                default_signal_type=signal_type_name,
                skip_bad_lines=skip_bad_lines,
                label=label,
                source=source,
            )
        except BaseException:
            if created:
                store.delete_bank(name)
            raise
    for bad in report.skipped_lines[:_SHOW_BAD_LINES]:
        _err(f"skipped {bad}")
    if len(report.skipped_lines) > _SHOW_BAD_LINES:
        _err(f"... and {len(report.skipped_lines) - _SHOW_BAD_LINES} more bad lines")
    made = " (new bank)" if created else ""
    skipped = f", {len(report.skipped_lines)} bad lines skipped" if report.skipped_lines else ""
    typer.echo(
        f"imported {report.added:,} new entries into {name}{made} from {report.format} "
        f"({report.duplicates:,} already present{skipped})"
    )


@bank_app.command("export")
def export(
    name: NameArg,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="File to write. Default: standard output."),
    ] = None,
    fmt: Annotated[
        Format | None,
        typer.Option(
            "--format",
            "-f",
            help="te, te-csv, hex or jsonl. Default: from the output file's extension "
            "(.csv te-csv, .txt/.te te), else jsonl (the lossless one).",
            show_default=False,
        ),
    ] = None,
    signal_type_name: Annotated[
        str | None,
        typer.Option("--signal-type", "-t", help="Export only this signal type."),
    ] = None,
) -> None:
    """Export a bank's entries as a hash list.

    Example: `tipline bank export KNOWN_PDQ -o known.csv` (te-csv, readable by threatexchange)
    """
    if fmt is not None:
        out_fmt = fmt.value
    elif output is not None and output.suffix.lower() == ".csv":
        out_fmt = "te-csv"
    elif output is not None and output.suffix.lower() in (".txt", ".te"):
        out_fmt = "te"
    else:
        out_fmt = "jsonl"
    only = signal_type(signal_type_name).name if signal_type_name else None
    with _store() as store:
        store.get_bank(name)
        entries = (e for e in store.iter_entries(name) if only is None or e.signal_type == only)
        if output is None:
            n = write_hash_list(entries, out_fmt, sys.stdout)
            sys.stdout.flush()
        else:
            n = _write_atomically(output, lambda stream: write_hash_list(entries, out_fmt, stream))
    if output is not None:
        _err(f"exported {n:,} entries from {name} to {output} ({out_fmt})")


def _write_atomically(path: Path, write: Any) -> int:
    """Write via a temporary file in the same folder, so a failed export leaves no half file."""
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise BankError(f"cannot write {path}: {err.strerror or err}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as stream:
            n = int(write(stream))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n


def _parse_signal(raw: str, default_type: str | None) -> tuple[str, str]:
    """``pdq:abcd...``, or a bare signal typed by ``--signal-type`` or by its length."""
    text = raw.strip()
    if ":" in text:
        kind, _, value = text.partition(":")
        st = signal_type(kind)
    elif default_type is not None:
        st, value = signal_type(default_type), text
    else:
        guessed = guess_signal_type(text)
        if guessed is None:
            raise InvalidSignalError(
                f"cannot tell the signal type of {text[:80]!r}: pass --signal-type, "
                "or write it as TYPE:SIGNAL (e.g. pdq:...)"
            )
        st, value = guessed, text
    return st.name, st.normalise(value)


def _signals_for_file(path: Path) -> dict[str, str]:
    try:
        from tipline.scan.hashing import signals_for_file
    except ImportError as err:  # pragma: no cover - until the scanner lands
        raise BankError(f"hashing files is not available in this build: {err}") from None
    if not path.is_file():
        raise BankError(f"cannot read {path}: no such file")
    return signals_for_file(path)


def _text_signal(path: Path) -> dict[str, str]:
    """``{"tlsh": ...}`` of a document's text, as the crawler hashes it (else nothing)."""
    from tipline.crawl.documents import DEFAULT_LIMITS, analyse_document

    if path.stat().st_size > DEFAULT_LIMITS.max_bytes:
        return {}
    found = analyse_document(path.read_bytes(), "", str(path))
    if found.tlsh is None and found.kind in ("html", "text", "pdf", "docx", "odt", "epub"):
        _err(f"warning: {path}: no tlsh ({found.error or found.tlsh_reason})")
    return {"tlsh": found.tlsh} if found.tlsh else {}


@bank_app.command("add")
def add(
    name: NameArg,
    signals: Annotated[
        list[str] | None,
        typer.Argument(
            help="Hashes to add: bare (typed by --signal-type, or 32 hex = md5, 40 = sha1) "
            "or TYPE:SIGNAL such as pdq:<64 hex>.",
            show_default=False,
        ),
    ] = None,
    signal_type_name: Annotated[
        str | None,
        typer.Option("--signal-type", "-t", help="Signal type of bare hashes.", show_default=False),
    ] = None,
    files: Annotated[
        list[Path] | None,
        typer.Option(
            "--file",
            help="Hash this media file and add its signals (repeatable); a document (HTML, "
            "TXT, PDF, DOCX, ODT, EPUB) also gives the tlsh of its text.",
            show_default=False,
        ),
    ] = None,
    label: Annotated[str, typer.Option(help="Label for the new entries.")] = "",
    note: Annotated[str, typer.Option(help="Note for the new entries.")] = "",
    source: Annotated[str, typer.Option(help="Source for the new entries.")] = "",
) -> None:
    """Add hashes given on the command line, or the hashes of media files, to a bank.

    Example: `tipline bank add KNOWN_PDQ pdq:<64 hex> --label stand-in`;
    `tipline bank add GUIDES --file guide.pdf` (a known guide: digests and TLSH of its text)
    """
    if not signals and not files:
        raise BankError("give at least one SIGNAL or --file PATH")
    if signal_type_name is not None:
        signal_type(signal_type_name)
    pairs = [_parse_signal(s, signal_type_name) for s in signals or []]
    for path in files or []:
        found = 0
        for kind, value in {**_signals_for_file(path), **_text_signal(path)}.items():
            if not value:
                continue  # e.g. PDQ of an image too flat to hash
            try:
                st = signal_type(kind)
            except InvalidSignalError:
                continue  # a signal type banks do not hold yet
            pairs.append((st.name, st.normalise(value)))
            found += 1
        if not found:
            _err(f"warning: no signals computed for {path}")
    if not pairs:
        raise BankError("nothing to add")
    with _store(write=True) as store:
        before = store.count_entries(name)
        ids = store.add_entries(
            Entry(bank=name, signal_type=t, signal=s, label=label, note=note, source=source)
            for t, s in pairs
        )
        added = store.count_entries(name) - before
    dup = len(ids) - added
    extra = f" ({dup} already present)" if dup else ""
    typer.echo(f"added {added} entries to {name}{extra}: ids {', '.join(map(str, ids))}")


@bank_app.command("remove")
def remove(
    name: NameArg,
    entry_ids: Annotated[
        list[int], typer.Argument(help="Entry ids (see `tipline bank entries`).", min=1)
    ],
) -> None:
    """Delete entries from a bank by id."""
    wanted = set(entry_ids)
    with _store(write=True) as store:
        n = store.remove_entries(name, sorted(wanted))
    if n == 0:
        raise BankError(f"none of those ids are entries of {name}")
    if n < len(wanted):
        _err(f"warning: {len(wanted) - n} of the ids are not entries of {name}")
    typer.echo(f"removed {n} entries from {name}")


@bank_app.command("delete")
def delete(
    name: NameArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a bank and all its entries."""
    with _store(write=True) as store:
        count = store.count_entries(name)
        if not yes and not typer.confirm(f"Delete bank {name} and its {count:,} entries?"):
            raise typer.Abort()
        n = store.delete_bank(name)
    typer.echo(f"deleted bank {name} ({n:,} entries)")


@bank_app.command("set")
def set_(
    name: NameArg,
    threshold: Annotated[
        int | None,
        typer.Option(
            min=0, max=255, help="PDQ match threshold in bits (0-255).", show_default=False
        ),
    ] = None,
    role: Annotated[Role | None, typer.Option(help="alert or ignore.", show_default=False)] = None,
    enabled: Annotated[
        bool | None,
        typer.Option(
            "--enable/--disable",
            help="Match against this bank or not (entries are kept).",
            show_default=False,
        ),
    ] = None,
    description: Annotated[
        str | None, typer.Option(help="Replace the description.", show_default=False)
    ] = None,
    auto_confirm: Annotated[
        bool | None,
        typer.Option(
            "--auto-confirm/--no-auto-confirm",
            help="Alert bank: action its matches without a human view (a trusted list). "
            "Ignore bank: dismiss exact-hash (MD5/SHA) matches without a view.",
            show_default=False,
        ),
    ] = None,
    consensus: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=10,
            help="Agreeing analysts an item matching this bank needs before its grade is "
            "final (0: the service's review_consensus).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Change a bank's PDQ threshold, role, enabled state, description or review settings."""
    with _store(write=True) as store:
        if auto_confirm is not None or consensus is not None:
            store.set_review_settings(name, auto_confirm=auto_confirm, consensus=consensus)
        bank = store.get_bank(name)
        if threshold is not None:
            bank.pdq_threshold = threshold
        if role is not None:
            new_role: BankRole = "alert" if role is Role.alert else "ignore"
            bank.role = new_role
        if enabled is not None:
            bank.enabled = enabled
        if description is not None:
            bank.description = description
        bank = store.update_bank(bank)
        auto, need = store.review_settings(name)
    on = "enabled" if bank.enabled else "disabled"
    review = ", auto-confirm" if auto else ""
    review += f", consensus {need}" if need else ""
    typer.echo(f"{bank.name}: {bank.role}, PDQ threshold {bank.pdq_threshold}, {on}{review}")


@bank_app.command("entries")
def entries(
    name: NameArg,
    limit: Annotated[int, typer.Option(min=0, help="Show at most this many (0: all).")] = 50,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many first.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Show a bank's entries (oldest first)."""
    with _store() as store:
        store.get_bank(name)
        total = store.count_entries(name)
        rows = list(store.iter_entries(name, limit=limit or None, offset=offset))
    if as_json:
        typer.echo(json.dumps([_entry_json(e) for e in rows], indent=2, ensure_ascii=False))
        return
    table = Table("id", "type")
    table.add_column("signal", overflow="fold")  # whole, so it can be copied
    for col in ("label", "source", "enabled", "added"):
        table.add_column(col)
    for e in rows:
        table.add_row(
            str(e.id),
            e.signal_type,
            e.signal,
            e.label,
            e.source,
            "yes" if e.enabled else "no",
            _when(e.added_at),
        )
    console = Console()
    console.print(table)
    if offset + len(rows) < total:
        console.print(f"showing {len(rows):,} of {total:,} entries (use --limit/--offset)")
