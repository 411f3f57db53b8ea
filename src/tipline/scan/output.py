"""Scan output: a JSONL journal written as records arrive, rendered to CSV or HTML at the end.

The journal is what makes ``--resume`` exact: each record is one line, a batch is written with a
single ``write`` and flushed, and on resume a torn last line (the process was killed mid-write)
is cut off before appending. Every item therefore appears exactly once.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Literal

from tipline.errors import TiplineError
from tipline.record import ItemRecord

OutputFormat = Literal["jsonl", "csv", "html"]

CSV_COLUMNS = [
    "path",
    "media_type",
    "size",
    "md5",
    "sha1",
    "sha256",
    "pdq",
    "pdq_quality",
    "vpdq_frames",
    "ai_evidence",
    "provenance",
    "matched",
    "banks",
    "labels",
    "best_distance",
    "matches",
    "errors",
    "warnings",
]


def journal_path(output: Path, fmt: OutputFormat) -> Path:
    return output if fmt == "jsonl" else output.with_name(output.name + ".journal.jsonl")


def read_journal(path: Path) -> list[ItemRecord]:
    """Records already written; truncates a torn final line in place."""
    if not path.exists():
        return []
    records: list[ItemRecord] = []
    good_end = 0
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break
            try:
                records.append(ItemRecord.from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                break
            good_end += len(line)
    if good_end != path.stat().st_size:
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return records


def done_map(records: list[ItemRecord]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for r in records:
        out.setdefault(r.container or r.path, set()).add(r.path)
    return out


class JournalWriter:
    def __init__(self, stream: IO[str], durable: bool = False) -> None:
        self.stream = stream
        self.durable = durable

    def write(self, records: list[ItemRecord]) -> None:
        text = "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in records)
        self.stream.write(text)
        self.stream.flush()
        if self.durable:
            os.fsync(self.stream.fileno())


def iter_journal(path: Path) -> Iterator[ItemRecord]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield ItemRecord.from_json(json.loads(line))


def provenance_summary(r: ItemRecord) -> str:
    """`signal:verdict(generator)` per finding; structured facts only, never free text."""
    parts = []
    for f in r.provenance or []:
        gen = f" ({f.generator})" if f.generator else ""
        parts.append(f"{f.signal}:{f.verdict}{gen}")
    return " | ".join(parts)


def csv_row(r: ItemRecord) -> dict[str, object]:
    alerts = r.alert_matches
    return {
        "path": r.path,
        "media_type": r.media_type,
        "size": r.size,
        "md5": r.md5,
        "sha1": r.sha1,
        "sha256": r.sha256,
        "pdq": r.pdq,
        "pdq_quality": r.pdq_quality,
        "vpdq_frames": r.vpdq_frames,
        "ai_evidence": r.ai_evidence or "",
        "provenance": provenance_summary(r),
        "matched": "yes" if alerts else "no",
        "banks": " ".join(sorted({m.bank for m in alerts})),
        "labels": " | ".join(sorted({m.label for m in alerts if m.label})),
        "best_distance": min((m.distance for m in alerts), default=""),
        "matches": json.dumps([m.to_json() for m in r.matches]) if r.matches else "",
        "errors": " | ".join(r.errors),
        "warnings": " | ".join(r.warnings),
    }


#: Parquet columns: the CSV columns (as strings, sizes and qualities as integers) and the
#: whole record as JSON (``record``: nothing is lost)
_PARQUET_INTS = frozenset({"size", "pdq_quality", "vpdq_frames", "best_distance"})


def write_parquet(records: Iterable[ItemRecord], path: Path) -> None:
    """``records`` as one Parquet file (pyarrow, the ``tipline[parquet]`` extra): the CSV
    columns typed, plus ``record``, the record's JSON."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise TiplineError("Parquet output needs pyarrow: pip install 'tipline[parquet]'") from None
    rows = [(csv_row(r), json.dumps(r.to_json(), ensure_ascii=False)) for r in records]
    columns: dict[str, Any] = {}
    for name in CSV_COLUMNS:
        values = [row[name] for row, _ in rows]
        if name in _PARQUET_INTS:
            ints = [v if isinstance(v, int) and not isinstance(v, bool) else None for v in values]
            columns[name] = pa.array(ints, type=pa.int64())
        elif name == "matched":
            columns[name] = pa.array([v == "yes" for v in values], type=pa.bool_())
        else:
            columns[name] = pa.array(["" if v is None else str(v) for v in values], pa.string())
    columns["record"] = pa.array([doc for _, doc in rows], type=pa.string())
    pq.write_table(pa.table(columns), path, compression="zstd")


def write_csv(records: Iterator[ItemRecord], stream: IO[str]) -> None:
    w = csv.DictWriter(stream, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in records:
        w.writerow(csv_row(r))


#: Items listed individually in the HTML report; matched and failed items always are.
HTML_MAX_CLEAN_ROWS = 5000


def render_html(records: list[ItemRecord], title: str, meta: dict[str, str]) -> str:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("tipline.scan", "templates"), autoescape=select_autoescape(["html"])
    )
    matched = [r for r in records if r.alert_matches]
    # items with errors or warnings (a disguised name) are always listed, never capped away
    failed = [r for r in records if (r.errors or r.warnings) and not r.alert_matches]
    clean = [r for r in records if not (r.errors or r.warnings) and not r.alert_matches]
    per_bank: Counter[str] = Counter()
    per_label: Counter[tuple[str, str]] = Counter()
    for r in matched:
        for m in r.alert_matches:
            per_bank[m.bank] += 1
            per_label[(m.bank, m.label)] += 1
    suppressed = sum(1 for r in records if not r.alert_matches and r.matches)
    media: Counter[str] = Counter(r.media_type for r in records)
    return env.get_template("report.html").render(
        provenance_summary=provenance_summary,
        ai_strong=sum(1 for r in records if r.ai_evidence == "strong"),
        with_errors=sum(1 for r in records if r.errors),
        with_warnings=sum(1 for r in records if r.warnings),
        title=title,
        meta=meta,
        total=len(records),
        matched=matched,
        failed=failed,
        clean=clean[:HTML_MAX_CLEAN_ROWS],
        clean_total=len(clean),
        per_bank=per_bank.most_common(),
        per_label=per_label.most_common(),
        suppressed=suppressed,
        media=media.most_common(),
    )


def render(fmt: OutputFormat, journal: Path, out: IO[str], meta: dict[str, str]) -> None:
    if fmt == "csv":
        write_csv(iter_journal(journal), out)
    elif fmt == "html":
        out.write(render_html(list(iter_journal(journal)), "Tipline scan report", meta))
    else:
        with open(journal, encoding="utf-8") as f:
            while chunk := f.read(1 << 20):
                out.write(chunk)


def to_text(fmt: OutputFormat, journal: Path, meta: dict[str, str]) -> str:
    buf = io.StringIO()
    render(fmt, journal, buf, meta)
    return buf.getvalue()
