"""What `tipline hash` loads before and on its first file: only what hashing an image needs.

The reader modules an image hash cannot use (watermarks and detectors without their options,
keywords, model files), ``importlib.metadata`` (no distribution declares a reader) and object
storage (no URI among the inputs) stay unimported; Typer builds only the invoked command; the
others stay registered for --help.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tipline import provenance

PROBE = """
import atexit, json, sys
atexit.register(lambda: print(json.dumps(sorted(sys.modules)), file=sys.stderr))
sys.argv = ["tipline", *sys.argv[1:]]
from tipline.cli.app import main
main()
"""


def _gradient_jpeg(path: Path) -> Path:
    y, x = np.mgrid[0:96, 0:128]
    rgb = np.stack([x * 2, y * 2, (x + y)], axis=-1).astype(np.uint8)
    Image.fromarray(rgb).save(path, quality=90)
    return path


def _run(*args: str) -> tuple[list[dict[str, object]], set[str]]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=False
    )
    assert proc.returncode in (0, 1), proc.stderr
    modules = set(json.loads(proc.stderr.strip().splitlines()[-1]))
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return records, modules


def test_hash_loads_only_the_readers_an_image_needs(tmp_path: Path) -> None:
    jpeg = _gradient_jpeg(tmp_path / "gradient.jpg")
    [record], modules = _run("hash", "--pdq-mode", "fast", str(jpeg))
    assert record["pdq"] and record["provenance"] == []
    assert "tipline.provenance.generators" in modules  # the built-in readers ran
    assert "tipline.provenance.c2pa" in modules
    for unused in (
        "tipline.provenance.watermark",
        "tipline.provenance.detector",
        "tipline.provenance.keywords",
        "importlib.metadata",
        "tipline.scan.objectstore",
    ):
        assert unused not in modules, unused


def test_analyse_with_watermarks_loads_the_watermark_reader(tmp_path: Path) -> None:
    jpeg = _gradient_jpeg(tmp_path / "gradient.jpg")
    [record], modules = _run("hash", "--pdq-mode", "fast", "--watermarks", str(jpeg))
    assert "tipline.provenance.watermark" in modules
    assert record["pdq"]


def test_registered_readers_lists_every_module() -> None:
    names = {r.name for r in provenance.registered_readers()}
    assert {"generator_metadata", "iptc", "stealth_metadata", "c2pa", "watermark"} <= names
    assert "detector" in names


def test_entry_point_precheck(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    group = provenance.READER_ENTRY_POINTS
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    assert not provenance._may_declare(group)
    other = tmp_path / "other-1.0.dist-info"
    other.mkdir()
    (other / "entry_points.txt").write_text("[console_scripts]\nother = other:main\n")
    assert not provenance._may_declare(group)
    mine = tmp_path / "plugin-1.0.dist-info"
    mine.mkdir()
    (mine / "entry_points.txt").write_text(f"[{group}]\nexample = plugin:register\n")
    assert provenance._may_declare(group)


def test_entry_point_precheck_is_unsure_about_zips_and_eggs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = provenance.READER_ENTRY_POINTS
    archive = tmp_path / "bundle.zip"
    archive.write_bytes(b"PK\x05\x06" + b"\0" * 18)
    monkeypatch.setattr(sys, "path", [str(archive)])
    assert provenance._may_declare(group)
    (tmp_path / "old.egg").mkdir()
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    assert provenance._may_declare(group)


def test_help_lists_every_command_after_hash() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tipline", "--help"], capture_output=True, text=True, check=True
    )
    for name in ("scan", "hash", "bank", "serve", "dedupe"):
        assert f" {name} " in proc.stdout
    from tipline.cli import app as cli_app

    cli_app._register(only="hash")  # what `tipline hash` does (idempotent if all registered)
    cli_app._register()
    shown = {cli_app._command_name(c) for c in cli_app.app.registered_commands}
    assert {"scan", "hash", "dedupe"} <= shown
