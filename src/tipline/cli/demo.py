"""``tipline demo``."""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tipline.cli import state
from tipline.cli.app import app

_SHORT = {"recompressed": "recompr.", "flipped": "mirror", "rotated": "rot90"}


@app.command()
def demo(
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", help="Worker processes. Default: all cores.")
    ] = 0,
) -> None:
    """Build a benign demo corpus, bank some originals, scan every copy and show what was found.

    The corpus (under the data directory, in `demo/`) holds sample photographs that
    scikit-image ships and procedural images, plus copies of each: resized, recompressed,
    cropped, captioned, mirrored and rotated. Two of every three originals go into the bank
    `DEMO` labelled `DEMO-benign-stand-in`. The scan then shows which copies PDQ finds, at what
    Hamming distance, and which plain PDQ misses but `tipline scan`'s default extra lookups
    (rotations and flips, the picture inside a border, re-crops) find.
    """
    from tipline.demo.corpus import VARIANTS
    from tipline.demo.run import DEMO_BANK, run_demo
    from tipline.record import ItemRecord

    console = Console()
    with console.status("Building the demo corpus and scanning it..."):
        result = run_demo(state.data_dir(), jobs=jobs)

    def best(rec: ItemRecord | None) -> int | None:
        alerts = rec.alert_matches if rec else []
        return min((m.distance for m in alerts), default=None)

    table = Table(
        title=f"Copies of banked originals: PDQ distance to the bank entry (bank {DEMO_BANK})",
        caption="number = found by plain PDQ at that Hamming distance (threshold 31) · ↻ = found "
        "only by scan's extra lookups (rotations, borders, re-crops) · - = not found · ! = PDQ "
        "quality under 50: matched by MD5 only",
    )
    table.add_column("original", no_wrap=True)
    table.add_column("quality", justify="right", no_wrap=True)
    for v in VARIANTS:
        table.add_column(_SHORT.get(v, v), justify="right", no_wrap=True)
    rows: dict[str, dict[str, str]] = defaultdict(dict)
    quality: dict[str, int | None] = {}
    per_variant: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    false_pos: list[str] = []
    for f in result.files:
        path = str(f.path)
        plain = best(result.records.get(path))
        rotated = best(result.dihedral_records.get(path))
        if not f.banked:
            if plain is not None or rotated is not None:
                false_pos.append(path)
            continue
        if f.variant == "original":
            rec = result.records.get(path)
            quality[f.original] = rec.pdq_quality if rec else None
            continue
        if plain is not None:
            rows[f.original][f.variant] = f"[green]{plain}[/]"
        elif rotated is not None:
            rows[f.original][f.variant] = f"[cyan]↻ {rotated}[/]"
        else:
            rows[f.original][f.variant] = "[dim]-[/]"
        pv = per_variant[f.variant]
        pv[0] += plain is not None
        pv[1] += plain is not None or rotated is not None
        pv[2] += 1
    for name in sorted(rows):
        q = quality.get(name)
        qtext = "?" if q is None else (f"[yellow]{q}![/]" if q < 50 else str(q))
        label = name.removeprefix("sample-").replace("procedural-", "proc. ")
        table.add_row(label, qtext, *[rows[name].get(v, "") for v in VARIANTS])
    console.print(table)

    summary = Table(title="By transformation")
    summary.add_column("copy")
    summary.add_column("what")
    summary.add_column("plain PDQ", justify="right")
    summary.add_column("tipline scan", justify="right")
    total = found = found_d = 0
    for v, (_fn, desc) in VARIANTS.items():
        a, b, n = per_variant[v]
        summary.add_row(v, desc, f"{a}/{n}", f"{b}/{n}")
        found, found_d, total = found + a, found_d + b, total + n
    console.print(summary)

    clip_table = Table(title="Demo videos (vPDQ, bank entries sampled like the vpdq package)")
    for col in ("clip", "banked", "copy", "result"):
        clip_table.add_column(col)
    for c in result.clips:
        rec = result.records.get(str(c.path))
        alerts = rec.alert_matches if rec else []
        if alerts:
            m = min(alerts, key=lambda m: m.distance)
            pct = "" if m.query_match_pct is None else f", {m.query_match_pct:.0f}% of frames"
            text = f"[green]found[/] ({m.signal_type}{pct})"
        else:
            text = "[dim]-[/]"
        if alerts and not c.banked:
            false_pos.append(str(c.path))
        clip_table.add_row(c.original, "yes" if c.banked else "no", c.variant, text)
    console.print(clip_table)

    unbanked = sum(1 for f in result.files if not f.banked)
    console.print(
        f"Found {found} of {total} transformed copies of banked originals with plain PDQ, "
        f"{found_d} of {total} with tipline scan's defaults (rotations, borders, re-crops; "
        "--no-dihedral --no-trim-borders --no-crop-queries turn them off). Originals with PDQ "
        "quality under 50 are matched "
        f"by MD5 only. False positives among {unbanked} files of unbanked originals: "
        f"{len(false_pos)}."
    )
    for p in false_pos:
        console.print(f"  [red]false positive[/]: {p}")
    s = result.summary
    console.print(
        f"Scanned {s.items} items in {s.seconds:.1f} s. Results: {result.results_path}\n"
        f"HTML report: {result.report_path}\n"
        f"Next: tipline scan {result.files[0].path.parent.parent} --bank {DEMO_BANK}"
    )
