"""Regenerate docs/cli.md from the CLI's own --help text: `python scripts/gen_cli_docs.py`."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.cli import get_docs_for_click

from tipline.cli.app import _register, app

INTRO = """# CLI reference

Generated from `tipline --help` by `scripts/gen_cli_docs.py`; a test checks it is current.
Every command also takes `--help`.

"""


def render() -> str:
    _register()
    cmd = typer.main.get_command(app)
    ctx = typer.Context(cmd)  # type: ignore[arg-type]
    body = get_docs_for_click(obj=cmd, ctx=ctx, name="tipline", title="`tipline`")
    return INTRO + body.strip() + "\n"


if __name__ == "__main__":
    Path(__file__).resolve().parent.parent.joinpath("docs", "cli.md").write_text(render())
