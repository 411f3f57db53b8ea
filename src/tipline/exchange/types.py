"""The built-in exchange types: hash list files, on disk (``local_file``) or over HTTP(S)
(``http_list``), in any format :mod:`tipline.banks.formats` reads.

Both are *snapshot* types: every fetch reads the whole list, and the checkpoint is the list's
SHA-256 plus how many of its signal lines are already committed. A fetch of the same list
resumes after those lines (a fetch killed half-way); a changed list starts a new pass, whose
end tombstones the records the new list no longer has. ``http_list`` asks with
``If-None-Match`` / ``If-Modified-Since`` once a list is complete, so an unchanged list costs
one ``304``. A record's key is ``<signal_type>:<signal>``: a line repeated is one record.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from collections.abc import Iterator, Mapping
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import IO, Any

from tipline.banks.bank import Entry
from tipline.banks.formats import FORMATS, detect_format, iter_hash_list
from tipline.errors import MalformedLineError, TiplineError
from tipline.exchange.api import (
    Checkpoint,
    ConfigField,
    ExchangeConfigError,
    ExchangeFetchError,
    ExchangeRecord,
    ExchangeType,
    FetchContext,
    FetchDelta,
    Problem,
    register,
)
from tipline.net.fetch import FetchError, HTTPStatusError, fetch
from tipline.signals.types import registered as signal_types

#: Signal lines per delta (the fetcher commits whole deltas).
DELTA_LINES = 1_000
MiB = 1024 * 1024
DEFAULT_MAX_BYTES = 64 * MiB
#: The largest list ``max_bytes`` may allow (a list is held in memory while it is parsed).
MAX_MAX_BYTES = 1024 * MiB
#: What :mod:`tipline.banks.formats` says about a line naming a type it does not know.
UNKNOWN_TYPE_PREFIX = "unknown signal type"

_FORMAT_FIELD = ConfigField(
    "format",
    "enum",
    default="auto",
    help="The list's format; auto guesses from the name and the first lines.",
    choices=("auto", *FORMATS),
)
_TYPE_FIELD = ConfigField(
    "default_signal_type",
    "string",
    help="Signal type of bare hashes (64 hex could be PDQ or SHA-256), e.g. pdq.",
)


def record_key(entry: Entry) -> str:
    return f"{entry.signal_type}:{entry.signal}"


def _record(entry: Entry) -> ExchangeRecord:
    meta: dict[str, Any] = {}
    if entry.source:
        meta["collab"] = entry.source
    if entry.tags:
        meta["tags"] = list(entry.tags)
    if entry.note:
        meta["note"] = entry.note
    if entry.added_at:
        meta["added_at"] = entry.added_at
    return ExchangeRecord(entry.signal_type, entry.signal, entry.label, meta)


def _problem(err: MalformedLineError) -> Problem:
    if err.reason.startswith(UNKNOWN_TYPE_PREFIX):
        return Problem("unknown_signal_type", f"line {err.line_no}", err.reason)
    return Problem("invalid", f"line {err.line_no}", err.reason)


def list_deltas(
    src: IO[bytes],
    fmt: str,
    default_signal_type: str | None,
    state: Mapping[str, Any],
    *,
    offset: int,
    progress_ts: int | None,
    new_snapshot: bool,
    name: str = "",
) -> Iterator[FetchDelta]:
    """A hash list as deltas of :data:`DELTA_LINES` signal lines each, skipping the first
    ``offset`` (already committed); each checkpoint is ``state`` plus the lines done."""
    done = 0
    updates: dict[str, ExchangeRecord | None] = {}
    problems: list[Problem] = []
    first = True

    def delta(up_to_date: bool) -> FetchDelta:
        nonlocal first
        cp = Checkpoint({**state, "offset": done}, progress_ts, up_to_date)
        d = FetchDelta(dict(updates), cp, list(problems), new_snapshot=new_snapshot and first)
        first = False
        updates.clear()
        problems.clear()
        return d

    try:
        items = iter_hash_list(src, fmt, default_signal_type=default_signal_type, source_name=name)
        for item in items:
            done += 1
            if done <= offset:
                continue
            if isinstance(item, MalformedLineError):
                problems.append(_problem(item))
            else:
                updates[record_key(item)] = _record(item)
            if done - offset >= 1 and (done - offset) % DELTA_LINES == 0:
                yield delta(False)
    except MalformedLineError as err:  # an undecodable stream: the rest is unreadable
        problems.append(Problem("malformed", f"line {err.line_no}", err.reason))
    except TiplineError as err:
        raise ExchangeFetchError(f"cannot read the list: {err}") from None
    yield delta(True)


def _check_list_config(api: str, out: dict[str, Any]) -> dict[str, Any]:
    dst = out.get("default_signal_type")
    if dst:
        dst = str(dst).strip().lower()
        if dst not in signal_types():
            known = ", ".join(sorted(signal_types()))
            raise ExchangeConfigError(
                f"{api} config: unknown default_signal_type {dst!r} (known: {known})"
            )
        out["default_signal_type"] = dst
    return out


def _format(fmt: str, name: str, head: bytes) -> str:
    return detect_format(name, head) if fmt == "auto" else fmt


class LocalFileExchange(ExchangeType):
    """python-threatexchange's ``local_file``: a hash list file on this machine."""

    name = "local_file"
    description = "A hash list file on the server's disk (te, te-csv, hex or jsonl)."
    config_fields = (
        ConfigField("path", "string", required=True, help="The list file (absolute path)."),
        _FORMAT_FIELD,
        _TYPE_FIELD,
    )
    snapshot = True

    def validate_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        out = _check_list_config(self.name, super().validate_config(config))
        path = Path(str(out["path"])).expanduser()
        if not path.is_absolute():
            raise ExchangeConfigError(f"local_file config: path {str(path)!r} must be absolute")
        out["path"] = str(path)
        return out

    def fetch_iter(self, ctx: FetchContext, checkpoint: Checkpoint | None) -> Iterator[FetchDelta]:
        path = Path(str(ctx.config["path"]))
        try:
            digest = hashlib.sha256()
            with path.open("rb") as fh:
                head = fh.read(64 * 1024)
                digest.update(head)
                while chunk := fh.read(1024 * 1024):
                    digest.update(chunk)
                mtime = int(path.stat().st_mtime)
        except OSError as err:
            raise ExchangeFetchError(f"cannot read {path}: {err.strerror or err}") from None
        sha = digest.hexdigest()
        state: dict[str, Any] = {"sha256": sha}
        if checkpoint is not None and checkpoint.state.get("sha256") == sha:
            if checkpoint.up_to_date:
                yield FetchDelta({}, checkpoint)
                return
            offset, new = int(checkpoint.state.get("offset") or 0), False
        else:
            offset, new = 0, True
        fmt = _format(str(ctx.config.get("format") or "auto"), path.name, head)
        try:
            with path.open("rb") as fh:
                yield from list_deltas(
                    fh,
                    fmt,
                    ctx.config.get("default_signal_type") or None,
                    state,
                    offset=offset,
                    progress_ts=mtime,
                    new_snapshot=new,
                    name=path.name,
                )
        except OSError as err:
            raise ExchangeFetchError(f"cannot read {path}: {err.strerror or err}") from None


def _http_date(value: str | None) -> int | None:
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return int(when.timestamp()) if when.tzinfo is not None else None


class HttpListExchange(ExchangeType):
    """A hash list file over HTTP(S), fetched through the SSRF-safe fetcher."""

    name = "http_list"
    description = (
        "A hash list file over HTTP(S) (te, te-csv, hex or jsonl), re-read when it changes "
        "(ETag / Last-Modified)."
    )
    config_fields = (
        ConfigField("url", "string", required=True, help="The list's http(s) URL."),
        _FORMAT_FIELD,
        _TYPE_FIELD,
        ConfigField(
            "max_bytes",
            "number",
            default=DEFAULT_MAX_BYTES,
            help=f"Largest list accepted, in bytes (at most {MAX_MAX_BYTES}).",
        ),
        ConfigField("timeout", "number", default=120, help="Seconds for the whole download."),
    )
    credential_fields = (
        ConfigField(
            "authorization",
            "string",
            required=True,
            help="The Authorization header's value (e.g. 'Bearer ...'); sent to the list's "
            "host only.",
        ),
    )
    snapshot = True

    def validate_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        out = _check_list_config(self.name, super().validate_config(config))
        url = str(out["url"]).strip()
        if not url.lower().startswith(("http://", "https://")):
            raise ExchangeConfigError("http_list config: url must be http:// or https://")
        out["url"] = url
        if not 1 <= int(out["max_bytes"]) <= MAX_MAX_BYTES:
            raise ExchangeConfigError(f"http_list config: max_bytes must be 1 to {MAX_MAX_BYTES}")
        if not 0 < float(out["timeout"]) <= 3600:
            raise ExchangeConfigError("http_list config: timeout must be 0 to 3600 seconds")
        return out

    def fetch_iter(self, ctx: FetchContext, checkpoint: Checkpoint | None) -> Iterator[FetchDelta]:
        url = str(ctx.config["url"])
        headers: dict[str, str] = {"Accept": "text/plain, text/csv, application/x-ndjson, */*"}
        if ctx.credentials and ctx.credentials.get("authorization"):
            headers["Authorization"] = str(ctx.credentials["authorization"])
        if checkpoint is not None and checkpoint.up_to_date:
            if checkpoint.state.get("etag"):
                headers["If-None-Match"] = str(checkpoint.state["etag"])
            if checkpoint.state.get("last_modified"):
                headers["If-Modified-Since"] = str(checkpoint.state["last_modified"])
        settings = dataclasses.replace(
            ctx.fetch_settings,
            max_bytes=int(ctx.config.get("max_bytes") or DEFAULT_MAX_BYTES),
            total_timeout=float(ctx.config.get("timeout") or 120),
        )
        try:
            res = fetch(url, settings, headers=headers)
        except HTTPStatusError as err:
            raise ExchangeFetchError(str(err), retry_after=err.retry_after) from None
        except FetchError as err:
            raise ExchangeFetchError(str(err)) from None
        if res.status == 304 and checkpoint is not None:
            yield FetchDelta({}, checkpoint)
            return
        sha = hashlib.sha256(res.content).hexdigest()
        progress = _http_date(res.headers.get("last-modified")) or int(ctx.clock())
        state: dict[str, Any] = {
            "sha256": sha,
            "etag": res.headers.get("etag") or None,
            "last_modified": res.headers.get("last-modified") or None,
        }
        if checkpoint is not None and checkpoint.state.get("sha256") == sha:
            if checkpoint.up_to_date:  # the server ignored the conditional request
                yield FetchDelta({}, Checkpoint({**checkpoint.state, **state}, progress, True))
                return
            offset, new = int(checkpoint.state.get("offset") or 0), False
        else:
            offset, new = 0, True
        name = url.rsplit("?", 1)[0].rsplit("/", 1)[-1]
        fmt = _format(str(ctx.config.get("format") or "auto"), name, res.content[: 64 * 1024])
        yield from list_deltas(
            io.BytesIO(res.content),
            fmt,
            ctx.config.get("default_signal_type") or None,
            state,
            offset=offset,
            progress_ts=progress,
            new_snapshot=new,
            name=name,
        )


register(LocalFileExchange)
register(HttpListExchange)

# the other built-in types live in their own modules and register themselves on import
from tipline.exchange import fb_threatexchange as _fb_threatexchange  # noqa: E402, F401
from tipline.exchange import ncmec as _ncmec  # noqa: E402, F401
from tipline.exchange import peer as _peer  # noqa: E402, F401
from tipline.exchange import stop_ncii as _stop_ncii  # noqa: E402, F401
from tipline.exchange import tat as _tat  # noqa: E402, F401

__all__ = ["DELTA_LINES", "HttpListExchange", "LocalFileExchange", "list_deltas", "record_key"]
