"""The provider directory: who to notify, how and when (docs/hosting.md).

The operator keeps it as a TOML or CSV file and imports it with ``tipline provider import``;
an import replaces the whole directory in one transaction and is refused, with every bad
entry named, when any entry is invalid. Entries are keyed by

- ``asn:64500`` - an autonomous system (the host, or its upstream),
- ``domain:example.org`` - a registrable domain or any suffix of a host (``domain:github.io``,
  ``domain:de``: the registry),
- ``country:DE`` - a country (its INHOPE hotline, its police),

each with a ladder role (``host``, ``site_owner``, ``registrar``, ``upstream``, ``hotline``,
``police``), the organisation, an abuse address, the preferred channel (``email``,
``webhook``: the name of a configured webhook, ``manual``: a portal the analyst fills in),
a send window, the notice language, a re-check interval override and whether the AS is a CDN.

Send windows read ``"Mon-Fri 09:00-17:00 Europe/Berlin"``: days (a range ``Mon-Fri``, a list
``Mon,Wed,Fri``, a wrapping range ``Fri-Mon`` or ``daily``), a local time range (``22:00-06:00``
runs past midnight; ``24:00`` is the end of the day) and an IANA time zone (UTC if none).
:func:`in_send_window` and :func:`next_send_time` are pure and use ``zoneinfo``, so a window
keeps its local hours across daylight-saving changes.
"""

from __future__ import annotations

import csv
import io
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tipline.errors import TiplineError
from tipline.store.hosting_tables import ProviderEntry

__all__ = [
    "CHANNELS",
    "ROLES",
    "DirectoryError",
    "ProviderContact",
    "SendWindow",
    "directory",
    "in_send_window",
    "next_send_time",
    "parse_directory",
    "parse_send_window",
    "replace_directory",
]

#: Ladder roles, in escalation order.
ROLES = ("host", "site_owner", "registrar", "upstream", "hotline", "police")
CHANNELS = ("email", "webhook", "manual")
#: The role an entry gets when it names none, by key kind.
DEFAULT_ROLE = {"asn": "host", "domain": "site_owner", "country": "hotline"}
FIELDS = (
    "key",
    "role",
    "organisation",
    "abuse_email",
    "channel",
    "webhook",
    "send_window",
    "language",
    "recheck_hours",
    "cdn",
)
MAX_ENTRIES = 100_000

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_EMAIL_RE = re.compile(r"^[^@\s<>\"',;]+@[^@\s<>\"',;]+\.[^@\s<>\"',;]+$")
_LANGUAGE_RE = re.compile(r"^[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})*$")
_DOMAIN_RE = re.compile(r"^(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*[a-z0-9-]{1,63}$")
_TIME_RE = re.compile(r"^(\d{1,2}):(\d{2})$")


class DirectoryError(TiplineError):
    """A provider directory that cannot be imported; ``problems`` names every bad entry."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        shown = "; ".join(problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__(f"provider directory refused: {shown}{more}")


@dataclass(frozen=True)
class ProviderContact:
    key: str  #: "asn:64500", "domain:example.org", "country:DE"
    role: str  #: one of ROLES
    organisation: str
    abuse_email: str | None
    channel: str  #: "email" | "webhook" | "manual"
    webhook: str | None  #: name of a configured webhook (channel "webhook")
    send_window: str | None  #: "Mon-Fri 09:00-17:00 Europe/Berlin"; None: any time
    language: str = "en"
    recheck_hours: float | None = None  #: per-provider re-check interval override
    cdn: bool = False  #: the AS (asn: keys) is a CDN that fronts other hosts
    source: str = ""  #: "providers.toml entry 3", "providers.csv line 7"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- send windows -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SendWindow:
    days: frozenset[int]  #: weekday numbers (Monday 0) on which the window opens
    start: time
    end: time | None  #: None: 24:00
    zone: ZoneInfo

    @property
    def overnight(self) -> bool:
        return self.end is not None and self.end <= self.start


def _weekday(name: str) -> int:
    key = name.strip().lower()[:3]
    if key not in _DAYS or not name.strip().lower().startswith(key):
        raise ValueError(f"unknown day {name.strip()!r} (Mon, Tue, ... Sun)")
    return _DAYS.index(key)


def _days(spec: str) -> frozenset[int]:
    if spec.lower() in ("daily", "mon-sun", "every-day", "*"):
        return frozenset(range(7))
    days: set[int] = set()
    for part in spec.split(","):
        if "-" in part:
            first, last = (_weekday(p) for p in part.split("-", 1))
            day = first
            while True:  # a range may wrap (Fri-Mon)
                days.add(day)
                if day == last:
                    break
                day = (day + 1) % 7
        else:
            days.add(_weekday(part))
    return frozenset(days)


def _clock(text: str, *, allow_24: bool) -> time | None:
    m = _TIME_RE.match(text.strip())
    if not m:
        raise ValueError(f"bad time {text.strip()!r} (HH:MM)")
    hour, minute = int(m[1]), int(m[2])
    if allow_24 and (hour, minute) == (24, 0):
        return None
    if hour > 23 or minute > 59:
        raise ValueError(f"bad time {text.strip()!r}")
    return time(hour, minute)


@lru_cache(maxsize=1024)
def parse_send_window(text: str) -> SendWindow:
    """Parse ``"Mon-Fri 09:00-17:00 Europe/Berlin"``; ValueError with the reason."""
    parts = text.split()
    if len(parts) not in (2, 3):
        raise ValueError(f"send window {text!r} is not 'DAYS HH:MM-HH:MM [Zone/Name]'")
    days = _days(parts[0])
    if "-" not in parts[1]:
        raise ValueError(f"send window hours {parts[1]!r} are not HH:MM-HH:MM")
    first, last = parts[1].split("-", 1)
    start = _clock(first, allow_24=False)
    assert start is not None
    end = _clock(last, allow_24=True)
    if end == start:
        raise ValueError(f"send window {parts[1]!r} is empty")
    zone_name = parts[2] if len(parts) == 3 else "UTC"
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {zone_name!r}") from None
    return SendWindow(days=days, start=start, end=end, zone=zone)


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _window_opens(window: SendWindow, day: date) -> tuple[datetime, datetime]:
    """The instants (UTC) a window that opens on local ``day`` opens and closes. A local time
    that does not exist (spring forward) is read with the offset before the change, which
    lands just after the gap - the window opens as soon as the clock allows."""
    opens = datetime.combine(day, window.start, tzinfo=window.zone)
    if window.end is None:
        closes = datetime.combine(day + timedelta(days=1), time(0), tzinfo=window.zone)
    elif window.overnight:
        closes = datetime.combine(day + timedelta(days=1), window.end, tzinfo=window.zone)
    else:
        closes = datetime.combine(day, window.end, tzinfo=window.zone)
    return opens.astimezone(UTC), closes.astimezone(UTC)


def in_send_window(contact: ProviderContact, at: datetime) -> bool:
    """Whether a notice to ``contact`` may go out at ``at`` (naive: UTC). No window: always."""
    if not contact.send_window:
        return True
    window = parse_send_window(contact.send_window)
    instant = _aware(at).astimezone(UTC)
    local_day = instant.astimezone(window.zone).date()
    # The window opened today or (overnight) yesterday.
    for day in (local_day - timedelta(days=1), local_day):
        if day.weekday() in window.days:
            opens, closes = _window_opens(window, day)
            if opens <= instant < closes:
                return True
    return False


def next_send_time(contact: ProviderContact, at: datetime) -> datetime:
    """The first instant at or after ``at`` inside the contact's send window (``at`` itself
    when it is inside), in ``at``'s time zone (naive ``at``: UTC)."""
    at = _aware(at)
    if in_send_window(contact, at):
        return at
    assert contact.send_window is not None
    window = parse_send_window(contact.send_window)
    local_day = at.astimezone(window.zone).date()
    for offset in range(0, 9):
        day = local_day + timedelta(days=offset)
        if day.weekday() not in window.days:
            continue
        opens, _ = _window_opens(window, day)
        if opens >= at:
            return opens.astimezone(at.tzinfo)
    raise AssertionError("a send window with at least one day opens within 8 days")


# -- directory files ----------------------------------------------------------------------------


def _normalise_key(kind: str, value: str) -> str:
    kind = kind.strip().lower()
    value = value.strip()
    if kind == "asn":
        digits = value.upper().removeprefix("AS")
        if not digits.isdigit() or not 0 < int(digits) < 2**32:
            raise ValueError(f"bad AS number {value!r}")
        return f"asn:{int(digits)}"
    if kind == "domain":
        host = value.lower().strip(".")
        try:
            host = host.encode("idna").decode("ascii") if not host.isascii() else host
        except UnicodeError:
            raise ValueError(f"bad domain {value!r}") from None
        if not _DOMAIN_RE.match(host):
            raise ValueError(f"bad domain {value!r}")
        return f"domain:{host}"
    if kind == "country":
        code = value.upper()
        if not re.fullmatch(r"[A-Z]{2}", code):
            raise ValueError(f"bad country code {value!r} (ISO 3166 alpha-2)")
        return f"country:{code}"
    raise ValueError(f"key kind {kind!r} is not asn, domain or country")


def _text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{name} must be text")
    text = str(value).strip()
    if len(text) > 500:
        raise ValueError(f"{name} is longer than 500 characters")
    return text or None


def _bool(value: Any) -> bool:
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "yes", "1", "y"):
        return True
    if text in ("false", "no", "0", "n"):
        return False
    raise ValueError(f"cdn must be true or false, not {value!r}")


def contact_from_entry(entry: Mapping[str, Any], source: str) -> ProviderContact:
    """One directory entry (TOML table or CSV row) as a contact; ValueError with the reason."""
    unknown = set(entry) - set(FIELDS) - {"asn", "domain", "country"}
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(sorted(map(str, unknown)))}")
    given = [k for k in ("key", "asn", "domain", "country") if _text(entry.get(k), k)]
    if len(given) != 1:
        raise ValueError("exactly one of key, asn, domain or country is needed")
    raw = _text(entry[given[0]], given[0]) or ""
    if given[0] == "key":
        if ":" not in raw:
            raise ValueError(f"key {raw!r} is not asn:N, domain:NAME or country:CC")
        kind, value = raw.split(":", 1)
    else:
        kind, value = given[0], raw
    key = _normalise_key(kind, value)
    role = (_text(entry.get("role"), "role") or DEFAULT_ROLE[key.split(":", 1)[0]]).lower()
    if role not in ROLES:
        raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
    organisation = _text(entry.get("organisation"), "organisation")
    if not organisation:
        raise ValueError("organisation is missing")
    email = _text(entry.get("abuse_email"), "abuse_email")
    if email is not None and not _EMAIL_RE.match(email):
        raise ValueError(f"abuse_email {email!r} is not an e-mail address")
    webhook = _text(entry.get("webhook"), "webhook")
    channel = (_text(entry.get("channel"), "channel") or "").lower()
    if not channel:
        channel = "email" if email else "webhook" if webhook else "manual"
    if channel not in CHANNELS:
        raise ValueError(f"channel {channel!r} is not one of {', '.join(CHANNELS)}")
    if channel == "email" and not email:
        raise ValueError("channel email needs an abuse_email")
    if channel == "webhook" and not webhook:
        raise ValueError("channel webhook needs a webhook name")
    window = _text(entry.get("send_window"), "send_window")
    if window is not None:
        parse_send_window(window)  # ValueError with the reason
    language = _text(entry.get("language"), "language") or "en"
    if not _LANGUAGE_RE.match(language):
        raise ValueError(f"language {language!r} is not a language tag (en, de, pt-BR)")
    recheck_raw = entry.get("recheck_hours")
    recheck: float | None = None
    if recheck_raw not in (None, ""):
        try:
            recheck = float(recheck_raw)
        except (TypeError, ValueError):
            raise ValueError(f"recheck_hours {recheck_raw!r} is not a number") from None
        if not 0.1 <= recheck <= 24 * 365:
            raise ValueError("recheck_hours must be between 0.1 and 8760")
    return ProviderContact(
        key=key,
        role=role,
        organisation=organisation,
        abuse_email=email,
        channel=channel,
        webhook=webhook,
        send_window=window,
        language=language,
        recheck_hours=recheck,
        cdn=_bool(entry.get("cdn")),
        source=source,
    )


def _entries_toml(data: bytes, name: str) -> Iterable[tuple[str, Any]]:
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise DirectoryError([f"{name}: not valid TOML: {err}"]) from None
    unknown = set(doc) - {"provider"}
    if unknown:
        raise DirectoryError([f"{name}: unknown top-level key(s) {', '.join(sorted(unknown))}"])
    entries = doc.get("provider", [])
    if not isinstance(entries, list):
        raise DirectoryError([f"{name}: 'provider' must be an array of tables ([[provider]])"])
    for number, entry in enumerate(entries, 1):
        yield f"{name} entry {number}", entry


def _entries_csv(data: bytes, name: str) -> Iterable[tuple[str, Any]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise DirectoryError([f"{name}: not UTF-8 text ({err})"]) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames:
        raise DirectoryError([f"{name}: no header row"])
    columns = [c.strip() for c in reader.fieldnames if c]
    unknown = [c for c in columns if c not in FIELDS and c not in ("asn", "domain", "country")]
    if unknown:  # reported once for the header, not on every row
        yield f"{name} line 1", ValueError(f"unknown column(s) {', '.join(unknown)}")
    try:
        for row in reader:
            where = f"{name} line {reader.line_num}"
            if None in row:
                yield where, ValueError("more fields than the header has")
                continue
            if not any((v or "").strip() for v in row.values()):
                continue  # blank line
            yield (
                where,
                {
                    k.strip(): (v or "").strip()
                    for k, v in row.items()
                    if k and k.strip() not in unknown
                },
            )
    except csv.Error as err:
        raise DirectoryError([f"{name} line {reader.line_num}: {err}"]) from None


def parse_directory(data: bytes, name: str = "directory") -> list[ProviderContact]:
    """Every contact of a directory file (TOML when ``name`` ends in .toml, else CSV), or
    :class:`DirectoryError` naming every bad entry."""
    is_toml = name.lower().endswith(".toml")
    entries = _entries_toml(data, name) if is_toml else _entries_csv(data, name)
    contacts: list[ProviderContact] = []
    problems: list[str] = []
    seen: dict[tuple[str, str], str] = {}
    for where, entry in entries:
        if len(contacts) + len(problems) >= MAX_ENTRIES:
            problems.append(f"{name}: more than {MAX_ENTRIES} entries")
            break
        if isinstance(entry, Exception):
            problems.append(f"{where}: {entry}")
            continue
        if not isinstance(entry, dict):
            problems.append(f"{where}: not a table")
            continue
        try:
            contact = contact_from_entry(entry, where)
        except ValueError as err:
            problems.append(f"{where}: {err}")
            continue
        first = seen.setdefault((contact.key, contact.role), where)
        if first != where:
            problems.append(f"{where}: {contact.key} role {contact.role} repeats {first}")
            continue
        contacts.append(contact)
    if problems:
        raise DirectoryError(problems)
    return contacts


def load_directory(path: Path) -> list[ProviderContact]:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DirectoryError([f"{path}: cannot read ({err.strerror or err})"]) from None
    return parse_directory(data, path.name)


# -- the stored directory -----------------------------------------------------------------------


def _contact(row: ProviderEntry) -> ProviderContact:
    return ProviderContact(
        key=row.key,
        role=row.role,
        organisation=row.organisation,
        abuse_email=row.abuse_email,
        channel=row.channel,
        webhook=row.webhook,
        send_window=row.send_window,
        language=row.language,
        recheck_hours=row.recheck_hours,
        cdn=row.cdn,
        source=row.source,
    )


def replace_directory(session: Session, contacts: Iterable[ProviderContact]) -> int:
    """Replace the stored directory with ``contacts`` (the caller's transaction: commit it to
    make the change, roll back to keep the old directory). Returns the number stored."""
    session.execute(delete(ProviderEntry))
    count = 0
    for c in contacts:
        session.add(
            ProviderEntry(
                key=c.key,
                role=c.role,
                organisation=c.organisation,
                abuse_email=c.abuse_email,
                channel=c.channel,
                webhook=c.webhook,
                send_window=c.send_window,
                language=c.language,
                recheck_hours=c.recheck_hours,
                cdn=c.cdn,
                source=c.source,
            )
        )
        count += 1
    session.flush()
    return count


def directory(session: Session) -> list[ProviderContact]:
    """The stored directory, ordered by key and role."""
    rows = session.scalars(select(ProviderEntry).order_by(ProviderEntry.key, ProviderEntry.role))
    return [_contact(r) for r in rows]


def contacts_for_keys(session: Session, keys: Iterable[str]) -> dict[str, list[ProviderContact]]:
    """Stored contacts whose key is one of ``keys``, by key."""
    wanted = list(dict.fromkeys(keys))
    found: dict[str, list[ProviderContact]] = {}
    if not wanted:
        return found
    rows = session.scalars(select(ProviderEntry).where(ProviderEntry.key.in_(wanted)))
    for row in rows:
        found.setdefault(row.key, []).append(_contact(row))
    return found
