"""Service settings: embedded defaults, then a config file (TOML or JSON), then ``TIPLINE_*``
environment variables, then command-line flags.

Every field is documented in docs/deployment.md. Example ``tipline.toml``::

    data_dir = "/var/lib/tipline"
    database_url = "postgresql+psycopg://tipline@127.0.0.1:5432/tipline"
    host = "127.0.0.1"
    port = 8000
    media_mode = "encrypted"        # or "hash-only"
    key_file = "/etc/tipline/media.key"
    log_level = "info"

Environment variables use the field name in capitals: ``TIPLINE_DATA_DIR``,
``TIPLINE_DATABASE_URL``, ``TIPLINE_PORT``, ...
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from tipline.config import MiB
from tipline.config import data_dir as default_data_dir
from tipline.crawl.fetch import FetchSettings
from tipline.errors import TiplineError
from tipline.store.base import database_url

MediaMode = Literal["hash-only", "encrypted"]
LogLevel = Literal["debug", "info", "warning", "error"]
CookieSecure = Literal["auto", "true", "false"]
ENV_PREFIX = "TIPLINE_"


class SettingsError(TiplineError):
    """A configuration file or environment variable that cannot be used."""


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    #: Where the SQLite database, media store, MIH index and key file live by default.
    data_dir: Path = field(default_factory=default_data_dir)
    #: SQLAlchemy URL; empty = ``$TIPLINE_DATABASE_URL`` or SQLite in ``data_dir``.
    database_url: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    #: API processes started by ``tipline serve`` (uvicorn workers).
    workers: int = 1
    #: ``hash-only`` keeps no media bytes; ``encrypted`` keeps them AES-GCM encrypted.
    media_mode: MediaMode = "encrypted"
    #: The media encryption key file; empty = ``<data_dir>/media.key``.
    key_file: str = ""
    log_level: LogLevel = "info"
    #: One JSON object per log line (false: plain text, for a terminal).
    json_logs: bool = True
    #: Largest upload accepted by /h/hash, /m/lookup, /c/bank/.../content and /api/v1/match.
    max_upload_bytes: int = 64 * MiB
    #: Seconds a client may take to send an upload (slow-loris guard): 408 after that.
    upload_timeout_seconds: float = 60.0
    #: Where the match index keeps its version file (and, later, a persisted MIH index).
    index_dir: str = ""
    #: Seconds between checks whether another process changed the banks.
    index_refresh_seconds: float = 1.0
    #: Pipeline worker threads inside each API process (the embedded single-machine mode);
    #: 0 when separate ``tipline worker`` processes do the work.
    inprocess_workers: int = 1
    #: Host names / networks the URL fetcher may reach although private (comma-separated).
    fetch_allow_hosts: str = ""
    fetch_allow_networks: str = ""
    #: Largest body fetched for ``?url=`` hashing and lookups.
    fetch_max_bytes: int = 64 * MiB
    #: Days media bytes are kept (0: until purged by hand).
    media_retention_days: int = 0
    #: Session cookies: ``auto`` sets ``Secure`` when the request came over https.
    cookie_secure: CookieSecure = "auto"
    session_idle_minutes: int = 30
    session_max_hours: int = 12
    #: Permissions granted without a token (e.g. ``match:read,hash:read`` for an HMA drop-in
    #: on a private network); empty: every route needs authentication.
    anonymous_permissions: str = ""
    #: The grading taxonomy file (TOML); empty: the built-in default (docs/review.md).
    review_taxonomy: str = ""
    #: Independent agreeing grades that make an item's grade final (a bank may ask for more).
    review_consensus: int = 2
    #: Minutes a claim on a cluster lasts without activity before others may take it.
    review_claim_minutes: int = 30
    #: Hours a cluster may wait before it is shown as overdue.
    review_sla_hours: int = 24
    #: Banks that final grades feed: actionable grades (alert, auto-confirm) and not-illegal
    #: grades (ignore), so the same material is never reviewed again.
    review_bank: str = "TIPLINE_GRADED"
    review_benign_bank: str = "TIPLINE_NOT_ILLEGAL"
    #: Exposure limits (IWF practice): a daily cap on time with media on screen, and a break
    #: of ``exposure_break_minutes`` after each ``exposure_break_after_minutes`` of exposure.
    exposure_daily_cap_minutes: int = 300
    exposure_break_after_minutes: int = 60
    exposure_break_minutes: int = 10

    @property
    def db_url(self) -> str:
        return database_url(self.data_dir, self.database_url or None)

    @property
    def key_path(self) -> Path:
        return Path(self.key_file) if self.key_file else self.data_dir / "media.key"

    @property
    def index_path(self) -> Path:
        return Path(self.index_dir) if self.index_dir else self.data_dir / "index"

    def fetch_settings(self) -> FetchSettings:
        return FetchSettings.build(
            allow_hosts=[h for h in self.fetch_allow_hosts.split(",") if h.strip()],
            allow_networks=[n for n in self.fetch_allow_networks.split(",") if n.strip()],
            max_bytes=self.fetch_max_bytes,
        )

    def replace(self, **changes: Any) -> ServiceSettings:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def load(
        cls,
        config_file: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> ServiceSettings:
        """Defaults < config file < environment < ``overrides`` (None values are ignored)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        if config_file:
            values.update(_read_file(Path(config_file)))
        for f in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**{k: _coerce(k, v) for k, v in values.items()})


_FIELDS = {f.name: f for f in dataclasses.fields(ServiceSettings)}
_INTS = (
    "inprocess_workers",
    "port",
    "workers",
    "max_upload_bytes",
    "fetch_max_bytes",
    "media_retention_days",
    "session_idle_minutes",
    "session_max_hours",
    "review_consensus",
    "review_claim_minutes",
    "review_sla_hours",
    "exposure_daily_cap_minutes",
    "exposure_break_after_minutes",
    "exposure_break_minutes",
)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise SettingsError(f"cannot read config file {path}: {err.strerror or err}") from None
    try:
        data: Any = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as err:
        raise SettingsError(f"config file {path} is not valid: {err}") from None
    if isinstance(data, dict) and isinstance(data.get("service"), dict):
        data = data["service"]  # a [service] table is accepted too
    if not isinstance(data, dict):
        raise SettingsError(f"config file {path} must hold a table of settings")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise SettingsError(
            f"config file {path}: unknown setting(s) {', '.join(unknown)} "
            f"(known: {', '.join(_FIELDS)})"
        )
    return data


def _coerce(name: str, value: Any) -> Any:
    if name not in _FIELDS:
        raise SettingsError(f"unknown setting {name!r}")
    try:
        if name == "data_dir":
            return Path(str(value)).expanduser()
        if name in _INTS:
            out = int(value)
            positive = ("workers", "max_upload_bytes", "fetch_max_bytes", "review_consensus")
            if out < (1 if name in positive else 0):
                raise ValueError("out of range")
            return out
        if name in ("index_refresh_seconds", "upload_timeout_seconds"):
            return float(value)
        if name == "json_logs":
            if isinstance(value, bool):
                return value
            low = str(value).strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError("want true or false")
        if name == "cookie_secure":
            low = str(value).lower()
            if low not in get_args(CookieSecure):
                raise ValueError(f"want one of {', '.join(get_args(CookieSecure))}")
            return low
        if name == "media_mode":
            if value not in get_args(MediaMode):
                raise ValueError(f"want one of {', '.join(get_args(MediaMode))}")
            return value
        if name == "log_level":
            low = str(value).lower()
            if low not in get_args(LogLevel):
                raise ValueError(f"want one of {', '.join(get_args(LogLevel))}")
            return low
        return str(value)
    except (TypeError, ValueError) as err:
        raise SettingsError(f"setting {name}: invalid value {str(value)[:80]!r}: {err}") from None
