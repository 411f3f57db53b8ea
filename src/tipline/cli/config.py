"""``tipline config``: the effective service settings and where each came from."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer

from tipline.cli import state
from tipline.cli.app import app

config_app = typer.Typer(
    help="The service settings (docs/deployment.md): what `tipline serve` and `tipline worker` "
    "would use, and where each value came from.",
    no_args_is_help=True,
)
app.add_typer(config_app, name="config")

MASK = "********"
_URL_PASSWORD = re.compile(r"(?P<head>://[^/:@]*:)[^/@]*(?P<tail>@)")


def masked(name: str, value: Any) -> Any:
    """``value`` as shown: secrets (keys, passwords, tokens) masked when set, and a password
    in a URL (``database_url``) replaced."""
    from tipline.service.settings import is_secret

    if is_secret(name):
        return MASK if value else value
    if isinstance(value, str) and "://" in value:
        return _URL_PASSWORD.sub(rf"\g<head>{MASK}\g<tail>", value)
    return value


def effective_settings(config: Path | None) -> list[dict[str, Any]]:
    """One row per setting (dotted names for tables): name, value (masked), source and
    environment variable."""
    from tipline.config import env_names, flat_values
    from tipline.service.settings import ENV_PREFIX, ServiceSettings

    settings, sources = state.service_settings_with_sources(config)
    names = env_names(ServiceSettings, ENV_PREFIX)
    rows = []
    for name, value in flat_values(settings).items():
        shown = masked(name, value)
        rows.append(
            {
                "name": name,
                "value": str(shown) if isinstance(shown, Path) else shown,
                "source": sources.get(name, "default"),
                "env": names[name],
            }
        )
    return rows


@config_app.command("show")
def show(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            envvar="TIPLINE_CONFIG",
            help="TOML or JSON settings file (docs/deployment.md).",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="One JSON object: {name: {value, source, env}}."),
    ] = False,
) -> None:
    """Print the effective settings and where each came from (file, env, flag or default);
    secrets are masked.

        tipline config show --config /etc/tipline/tipline.toml

        TIPLINE_PORT=9000 tipline config show --json
    """
    rows = effective_settings(config)
    if as_json:
        out = {r["name"]: {k: r[k] for k in ("value", "source", "env")} for r in rows}
        typer.echo(json.dumps(out, indent=2))
        return
    if config is not None:
        typer.echo(f"# settings file: {config}")
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        value = r["value"]
        text = json.dumps(value) if isinstance(value, str | bool) or value is None else value
        typer.echo(f"{r['name']:<{width}}  {text}  ({r['source']})")
