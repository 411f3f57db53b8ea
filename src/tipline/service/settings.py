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
``TIPLINE_DATABASE_URL``, ``TIPLINE_PORT``, ...; a table's fields add theirs
(``[triage] alert_match`` is ``TIPLINE_TRIAGE_ALERT_MATCH``).

Every value is parsed by its field's type annotation (:func:`tipline.config.parse_fields`):
``int`` (at least ``metadata["min"]``, default 0), ``float``, ``bool``, ``Literal[...]``,
``Path``, ``str`` and nested dataclasses (tables). There is no other list of settings: add a
field here (and a line to docs/deployment.md) and it is read from file, environment and flags.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tipline.config import MiB, env_names, env_values, field_types, is_settings_table, parse_fields
from tipline.config import data_dir as default_data_dir
from tipline.errors import TiplineError
from tipline.net.fetch import FetchSettings
from tipline.store.base import database_url
from tipline.triage.priority import TriageWeights

MediaMode = Literal["hash-only", "encrypted"]
LogLevel = Literal["debug", "info", "warning", "error"]
CookieSecure = Literal["auto", "true", "false"]
ENV_PREFIX = "TIPLINE_"
#: The settings file of processes started without ``--config``.
CONFIG_ENV = "TIPLINE_CONFIG"


class SettingsError(TiplineError):
    """A configuration file or environment variable that cannot be used."""


@dataclass(frozen=True, slots=True)
class RemovalSettings:
    """The removal loop (``[removal]`` table, ``TIPLINE_REMOVAL_<NAME>``; docs/removal.md)."""

    #: The hotline's own country (ISO alpha-2): locations hosted there are notified directly,
    #: others referred to the partner hotline of the hosting country.
    hotline_country: str = ""
    #: Abroad: also notify the host directly, beside the referral to the partner hotline.
    notify_host_abroad: bool = False
    #: Hours between re-checks (and re-notices) of an open case (a provider may override it).
    recheck_hours: float = 24.0
    #: Consecutive misses before a location counts as removed (an outage is not a removal).
    misses_to_remove: int = field(default=3, metadata={"min": 1})
    #: Days a removed location is still watched for the content coming back.
    watch_days: float = 30.0
    #: The escalation ladder (TOML/JSON, docs/removal.md); empty: the built-in ladder.
    ladder_file: str = ""
    #: Seconds between scheduler passes.
    tick_seconds: float = 300.0
    #: Start the scheduler's job chain when ``tipline worker`` (or ``tipline serve`` with
    #: in-process workers) starts; off: only ``tipline case scheduler --start`` starts it.
    autostart: bool = True
    #: Where evidence bundles are kept; empty: ``<data_dir>/evidence``.
    evidence_dir: str = ""
    #: The SMTP relay notices go through; empty: e-mail notices wait for manual sending.
    smtp_host: str = ""
    smtp_port: int = field(default=25, metadata={"min": 1})
    smtp_starttls: bool = True
    smtp_user: str = ""
    smtp_password: str = field(default="", repr=False, metadata={"secret": True})
    #: The envelope and From address of notices.
    smtp_from: str = ""
    #: CA file for the relay's STARTTLS certificate (an internal relay); empty: the system's.
    smtp_ca_file: str = ""
    #: The notifier a notice names (EU DSA Article 16): organisation, team, contact, web site,
    #: postal address.
    sender_organisation: str = "Tipline hotline"
    sender_name: str = ""
    sender_email: str = ""
    sender_website: str = ""
    sender_address: str = ""
    #: The legal basis a notice states; empty: the built-in text.
    legal_basis: str = ""
    #: A directory of notice templates searched before the bundled ones.
    notice_templates: str = ""
    #: Online mode: ask RDAP for the abuse contact of a hosting address the provider
    #: directory has no host contact for (off: nothing is ever sent to an RDAP server).
    rdap: bool = False
    #: The RDAP service asked (a bootstrap redirector, or one registry's server).
    rdap_url: str = "https://rdap.org"


@dataclass(frozen=True, slots=True)
class CrawlSettings:
    """The crawler (``[crawl]`` table, ``TIPLINE_CRAWL_<NAME>``; docs/crawl.md): defaults of a
    crawl's budgets and policy (a crawl may set its own), and the Tor proxy."""

    #: ``socks5h://host:port`` of the operator's Tor proxy; empty: .onion pages fail (never
    #: fetched directly). Each crawl sends its own SOCKS credentials (circuit isolation).
    tor_proxy: str = ""
    #: Pages one crawl runner works at once.
    workers: int = field(default=4, metadata={"min": 1})
    per_host_concurrency: int = field(default=2, metadata={"min": 1})
    #: Seconds between two requests to one host.
    per_host_delay: float = 0.25
    #: Arachnid's rule: a branch stops after this many pages in a row with nothing found
    #: (0: follow every branch to the depth limit).
    barren_pages: int = 3
    max_pages: int = field(default=1000, metadata={"min": 1})
    max_bytes: int = field(default=2048 * MiB, metadata={"min": 1})
    max_depth: int = 5
    max_seconds: float = 3600.0
    max_media: int = field(default=10_000, metadata={"min": 1})
    #: Largest model file streamed through the hashers.
    model_size_cap: int = field(default=16 * 1024 * MiB, metadata={"min": 1})
    #: Seal an evidence capture (WARC-exportable) of each page where something matched, in
    #: ``[removal] evidence_dir``.
    evidence: bool = True
    #: Seconds a crawl's runner may be silent before another takes the crawl over (a runner
    #: recorded as a process of this host that no longer exists is taken over at once).
    stale_seconds: float = 10.0


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    #: Where the SQLite database, media store, MIH index and key file live by default.
    data_dir: Path = field(default_factory=default_data_dir)
    #: SQLAlchemy URL; empty = ``$TIPLINE_DATABASE_URL`` or SQLite in ``data_dir``.
    database_url: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    #: API processes started by ``tipline serve`` (uvicorn workers).
    workers: int = field(default=1, metadata={"min": 1})
    #: ``hash-only`` keeps no media bytes; ``encrypted`` keeps them AES-GCM encrypted.
    media_mode: MediaMode = "encrypted"
    #: The media encryption key file; empty = ``<data_dir>/media.key``.
    key_file: str = ""
    log_level: LogLevel = "info"
    #: One JSON object per log line (false: plain text, for a terminal).
    json_logs: bool = True
    #: Largest upload accepted by /h/hash, /m/lookup, /c/bank/.../content and /api/v1/match.
    max_upload_bytes: int = field(default=64 * MiB, metadata={"min": 1})
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
    fetch_max_bytes: int = field(default=64 * MiB, metadata={"min": 1})
    #: PEM file of CA certificates the URL fetcher trusts instead of the system's.
    fetch_ca_file: str = ""
    #: Fetch direct media URLs named in reports (pipeline ``fetch`` stage).
    fetch_urls: bool = True
    #: Keyword list (``tipline keywords``' format) matched against report text and metadata.
    keywords_file: str = ""
    #: Decode SD/SDXL invisible watermarks in the pipeline and in scans (costly).
    watermarks: bool = False
    #: C2PA trust anchors (PEM) and allowed signer list for provenance checks.
    c2pa_trust_anchors: str = ""
    c2pa_allowed_list: str = ""
    #: Model card of a learned AI-image detector (``tipline detector``).
    detector_card: str = ""
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
    review_consensus: int = field(default=2, metadata={"min": 1})
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
    #: Signs the public report form's CSRF tokens; empty: ``<data_dir>/secret.key``.
    secret_key: str = field(default="", repr=False, metadata={"secret": True})
    #: Media encryption key(s), base64, comma-separated (the last one active); adds to
    #: ``key_file``.
    media_key: str = field(default="", repr=False, metadata={"secret": True})
    #: Triage weights (``[triage]`` table, ``TIPLINE_TRIAGE_<WEIGHT>``; docs/pipeline.md).
    triage: TriageWeights = field(default_factory=TriageWeights)
    #: The removal loop (``[removal]`` table; docs/removal.md).
    removal: RemovalSettings = field(default_factory=RemovalSettings)
    #: The crawler (``[crawl]`` table; docs/crawl.md).
    crawl: CrawlSettings = field(default_factory=CrawlSettings)

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
            ca_file=self.fetch_ca_file or None,
        )

    def replace(self, **changes: Any) -> ServiceSettings:
        parsed = _parse({k: v for k, v in changes.items() if v is not None})
        return dataclasses.replace(self, **parsed)

    def to_json(self) -> dict[str, Any]:
        """Every value as JSON (nested tables as objects): ``load(env={}, **to_json())`` gives
        the same settings back (``tipline serve`` hands them to its worker processes)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                out[f.name] = dataclasses.asdict(value)
            elif isinstance(value, Path):
                out[f.name] = str(value)
            else:
                out[f.name] = value
        return out

    @classmethod
    def load(
        cls,
        config_file: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> ServiceSettings:
        """Defaults < config file < environment < ``overrides`` (None values are ignored)."""
        return cls.load_with_sources(config_file, env, **overrides)[0]

    @classmethod
    def load_with_sources(
        cls,
        config_file: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> tuple[ServiceSettings, dict[str, str]]:
        """The settings and, for each (dotted) name, where its value came from: ``default``,
        ``file``, ``env`` or ``flag``."""
        env = os.environ if env is None else env
        layers: list[tuple[str, Mapping[str, Any]]] = []
        if config_file:
            layers.append(("file", _read_file(Path(config_file))))
        layers.append(("env", env_values(cls, env, ENV_PREFIX)))
        layers.append(("flag", {k: v for k, v in overrides.items() if v is not None}))
        values: dict[str, Any] = {}
        sources = dict.fromkeys(env_names(cls, ENV_PREFIX), "default")
        for source, layer in layers:
            for name, raw in layer.items():
                if name not in _FIELDS:
                    raise SettingsError(f"unknown setting {name!r}")
                if isinstance(raw, Mapping) and is_settings_table(_TYPES[name]):
                    table = values.setdefault(name, {})
                    if not isinstance(table, dict):
                        table = values[name] = dataclasses.asdict(table)
                    for sub, v in raw.items():
                        table[sub] = v
                        sources[f"{name}.{sub}"] = source
                else:
                    values[name] = raw
                    if is_settings_table(_TYPES[name]):
                        for key in sources:
                            if key.startswith(name + "."):
                                sources[key] = source
                    else:
                        sources[name] = source
        return cls(**_parse(values)), sources

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> ServiceSettings:
        """Settings of a process started without flags (pipeline and webhook workers): the
        file named by ``$TIPLINE_CONFIG``, then ``TIPLINE_*`` variables."""
        env = os.environ if env is None else env
        return cls.load(env.get(CONFIG_ENV) or None, env)


_FIELDS = {f.name: f for f in dataclasses.fields(ServiceSettings)}
_TYPES = field_types(ServiceSettings)
#: Names of settings whose values are shown masked (``tipline config show``).
SECRET_WORDS = ("key", "password", "passwd", "token", "secret")


def is_secret(name: str) -> bool:
    """A setting whose value must not be shown: marked secret, or named like one (``*_key``,
    ``*_token``, ``*password*``, ``*secret*``; ``key_file`` names a file, not a key)."""
    top = name.split(".")[0]
    f = _FIELDS.get(top)
    if f is not None and f.metadata.get("secret"):
        return True
    words = name.replace(".", "_").split("_")
    return words[-1] in SECRET_WORDS or "password" in words or "secret" in words


def env_setting(name: str, env: Mapping[str, str] | None = None) -> Any:
    """One setting from the environment alone (``TIPLINE_<NAME>``), parsed by its type, else
    its default: for code that runs in scan worker processes, which get no settings object."""
    env = os.environ if env is None else env
    raw = env_values(ServiceSettings, env, ENV_PREFIX).get(name)
    if raw is None:
        f = _FIELDS[name]
        if f.default_factory is not dataclasses.MISSING:
            return f.default_factory()
        return f.default
    return _parse({name: raw})[name]


def _parse(values: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return parse_fields(ServiceSettings, values)
    except KeyError as err:
        raise SettingsError(f"unknown setting {err.args[0]!r}") from None
    except ValueError as err:
        raise SettingsError(f"setting {err}") from None


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
        top = data
        data = dict(data["service"])  # a [service] table is accepted too
        for name in _FIELDS:  # tables beside it ([triage])
            if name in top and is_settings_table(_TYPES[name]) and name not in data:
                data[name] = top[name]
    if not isinstance(data, dict):
        raise SettingsError(f"config file {path} must hold a table of settings")
    unknown = sorted(set(data) - set(_FIELDS))
    for name, value in data.items():
        if name in _FIELDS and is_settings_table(_TYPES[name]) and isinstance(value, dict):
            known = {f.name for f in dataclasses.fields(_TYPES[name])}
            unknown += sorted(f"{name}.{k}" for k in set(value) - known)
    if unknown:
        raise SettingsError(
            f"config file {path}: unknown setting(s) {', '.join(unknown)} "
            f"(known: {', '.join(_FIELDS)})"
        )
    return data
