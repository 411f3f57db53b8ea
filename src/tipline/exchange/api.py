"""The exchange interface: what an exchange type (``local_file``, ``http_list``, later
``ncmec``, ``fb_threatexchange``, ...) implements, and the registry of types.

In the spirit of python-threatexchange's ``SignalExchangeAPI`` (docs/exchanges.md):

* :meth:`ExchangeType.fetch_iter` yields :class:`FetchDelta` chunks from a :class:`Checkpoint`
  (None: from scratch). A delta maps the exchange's own record keys to an
  :class:`ExchangeRecord` (added or changed) or None (a tombstone: the partner withdrew it),
  and carries the checkpoint that resumes right after it. The fetcher
  (:mod:`tipline.exchange.fetcher`) commits whole deltas with their checkpoint in one
  transaction, so a fetch killed at any point resumes from the last committed delta.
* :meth:`ExchangeType.is_stale`: a checkpoint too old to resume from (ThreatExchange keeps
  deletions 90 days, StopNCII 30): the fetcher then fetches from scratch, and once that pass
  is complete, records it did not see again are tombstoned.
* A *snapshot* type (``snapshot = True``: a hash list file) delivers the whole list on every
  fetch; a delta with ``new_snapshot`` begins a new pass, and the pass's last delta (its
  checkpoint ``up_to_date``) ends it: records missing from the new list are tombstoned.
* Bad input never stops a fetch: an invalid hash or an unknown signal type is a
  :class:`Problem` (counted, where it was reported) and the record is skipped.

Types are registered like signal types (:mod:`tipline.signals.types`): :func:`register`, or an
entry point in the ``tipline.exchange_types`` group naming an :class:`ExchangeType` subclass,
an instance, or a callable returning one.
"""

from __future__ import annotations

import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from tipline.errors import TiplineError
from tipline.net.fetch import FetchSettings
from tipline.registry import Registry

log = logging.getLogger("tipline.exchange")

ENTRY_POINT_GROUP = "tipline.exchange_types"

#: How many problems a fetch status keeps to show (the counters count them all).
MAX_PROBLEMS_KEPT = 20


class ExchangeError(TiplineError):
    """An exchange problem: unknown type, bad configuration, missing credentials."""


class ExchangeConfigError(ExchangeError):
    """An exchange's configuration (or credentials) is not valid for its type."""


class ExchangeFetchError(ExchangeError):
    """A fetch failed (the partner refused, answered garbage, was too slow).

    ``retry_after``: seconds the partner asked us to wait (429 / 503), if it said."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


#: Longest excerpt of an error answer's body a :class:`PartnerStatusError` keeps.
MAX_ERROR_BODY_CHARS = 2000


class PartnerStatusError(ExchangeFetchError):
    """A partner answered an HTTP error; ``status`` says which (a type tells refused
    credentials from a busy partner by it). ``body``: the start of the answer's body, as text
    (at most :data:`MAX_ERROR_BODY_CHARS`; empty when the client kept none), so a type can
    read a partner's error code without asking again."""

    def __init__(
        self, message: str, status: int, retry_after: float | None = None, body: str = ""
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.status = status
        self.body = body[:MAX_ERROR_BODY_CHARS]


def partner_status_error(
    partner: str,
    status: int,
    retry_after: float | None,
    where: str,
    *,
    refused: str = "credentials",
    check: str = "username and password",
    body: bytes | str = b"",
) -> PartnerStatusError:
    """The one-line error for a partner's HTTP ``status`` at ``where``: 401/403 name what to
    check, 429/5xx say the fetcher backs off (``retry_after`` kept for it). ``body``: the
    answer's body, if the client has it (a bounded excerpt is kept on the error)."""
    if status in (401, 403):
        msg = (
            f"{partner} refused the {refused} (HTTP {status}) for {where}: check the "
            f"exchange's {check}"
        )
    elif status == 429 or status >= 500:
        msg = f"{partner} answered HTTP {status} for {where}; backing off"
    else:
        msg = f"{partner} answered HTTP {status} for {where}"
    raw = body[: MAX_ERROR_BODY_CHARS * 4] if isinstance(body, bytes | bytearray) else body
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes | bytearray) else str(raw)
    return PartnerStatusError(msg, status, retry_after, text)


def is_permanent(err: BaseException) -> bool:
    """A refusal that retrying cannot change: a 4xx other than 429 (a status error carries
    ``status``), or an :class:`ExchangeError` that is not a fetch error (a record the type
    cannot name, reasons the partner does not know, a call it does not take). A busy or
    unreachable partner (429, 5xx, a timeout) is not: the job is retried."""
    if isinstance(err, ExchangeFetchError):
        status = getattr(err, "status", None)
        return isinstance(status, int) and 400 <= status < 500 and status != 429
    return isinstance(err, ExchangeError)


def parse_json_object(
    body: bytes | str, partner: str, where: str, *, excerpt: int = 200
) -> dict[str, Any]:
    """A partner's answer parsed as JSON, which must be an object; otherwise an
    :class:`ExchangeFetchError` naming the partner and where (``excerpt``: how much of the
    parser's message to keep). Deeply nested JSON is malformed, not a crash."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as err:
        raise ExchangeFetchError(
            f"{partner} {where}: malformed JSON ({str(err)[:excerpt]})"
        ) from None
    if not isinstance(doc, dict):
        raise ExchangeFetchError(
            f"{partner} {where}: expected a JSON object, got {type(doc).__name__}"
        )
    return doc


@dataclass(frozen=True, slots=True)
class ExchangeRecord:
    """One signal a partner shares, and the partner's metadata about it (partner id,
    classification, timestamps, ...: JSON values only)."""

    signal_type: str
    signal: str
    label: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where a fetch stands. ``state`` is the type's own JSON; ``progress_ts`` the time it
    corresponds to (epoch seconds), if it knows one; ``up_to_date``: nothing more to fetch now
    (for a snapshot type: the pass is complete)."""

    state: Mapping[str, Any] = field(default_factory=dict)
    progress_ts: int | None = None
    up_to_date: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "state": dict(self.state),
            "progress_ts": self.progress_ts,
            "up_to_date": self.up_to_date,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> Checkpoint | None:
        if not doc:
            return None
        ts = doc.get("progress_ts")
        return cls(
            state=dict(doc.get("state") or {}),
            progress_ts=int(ts) if isinstance(ts, int | float) else None,
            up_to_date=bool(doc.get("up_to_date")),
        )


ProblemKind = Literal["invalid", "unknown_signal_type", "malformed"]

OpinionCategory = Literal["positive", "negative", "not_sure"]


@dataclass(frozen=True, slots=True)
class Opinion:
    """An analyst's conclusion about a partner's record, to send back as feedback.

    ``record_key``: the exchange's own key for the record (as fetched); ``category``:
    ``positive`` (confirmed: the material is what the partner said), ``negative`` (it is not),
    ``not_sure``; ``reasons``: free codes or words for the partner (NCMEC's negative reasons,
    ThreatExchange tags); ``meta``: the record's partner metadata as fetched."""

    record_key: str
    signal_type: str
    signal: str
    category: OpinionCategory
    reasons: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Problem:
    """A record that was skipped: ``where`` is a line (``line 12``) or a record id."""

    kind: ProblemKind
    where: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"kind": self.kind, "where": self.where, "reason": self.reason[:300]}


@dataclass(slots=True)
class FetchDelta:
    """One chunk of a fetch: ``updates`` (key -> record, or None for a tombstone) and the
    checkpoint after them."""

    updates: dict[str, ExchangeRecord | None]
    checkpoint: Checkpoint
    problems: list[Problem] = field(default_factory=list)
    #: this delta begins a new pass over the whole list (a snapshot type whose list changed)
    new_snapshot: bool = False


@dataclass(frozen=True, slots=True)
class ConfigField:
    """One field of a type's configuration or credentials, described as HMA's
    ``/c/exchanges/api/<api>/schema`` does (``type``: string, number, boolean, enum)."""

    name: str
    type: Literal["string", "number", "boolean", "enum"] = "string"
    required: bool = False
    default: Any = None
    help: str = ""
    choices: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "required": self.required,
            "default": self.default,
            "help": self.help,
            "choices": list(self.choices) if self.choices is not None else None,
        }


@dataclass(frozen=True, slots=True)
class FetchContext:
    """What a fetch gets: the exchange's name, configuration and (opened) credentials, the
    address policy for HTTP, and the clock."""

    name: str
    config: Mapping[str, Any]
    credentials: Mapping[str, Any] | None = None
    fetch_settings: FetchSettings = field(default_factory=FetchSettings)
    clock: Callable[[], float] = time.time


class ExchangeType(ABC):
    """An exchange type. Subclasses set ``name``, ``description``, ``config_fields`` (and
    ``credential_fields`` if they authenticate) and implement :meth:`fetch_iter`."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    config_fields: ClassVar[tuple[ConfigField, ...]] = ()
    credential_fields: ClassVar[tuple[ConfigField, ...]] = ()
    #: every complete fetch delivers the whole list (tombstones are what went missing)
    snapshot: ClassVar[bool] = False

    def validate_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The configuration checked and with defaults filled in; unknown or missing fields
        are an :class:`ExchangeConfigError`. Subclasses check values on top."""
        return _check_fields(self.name, "config", self.config_fields, config)

    def validate_credentials(self, credentials: Mapping[str, Any]) -> dict[str, Any]:
        if not self.credential_fields:
            raise ExchangeConfigError(f"exchange type {self.name!r} takes no credentials")
        return _check_fields(self.name, "credentials", self.credential_fields, credentials)

    def is_stale(self, checkpoint: Checkpoint, now: float) -> bool:
        """True when ``checkpoint`` is too old to resume from: fetch from scratch."""
        return False

    #: the partner takes opinions on its records (:meth:`submit_opinion`)
    accepts_opinions: ClassVar[bool] = False
    #: the partner takes signals we share (:meth:`submit_records`)
    accepts_submissions: ClassVar[bool] = False

    @abstractmethod
    def fetch_iter(self, ctx: FetchContext, checkpoint: Checkpoint | None) -> Iterator[FetchDelta]:
        """Deltas from ``checkpoint`` (None: from scratch) until up to date. Raise
        :class:`ExchangeFetchError` when the partner cannot be read."""

    def submit_opinion(self, ctx: FetchContext, opinion: Opinion) -> None:
        """Tell the partner what an analyst concluded about one of its records. Must be
        idempotent for the same (record, opinion): the feedback queue may deliver twice after
        a crash. Raise :class:`ExchangeFetchError` to have the job retried."""
        raise ExchangeError(f"exchange type {self.name!r} takes no opinions")

    #: records per :meth:`submit_records` call the push job makes (its progress is committed
    #: after each call, so a crash repeats at most one)
    submission_batch: ClassVar[int] = 1000

    def takes_submissions(self, config: Mapping[str, Any]) -> bool:
        """Whether an exchange of this type with this (checked) configuration may be pushed
        to: :attr:`accepts_submissions` unless the type needs the operator to say it has the
        partner's permission (``stop_ncii``: ``submit``)."""
        return self.accepts_submissions

    def push_refusal(
        self, ctx: FetchContext, key: str, record: ExchangeRecord | None
    ) -> str | None:
        """Why this record (None: a withdrawal) cannot be pushed to this partner at all (a
        signal type it does not take, a withdrawal it has no call for), or None. The push
        job records the reason and does not send it (nor try again until the entry
        changes)."""
        return None

    def submit_records(
        self, ctx: FetchContext, records: Mapping[str, ExchangeRecord | None]
    ) -> Mapping[str, str]:
        """Share signals with the partner: our key -> record (None: withdraw it). Idempotent
        per key. Returns the keys the partner refused, each with its reason (the rest were
        taken). Raise :class:`ExchangeFetchError` to have the push retried, another
        :class:`ExchangeError` when the whole request was refused."""
        raise ExchangeError(f"exchange type {self.name!r} takes no submissions")

    def schema(self) -> dict[str, Any]:
        """HMA's ``/c/exchanges/api/<api>/schema`` shape."""
        creds = (
            {"fields": [f.to_json() for f in self.credential_fields]}
            if self.credential_fields
            else None
        )
        return {
            "config_schema": {"fields": [f.to_json() for f in self.config_fields]},
            "credentials_schema": creds,
        }


def _check_fields(
    api: str, what: str, fields: tuple[ConfigField, ...], given: Mapping[str, Any]
) -> dict[str, Any]:
    if not isinstance(given, Mapping):
        raise ExchangeConfigError(f"{api} {what} must be an object")
    known = {f.name: f for f in fields}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ExchangeConfigError(
            f"{api} {what}: unknown field(s) {', '.join(map(repr, unknown))} "
            f"(known: {', '.join(known) or 'none'})"
        )
    out: dict[str, Any] = {}
    for f in fields:
        value = given.get(f.name, f.default)
        if value is None:
            if f.required:
                raise ExchangeConfigError(f"{api} {what}: {f.name!r} is required")
            out[f.name] = None
            continue
        out[f.name] = _coerce(api, what, f, value)
    return out


def _coerce(api: str, what: str, f: ConfigField, value: Any) -> Any:
    where = f"{api} {what}: {f.name!r}"
    if f.type == "number":
        if isinstance(value, bool):
            raise ExchangeConfigError(f"{where} must be a number")
        try:
            num = float(value)
        except (TypeError, ValueError):
            raise ExchangeConfigError(f"{where} must be a number") from None
        return int(num) if num.is_integer() else num
    if f.type == "boolean":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ExchangeConfigError(f"{where} must be true or false")
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ExchangeConfigError(f"{where} must be a string")
    text = str(value)
    if f.type == "enum" and f.choices is not None and text not in f.choices:
        raise ExchangeConfigError(f"{where} must be one of {', '.join(f.choices)}")
    return text


# -- the registry ----------------------------------------------------------------------------

#: every exchange type by name; lookups read its snapshot (replaced whole on every change)
_TYPES: Registry[ExchangeType] = Registry("exchange type", error=ExchangeError)
_PLUGINS_LOADED = False


def register(api: ExchangeType | type[ExchangeType]) -> ExchangeType:
    """Make an exchange type known (an instance or a class). Re-registering a name replaces
    it."""
    inst = api() if isinstance(api, type) else api
    if not isinstance(inst, ExchangeType) or not getattr(inst, "name", ""):
        raise ExchangeError(f"{api!r} is not a named ExchangeType")
    return _TYPES.register(inst.name, inst, replace=True)


def unregister(name: str) -> None:
    _TYPES.unregister(name, missing_ok=True)


def _load_plugins() -> None:
    """Types other packages declare in the ``tipline.exchange_types`` entry points. A broken
    plugin is logged and skipped."""
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
            if isinstance(obj, ExchangeType | type) and (
                isinstance(obj, ExchangeType) or issubclass(obj, ExchangeType)
            ):
                register(obj)
            elif callable(obj):
                register(obj())
            else:
                raise TypeError(f"{ep.value} is not an ExchangeType")
        except Exception:
            log.exception("could not load exchange type plugin %s", ep.name)


def registered() -> dict[str, ExchangeType]:
    """Every known exchange type by name (built-in, registered, entry-point plugins).
    Read-only: use :func:`register` / :func:`unregister`."""
    if not _PLUGINS_LOADED:
        from tipline.exchange import types as _builtin  # noqa: F401  (registers the built-ins)

        _load_plugins()
    return _TYPES.snapshot()


def exchange_type(name: str) -> ExchangeType:
    found = registered().get(name)
    if found is None:
        raise _TYPES.unknown(name)
    return found


__all__ = [
    "ENTRY_POINT_GROUP",
    "MAX_ERROR_BODY_CHARS",
    "Checkpoint",
    "ConfigField",
    "ExchangeConfigError",
    "ExchangeError",
    "ExchangeFetchError",
    "ExchangeRecord",
    "ExchangeType",
    "FetchContext",
    "FetchDelta",
    "Opinion",
    "OpinionCategory",
    "PartnerStatusError",
    "Problem",
    "exchange_type",
    "is_permanent",
    "parse_json_object",
    "partner_status_error",
    "register",
    "registered",
    "unregister",
]
