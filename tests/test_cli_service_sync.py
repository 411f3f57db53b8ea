"""Banks changed with `tipline bank` reach a running service's index without a restart."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tipline.banks.bank import Bank, Entry
from tipline.cli.app import _register, app
from tipline.service import matching
from tipline.service.matching import MatchService
from tipline.store import migrations
from tipline.store.base import database_url

PDQ = "8c629e779a663698b9a33866c026726c21a679f61eb6e1f8c79ba7e23c8299e0"


def test_cli_bank_changes_reach_a_running_match_service(tmp_path: Path) -> None:
    _register()
    runner = CliRunner()

    def cli(*args: str) -> None:
        res = runner.invoke(app, ["--data-dir", str(tmp_path), "bank", *args])
        assert res.exit_code == 0, res.output

    cli("create", "SHARED")
    service = MatchService.for_data_dir(tmp_path, database_url(tmp_path), refresh=0.05)
    service.load()
    try:
        assert service.lookup("pdq", PDQ) == []
        cli("add", "SHARED", f"pdq:{PDQ}")
        service.catch_up()  # what the service's watcher thread does every refresh interval
        assert [h.distance for h in service.lookup("pdq", PDQ)] == [0]
        cli("remove", "SHARED", "1")
        service.catch_up()
        assert service.lookup("pdq", PDQ) == []
    finally:
        service.close()


def test_a_rotated_journal_is_followed_by_a_rebuild(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past JOURNAL_ROTATE_BYTES the journal starts afresh; the other processes notice the new
    file and rebuild from the database, so no change is lost."""
    monkeypatch.setattr(matching, "JOURNAL_ROTATE_BYTES", 600)
    url = database_url(tmp_path)
    migrations.upgrade(url)
    writer = MatchService.for_data_dir(tmp_path, url, refresh=0.05)
    writer.load()
    reader = MatchService.for_data_dir(tmp_path, url, refresh=0.05)
    reader.load()
    try:
        writer.create_bank(Bank("ROTATE"))
        rng = random.Random(3)
        pdqs = [f"{rng.getrandbits(256):064x}" for _ in range(15)]
        for pdq in pdqs:
            writer.add_entries([Entry("ROTATE", "pdq", pdq)])
        journal = tmp_path / "index" / matching.JOURNAL
        assert (tmp_path / "index" / (matching.JOURNAL + ".old")).exists()
        assert journal.stat().st_size <= 600
        reader.catch_up()  # sees a new file: rebuilds
        reader.catch_up()  # then follows it
        for pdq in pdqs:
            assert [h.distance for h in reader.lookup("pdq", pdq)] == [0], pdq
        monkeypatch.setattr(matching, "JOURNAL_ROTATE_BYTES", 1 << 20)  # no more rotations
        last = f"{rng.getrandbits(256):064x}"
        writer.add_entries([Entry("ROTATE", "pdq", last)])
        assert reader.catch_up() == 1  # incremental again
        assert [h.distance for h in reader.lookup("pdq", last)] == [0]
    finally:
        writer.close()
        reader.close()
