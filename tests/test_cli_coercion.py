"""The CLI's bypass of Typer's Pydantic conversion for plain option values (cli/app.py,
``_install_plain_coercion``) relies on Typer internals. These tests fail loudly when a Typer
release changes them: the bypass is then not installed and commands import Pydantic again
(~60 ms a run), or it is installed and converts a value differently from Typer.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from tipline.cli import app as cli_app

TYPER = version("typer")


def test_a_plain_command_does_not_import_pydantic(tmp_path: Path) -> None:
    """What the bypass is for, whatever Typer does inside: `tipline hash FILE` runs without
    importing Pydantic."""
    item = tmp_path / "note.txt"
    item.write_text("hello")
    code = (
        "import sys, runpy\n"
        "sys.argv = ['tipline', 'hash', sys.argv[1]]\n"
        "try:\n"
        "    runpy.run_module('tipline', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "print('PYDANTIC' if 'pydantic' in sys.modules else 'NO-PYDANTIC', file=sys.stderr)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(item)], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.splitlines()[0])["md5"] == "5d41402abc4b2a76b9719d911017c592"
    assert res.stderr.strip().splitlines()[-1] == "NO-PYDANTIC", (
        f"typer {TYPER}: `tipline hash` imports pydantic: its internals changed and "
        "tipline.cli.app._install_plain_coercion installed nothing; update it "
        f"(installed: {cli_app.PLAIN_COERCION})"
    )


def test_the_bypass_is_installed_where_typer_converts_with_pydantic() -> None:
    if importlib.util.find_spec("typer._coercion") is None:
        assert not cli_app.PLAIN_COERCION  # an older Typer: click types, nothing to bypass
        return
    assert cli_app.PLAIN_COERCION, (
        f"typer {TYPER} converts with pydantic but its internals are not the ones "
        "tipline.cli.app._typer_internals checks; update the bypass"
    )


def _probe() -> typer.Typer:
    """A command with one option of each plain type the bypass converts (and defaults of
    the type), printing what each value became."""
    probe = typer.Typer()

    @probe.command()
    def show(
        i: Annotated[int, typer.Option()] = 3,
        f: Annotated[float, typer.Option()] = 0.5,
        s: Annotated[str, typer.Option()] = "d",
        b: Annotated[bool, typer.Option("--b/--no-b")] = False,
        p: Annotated[Path, typer.Option()] = Path("default"),
        li: Annotated[list[int] | None, typer.Option()] = None,
        lp: Annotated[list[Path] | None, typer.Option()] = None,
    ) -> None:
        out = {"i": i, "f": f, "s": s, "b": b, "p": p, "li": li, "lp": lp}
        typer.echo(repr({k: (type(v).__name__, v) for k, v in out.items()}))

    @probe.command()
    def other() -> None:  # two commands, so `show` is addressed by name
        pass

    return probe


_ARGS = [
    [],
    ["--i", "5"],
    ["--i", "+5"],
    ["--i", "-0"],
    ["--i", "007"],
    ["--i", " 5"],
    ["--i", "1_000"],
    ["--i", "\u0663"],  # an Arabic-Indic digit
    ["--i", "5.0"],
    ["--i", "1e3"],
    ["--i", "x"],
    ["--i", ""],
    ["--f", "1.5"],
    ["--f", "-2"],
    ["--f", "1."],
    ["--f", ".5"],
    ["--f", "1e3"],
    ["--f", "inf"],
    ["--f", "x"],
    ["--s", ""],
    ["--s", "ü x"],
    ["--b"],
    ["--no-b"],
    ["--p", "a/b"],
    ["--p", ""],
    ["--p", "~"],
    ["--li", "1", "--li", "+2"],
    ["--li", "1", "--li", "x"],
    ["--lp", "a", "--lp", "b/c"],
]


def _runs(monkeypatch: pytest.MonkeyPatch, bypass: bool) -> list[tuple[int, str]]:
    if not bypass:
        from typer import _coercion
        from typer import core as typer_core

        monkeypatch.setattr(typer_core, "build_runtime_param", _coercion.build_runtime_param)
    runner = CliRunner()
    out = []
    for args in _ARGS:
        res = runner.invoke(_probe(), ["show", *args])
        out.append((res.exit_code, res.output.replace("\n", " ")))
    return out


def test_the_bypass_converts_as_typer_does(monkeypatch: pytest.MonkeyPatch) -> None:
    if not cli_app.PLAIN_COERCION:
        pytest.skip(f"typer {TYPER}: no bypass installed (the test above says whether it must)")
    fast = _runs(monkeypatch, bypass=True)
    typers_own = _runs(monkeypatch, bypass=False)
    for args, got, want in zip(_ARGS, fast, typers_own, strict=True):
        assert got == want, f"show {' '.join(args)!r}: bypass {got} != typer {want}"
    # the probe covers both outcomes: converted values and refusals
    assert {code for code, _ in typers_own} == {0, 2}
