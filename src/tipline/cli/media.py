"""``tipline media``: media keys, key rotation (media and evidence bundles) and the retention
purge."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tipline.actions import retention
from tipline.cli import state
from tipline.cli.app import app
from tipline.cli.database import UrlOption, open_db
from tipline.removal.evidence import rotate_evidence
from tipline.store import media as ms

media_app = typer.Typer(
    help=(
        "Media at rest: AES-256-GCM encrypted blobs in the data directory's media folder (or "
        "none at all in hash-only mode). See docs/security.md."
    ),
    no_args_is_help=True,
)
app.add_typer(media_app, name="media")

KeyFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--key-file",
        envvar="TIPLINE_KEY_FILE",
        help="The media key file. Default: media.key in the data directory.",
        show_default=False,
    ),
]


def _key_path(explicit: Path | None) -> Path:
    return explicit if explicit is not None else state.data_dir() / "media.key"


def _store(key_file: Path | None) -> ms.EncryptedStore:
    return ms.EncryptedStore(state.data_dir() / "media", ms.Keyring.load(_key_path(key_file)))


def _evidence_dir() -> Path:
    """Where the removal loop keeps evidence bundles (``[removal] evidence_dir``, default
    ``<data_dir>/evidence``), sealed with the same key as the media."""
    configured = state.service_settings().removal.evidence_dir
    return Path(configured) if configured else state.data_dir() / "evidence"


@media_app.command("keygen")
def keygen_cmd(key_file: KeyFileOpt = None) -> None:
    """Create the media key file (mode 0600) with a fresh random AES-256 key.

    Keep a copy somewhere safe: without the key the stored media cannot be read.
    Alternatively set TIPLINE_MEDIA_KEY to a base64 32-byte key.
    """
    path = _key_path(key_file)
    kid = ms.add_key_to_file(path, create_only=True)
    typer.echo(f"wrote media key {kid.hex()} to {path}")


@media_app.command("rotate-key")
def rotate_cmd(
    key_file: KeyFileOpt = None,
    new_key: Annotated[
        bool,
        typer.Option(
            "--new-key/--no-new-key",
            help="Add a fresh key first (--no-new-key: only re-encrypt to the current active "
            "key, e.g. after setting a new TIPLINE_MEDIA_KEY or resuming an interrupted run).",
        ),
    ] = True,
    drop_old: Annotated[
        bool,
        typer.Option("--drop-old", help="Remove the old keys from the key file once done."),
    ] = False,
) -> None:
    """Re-encrypt every stored blob and every removal evidence bundle (and its page) to a new
    key. Safe to interrupt and re-run; old keys are dropped only when nothing failed."""
    path = _key_path(key_file)
    if new_key:
        from tipline.service.settings import env_setting

        if env_setting("media_key"):  # the media_key setting, $TIPLINE_MEDIA_KEY
            raise ms.MediaError(
                f"{ms.KEY_ENV} is set and overrides the key file: put the new key in "
                f"{ms.KEY_ENV} (last of a comma-separated list) and use --no-new-key"
            )
        kid = ms.add_key_to_file(path)
        typer.echo(f"added media key {kid.hex()} to {path}")
    result = ms.rotate(_store(key_file))
    typer.echo(
        f"re-encrypted {result.reencrypted} blobs to key {result.active_key}; "
        f"{result.unchanged} already used it"
    )
    for ref, err in result.failed:
        typer.echo(f"  failed {ref}: {err}", err=True)
    evidence_dir = _evidence_dir()
    sealed = rotate_evidence(store_dir=evidence_dir, keyring=ms.Keyring.load(path))
    typer.echo(
        f"re-encrypted {sealed.reencrypted} evidence files (bundles and pages) in "
        f"{evidence_dir}; {sealed.unchanged} already used the key"
    )
    for ref, err in sealed.failed:
        typer.echo(f"  failed evidence {ref}: {err}", err=True)
    if result.failed or sealed.failed:
        if drop_old:
            typer.echo("old keys kept: some files still need them (re-run)", err=True)
        raise typer.Exit(1)
    if drop_old:
        dropped = ms.keep_only_active(path)
        typer.echo(f"dropped {dropped} old key(s) from {path}")


@media_app.command("purge")
def purge_cmd(
    days: Annotated[
        float | None,
        typer.Option(
            "--days",
            help="Delete media stored longer ago than this many days (0: keep forever). "
            "Default: the media_retention_days setting (config file or "
            "TIPLINE_MEDIA_RETENTION_DAYS).",
            show_default=False,
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Service config file (TOML or JSON).", show_default=False),
    ] = None,
    database_url_opt: UrlOption = None,
) -> None:
    """Delete media past the retention period; each deletion is a media.purge audit event.

    Hashes and reports stay; only the bytes go. Run it daily (cron or a systemd timer).
    """
    if days is None:
        days = float(state.service_settings(config).media_retention_days)
    if days <= 0:
        typer.echo("retention is 0 days (keep forever): nothing purged")
        return
    # Dates are read from the blob headers, so purging needs no key.
    store = ms.EncryptedStore(state.data_dir() / "media", ms.Keyring())
    result = retention.purge(store, open_db(database_url_opt), days, actor="cli:media-purge")
    typer.echo(f"purged {len(result.purged)} blobs, kept {result.kept}")
