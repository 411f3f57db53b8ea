"""Every `tipline` command on a fresh data directory: it creates or upgrades the database it
needs (or says in one line what to run), and a user's mistake is one `error:` line, never a
traceback. The command list is walked from the Typer app itself, so a new command is covered
the day it is added. Input files here are placeholders and garbage bytes, nothing else."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner, Result

from tipline.cli import app as cli_app
from tipline.store import migrations
from tipline.store.base import default_url

TRACEBACK = "Traceback (most recent call last)"
PASSWORD = "correct horse battery staple 42\n"
GARBAGE = b"\x00\xff\xfe garbage {not: json, [not toml\n\x89PNG\r\n\x1a\x00\x00"

cli_app._register()
app = cli_app.app
runner = CliRunner()


def _commands(cmd: Any = None, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(path, click command) of every leaf command, walked from the app's click tree."""
    cmd = typer.main.get_command(app) if cmd is None else cmd
    subs = getattr(cmd, "commands", None)
    if subs is None:
        yield path, cmd
        return
    for name in sorted(subs):
        yield from _commands(subs[name], (*path, name))


def _groups(cmd: Any = None, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    cmd = typer.main.get_command(app) if cmd is None else cmd
    subs = getattr(cmd, "commands", None)
    if subs is not None:
        yield path
        for name in sorted(subs):
            yield from _groups(subs[name], (*path, name))


COMMANDS = dict(_commands())


def _base_type(param: Any) -> Any:
    t = param.type_descriptor.annotation
    while typing.get_args(t):  # list[X], X | None
        t = next(a for a in typing.get_args(t) if a is not type(None))
    return t


def _value(param: Any, missing: Path) -> str:
    t = _base_type(param)
    if t in (int, float):
        return "1"
    if t is Path:
        return str(missing)
    return "x"


def _invocation(
    cmd: Any, missing: Path, paths_to: Path | None = None, url: str | None = None
) -> list[str]:
    """Required arguments and options filled with placeholders (a path: ``missing``); with
    ``paths_to``, every path option too; with ``url``, --database-url where there is one."""
    argv: list[str] = []
    for p in cmd.params:
        if p.param_type_name == "argument":
            argv.append(_value(p, paths_to or missing))
        elif p.required:
            argv += [p.opts[-1], _value(p, paths_to or missing)]
        elif paths_to is not None and _base_type(p) is Path and not p.is_flag:
            argv += [p.opts[-1], str(paths_to)]
        elif url is not None and p.opts[-1] == "--database-url":
            argv += ["--database-url", url]
    return argv


@pytest.fixture(autouse=True)
def _no_long_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve` and `worker` stop where they would start serving / running jobs forever."""
    import uvicorn

    from tipline.cli import worker

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    monkeypatch.setattr(worker, "run_workers", lambda cfg, n: None)
    monkeypatch.setattr(logging, "basicConfig", lambda **k: None)
    for var in ("TIPLINE_DATABASE_URL", "TIPLINE_CONFIG", "TIPLINE_KEY_FILE", "TIPLINE_DEBUG"):
        monkeypatch.delenv(var, raising=False)


def invoke(data: Path, *args: str, input: str | None = None, **env: str) -> Result:
    return runner.invoke(app, ["--data-dir", str(data), *args], input=input, env=env or None)


#: Commands whose placeholder run takes long, and a bad argument that stops them at once
#: (`serve` and `worker` stop before serving / running jobs anyway: _no_long_runs).
LONG_RUNNING = {("demo",): ("--jobs", "not-a-number")}


def _no_traceback(res: Result, argv: list[str]) -> None:
    shown = " ".join(argv)
    assert TRACEBACK not in res.output, f"{shown}\n{res.output}"
    exc = res.exception
    assert exc is None or isinstance(exc, SystemExit), f"{shown}: {exc!r}\n{res.output}"
    if res.exit_code not in (0, 1):
        # a usage error (click's box) or one `error:` line
        assert "error" in res.output.lower() or "Usage" in res.output, f"{shown}\n{res.output}"


# -- every command ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", [" ".join(p) for p in _groups()] + [" ".join(p) for p in COMMANDS])
def test_help(path: str, tmp_path: Path) -> None:
    res = invoke(tmp_path / "data", *path.split(), "--help")
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output and TRACEBACK not in res.output


@pytest.mark.parametrize("path", [" ".join(p) for p in COMMANDS])
def test_fresh_data_dir_no_traceback(path: str, tmp_path: Path) -> None:
    """Each command, on a fresh data directory: with placeholder arguments; every path a
    missing file; every path a file of garbage; and a database URL that cannot work."""
    words = tuple(path.split())
    cmd = COMMANDS[words]
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(GARBAGE)
    missing = tmp_path / "missing.bin"
    variants = [
        _invocation(cmd, missing),
        _invocation(cmd, missing, paths_to=tmp_path / "no" / "such.file"),
        _invocation(cmd, missing, paths_to=garbage),
        _invocation(cmd, missing, url="not a database url"),
        _invocation(cmd, missing, url="nosuchdialect://host/db"),
    ]
    if words in LONG_RUNNING:
        variants = [list(LONG_RUNNING[words])]
    for n, variant in enumerate(dict.fromkeys(tuple(v) for v in variants)):
        argv = [*words, *variant]
        res = invoke(tmp_path / f"data{n}", *argv, input=PASSWORD + PASSWORD)
        _no_traceback(res, argv)


def test_a_bad_database_url_is_one_line(tmp_path: Path) -> None:
    for url in ("not a database url", "nosuchdialect://host/db", "sqlite:///" + str(tmp_path)):
        res = invoke(tmp_path / "data", "user", "list", "--database-url", url)
        assert res.exit_code == 2, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: cannot open the database"), lines


def test_a_bad_database_env_url_is_one_line_for_serve_too(tmp_path: Path) -> None:
    res = invoke(tmp_path / "data", "serve", TIPLINE_DATABASE_URL="nosuchdialect://host/db")
    assert res.exit_code == 2, res.output
    assert res.output.strip().splitlines()[-1].startswith("error: cannot upgrade the database")


# -- the database: created or upgraded, or one line -------------------------------------------


def test_user_add_on_a_fresh_data_dir_creates_the_schema(tmp_path: Path) -> None:
    data = tmp_path / "data"
    res = invoke(data, "user", "add", "dana", "--role", "admin", "--password-stdin", input=PASSWORD)
    assert res.exit_code == 0, res.output
    assert "added admin dana" in res.output
    assert migrations.current(default_url(data)) == migrations.head()
    res = invoke(data, "user", "list", "--json")
    assert res.exit_code == 0 and '"dana"' in res.output


def test_the_embedded_database_at_an_old_schema_is_upgraded(tmp_path: Path) -> None:
    data = tmp_path / "data"
    url = default_url(data)
    migrations.upgrade(url, "0001")
    res = invoke(data, "token", "list")
    assert res.exit_code == 0, res.output
    assert migrations.current(url) == migrations.head()


def test_a_named_database_at_an_old_schema_is_left_alone_with_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    migrations.upgrade(url, "0001")
    for args in (
        ["user", "list"],
        ["user", "add", "dana", "--role", "admin", "--password-stdin"],
        ["db", "jobs"],
        ["audit", "verify"],
    ):
        res = invoke(tmp_path / "data", *args, "--database-url", url, input=PASSWORD)
        assert res.exit_code == 2, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1, lines
        assert lines[0] == (
            f"error: the database at {url} is at schema 0001, this Tipline needs "
            f"{migrations.head()}: run `tipline db upgrade --database-url '{url}'`"
        )
    assert migrations.current(url) == "0001"  # not upgraded behind anyone's back
    # the same database named by $TIPLINE_DATABASE_URL: the advice needs no flag
    res = invoke(tmp_path / "data", "bank", "list", TIPLINE_DATABASE_URL=url)
    assert res.exit_code == 2 and res.output.strip().endswith("run `tipline db upgrade`"), (
        res.output
    )
    assert migrations.current(url) == "0001"
    res = invoke(tmp_path / "data", "db", "upgrade", "--database-url", url)
    assert res.exit_code == 0, res.output
    res = invoke(tmp_path / "data", "user", "list", "--database-url", url)
    assert res.exit_code == 0, res.output


def test_a_named_empty_database_gets_the_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.sqlite3'}"
    res = invoke(tmp_path / "data", "webhook", "list", "--database-url", url)
    assert res.exit_code == 0, res.output
    assert migrations.current(url) == migrations.head()


def test_a_database_newer_than_this_tipline_is_never_touched(tmp_path: Path) -> None:
    from sqlalchemy import text

    from tipline.store.base import make_engine

    data = tmp_path / "data"
    url = default_url(data)
    migrations.upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    res = invoke(data, "user", "list")
    assert res.exit_code == 2, res.output
    assert "is at schema 9999, newer than this Tipline knows" in res.output
    assert migrations.current(url) == "9999"


# -- the boundary: one line, a traceback only with --debug ------------------------------------


def test_a_bug_is_one_line_and_debug_shows_the_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tipline.cli import users

    def broken(explicit: str | None) -> None:
        raise KeyError("a bug")

    monkeypatch.setattr(users, "open_db", broken)
    res = invoke(tmp_path / "data", "user", "list")
    assert res.exit_code == 2, res.output
    [line] = res.output.strip().splitlines()
    assert line.startswith("error: internal error, KeyError: 'a bug'") and "--debug" in line
    res = invoke(tmp_path / "data", "--debug", "user", "list")
    assert isinstance(res.exception, KeyError)
    res = invoke(tmp_path / "data", "user", "list", TIPLINE_DEBUG="1")
    assert isinstance(res.exception, KeyError)


def _tipline() -> list[str]:
    exe = Path(sys.executable).parent / "tipline"
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("tipline")
    if found:
        return [found]
    return [sys.executable, "-c", "from tipline.cli.app import main; main()"]


def _run(*args: str, stdin: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TIPLINE_")}
    return subprocess.run(
        [*_tipline(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**environ, **env},
        check=False,
    )


def test_the_real_entry_point(tmp_path: Path) -> None:
    """The installed `tipline` command: the known case from outside (`user add` on a fresh
    data directory), mistakes as one line on stderr, and --debug's traceback."""
    data = str(tmp_path / "data")
    add = ["--data-dir", data, "user", "add", "dana", "--role", "admin", "--password-stdin"]
    proc = _run(*add, stdin=PASSWORD)
    assert proc.returncode == 0, proc.stderr
    assert "added admin dana" in proc.stdout
    proc = _run(*add, stdin=PASSWORD)  # dana exists
    assert proc.returncode == 2 and TRACEBACK not in proc.stderr
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1
    garbage = tmp_path / "settings.toml"
    garbage.write_bytes(GARBAGE)
    for args in (
        ["user", "list", "--database-url", "nosuchdialect://host/db"],
        ["config", "show", "--config", str(garbage)],
        ["bank", "import", "X", str(tmp_path / "missing.txt")],
    ):
        proc = _run("--data-dir", data, *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert TRACEBACK not in proc.stderr and proc.stderr.startswith("error: "), proc.stderr
    proc = _run("--data-dir", data, "--debug", "user", "list", "--database-url", "nosuch://")
    assert proc.returncode == 1 and TRACEBACK in proc.stderr
