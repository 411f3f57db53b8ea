"""``tipline dedupe``: group near-duplicates so each is reviewed once."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

import typer
from rich.console import Console

from tipline.cli.app import app
from tipline.errors import TiplineError

if TYPE_CHECKING:
    from tipline.triage.clusters import Cluster


@app.command()
def dedupe(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Files, folders and archives to hash and cluster, or scan results (.jsonl) "
            "with --from-results.",
            show_default=False,
        ),
    ],
    threshold: Annotated[
        int, typer.Option("--threshold", "-t", help="PDQ distance that joins two items.")
    ] = 31,
    dihedral: Annotated[
        bool, typer.Option("--dihedral", help="Also join rotated and mirrored copies.")
    ] = False,
    from_results: Annotated[
        bool,
        typer.Option(
            "--from-results", help="PATHS are `tipline scan`/`hash` JSONL outputs: no re-hashing."
        ),
    ] = False,
    video_mode: Annotated[
        str,
        typer.Option(
            "--video-mode",
            help="fast (keyframe-guided) or reference (every sampled frame, as the vpdq "
            "package). Use reference when copies were re-encoded with other keyframe spacing.",
        ),
    ] = "fast",
    min_size: Annotated[
        int, typer.Option("--min-size", help="Only output clusters with at least this many items.")
    ] = 1,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Processes. Default: all cores.")] = 0,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here.")] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", "-f", help="jsonl, csv or html. Default: from -o, else jsonl."),
    ] = None,
) -> None:
    """Group items into near-duplicate clusters: same SHA-256, or PDQ within --threshold.

    Clusters are connected components (if A is near B and B near C, all three are one
    cluster), found exactly with the Hamming index. Each cluster names a representative
    (highest PDQ quality, then largest file) so review queues show it once. Output: one JSON
    object per cluster, largest first, with each member's distance to the representative.

        tipline dedupe ~/reports -o clusters.html

        tipline scan ~/reports -o results.jsonl && tipline dedupe --from-results results.jsonl
    """
    from tipline.os_utils import cpu_count
    from tipline.record import ItemRecord
    from tipline.scan.hashing import HashOptions
    from tipline.scan.output import iter_journal
    from tipline.scan.runner import run_scan
    from tipline.triage.clusters import cluster_records

    fmt_ = fmt or {".csv": "csv", ".html": "html", ".htm": "html"}.get(
        output.suffix.lower() if output else "", "jsonl"
    )
    if fmt_ not in ("jsonl", "csv", "html"):
        raise typer.BadParameter("must be jsonl, csv or html", param_hint="--format")
    if not 0 <= threshold <= 255:
        raise typer.BadParameter("must be between 0 and 255", param_hint="--threshold")
    jobs = jobs or cpu_count()
    err = Console(stderr=True)
    records: list[ItemRecord] = []
    if from_results:
        for p in paths:
            try:
                records.extend(iter_journal(p))
            except (OSError, ValueError, KeyError) as e:
                raise TiplineError(f"cannot read scan results {p}: {e}") from None
    else:
        if video_mode not in ("fast", "reference"):
            raise typer.BadParameter("must be fast or reference", param_hint="--video-mode")
        # Fast PDQ: the hashes are compared with each other only, within this run.
        opts = HashOptions(
            pdq_mode="fast",
            dihedral=dihedral,
            video_mode="fast" if video_mode == "fast" else "reference",
        )
        run_scan([str(p) for p in paths], opts, None, records.extend, jobs=jobs)
    clusters = cluster_records(records, threshold, use_dihedral=dihedral, jobs=jobs)
    shown = [c for c in clusters if c.size >= min_size]
    stream: TextIO = open(output, "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115
    try:
        if fmt_ == "jsonl":
            for c in shown:
                stream.write(json.dumps(c.to_json(), ensure_ascii=False) + "\n")
        elif fmt_ == "csv":
            w = csv.writer(stream, lineterminator="\n")
            w.writerow(["cluster_id", "cluster_size", "representative", "path", "sha256", "pdq",
                        "distance", "exact_duplicate"])  # fmt: skip
            for c in shown:
                for m in c.members:
                    w.writerow([c.id, c.size, c.representative, m.path, m.sha256, m.pdq,
                                "" if m.distance is None else m.distance, m.exact])  # fmt: skip
        else:
            stream.write(_html(shown, len(records), len(clusters), threshold))
    finally:
        if output:
            stream.close()
    multi = sum(1 for c in clusters if c.size > 1)
    dupes = sum(c.size - 1 for c in clusters)
    err.print(
        f"{len(records):,} items -> {len(clusters):,} clusters ({multi:,} with duplicates; "
        f"{dupes:,} items need no separate review)"
    )


def _html(clusters: list[Cluster], items: int, total: int, threshold: int) -> str:
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(
        loader=PackageLoader("tipline.scan", "templates"), autoescape=select_autoescape(["html"])
    )
    return env.get_template("clusters.html").render(
        clusters=clusters, items=items, total=total, threshold=threshold
    )
