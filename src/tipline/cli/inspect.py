"""``tipline inspect FILE``: what one file says (or a classifier suspects) about how it was made."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import unicodedata
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from tipline.cli.app import app
from tipline.cli.scan import (
    DetectorCardOpt,
    TrustAnchorsOpt,
    WatermarksOpt,
    configure_provenance,
)
from tipline.config import Limits
from tipline.errors import TiplineError
from tipline.findings import DECLARED, Finding
from tipline.media.sniff import SNIFF_BYTES, MediaType, sniff

_EVIDENCE_STYLE = {"strong": "bold red", "weak": "bold yellow", "none": "bold green"}
_GROUPS: tuple[tuple[str, frozenset[str]], ...] = (
    ("Declared by the file (embedded metadata)", DECLARED),
    ("Model file", frozenset({"model_file"})),
    ("Keyword hits", frozenset({"keyword"})),
    ("Suspected by a classifier (ranking signal, never proof)", frozenset({"detector"})),
)
_TEXT_WARNING = (
    "The text below was taken from the file's metadata (prompts, captions, author names). It "
    "may be disturbing, and it is sensitive: handle and share it only under your hotline's policy."
)


class InspectError(TiplineError):
    pass


@app.command("inspect")
def inspect_cmd(
    file: Annotated[Path, typer.Argument(help="The file to inspect.", show_default=False)],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the provenance record as JSON instead.")
    ] = False,
    include_text: Annotated[
        bool,
        typer.Option(
            "--include-text",
            help="Show prompts, captions and authors found in the metadata (sensitive).",
        ),
    ] = False,
    watermarks: WatermarksOpt = False,
    detector_card: DetectorCardOpt = None,
    c2pa_trust_anchors: TrustAnchorsOpt = None,
) -> None:
    """Show the AI provenance of one file: generator metadata, IPTC source type, hidden
    (stealth) metadata and any other registered signal, with the `ai_evidence` summary.

    Prompts and other free text are withheld unless `--include-text` is given. Nothing in the
    file is executed and no address it names is contacted.

    Examples:

        tipline inspect upload.png

        tipline inspect upload.png --json --include-text
    """
    from tipline import provenance

    limits = Limits()
    include_detectors = configure_provenance(detector_card, c2pa_trust_anchors)
    mt = _sniff_file(file)
    if mt.kind == "model":
        # Model files can be many GB: streamed, never read whole.
        from tipline.provenance.model_files import describe_model

        findings = describe_model(file)
        data_sha256, size = _stream_sha256(file)
    else:
        data = _read(file, limits.max_image_bytes)
        findings = provenance.analyse(
            data,
            mt,
            include_text=True,  # kept in memory to say "text withheld"; printed only when asked
            include_detectors=include_detectors,
            include_watermarks=watermarks,
            max_pixels=limits.max_pixels,
            max_decode_seconds=limits.max_decode_seconds,
        )
        data_sha256, size = hashlib.sha256(data).hexdigest(), len(data)
    evidence = provenance.ai_evidence(findings)
    record: dict[str, Any] = {
        "path": str(file),
        "media_type": mt.mime,
        "size": size,
        "sha256": data_sha256,
        "ai_evidence": evidence,
        "provenance": [f.to_json(include_text=include_text) for f in findings],
    }
    if as_json:
        typer.echo(json.dumps(record, indent=2, ensure_ascii=False))
        return
    _render(Console(), record, findings, include_text)


def _sniff_file(path: Path) -> MediaType:
    try:
        with open(path, "rb") as f:
            return sniff(f.read(SNIFF_BYTES))
    except OSError as err:
        raise InspectError(f"{path}: {err.strerror or err}") from None


def _stream_sha256(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
                size += len(chunk)
    except OSError as err:
        raise InspectError(f"{path}: {err.strerror or err}") from None
    return h.hexdigest(), size


def _read(path: Path, cap: int) -> bytes:
    try:
        st = os.stat(path)
    except OSError as err:
        raise InspectError(f"{path}: {err.strerror or err}") from None
    if not stat.S_ISREG(st.st_mode):
        raise InspectError(f"{path}: not a regular file")
    if st.st_size > cap:
        raise InspectError(f"{path}: {st.st_size:,} bytes is more than inspect reads ({cap:,})")
    try:
        return path.read_bytes()
    except OSError as err:
        raise InspectError(f"{path}: {err.strerror or err}") from None


def safe(s: Any, limit: int | None = 2000) -> str:
    """Printable text: control and bidi-override characters from the file are made visible."""
    text = s if isinstance(s, str) else json.dumps(s, ensure_ascii=False)
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in "\n\t":
            out.append(ch)
        elif cat in ("Cc", "Cf", "Cs", "Co"):
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    text = "".join(out)
    if limit is not None and len(text) > limit:
        text = text[:limit] + f" … [{len(text) - limit:,} more characters]"
    return text


def _render(
    console: Console, record: dict[str, Any], findings: list[Finding], include_text: bool
) -> None:
    header = Text()
    header.append("File: ", style="bold")
    header.append(safe(record["path"]) + "\n")
    header.append("Type: ", style="bold")
    header.append(f"{record['media_type']}, {record['size']:,} bytes\n")
    header.append("SHA-256: ", style="bold")
    header.append(record["sha256"] + "\n")
    header.append("AI evidence: ", style="bold")
    ev = record["ai_evidence"]
    header.append(ev.upper(), style=_EVIDENCE_STYLE.get(ev, "bold"))
    header.append(f"  ({_explain(ev)})")
    console.print(header)
    has_text = any(f.evidence.get("text") for f in findings)
    if include_text and has_text:
        console.print(Panel(Text(_TEXT_WARNING), title="Warning", border_style="red"))
    ok = [f for f in findings if f.verdict != "error"]
    errors = [f for f in findings if f.verdict == "error"]
    if not ok:
        console.print(
            "\nNo provenance signal found. Absence is no evidence: re-saving, screenshots and "
            "platforms strip most of them."
        )
    grouped: set[int] = set()
    for title, signals in _GROUPS:
        members = [f for f in ok if f.signal in signals]
        if members:
            console.print(Text("\n" + title, style="bold underline"))
            for f in members:
                grouped.add(id(f))
                console.print(_finding(f, include_text))
    rest = [f for f in ok if id(f) not in grouped]
    if rest:
        console.print(Text("\nOther signals", style="bold underline"))
        for f in rest:
            console.print(_finding(f, include_text))
    if errors:
        console.print(Text("\nCould not be read (the rest of the file was)", style="bold"))
        for f in errors:
            where = f.evidence.get("source")
            line = Text("  • ", style="yellow")
            line.append(f"{f.signal}: ", style="yellow")
            line.append(safe(f.error or "error"))
            if where:
                line.append(f"  [{safe(where)}]", style="dim")
            console.print(line)
    if has_text and not include_text:
        console.print(
            Text(
                "\nPrompts and other free text were found and withheld; --include-text shows "
                "them (sensitive).",
                style="dim",
            )
        )


def _explain(ev: str) -> str:
    return {
        "strong": "the file declares it was made or edited by an AI tool",
        "weak": "hints only: partial metadata, a classifier, or keywords",
        "none": "no signal found; absence proves nothing",
    }.get(ev, "")


def _finding(f: Finding, include_text: bool) -> Group:
    title = Text("  ▸ ", style="bold")
    title.append(f.signal, style="bold")
    title.append(" · ")
    title.append(safe(f.generator or "unknown generator", 200), style="cyan")
    title.append(" · ")
    verdict_style = "red" if f.verdict in ("ai_generated", "ai_edited", "model") else "green"
    title.append(f.verdict, style=verdict_style)
    title.append(f" · confidence {f.confidence:.2f}")
    parts: list[Any] = [title]
    facts = {k: v for k, v in f.evidence.items() if k != "text"}
    if facts:
        table = Table(show_header=False, box=None, padding=(0, 1), pad_edge=False)
        table.add_column("key", style="dim", no_wrap=True)
        table.add_column("value", overflow="fold")
        for k, v in facts.items():
            table.add_row("    " + safe(k, 80), Text(_fmt(v)))
        parts.append(table)
    text = f.evidence.get("text")
    if include_text and isinstance(text, dict) and text:
        parts.append(Text("    text from the file:", style="dim magenta"))
        table = Table(show_header=False, box=None, padding=(0, 1), pad_edge=False)
        table.add_column("key", style="magenta", no_wrap=True)
        table.add_column("text", overflow="fold")
        for k, v in text.items():
            table.add_row("    " + safe(k, 80), Text(_fmt(v, 8000)))
        parts.append(table)
    return Group(*parts)


def _fmt(v: Any, limit: int = 2000) -> str:
    if isinstance(v, list):
        if v and all(isinstance(x, dict) for x in v):
            return safe("\n".join(", ".join(f"{k}={x[k]}" for k in x) for x in v[:50]), limit)
        return safe(", ".join(str(x) for x in v[:100]), limit)
    if isinstance(v, dict):
        return safe(", ".join(f"{k}={x}" for k, x in list(v.items())[:100]), limit)
    return safe(v if isinstance(v, str) else json.dumps(v, ensure_ascii=False), limit)
