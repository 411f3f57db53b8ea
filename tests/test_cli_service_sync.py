"""Banks changed with `tipline bank` reach a running service's index without a restart."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from tipline.cli.app import _register, app
from tipline.service.matching import MatchService
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
