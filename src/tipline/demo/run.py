"""``tipline demo``: build the corpus, bank some originals, scan everything, explain the result."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from tipline.banks import Bank, Entry
from tipline.demo.clips import DemoClip, build_clips
from tipline.demo.corpus import DEMO_LABEL, DemoFile, build_corpus
from tipline.index.bank_index import BankIndex
from tipline.record import ItemRecord
from tipline.scan.hashing import HashOptions, signals_for_file
from tipline.scan.output import JournalWriter, render_html
from tipline.scan.runner import ScanSummary, run_scan
from tipline.store.banks import open_bank_store

DEMO_BANK = "DEMO"
#: what `tipline scan` does by default: fast PDQ, near matches re-checked with the reference
FAST = HashOptions(pdq_mode="fast")


@dataclass(slots=True)
class DemoResult:
    files: list[DemoFile]
    clips: list[DemoClip]
    records: dict[str, ItemRecord]
    dihedral_records: dict[str, ItemRecord]
    summary: ScanSummary
    results_path: Path
    report_path: Path


def run_demo(data_dir: Path, jobs: int = 0, fresh: bool = True) -> DemoResult:
    root = data_dir / "demo"
    if fresh and root.exists():
        shutil.rmtree(root)
    files = build_corpus(root / "corpus")
    clips = build_clips(root / "corpus" / "video")

    store = open_bank_store(data_dir)
    try:
        if any(b.name == DEMO_BANK for b in store.list_banks()):
            store.delete_bank(DEMO_BANK)
        store.create_bank(
            Bank(DEMO_BANK, role="alert", description="Hashes of benign demo originals (stand-ins)")
        )
        # Banked originals: PDQ + MD5 for images; vPDQ (sampled like the vpdq package, as
        # partners' lists hold it) + MD5 for clips.
        banked: list[tuple[Path, str, tuple[str, str]]] = [
            (f.path, f.original, ("pdq", "md5"))
            for f in files
            if f.variant == "original" and f.banked
        ] + [
            (c.path, c.original, ("vpdq", "md5"))
            for c in clips
            if c.variant == "original" and c.banked
        ]
        entries = [
            Entry(DEMO_BANK, st, sig, label=DEMO_LABEL, source="tipline demo", note=original)
            for path, original, kinds in banked
            for st, sig in signals_for_file(path).items()
            if st in kinds
        ]
        store.add_entries(entries)
        bank = store.get_bank(DEMO_BANK)
        bank_entries = list(store.iter_entries(DEMO_BANK, enabled_only=True))
    finally:
        store.close()

    matcher = BankIndex.build([bank], bank_entries)
    results_path = root / "results.jsonl"
    records: dict[str, ItemRecord] = {}
    with open(results_path, "w", encoding="utf-8") as stream:
        writer = JournalWriter(stream)

        def sink(batch: list[ItemRecord]) -> None:
            writer.write(batch)
            for r in batch:
                records[r.path] = r

        summary = run_scan([str(root / "corpus")], FAST, matcher, sink, jobs=jobs)

    dihedral: dict[str, ItemRecord] = {}

    def sink_d(batch: list[ItemRecord]) -> None:
        for r in batch:
            dihedral[r.path] = r

    # what `tipline scan` looks up by default besides the plain hash: rotations and flips,
    # the picture inside a border, re-crops
    extra = replace(FAST, dihedral=True, trim_borders=True, crop_queries=True)
    run_scan([str(root / "corpus")], extra, matcher, sink_d, jobs=jobs)

    report_path = root / "report.html"
    report_path.write_text(
        render_html(list(records.values()), "Tipline demo scan", {"bank": DEMO_BANK}),
        encoding="utf-8",
    )
    return DemoResult(files, clips, records, dihedral, summary, results_path, report_path)
