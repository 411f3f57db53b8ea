"""``tipline detector``: calibrate and run a user-supplied ONNX AI-image detector."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tipline.cli.app import app
from tipline.config import Limits
from tipline.errors import ItemError, TiplineError
from tipline.provenance.detector import (
    Detector,
    ModelCard,
    calibrate,
    iter_images,
)

detector_app = typer.Typer(
    help=(
        "Plug in a learned AI-image detector: an ONNX model you supply, described by a JSON "
        "model card (input size, normalisation, output meaning). Tipline ships no weights.\n\n"
        "Calibrate the threshold on your own benign images first. A detector's score is a "
        "ranking signal for review, never a verdict: published detectors are near chance on "
        "generators they were not trained on."
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
)
app.add_typer(detector_app, name="detector")

CardOpt = Annotated[
    Path,
    typer.Option(
        "--card", help="The detector's model card (JSON).", show_default=False, exists=True
    ),
]
ThreadsOpt = Annotated[int, typer.Option(min=1, help="onnxruntime threads.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _card(path: Path) -> ModelCard:
    try:
        return ModelCard.load(path)
    except UnicodeDecodeError as err:
        raise TiplineError(f"model card {path} is not JSON: not UTF-8 (byte {err.start})") from None


@detector_app.command("calibrate")
def calibrate_cmd(
    card: CardOpt,
    benign: Annotated[
        list[Path],
        typer.Option(
            "--benign",
            help="Folder (or file) of benign images: real photographs of the kind you review, "
            "none AI-generated. Repeat for several folders.",
            show_default=False,
        ),
    ],
    fpr: Annotated[
        float,
        typer.Option(
            "--fpr", min=0.0, max=1.0, help="Target false-positive rate on benign images."
        ),
    ] = 0.01,
    ai: Annotated[
        list[Path] | None,
        typer.Option(
            "--ai",
            help="Optional folder of AI-generated benign images, to report the detection rate "
            "at the new threshold.",
            show_default=False,
        ),
    ] = None,
    threads: ThreadsOpt = 1,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report the threshold without writing the card.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Score benign folders and write the threshold for the target false-positive rate into
    the model card.

    Example: `tipline detector calibrate --card univfd.json --benign ~/benign-set --fpr 0.01`
    """
    det = Detector(_card(card), threads)
    result = calibrate(det, benign, fpr, ai or (), Limits(), write=not dry_run)
    out: dict[str, Any] = {
        "card": str(card),
        "threshold": result.threshold,
        "target_fpr": result.target_fpr,
        "n_benign": result.n_benign,
        "false_positives": result.false_positives,
        "measured_fpr": result.measured_fpr,
        "fpr_upper_95": result.fpr_upper_95,
        "n_ai": result.n_ai,
        "detected_ai": result.detected,
        "skipped": len(result.skipped),
        "written": not dry_run,
    }
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo(
        f"threshold {result.threshold:.6g}: {result.false_positives} of {result.n_benign:,} "
        f"benign images reach it (rate {result.measured_fpr:.4f}, 95% upper bound "
        f"{result.fpr_upper_95:.4f}; target {fpr:g})"
    )
    if result.too_few:
        typer.echo(
            f"warning: {result.n_benign:,} benign images cannot show a rate of {fpr:g}; "
            f"use at least {int(3 / fpr):,} (with none above the threshold, the 95% bound is "
            "about 3/n)",
            err=True,
        )
    if result.n_ai:
        typer.echo(
            f"detected {result.detected} of {result.n_ai:,} AI images at this threshold "
            f"({result.detected / result.n_ai:.1%}); on generators missing from that folder "
            "expect much less"
        )
    for line in result.skipped[:10]:
        typer.echo(f"skipped {line}", err=True)
    if len(result.skipped) > 10:
        typer.echo(f"... and {len(result.skipped) - 10} more skipped", err=True)
    typer.echo("card not changed (--dry-run)" if dry_run else f"wrote {card}")


@detector_app.command("score")
def score_cmd(
    card: CardOpt,
    files: Annotated[
        list[Path],
        typer.Argument(help="Images, or folders of images.", show_default=False),
    ],
    threads: ThreadsOpt = 1,
    as_json: JsonOpt = False,
) -> None:
    """Score images with the detector: a ranking signal above the calibrated threshold, never a
    verdict.

    Example: `tipline detector score --card univfd.json photo1.jpg folder/`
    """
    det = Detector(_card(card), threads)
    rows: list[dict[str, Any]] = []
    for path, data, mt in iter_images(files):
        try:
            f = det.finding(det.score_bytes(data, mt, Limits()))
            rows.append({"path": str(path), **f.to_json()})
        except ItemError as err:
            rows.append({"path": str(path), "signal": "detector", "error": str(err)})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if det.card.threshold is None:
        typer.echo(
            "warning: the card has no threshold yet (run `tipline detector calibrate`); "
            "scores only",
            err=True,
        )
    table = Table("file", "score", "above threshold", "benign images this high")
    for r in rows:
        if "error" in r:
            table.add_row(r["path"], "error", r["error"], "")
            continue
        ev = r["evidence"]
        exceed = ev.get("benign_exceedance")
        table.add_row(
            r["path"],
            f"{ev['score']:.4f}",
            "yes" if r["verdict"] == "ai_generated" else "no",
            "" if exceed is None else f"{exceed:.2%}",
        )
    Console().print(table)
