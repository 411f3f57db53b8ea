"""``tipline serve``: the web service (HMA-compatible match API, /api/v1, intake, operations)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from tipline.cli import state
from tipline.cli.app import app

#: The settings ``tipline serve`` resolved, handed to uvicorn worker processes.
SETTINGS_ENV = "TIPLINE_SERVE_SETTINGS"


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on [default: 127.0.0.1].")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port [default: 8000].")] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            envvar="TIPLINE_CONFIG",
            help="TOML or JSON settings file (docs/deployment.md).",
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="API processes (uvicorn workers) [default: 1].")
    ] = None,
    no_migrate: Annotated[
        bool, typer.Option("--no-migrate", help="Do not run `db upgrade` before starting.")
    ] = False,
) -> None:
    """Start the service. With no configuration: SQLite and media in the data directory,
    listening on 127.0.0.1:8000, the database schema upgraded first."""
    import uvicorn

    from tipline.service.ops import configure_logging

    settings = state.service_settings(config, host=host, port=port, workers=workers)
    configure_logging(settings.log_level, settings.json_logs)
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if not no_migrate:
        _migrate(settings.db_url)
    _first_run_hint(settings.db_url)
    typer.echo(
        f"tipline serve: http://{settings.host}:{settings.port}  data dir {settings.data_dir}  "
        f"workers {settings.workers}  (API docs at /docs, spec at /openapi.json)",
        err=True,
    )
    os.environ[SETTINGS_ENV] = json.dumps(settings.to_json())
    if settings.workers > 1 and not os.environ.get(METRICS_DIR_ENV):
        # several API processes: each writes its metrics to files here, /metrics adds them up
        os.environ[METRICS_DIR_ENV] = str(_fresh_metrics_dir(settings.data_dir))
    uvicorn.run(
        "tipline.cli.serve:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        timeout_keep_alive=5,
    )


METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


def _fresh_metrics_dir(data_dir: Path) -> Path:
    """An empty directory for this run's per-process metric files (a previous run's are
    removed: counters start at zero with the service, as with one process)."""
    import shutil

    path = data_dir / "metrics"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, mode=0o700)
    return path


def _migrate(url: str) -> None:
    from tipline.cli.database import one_line, safe_url
    from tipline.errors import TiplineError
    from tipline.store import migrations

    try:
        migrations.upgrade(url)
    except Exception as err:  # unreachable server, bad URL, a schema newer than this Tipline
        raise TiplineError(
            f"cannot upgrade the database at {safe_url(url)}: {one_line(err)}"
        ) from None


def _first_run_hint(url: str) -> None:
    """Say how to create the first admin while there is none."""
    from tipline.service import auth
    from tipline.store.base import make_engine, session_factory

    engine = make_engine(url)
    try:
        with session_factory(engine)() as s:
            hint = auth.first_run_hint(s)
    except Exception:  # not migrated (--no-migrate) or unreachable: the app reports it
        hint = None
    finally:
        engine.dispose()
    if hint:
        typer.echo(f"tipline serve: {hint}", err=True)


def app_from_env() -> object:
    """uvicorn's factory in each worker: the settings ``serve`` resolved, from the env."""
    from tipline.service.app import create_app
    from tipline.service.ops import configure_logging
    from tipline.service.settings import ServiceSettings

    raw = os.environ.get(SETTINGS_ENV)
    settings = (
        ServiceSettings.load(env={}, **json.loads(raw))
        if raw
        else ServiceSettings.from_environment()
    )
    configure_logging(settings.log_level, settings.json_logs)
    return create_app(settings)
