"""``tipline scan`` (the main job) and ``tipline hash``."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TextIO

import typer

from tipline.cli import state
from tipline.cli.app import app
from tipline.config import Limits

# The hashing stack (NumPy, Pillow), rich and the bank index are imported by the commands
# that use them, not here: `tipline hash DIR` starts in about the time of its imports.
if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.console import Console
    from rich.progress import Progress

    from tipline.index.columns import BankColumns
    from tipline.media.video import VideoMode
    from tipline.provenance.keywords import KeywordMatcher
    from tipline.record import ItemRecord
    from tipline.scan.hashing import HashOptions, PdqMode
    from tipline.scan.output import OutputFormat
    from tipline.scan.ray_runner import RayProgress
    from tipline.scan.runner import ScanSummary

_LIMIT_HELP = "Input limits (hostile files)"
_D = Limits()
#: files per shard of a sharded `--ray` run (tipline.scan.ray_runner.SHARD_FILES: that module
#: is imported only when --ray is given)
_SHARD_FILES = 1024


def limits_from(
    max_file_bytes: int,
    max_image_bytes: int,
    max_pixels: int,
    max_decode_seconds: float,
    max_archive_members: int,
    max_archive_bytes: int,
    max_member_bytes: int,
    max_compression_ratio: float,
    max_archive_depth: int,
) -> Limits:
    return Limits(
        max_file_bytes=max_file_bytes,
        max_image_bytes=max_image_bytes,
        max_pixels=max_pixels,
        max_decode_seconds=max_decode_seconds,
        max_archive_members=max_archive_members,
        max_archive_bytes=max_archive_bytes,
        max_member_bytes=max_member_bytes,
        max_compression_ratio=max_compression_ratio,
        max_archive_depth=max_archive_depth,
    )


MaxFileBytes = Annotated[
    int, typer.Option(help="Files larger than this are not read.", rich_help_panel=_LIMIT_HELP)
]
MaxImageBytes = Annotated[
    int,
    typer.Option(
        help="Images larger than this get only cryptographic hashes.", rich_help_panel=_LIMIT_HELP
    ),
]
MaxPixels = Annotated[
    int,
    typer.Option(
        help="Images with more pixels are refused before decoding (bombs).",
        rich_help_panel=_LIMIT_HELP,
    ),
]
MaxDecodeSeconds = Annotated[
    float,
    typer.Option(help="Time allowed to decode and hash one image.", rich_help_panel=_LIMIT_HELP),
]
MaxArchiveMembers = Annotated[
    int, typer.Option(help="Members scanned per archive.", rich_help_panel=_LIMIT_HELP)
]
MaxArchiveBytes = Annotated[
    int,
    typer.Option(
        help="Uncompressed bytes read from one archive, nested ones included.",
        rich_help_panel=_LIMIT_HELP,
    ),
]
MaxMemberBytes = Annotated[
    int, typer.Option(help="Largest archive member read.", rich_help_panel=_LIMIT_HELP)
]
MaxRatio = Annotated[
    float,
    typer.Option(
        "--max-compression-ratio",
        help="Expansion ratio treated as a zip bomb.",
        rich_help_panel=_LIMIT_HELP,
    ),
]
MaxDepth = Annotated[
    int, typer.Option(help="Archives nested deeper are not opened.", rich_help_panel=_LIMIT_HELP)
]
PdqModeOpt = Annotated[
    str,
    typer.Option(
        "--pdq-mode",
        help="fast: DCT-domain scaled decode (default, ~15x faster, within a few bits; matches "
        "near a bank threshold are re-checked with the reference); reference: full decode + "
        "pdqhash, the hash the service stores and answers (see docs/formats.md#which-pdq).",
    ),
]
DihedralOpt = Annotated[
    bool,
    typer.Option(
        "--dihedral", help="Also compute the 8 rotation/flip hashes and match with all of them."
    ),
]
ScanDihedralOpt = Annotated[
    bool,
    typer.Option(
        "--dihedral/--no-dihedral",
        help="Also look up the 7 other rotations/flips of each PDQ hash (on by default: "
        "almost free, see docs/formats.md#recall-beyond-plain-pdq).",
    ),
]
TrimBordersOpt = Annotated[
    bool,
    typer.Option(
        "--trim-borders/--no-trim-borders",
        help="Also look up the PDQ of the picture inside a border, letterbox, caption band or "
        "blurred-fill frame (pdq_variants.border_trimmed; on by default).",
    ),
]
CropQueriesOpt = Annotated[
    bool,
    typer.Option(
        "--crop-queries/--no-crop-queries",
        help="Also look up PDQ hashes that undo a 2-5% re-crop (pdq_variants.uncrop_*; on by "
        "default).",
    ),
]


NoProvenanceOpt = Annotated[
    bool,
    typer.Option(
        "--no-provenance",
        help="Skip AI provenance (generator metadata, IPTC, stealth metadata...): no "
        "`provenance` / `ai_evidence` in the records.",
    ),
]
IncludeTextOpt = Annotated[
    bool,
    typer.Option(
        "--include-text",
        help="Keep prompts, captions and authors found in AI metadata in the output "
        "(sensitive: off by default, when only generator, models, hashes and settings are kept).",
    ),
]
WatermarksOpt = Annotated[
    bool,
    typer.Option(
        "--watermarks",
        envvar="TIPLINE_WATERMARKS",
        help="Decode Stable Diffusion / SDXL invisible watermarks (dwtDct). Off by default: it "
        "costs ~5-35 ms on generator-sized images; thresholds keep false positives <= 1e-3.",
    ),
]
DetectorCardOpt = Annotated[
    Path | None,
    typer.Option(
        "--detector-card",
        envvar="TIPLINE_DETECTOR_CARD",
        help="Run the learned AI-image detector this model card describes (see `tipline "
        "detector --help`). Its score is a ranking signal, never a verdict.",
        show_default=False,
    ),
]
TrustAnchorsOpt = Annotated[
    Path | None,
    typer.Option(
        "--c2pa-trust-anchors",
        envvar="TIPLINE_C2PA_TRUST_ANCHORS",
        help="PEM file of C2PA trust anchors: signers under them count as Trusted (without it "
        "the best validation state is Valid). Remote manifests and OCSP are never fetched.",
        show_default=False,
    ),
]


def configure_provenance(detector_card: Path | None, trust_anchors: Path | None) -> bool:
    """Process-wide reader settings (set before scan workers fork). True if a detector runs.

    The flags fall back to the same settings ``tipline serve`` takes from the environment
    (``TIPLINE_DETECTOR_CARD``, ``TIPLINE_C2PA_TRUST_ANCHORS``, ``TIPLINE_C2PA_ALLOWED_LIST``)."""
    import os

    from tipline.provenance import c2pa as c2pa_reader

    if trust_anchors is not None and not trust_anchors.is_file():
        raise typer.BadParameter(
            f"no such file: {trust_anchors}", param_hint="--c2pa-trust-anchors"
        )
    # the c2pa_allowed_list setting, a plain path: read without importing the service's
    # settings (and with them SQLAlchemy and httpx: ~0.3 s of every `tipline hash`)
    allowed = os.environ.get("TIPLINE_C2PA_ALLOWED_LIST", "").strip()
    c2pa_reader.configure(
        c2pa_reader.C2paSettings(
            trust_anchors=trust_anchors, allowed_list=Path(allowed) if allowed else None
        )
    )
    if detector_card is None:
        return False
    from tipline.provenance import detector

    detector.configure(detector_card)
    return True


VideoModeOpt = Annotated[
    str,
    typer.Option(
        "--video-mode",
        help="vPDQ frame sampling. fast: decode from each keyframe to the next frame the "
        "reference samples (default, ~30-100x real time); reference: decode every frame, "
        "1 frame/s, as the vpdq package (bit-identical with the same FFmpeg build; within "
        "upstream's tolerance across FFmpeg versions).",
    ),
]
MaxVideoSeconds = Annotated[
    float,
    typer.Option(
        help="Videos claiming a longer duration are refused.", rich_help_panel=_LIMIT_HELP
    ),
]
MaxVideoPixels = Annotated[
    int,
    typer.Option(
        help="Video frames with more pixels are refused before decoding.",
        rich_help_panel=_LIMIT_HELP,
    ),
]
MaxVideoDecodeSeconds = Annotated[
    float,
    typer.Option(help="Time allowed to decode and hash one video.", rich_help_panel=_LIMIT_HELP),
]


def _check_video_mode(mode: str) -> VideoMode:
    if mode not in ("fast", "reference"):
        raise typer.BadParameter("must be 'fast' or 'reference'", param_hint="--video-mode")
    return "fast" if mode == "fast" else "reference"


def _check_mode(mode: str) -> PdqMode:
    if mode not in ("fast", "reference"):
        raise typer.BadParameter("must be 'fast' or 'reference'", param_hint="--pdq-mode")
    return "fast" if mode == "fast" else "reference"


def _progress(console: Console) -> Progress:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


@app.command()
def scan(
    paths: Annotated[
        list[str],
        typer.Argument(
            help="Files, folders (recursive), zip and tar archives, object-storage prefixes "
            "(s3://bucket/prefix, gs://, az://; see docs/object-storage.md).",
            show_default=False,
        ),
    ],
    bank: Annotated[
        list[str] | None,
        typer.Option(
            "--bank",
            "-b",
            help="Match against this bank (repeatable). Default: every enabled bank.",
        ),
    ] = None,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", help="Worker processes. Default: all cores.")
    ] = 0,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write results here instead of standard output."),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            "-f",
            help="jsonl, csv or html. Default: from the -o extension, else jsonl. With --ray "
            "and -o DIR: parquet writes each shard as Parquet too (tipline[parquet]).",
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue an interrupted scan into the same -o file (or --ray shard directory); "
            "each item appears once.",
        ),
    ] = False,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray",
            metavar="ADDRESS|auto|local",
            help="Spread the files over a Ray cluster (the tipline[ray] extra): local starts a "
            "private one on this machine (--jobs CPUs), auto joins the `ray start` cluster of "
            "this machine, else its address. -o DIR (an existing directory) writes resumable "
            "part-NNNNN.jsonl shards. See docs/scale-out.md.",
            show_default=False,
        ),
    ] = None,
    shard_files: Annotated[
        int,
        typer.Option(
            "--shard-files",
            min=1,
            help="Files per part-NNNNN.jsonl shard of a --ray scan into -o DIR.",
        ),
    ] = _SHARD_FILES,
    pdq_mode: PdqModeOpt = "fast",
    dihedral: ScanDihedralOpt = True,
    trim_borders: TrimBordersOpt = True,
    crop_queries: CropQueriesOpt = True,
    video_mode: VideoModeOpt = "fast",
    no_provenance: NoProvenanceOpt = False,
    include_text: IncludeTextOpt = False,
    watermarks: WatermarksOpt = False,
    detector_card: DetectorCardOpt = None,
    c2pa_trust_anchors: TrustAnchorsOpt = None,
    keywords: Annotated[
        Path | None,
        typer.Option(
            "--keywords",
            help="Keyword list (one term per line, or CSV term,category) matched in file names, "
            "prompts, model training tags and dataset folders; hits become `keyword` findings "
            "(terms shown only with --include-text). See `tipline keywords --help`.",
            show_default=False,
        ),
    ] = None,
    follow_symlinks: Annotated[
        bool,
        typer.Option(
            "--follow-symlinks", help="Walk into linked directories (loops are detected)."
        ),
    ] = False,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress", help="Progress bar. Default: on when stderr is a terminal."
        ),
    ] = None,
    max_file_bytes: MaxFileBytes = _D.max_file_bytes,
    max_image_bytes: MaxImageBytes = _D.max_image_bytes,
    max_pixels: MaxPixels = _D.max_pixels,
    max_decode_seconds: MaxDecodeSeconds = _D.max_decode_seconds,
    max_archive_members: MaxArchiveMembers = _D.max_archive_members,
    max_archive_bytes: MaxArchiveBytes = _D.max_archive_bytes,
    max_member_bytes: MaxMemberBytes = _D.max_member_bytes,
    max_compression_ratio: MaxRatio = _D.max_compression_ratio,
    max_archive_depth: MaxDepth = _D.max_archive_depth,
    max_video_seconds: MaxVideoSeconds = _D.max_video_seconds,
    max_video_pixels: MaxVideoPixels = _D.max_video_pixels,
    max_video_decode_seconds: MaxVideoDecodeSeconds = _D.max_video_decode_seconds,
) -> None:
    """Scan media for matches against your banks (hash lists).

    Every file gets MD5, SHA-1 and SHA-256; images also get PDQ and videos vPDQ. Folders are
    walked recursively and zip/tar archives are read in place (members appear as
    `archive.zip!inner/file.jpg`). One JSON record per item is written (see docs/formats.md).

    **Exit status**: 0 nothing matched, 1 something matched an alert bank, 2 something could
    not be scanned (its record says why; results are incomplete, matches are still reported).

    Examples:

        tipline scan ~/reports --bank DEMO -o results.jsonl

        tipline scan uploads.zip -o report.html

        tipline scan big-folder -o results.jsonl --resume   # after an interruption

        tipline scan --ray auto /mnt/share -o results/   # results/part-00000.jsonl, ...
    """
    from rich.console import Console

    from tipline.cli.database import ready_url
    from tipline.scan import output as out
    from tipline.scan.hashing import HashOptions
    from tipline.scan.objectstore import is_uri
    from tipline.scan.runner import bank_index_for_scan, run_scan
    from tipline.store.banks import open_bank_store

    # URIs as typed (a Path would fold s3:// into s3:/); local paths as before
    inputs = [p if is_uri(p) else str(Path(p)) for p in paths]
    sharded = output is not None and output.is_dir()
    if ray_address is not None:
        _check_ray_options(ray_address, jobs, detector_card, c2pa_trust_anchors)
        if sharded and fmt not in (None, "jsonl", "parquet"):
            raise typer.BadParameter(
                "a shard directory holds jsonl parts (and Parquet with --format parquet): "
                "drop --format or give -o FILE",
                param_hint="--format",
            )
    elif sharded:
        raise typer.BadParameter(
            f"{output} is a directory: only a --ray scan writes shards there (give -o FILE)",
            param_hint="-o",
        )
    if fmt == "parquet":
        if not (ray_address is not None and sharded):
            raise typer.BadParameter(
                "Parquet is written per shard: give --ray and -o DIR (an existing directory)",
                param_hint="--format",
            )
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise typer.BadParameter(
                "Parquet needs pyarrow: pip install 'tipline[parquet]'", param_hint="--format"
            ) from None
    limits = limits_from(
        max_file_bytes,
        max_image_bytes,
        max_pixels,
        max_decode_seconds,
        max_archive_members,
        max_archive_bytes,
        max_member_bytes,
        max_compression_ratio,
        max_archive_depth,
    )
    limits = replace(
        limits,
        max_video_seconds=max_video_seconds,
        max_video_pixels=max_video_pixels,
        max_video_decode_seconds=max_video_decode_seconds,
    )
    options = HashOptions(
        pdq_mode=_check_mode(pdq_mode),
        dihedral=dihedral,
        trim_borders=trim_borders,
        crop_queries=crop_queries,
        limits=limits,
        video_mode=_check_video_mode(video_mode),
        provenance=not no_provenance,
        include_text=include_text,
        watermarks=watermarks,
        detectors=configure_provenance(detector_card, c2pa_trust_anchors),
        keywords=_keyword_matcher(keywords),
    )
    fmt_ = "jsonl" if sharded else _format(fmt, output)
    if resume and output is None:
        raise typer.BadParameter(
            "--resume needs -o FILE: it continues the results written there", param_hint="--resume"
        )

    ready_url(None)  # the schema rule every command follows (tipline.cli.database)
    store = open_bank_store(state.data_dir())
    columns: BankColumns | None = None
    try:
        if ray_address is None:
            matcher = bank_index_for_scan(store, bank)
            bank_names = matcher.banks()
        else:
            columns = _bank_columns(store, bank)
            bank_names = [b.name for b in columns.banks if b.enabled]
    finally:
        store.close()
    if ray_address is not None:
        # after every argument check: joining (or starting) a cluster takes seconds
        _scan_ray(
            ray_address,
            inputs,
            options,
            columns,
            output,
            fmt_,
            resume=resume,
            sharded=sharded,
            shard_files=shard_files,
            parquet=fmt == "parquet",
            jobs=jobs,
            follow_symlinks=follow_symlinks,
            progress=progress,
            bank_names=bank_names,
        )
        return
    if options.provenance:
        from tipline.provenance import registered_readers

        registered_readers()  # import the reader plugins once, before the workers fork

    err_console = Console(stderr=True)
    show = err_console.is_terminal if progress is None else progress
    done: dict[str, set[str]] = {}
    previous: list[ItemRecord] = []
    journal = out.journal_path(output, fmt_) if output else None
    if journal is not None:
        if resume:
            previous = out.read_journal(journal)
            done = out.done_map(previous)
        else:
            journal.unlink(missing_ok=True)
        stream: TextIO = open(journal, "a", encoding="utf-8")  # noqa: SIM115 - closed below
    else:
        stream = sys.stdout
    writer = out.JournalWriter(stream)
    try:
        if show:
            with _progress(err_console) as bar:
                task = bar.add_task("scanning", total=None, rate="")
                started = [0.0]

                def on_total(n: int) -> None:
                    import time

                    started[0] = time.perf_counter()
                    bar.update(task, total=n)

                def on_progress(n: int) -> None:
                    import time

                    bar.advance(task, n)
                    done_n = bar.tasks[0].completed
                    dt = max(time.perf_counter() - started[0], 1e-6)
                    bar.update(task, rate=f"{done_n / dt:,.1f} files/s")

                summary = run_scan(
                    inputs,
                    options,
                    matcher,
                    writer.write,
                    jobs=jobs,
                    follow_symlinks=follow_symlinks,
                    done=done,
                    on_total=on_total,
                    on_progress=on_progress,
                )
        else:
            summary = run_scan(
                inputs,
                options,
                matcher,
                writer.write,
                jobs=jobs,
                follow_symlinks=follow_symlinks,
                done=done,
            )
    finally:
        if stream is not sys.stdout:
            stream.close()
    for rec in previous:
        summary.add(rec)
    _finish_output(output, journal, fmt_, bank_names, options, inputs)
    _print_summary(err_console, summary, output)
    raise typer.Exit(summary.exit_status)


def _finish_output(
    output: Path | None,
    journal: Path | None,
    fmt_: OutputFormat,
    bank_names: list[str],
    options: HashOptions,
    paths: list[str],
) -> None:
    """Render a csv or html -o FILE from the journal (jsonl needs nothing more)."""
    from tipline.scan import output as out

    if output is not None and journal is not None and fmt_ != "jsonl":
        meta = {
            "banks": ", ".join(bank_names) or "none",
            "pdq mode": options.pdq_mode,
            "paths": ", ".join(paths)[:300],
        }
        tmp = output.with_name(output.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            out.render(fmt_, journal, f, meta)
        os.replace(tmp, output)
        journal.unlink()
    elif output is None and fmt_ != "jsonl":
        raise typer.BadParameter("csv and html output need -o FILE", param_hint="--format")


def _check_ray_options(
    address: str, jobs: int, detector_card: Path | None, trust_anchors: Path | None
) -> None:
    """Refuse what a --ray scan cannot honour (rather than ignore it): settings that live in
    the driver process and never reach the cluster's workers."""
    if not address.strip():
        raise typer.BadParameter("give local, auto or the cluster's address", param_hint="--ray")
    if jobs and address != "local":
        raise typer.BadParameter(
            "--jobs sizes a --ray local cluster; a running cluster uses all its CPUs",
            param_hint="--jobs",
        )
    refused = [
        ("--detector-card / TIPLINE_DETECTOR_CARD", detector_card is not None),
        ("--c2pa-trust-anchors / TIPLINE_C2PA_TRUST_ANCHORS", trust_anchors is not None),
        (
            "TIPLINE_C2PA_ALLOWED_LIST",
            bool(os.environ.get("TIPLINE_C2PA_ALLOWED_LIST", "").strip()),
        ),
    ]
    for name, given in refused:
        if given:
            raise typer.BadParameter(
                f"{name} does not reach Ray workers yet: scan without --ray, or unset it",
                param_hint="--ray",
            )


def _bank_columns(store: object, names: list[str] | None) -> BankColumns:
    """The columnar snapshot of the banks a scan matches with (runner.bank_index_for_scan's
    banks and entries), what a --ray scan puts in the object store."""
    from tipline.index.columns import bank_columns
    from tipline.scan.runner import chosen_banks

    chosen = chosen_banks(store, names)  # type: ignore[arg-type]
    entries = (
        e
        for b in chosen
        for e in store.iter_entries(b.name, enabled_only=True)  # type: ignore[attr-defined]
    )
    return bank_columns(chosen, entries)


def _ray_rate(status: RayProgress, seconds: float) -> str:
    dt = max(seconds, 1e-6)
    return (
        f"{status.files / dt:,.1f} files/s, {status.bytes / dt / 1e6:,.1f} MB/s, "
        f"{status.bytes / 1e6:,.0f}/{status.total_bytes / 1e6:,.0f} MB, "
        f"{status.workers} workers"
    )


def _scan_ray(
    address: str,
    paths: list[str],
    options: HashOptions,
    columns: BankColumns | None,
    output: Path | None,
    fmt_: OutputFormat,
    *,
    resume: bool,
    sharded: bool,
    shard_files: int,
    parquet: bool,
    jobs: int,
    follow_symlinks: bool,
    progress: bool | None,
    bank_names: list[str],
) -> None:
    """``tipline scan --ray``: the local scan's records, sinks, progress and exit status, the
    files scanned on a Ray cluster (tipline.scan.ray_runner)."""
    import time

    from rich.console import Console

    from tipline.scan import output as out

    try:
        from tipline.scan import ray_runner
    except ImportError as err:  # Ray is an optional extra
        raise typer.BadParameter(
            f"Ray is not installed ({err.name}): pip install 'tipline[ray]'", param_hint="--ray"
        ) from None
    err_console = Console(stderr=True)
    show = err_console.is_terminal if progress is None else progress
    previous: list[ItemRecord] = []
    journal: Path | None = None
    done: dict[str, set[str]] = {}
    stream: TextIO | None = None
    if not sharded:
        journal = out.journal_path(output, fmt_) if output else None
        if journal is not None and resume:
            previous = out.read_journal(journal)
            done = out.done_map(previous)
    if sharded and output is not None:  # before the cluster starts: a directory it cannot use
        shard_dir = ray_runner.ShardDir(output)
        if not resume and shard_dir.has_manifest():
            raise typer.BadParameter(
                f"{output} holds a sharded scan: continue it with --resume", param_hint="-o"
            )
        if not resume and any(output.iterdir()):
            raise typer.BadParameter(
                f"{output} is not empty: a sharded scan starts in an empty directory",
                param_hint="-o",
            )
    try:
        _, started_ray = ray_runner.connect(address, num_cpus=jobs or None)
    except (ConnectionError, RuntimeError, ValueError) as err:
        typer.echo(f"error: cannot join the Ray cluster at {address}: {err}", err=True)
        raise typer.Exit(2) from None
    problems: list[str] = []
    try:
        if journal is not None:
            if not resume:
                journal.unlink(missing_ok=True)
            stream = open(journal, "a", encoding="utf-8")  # noqa: SIM115 - closed below
        writer = out.JournalWriter(stream or sys.stdout)
        started = [time.perf_counter()]

        def run(
            on_total: Callable[[int], None] | None,
            on_progress: Callable[[int], None] | None,
            on_status: Callable[[RayProgress], None] | None,
        ) -> ScanSummary:
            if sharded and output is not None:
                summary, found = ray_runner.run_scan_ray_shards(
                    paths,
                    options,
                    columns,
                    output,
                    resume=resume,
                    follow_symlinks=follow_symlinks,
                    shard_files=shard_files,
                    parquet=parquet,
                    on_total=on_total,
                    on_progress=on_progress,
                    on_status=on_status,
                )
                problems.extend(found)
                return summary
            return ray_runner.run_scan_ray(
                paths,
                options,
                columns,
                writer.write,
                follow_symlinks=follow_symlinks,
                done=done,
                on_total=on_total,
                on_progress=on_progress,
                on_status=on_status,
            )

        try:
            if show:
                with _progress(err_console) as bar:
                    task = bar.add_task("scanning (ray)", total=None, rate="")

                    def on_total(n: int) -> None:
                        started[0] = time.perf_counter()
                        bar.update(task, total=n)

                    def on_progress(n: int) -> None:
                        bar.advance(task, n)

                    def on_status(status: RayProgress) -> None:
                        rate = _ray_rate(status, time.perf_counter() - started[0])
                        bar.update(task, rate=rate)

                    summary = run(on_total, on_progress, on_status)
            else:
                summary = run(None, None, None)
        except ray_runner.ShardError as err:
            raise typer.BadParameter(str(err), param_hint="-o") from None
    finally:
        if stream is not None:
            stream.close()
        if started_ray:
            import ray

            ray.shutdown()
    for rec in previous:
        summary.add(rec)
    _finish_output(output, journal, fmt_, bank_names, options, paths)
    for problem in problems:
        typer.echo(f"error: {output}: {problem}", err=True)
    _print_summary(err_console, summary, output)
    raise typer.Exit(2 if problems else summary.exit_status)


def _keyword_matcher(path: Path | None) -> KeywordMatcher | None:
    if path is None:
        return None
    from tipline.provenance.keywords import KeywordList, KeywordListError, KeywordMatcher

    try:
        kl = KeywordList.load(path)
    except KeywordListError as err:
        raise typer.BadParameter(str(err), param_hint="--keywords") from None
    for problem in kl.problems[:10]:
        typer.echo(f"warning: {path}: {problem}", err=True)
    if not len(kl):
        raise typer.BadParameter(f"{path}: no usable terms", param_hint="--keywords")
    return KeywordMatcher(kl)


def _format(fmt: str | None, output: Path | None) -> OutputFormat:
    if fmt is None:
        suffix = output.suffix.lower() if output else ""
        fmt = {".csv": "csv", ".html": "html", ".htm": "html"}.get(suffix, "jsonl")
    if fmt not in ("jsonl", "csv", "html"):
        raise typer.BadParameter("must be jsonl, csv or html", param_hint="--format")
    return fmt  # type: ignore[return-value]


def _print_summary(console: Console, s: ScanSummary, output: Path | None) -> None:
    rate = s.items / s.seconds if s.seconds else 0.0
    parts = [
        f"{s.items:,} items",
        f"[bold red]{s.matched:,} matched[/]" if s.matched else "0 matched",
    ]
    if s.suppressed:
        parts.append(f"{s.suppressed:,} suppressed by ignore banks")
    parts.append(f"[yellow]{s.errors:,} with errors[/]" if s.errors else "0 errors")
    console.print(", ".join(parts) + f" in {s.seconds:.1f} s ({rate:,.1f} items/s)")
    for bank, n in s.by_bank.most_common():
        console.print(f"  {bank}: {n:,} items")
    if s.listing_tasks:
        console.print(f"  listed {s.listing_tasks:,} prefixes as Ray tasks")
    if output is not None:
        console.print(f"Results: {output}")


@app.command("hash")
def hash_cmd(
    files: Annotated[
        list[Path], typer.Argument(help="Files, folders or archives to hash.", show_default=False)
    ],
    pdq_mode: PdqModeOpt = "fast",
    dihedral: DihedralOpt = False,
    video_mode: VideoModeOpt = "fast",
    no_provenance: NoProvenanceOpt = False,
    include_text: IncludeTextOpt = False,
    watermarks: WatermarksOpt = False,
    detector_card: DetectorCardOpt = None,
    c2pa_trust_anchors: TrustAnchorsOpt = None,
    pretty: Annotated[
        bool, typer.Option("--pretty", help="Indented JSON instead of one line per item.")
    ] = False,
    max_pixels: MaxPixels = _D.max_pixels,
    max_decode_seconds: MaxDecodeSeconds = _D.max_decode_seconds,
) -> None:
    """Print the hashes of files (the `scan` record without matching), one JSON line each.

    Exit status 2 if something could not be hashed.
    """
    from tipline.scan.hashing import HashOptions
    from tipline.scan.runner import run_scan

    limits = Limits(
        **{f.name: getattr(_D, f.name) for f in fields(Limits)}
        | {"max_pixels": max_pixels, "max_decode_seconds": max_decode_seconds}
    )
    options = HashOptions(
        pdq_mode=_check_mode(pdq_mode),
        dihedral=dihedral,
        limits=limits,
        video_mode=_check_video_mode(video_mode),
        provenance=not no_provenance,
        include_text=include_text,
        watermarks=watermarks,
        detectors=configure_provenance(detector_card, c2pa_trust_anchors),
    )

    def emit(records: list[ItemRecord]) -> None:
        for r in records:
            d = r.to_json()
            d.pop("matches", None)
            typer.echo(json.dumps(d, indent=2 if pretty else None, ensure_ascii=False))

    summary = run_scan([str(f) for f in files], options, None, emit, jobs=1)
    raise typer.Exit(2 if summary.errors else 0)
