"""``tipline keywords``: check text against a keyword list, normalise text, convert lists."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tipline.cli.app import app
from tipline.errors import TiplineError

if TYPE_CHECKING:
    from tipline.provenance.keywords import KeywordList

keywords_app = typer.Typer(
    name="keywords",
    help=(
        "Keyword lists: user-supplied terms matched in file names, prompts, model training tags "
        "and dataset folders after normalisation (case, Unicode lookalikes, leetspeak, letters "
        "spelled out with separators). Tipline ships only a neutral demo list; real lists are "
        "licensed to hotlines and stay on your machine.\n\n"
        "List formats: one term per line (`# category: NAME` starts a section, other `#` lines "
        "are comments), or CSV with columns `term,category`. See docs/models-and-keywords.md."
    ),
    no_args_is_help=True,
)
app.add_typer(keywords_app)


class KeywordCliError(TiplineError):
    pass


ListOpt = Annotated[
    Path | None,
    typer.Option(
        "--list",
        "-l",
        help="Keyword list (.txt plain list or .csv term,category). Default: the demo list.",
        show_default=False,
    ),
]


def _load(path: Path | None) -> KeywordList:
    from tipline.provenance.keywords import KeywordList, KeywordListError, load_demo_list

    try:
        kl = load_demo_list() if path is None else KeywordList.load(path)
    except KeywordListError as err:
        raise KeywordCliError(str(err)) from None
    for problem in kl.problems[:20]:
        typer.echo(f"warning: {path}: {problem}", err=True)
    if len(kl.problems) > 20:
        typer.echo(f"warning: {len(kl.problems) - 20} more lines skipped", err=True)
    return kl


@keywords_app.command("check")
def check_cmd(
    inputs: Annotated[
        list[str],
        typer.Argument(
            help="Text to check, or a file to read (`-` reads standard input).",
            show_default=False,
        ),
    ],
    keyword_list: ListOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per input.")] = False,
) -> None:
    """Check text or text files against a keyword list; print the terms found.

    Whole words and phrases only (`lake` does not match `lakes`); case, lookalike letters,
    leetspeak digits and letter-by-letter spellings (`b.l.u.e.b.i.r.d`) are normalised away.
    Exit status 1 when something matched, 0 when nothing did, 2 on an error.

    Example:

        tipline keywords check --list my-list.csv page.txt "some text"
    """
    from tipline.provenance.keywords import KeywordMatcher

    kl = _load(keyword_list)
    matcher = KeywordMatcher(kl)
    any_hit = False
    for item in inputs:
        if item == "-":
            hits = matcher.find_stream(sys.stdin.buffer)
            source = "<stdin>"
        elif os.path.isfile(item):
            try:
                with open(item, "rb") as f:
                    hits = matcher.find_stream(f)
            except OSError as err:
                raise KeywordCliError(f"{item}: {err.strerror or err}") from None
            source = item
        else:
            hits = matcher.find(item)
            source = "<text>"
        any_hit = any_hit or bool(hits)
        if as_json:
            payload = {
                "source": source,
                "hits": [{"term": h.term, "category": h.category, "count": h.count} for h in hits],
            }
            typer.echo(json.dumps(payload, ensure_ascii=False))
            continue
        if not hits:
            typer.echo(f"{source}: no match")
        for h in hits:
            typer.echo(f"{source}: {h.term} [{h.category}] x{h.count}")
    raise typer.Exit(1 if any_hit else 0)


@keywords_app.command("normalise")
def normalise_cmd(
    texts: Annotated[list[str], typer.Argument(help="Text to normalise.", show_default=False)],
) -> None:
    """Print the normalised (matching) form of each text: what terms and text are compared as."""
    from tipline.provenance.keywords import normalise

    for t in texts:
        typer.echo(normalise(t).strip())


@keywords_app.command("convert")
def convert_cmd(
    source: Annotated[Path, typer.Argument(help="List to read.", show_default=False)],
    dest: Annotated[
        Path, typer.Argument(help="Where to write (`-` for standard output).", show_default=False)
    ],
    to: Annotated[
        str | None,
        typer.Option("--to", help="list or csv. Default: from DEST's extension (.csv), else list."),
    ] = None,
    category: Annotated[
        str | None,
        typer.Option("--category", help="Category for terms of a plain list without sections."),
    ] = None,
) -> None:
    """Convert a keyword list between the plain-list and CSV formats (terms and categories kept)."""
    from tipline.provenance.keywords import KeywordList, KeywordListError, guess_format

    try:
        kl = KeywordList.load(source, default_category=category)
    except KeywordListError as err:
        raise KeywordCliError(str(err)) from None
    for problem in kl.problems[:20]:
        typer.echo(f"warning: {source}: {problem}", err=True)
    fmt = to or ("list" if str(dest) == "-" else guess_format(dest))
    if fmt not in ("list", "csv"):
        raise typer.BadParameter("must be list or csv", param_hint="--to")
    text = kl.dumps(fmt)
    if str(dest) == "-":
        typer.echo(text, nl=False)
    else:
        dest.write_text(text, encoding="utf-8")
        typer.echo(f"{len(kl):,} terms in {len(kl.categories())} categories -> {dest}", err=True)
