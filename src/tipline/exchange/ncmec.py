"""The ``ncmec`` exchange type: NCMEC's hash sharing API (XML over HTTPS, basic auth), as
python-threatexchange's ``NCMECHashAPI`` client models it (docs/exchanges.md, "ncmec").

The protocol: ``GET {environment}/v2/entries?from=&to=`` answers a ``<queryResult>`` with
``<images>`` / ``<videos>`` of ``<image>`` / ``<video>`` entries (``<member id>``, ``<id>``,
``<timestamp>``, ``<classification>``, ``<fingerprints><md5/><sha1/><pdq/>...``) and
tombstones (``<deletedImage>`` / ``<deletedVideo>``), and ``<paging><next>`` links
(``/v2/entries?from=..&to=..&start=1001&size=1000&max=..``) until the range is exhausted.
``GET /v2/status`` says who we are, ``GET /v2/feedback/{FP}/reasons`` lists the negative
feedback reasons of a fingerprint type, ``PUT /v2/entries/{espId}/{entryId}/{FP}/feedback``
takes ``<feedbackSubmission><affirmative/>`` or ``<negative><reasonIds><guid>``.

The pitfalls, and what this module does about each:

* **Entries are not time-ordered within a range**, so only a range fetched to its end is a
  safe place to resume from. The checkpoint is a *window* ``[from, to)``: ``progress_ts`` is
  ``from`` until the window's last page is committed, then the window's end. Mid-window the
  checkpoint also holds the window's ``next`` link, so a fetch killed (or time-boxed) there
  resumes at the next page; replaying part of a window is harmless because records are keyed
  by ``<member>-<entry id>:<fingerprint>``.
* **A paging link is only valid with the from/to it came with** (ThreatExchange #1744): a
  stored link is used only for the window it was issued for (and is dropped if its own
  ``from``/``to`` say otherwise); a link is never combined with another window.
* **Links expire** (NCMEC asks not to keep them; python-threatexchange treats them as valid
  for 12 h): an older link, or one the server answers 400/404/410, restarts *the window*,
  never the whole fetch.
* **A page that repeats** (a link already fetched in this window) stops the fetch with an
  error instead of looping.
* **Window size** adapts as python-threatexchange's does: a first page estimating more than
  ``max_window_entries`` shrinks the window four-fold; windows with few entries grow it.
* Deletions are tombstones for every fingerprint key of the entry; fingerprint types NCMEC
  documents but Tipline has no signal type for (``pdna``, ``netclean``, the video hashes given
  as links) are ignored; an undocumented type is a problem, counted with its entry id;
  invalid hashes are counted by the fetcher with the record's key (which names the entry).
* 429 / 5xx are an :class:`ExchangeFetchError` with ``retry_after`` (the fetcher backs off);
  401/403 say the credentials were refused (the exchange's status shows it failing);
  pages go through :func:`tipline.net.fetch.fetch` (address policy, ``max_page_bytes``);
  XML is parsed with defusedxml: DTDs and entities are refused.
* The checkpoint never moves back: a clock that jumps backwards just finds nothing to fetch.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Generator, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit
from xml.sax.saxutils import escape

import defusedxml
import defusedxml.ElementTree as SafeET

from tipline.exchange.api import (
    Checkpoint,
    ConfigField,
    ExchangeConfigError,
    ExchangeError,
    ExchangeFetchError,
    ExchangeRecord,
    ExchangeType,
    FetchContext,
    FetchDelta,
    Opinion,
    PartnerStatusError,
    Problem,
    partner_status_error,
    register,
)
from tipline.exchange.meta_json import EncodedMeta, json_scalar, json_str
from tipline.net.fetch import (
    FetchConnectError,
    FetchError,
    FetchSettings,
    FetchTimeoutError,
    HTTPStatusError,
    fetch,
    send_pinned,
)
from tipline.signals.types import registered as signal_types

log = logging.getLogger("tipline.exchange.ncmec")

API_VERSION = "v2"
NAMESPACE = "https://hashsharing.ncmec.org/hashsharing/v2"

#: NCMEC's environments (python-threatexchange's ``NCMECEnvironment``), by config name.
ENVIRONMENTS: dict[str, str] = {
    "industry": "https://report.cybertip.org/hashsharing",
    "industry_exploitative": "https://report.cybertip.org/exploitative-hashsharing",
    "law_enforcement": "https://lesp.ncmec.org/csam-hashsharing",
    "ngo": "https://hashsharing.ncmec.org/npo",
    "exploitative": "https://hashsharing.ncmec.org/exploitative",
    "ngo_generative_ai": "https://hashsharing.ncmec.org/generative-ai-csam",
    "ngo_generative_ai_exploitative": "https://hashsharing.ncmec.org/generative-ai-exploitative",
    "test_industry": "https://exttest.cybertip.org/hashsharing",
    "test_industry_exploitative": "https://exttest.cybertip.org/exploitative-hashsharing",
    "test_law_enforcement": "https://betalesp.ncmec.org/csam-hashsharing",
    "test_ngo": "https://hashsharing-test.ncmec.org/npo",
    "test_exploitative": "https://hashsharing-test.ncmec.org/exploitative",
    "test_ngo_generative_ai": "https://hashsharing-test.ncmec.org/generative-ai-csam",
    "test_ngo_generative_ai_exploitative": (
        "https://hashsharing-test.ncmec.org/generative-ai-exploitative"
    ),
}

#: Fingerprint elements NCMEC documents (10/2024), with the Tipline signal type each maps to
#: (None: Tipline cannot match it, so it is ignored). Feedback names are upper case with ``_``.
FINGERPRINTS: dict[str, str | None] = {
    "md5": "md5",
    "sha1": "sha1",
    "pdq": "pdq",
    "pdna": "photodna",
    "netclean": None,
    "videntifier": None,
    "tmk-pdqf": None,
    "ssvh-pdna": None,
    "ssvh-safer-hash": None,
}

#: python-threatexchange's probing: shrink a window this much when it holds too many entries.
SHRINK_FACTOR = 4
DEFAULT_MAX_WINDOW_ENTRIES = 400_000
#: Entries a window may hold and still grow the next one (two pages' worth, as HMA).
GROW_BELOW = 2_000
#: Stay this far behind "now": entries still being written are not in order either.
SETTLE_SECONDS = 5
#: How long a stored ``next`` link is trusted (python-threatexchange: 12 h).
DEFAULT_NEXT_MAX_AGE = 12 * 3600
DEFAULT_MAX_PAGE_BYTES = 64 * 1024 * 1024
MAX_NEXT_LEN = 4096
#: Answers to a stored ``next`` link that mean "expired: start the window again".
EXPIRED_LINK_STATUSES = frozenset({400, 404, 410})
_DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_FEEDBACK_NAME = re.compile(r"^[A-Z0-9_]{1,32}$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def format_ts(ts: int) -> str:
    """Epoch seconds as NCMEC's ``from`` / ``to`` (UTC)."""
    return datetime.fromtimestamp(ts, UTC).strftime(_DATE_FORMAT)


def parse_ts(text: str | None) -> int | None:
    """NCMEC's ``2017-10-24T15:00:00Z`` / ``...00.000Z`` as epoch seconds; None if it is not
    one."""
    if not text:
        return None
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp())


def feedback_name(fingerprint: str) -> str:
    """A fingerprint element (``tmk-pdqf``) as NCMEC's feedback type name (``TMK_PDQF``)."""
    return fingerprint.upper().replace("-", "_")


# -- pages -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Member:
    """An NCMEC member (an ESP): ``/v2/status`` answers ours."""

    id: int
    name: str


@dataclass(slots=True)
class Entry:
    """One ``<image>`` / ``<video>`` (or ``deleted...`` tombstone) of an entries page."""

    id: str
    member_id: int
    member_name: str
    entry_type: str
    deleted: bool
    timestamp: str | None
    classification: str | None
    fingerprints: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.member_id}-{self.id}"


@dataclass(slots=True)
class EntriesPage:
    entries: list[Entry]
    next: str
    max_timestamp: int | None
    problems: list[Problem]

    def estimated_entries(self) -> int:
        """How many entries the whole range holds, from the ``next`` link's ``max`` and
        ``start`` (python-threatexchange's estimate)."""
        if not self.next:
            return len(self.entries)
        q = parse_qs(urlsplit(self.next).query)
        try:
            return int(q["max"][0]) - int(q["start"][0]) + len(self.entries)
        except (KeyError, ValueError, IndexError):
            return len(self.entries) + 1


_LOCAL_NAMES: dict[str, str] = {}


def _local(tag: Any) -> str:
    """An element's name without its namespace (``{ns}image`` -> ``image``)."""
    name = _LOCAL_NAMES.get(tag) if isinstance(tag, str) else ""
    if name is None:
        name = tag.rpartition("}")[2]
        if len(_LOCAL_NAMES) < 256:  # a page of made-up names does not grow it forever
            _LOCAL_NAMES[tag] = name
    return name


_DECLARED_ENCODING = re.compile(rb"""^<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


def _plain_xml(body: bytes) -> bool:
    """True when ``body`` cannot hold a DTD: UTF-8 / ASCII (declared or not, no other BOM)
    and no ``<!DOCTYPE`` anywhere. Entities can only be declared in a DTD, so such a page
    parses safely with the C parser; anything else goes through defusedxml."""
    head = body[3:] if body.startswith(b"\xef\xbb\xbf") else body
    head = head.lstrip()[:200]
    if not head.startswith(b"<"):
        return False
    m = _DECLARED_ENCODING.match(head)
    if m and m.group(1).lower() not in (b"utf-8", b"utf8", b"us-ascii", b"ascii"):
        return False
    return b"<!DOCTYPE" not in body and b"<!ENTITY" not in body


def parse_xml(body: bytes, what: str) -> ET.Element:
    """``body`` parsed safely: a page with a DTD (or in an encoding that could hide one) goes
    through defusedxml, which refuses DTDs, entities and external references; a malformed
    page, or a refused one, is an :class:`ExchangeFetchError` saying so."""
    try:
        if _plain_xml(body):
            return ET.fromstring(body)  # no DTD possible here: see _plain_xml
        root: ET.Element = SafeET.fromstring(body, forbid_dtd=True)
    except defusedxml.DefusedXmlException as err:
        raise ExchangeFetchError(
            f"NCMEC {what}: refused XML ({type(err).__name__}: DTDs, entities and external "
            "references are not accepted)"
        ) from None
    except ET.ParseError as err:
        raise ExchangeFetchError(f"NCMEC {what}: malformed XML ({err})") from None
    return root


def parse_entries(body: bytes, where: str = "page") -> EntriesPage:
    """An entries page (``<queryResult>``). A malformed page raises; a malformed entry in an
    otherwise good page is a :class:`Problem` and is skipped."""
    root = parse_xml(body, where)
    if _local(root.tag) != "queryResult":
        raise ExchangeFetchError(
            f"NCMEC {where}: expected <queryResult>, got <{_local(root.tag)[:40]}>"
        )
    entries: list[Entry] = []
    problems: list[Problem] = []
    max_ts: int | None = None
    next_link = ""
    for block in root:
        name = _local(block.tag)
        if name in ("images", "videos"):
            ts = parse_ts(block.get("maxTimestamp"))
            if ts is not None:
                max_ts = ts if max_ts is None else max(max_ts, ts)
            for n, el in enumerate(block, 1):
                got = _entry(el)
                if isinstance(got, str):
                    problems.append(Problem("malformed", f"{where} {name} #{n}", got))
                else:
                    entries.append(got)
        elif name == "paging":
            for child in block:
                if _local(child.tag) == "next":
                    next_link = (child.text or "").strip()
    return EntriesPage(entries, next_link, max_ts, problems)


def _entry(el: ET.Element) -> Entry | str:
    """One entry element, or why it is unusable."""
    kind = _local(el.tag)
    deleted = kind.startswith("deleted")
    entry_type = (kind[len("deleted") :] if deleted else kind).lower()
    if entry_type not in ("image", "video"):
        return f"unknown entry element <{kind[:40]}>"
    entry_id: str | None = None
    member_id: int | None = None
    member_name = ""
    timestamp: str | None = None
    classification: str | None = None
    prints: dict[str, str] = {}
    for child in el:
        name = _local(child.tag)
        if name == "id":
            entry_id = (child.text or "").strip()
        elif name == "member":
            try:
                member_id = int(child.get("id") or "")
            except ValueError:
                return f"member id {str(child.get('id'))[:40]!r} is not a number"
            member_name = (child.text or "").strip()[:200]
        elif name == "timestamp":
            timestamp = (child.text or "").strip()[:40] or None
        elif name == "classification":
            classification = (child.text or "").strip()[:40] or None
        elif name == "fingerprints":
            for fp in child:
                text = (fp.text or "").strip()
                if text:  # big fingerprints come as links (href), not values
                    prints[_local(fp.tag).lower()[:40]] = text
    if not entry_id or len(entry_id) > 200:
        return "entry without a usable <id>"
    if member_id is None:
        return f"entry {entry_id[:80]!r} without a <member id>"
    return Entry(
        entry_id, member_id, member_name, entry_type, deleted, timestamp, classification, prints
    )


# -- the exchange type -----------------------------------------------------------------------


def _window_of(link: str) -> tuple[int | None, int | None]:
    """The ``from`` / ``to`` a paging link carries (None where it carries none)."""
    q = parse_qs(urlsplit(link).query)
    return parse_ts(next(iter(q.get("from", [])), None)), parse_ts(
        next(iter(q.get("to", [])), None)
    )


class NcmecExchange(ExchangeType):
    """NCMEC's hash sharing API (see the module docstring)."""

    name = "ncmec"
    description = (
        "NCMEC hash sharing (XML API, basic auth): entries by time window, deletions, "
        "affirmative/negative feedback."
    )
    config_fields = (
        ConfigField(
            "environment",
            "enum",
            default="industry",
            help="Which NCMEC database: industry, law_enforcement, ngo, ... (test_* for "
            "NCMEC's test hosts).",
            choices=tuple(ENVIRONMENTS),
        ),
        ConfigField(
            "base_url",
            "string",
            help="Instead of the environment's address: another base URL (a replay server).",
        ),
        ConfigField(
            "start_ts",
            "number",
            default=0,
            help="Fetch entries from this time on (epoch seconds) on the first fetch.",
        ),
        ConfigField(
            "only_esp_ids",
            "string",
            default="",
            help="Comma-separated member (ESP) ids to take entries from; empty: all.",
        ),
        ConfigField(
            "fingerprints",
            "string",
            default="",
            help="Comma-separated fingerprint types to take (md5, sha1, pdq, pdna); empty: "
            "every one Tipline can match.",
        ),
        ConfigField(
            "max_window_entries",
            "number",
            default=DEFAULT_MAX_WINDOW_ENTRIES,
            help="Shrink a time window that holds more entries than this.",
        ),
        ConfigField(
            "max_page_bytes",
            "number",
            default=DEFAULT_MAX_PAGE_BYTES,
            help="Largest page accepted, in bytes.",
        ),
        ConfigField("timeout", "number", default=60, help="Seconds for one page."),
        ConfigField(
            "next_max_age",
            "number",
            default=DEFAULT_NEXT_MAX_AGE,
            help="Seconds a stored paging link is trusted (then the window restarts).",
        ),
        ConfigField(
            "feedback",
            "boolean",
            default=True,
            help="Send analysts' grades of matched entries back as feedback.",
        ),
        ConfigField(
            "negative_reasons",
            "string",
            default="",
            help="Comma-separated NCMEC reason names or GUIDs sent with negative feedback "
            "(empty: NCMEC's only reason for the fingerprint type, where it lists one).",
        ),
    )
    credential_fields = (
        ConfigField("username", "string", required=True, help="Hash sharing API user name."),
        ConfigField("password", "string", required=True, help="Hash sharing API password."),
    )
    accepts_opinions = True

    def validate_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        out = super().validate_config(config)
        base = out.get("base_url")
        if base:
            base = str(base).strip().rstrip("/")
            if not base.lower().startswith(("http://", "https://")):
                raise ExchangeConfigError("ncmec config: base_url must be http:// or https://")
            out["base_url"] = base
        ids = [p.strip() for p in str(out.get("only_esp_ids") or "").split(",") if p.strip()]
        if not all(p.isdigit() for p in ids):
            raise ExchangeConfigError("ncmec config: only_esp_ids must be numbers")
        out["only_esp_ids"] = ",".join(ids)
        prints = [p.strip().lower() for p in str(out.get("fingerprints") or "").split(",")]
        prints = [p for p in prints if p]
        for p in prints:
            if FINGERPRINTS.get(p) is None:
                takeable = ", ".join(k for k, v in FINGERPRINTS.items() if v)
                raise ExchangeConfigError(
                    f"ncmec config: fingerprint {p!r} cannot be taken (takeable: {takeable})"
                )
        out["fingerprints"] = ",".join(prints)
        if int(out["start_ts"]) < 0:
            raise ExchangeConfigError("ncmec config: start_ts must be >= 0")
        if int(out["max_window_entries"]) < 1000:
            raise ExchangeConfigError("ncmec config: max_window_entries must be >= 1000")
        if not 1024 <= int(out["max_page_bytes"]) <= 1024 * 1024 * 1024:
            raise ExchangeConfigError("ncmec config: max_page_bytes must be 1 KiB to 1 GiB")
        if not 0 < float(out["timeout"]) <= 3600:
            raise ExchangeConfigError("ncmec config: timeout must be 0 to 3600 seconds")
        if not 0 < float(out["next_max_age"]) <= 7 * 86400:
            raise ExchangeConfigError("ncmec config: next_max_age must be 0 to 7 days")
        return out

    def validate_credentials(self, credentials: Mapping[str, Any]) -> dict[str, Any]:
        out = super().validate_credentials(credentials)
        if ":" in str(out["username"]) or not str(out["username"]).strip():
            raise ExchangeConfigError("ncmec credentials: username must be non-empty, no ':'")
        if not str(out["password"]):
            raise ExchangeConfigError("ncmec credentials: password must not be empty")
        return out

    def fetch_iter(self, ctx: FetchContext, checkpoint: Checkpoint | None) -> Iterator[FetchDelta]:
        return _Fetch(ctx, checkpoint).deltas()

    def submit_opinion(self, ctx: FetchContext, opinion: Opinion) -> None:
        """NCMEC feedback on one fingerprint of one entry: ``positive`` is affirmative,
        ``negative`` negative with reasons (reason GUIDs, or names looked up in
        ``/v2/feedback/{FP}/reasons``; none given and only one reason exists: that one).
        A PUT: sending the same opinion again leaves the same feedback (idempotent)."""
        client = Client(ctx)
        esp_id, entry_id, fingerprint = _feedback_target(opinion)
        fp = feedback_name(fingerprint)
        if opinion.category == "positive":
            vote = "<affirmative/>"
        elif opinion.category == "negative":
            guids = client.reason_guids(fp, opinion.reasons)
            vote = (
                "<negative><reasonIds>"
                + "".join(f"<guid>{escape(g)}</guid>" for g in guids)
                + "</reasonIds></negative>"
            )
        else:
            raise ExchangeError(
                "NCMEC takes affirmative or negative feedback only, not "
                f"{opinion.category!r} (record {opinion.record_key[:120]})"
            )
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>'
            f'<feedbackSubmission xmlns="{NAMESPACE}">{vote}</feedbackSubmission>'
        ).encode()
        path = f"/{API_VERSION}/entries/{esp_id}/{quote(entry_id, safe='')}/{fp}/feedback"
        client.put(path, body)


def _feedback_target(opinion: Opinion) -> tuple[int, str, str]:
    """(ESP id, entry id, fingerprint element) of the record an opinion is about: from its
    partner metadata as fetched, else from its key ``<member>-<entry id>:<fingerprint>``."""
    meta = opinion.meta
    esp, entry, fingerprint = meta.get("member_id"), meta.get("entry_id"), meta.get("fingerprint")
    if esp is None or not entry or not fingerprint:
        head, _, fingerprint = opinion.record_key.rpartition(":")
        esp_text, _, entry = head.partition("-")
        esp = esp_text
    try:
        esp_id = int(str(esp))
    except ValueError:
        raise ExchangeError(f"not an NCMEC record key: {opinion.record_key[:120]!r}") from None
    fp = str(fingerprint).lower()
    if not entry or fp not in FINGERPRINTS:
        raise ExchangeError(f"not an NCMEC record key: {opinion.record_key[:120]!r}")
    return esp_id, str(entry), fp


# -- HTTP ------------------------------------------------------------------------------------


class Client:
    """The hash sharing API over :mod:`tipline.net.fetch` (GET) and a pinned PUT."""

    def __init__(self, ctx: FetchContext) -> None:
        cfg = ctx.config
        base = cfg.get("base_url") or ENVIRONMENTS[str(cfg.get("environment") or "industry")]
        self.base = str(base).rstrip("/")
        creds = ctx.credentials or {}
        user, password = str(creds.get("username") or ""), str(creds.get("password") or "")
        if not user or not password:
            raise ExchangeFetchError(
                f"exchange {ctx.name}: no NCMEC credentials (username and password) are set"
            )
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.headers = {"Authorization": f"Basic {token}", "Accept": "application/xml"}
        self.settings: FetchSettings = dataclasses.replace(
            ctx.fetch_settings,
            max_bytes=int(cfg.get("max_page_bytes") or DEFAULT_MAX_PAGE_BYTES),
            total_timeout=float(cfg.get("timeout") or 60),
        )

    def url(self, path_and_query: str) -> str:
        return self.base + path_and_query

    def get(self, path_and_query: str) -> bytes:
        """GET a path under the base; raises :class:`ExchangeFetchError` (with the status in
        ``status`` as :class:`PartnerStatusError`)."""
        url = self.url(path_and_query)
        try:
            res = fetch(url, self.settings, headers=self.headers)
        except HTTPStatusError as err:
            raise _status_error(err.status, err.retry_after, path_and_query) from None
        except FetchError as err:
            raise ExchangeFetchError(f"NCMEC {_shown(path_and_query)}: {err}") from None
        return res.content

    def status(self) -> Member:
        root = parse_xml(self.get(f"/{API_VERSION}/status"), "status")
        for child in root:
            if _local(child.tag) == "member":
                try:
                    return Member(int(child.get("id") or ""), (child.text or "").strip())
                except ValueError:
                    break
        raise ExchangeFetchError("NCMEC status: no <member id> in the answer")

    def feedback_reasons(self, fp: str) -> dict[str, str]:
        """Negative feedback reasons of a fingerprint type: GUID -> name."""
        if not _FEEDBACK_NAME.match(fp):
            raise ExchangeError(f"not an NCMEC fingerprint type: {fp[:40]!r}")
        root = parse_xml(self.get(f"/{API_VERSION}/feedback/{fp}/reasons"), "feedback reasons")
        out: dict[str, str] = {}
        for el in root.iter():
            if _local(el.tag) == "reason" and el.get("guid"):
                out[str(el.get("guid"))] = str(el.get("name") or "")
        return out

    def reason_guids(self, fp: str, reasons: tuple[str, ...]) -> list[str]:
        """Reason GUIDs for a negative vote: GUIDs as given; names looked up; none given and
        only one reason exists: that one."""
        if reasons and all(_GUID.match(r) for r in reasons):
            return list(reasons)
        known = self.feedback_reasons(fp)
        if not reasons:
            if len(known) == 1:
                return list(known)
            raise ExchangeError(
                f"NCMEC negative feedback on {fp} needs a reason; choose from: "
                + ", ".join(sorted(known.values()))[:500]
            )
        by_name = {name.lower(): guid for guid, name in known.items()}
        out: list[str] = []
        for r in reasons:
            guid = r if _GUID.match(r) else by_name.get(r.strip().lower())
            if guid is None:
                raise ExchangeError(
                    f"NCMEC has no {fp} feedback reason {r[:80]!r}; choose from: "
                    + ", ".join(sorted(known.values()))[:500]
                )
            out.append(guid)
        return out

    def put(self, path: str, body: bytes) -> int:
        """PUT ``body`` (XML) to a path under the base through the address policy (vetted,
        pinned address, no proxies, no redirects). Returns the status; raises on a refusal."""
        try:
            sent = send_pinned(
                "PUT",
                self.url(path),
                body,
                {**self.headers, "Content-Type": "application/xml; charset=utf-8"},
                self.settings,
            )
        except (FetchTimeoutError, FetchConnectError) as err:
            raise ExchangeFetchError(str(err)) from None
        except FetchError as err:
            raise ExchangeFetchError(f"NCMEC {_shown(path)}: {err}") from None
        if not 200 <= sent.status < 300:
            wait = (sent.headers.get("retry-after") or "").strip()
            raise _status_error(
                sent.status,
                float(min(int(wait), 86_400)) if wait.isdigit() else None,
                path,
            )
        return sent.status


def _shown(path: str) -> str:
    """A path for messages: the query (dates, paging) kept, nothing secret is in it."""
    return path[:300]


def _status_error(status: int, retry_after: float | None, path: str) -> PartnerStatusError:
    return partner_status_error("NCMEC", status, retry_after, _shown(path))


# -- the fetch -------------------------------------------------------------------------------


class _Fetch:
    """One fetch_iter: windows from the checkpoint up to ``now - SETTLE_SECONDS``."""

    def __init__(self, ctx: FetchContext, checkpoint: Checkpoint | None) -> None:
        self.ctx = ctx
        cfg = ctx.config
        self.client = Client(ctx)
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: tuple[str, Future[bytes]] | None = None
        self.state: dict[str, Any] = dict(checkpoint.state) if checkpoint else {}
        self.max_entries = int(cfg.get("max_window_entries") or DEFAULT_MAX_WINDOW_ENTRIES)
        self.next_max_age = float(cfg.get("next_max_age") or DEFAULT_NEXT_MAX_AGE)
        only = str(cfg.get("only_esp_ids") or "")
        self.only_esp = {int(p) for p in only.split(",") if p}
        wanted = [p for p in str(cfg.get("fingerprints") or "").split(",") if p]
        known = signal_types()
        self.take: dict[str, str] = {
            fp: st
            for fp, st in FINGERPRINTS.items()
            if st is not None and st in known and (not wanted or fp in wanted)
        }
        self._take_json = {fp: json_str(fp) for fp in self.take}
        if "from" in self.state:
            self.start = int(self.state["from"])
        else:
            self.start = int(cfg.get("start_ts") or 0)

    def _checkpoint(self, up_to_date: bool = False, **window: Any) -> Checkpoint:
        state: dict[str, Any] = {"from": self.start, "window": self.window}
        state.update({k: v for k, v in window.items() if v is not None})
        return Checkpoint(state, self.start, up_to_date)

    def deltas(self) -> Iterator[FetchDelta]:
        try:
            yield from self._deltas()
        finally:
            # a fetch stopped early (time box, error) leaves at most one page in flight: its
            # answer is dropped (a GET; the stored checkpoint still names that page)
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)
            self._ahead = None

    def _get(self, path: str) -> bytes:
        """The page at ``path``: the one fetched ahead if it is that one, else fetched now."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == path:
            return ahead[1].result()
        return self.client.get(path)

    def _fetch_ahead(self, path: str) -> None:
        """Start fetching ``path`` (the next page) while the caller commits this one: the
        partner's time to answer overlaps ours to store (one page ahead at most)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"ncmec-{self.ctx.name[:20]}")
        self._ahead = (path, self._pool.submit(self.client.get, path))

    def _deltas(self) -> Iterator[FetchDelta]:
        now = int(self.ctx.clock())
        end = now - SETTLE_SECONDS
        self.window = int(self.state.get("window") or 0)
        resume = self._resumable(now)
        if self.start >= end and resume is None:
            # nothing new yet, or our clock went back: the checkpoint stays where it is
            yield FetchDelta({}, self._checkpoint(True))
            return
        while True:
            if resume is not None:
                to, link = resume
                resume = None
            else:
                if self.start >= end:
                    break
                span = self.window if self.window > 0 else end - self.start
                to, link = min(end, self.start + max(1, span)), None
            yield from self._window(to, link, now)
            if self.start >= end:
                break
        yield FetchDelta({}, self._checkpoint(True))

    def _resumable(self, now: int) -> tuple[int, str | None] | None:
        """The stored unfinished window ``(to, next link or None)``, if there is one."""
        to = self.state.get("to")
        if not isinstance(to, int) or to <= self.start:
            return None
        link = self.state.get("next")
        if not isinstance(link, str) or not link:
            return to, None
        age = now - int(self.state.get("next_at") or 0)
        if not 0 <= age <= self.next_max_age:
            log.info(
                "exchange %s: stored paging link expired; restarting its window", self.ctx.name
            )
            return to, None
        frm, link_to = _window_of(link)
        if (frm is not None and frm != self.start) or (link_to is not None and link_to != to):
            # a link is only valid with the window it came with (#1744)
            log.warning("exchange %s: stored link is for another window; restarting", self.ctx.name)
            return to, None
        return to, link

    def _window(self, to: int, link: str | None, now: int) -> Iterator[FetchDelta]:
        """Fetch ``[self.start, to)`` to its end (from ``link`` when resuming), then move the
        checkpoint to ``to``. A window that turns out too big shrinks and starts again; an
        expired link starts the same window again from its first page."""
        while True:
            outcome = yield from self._pages(to, link, now)
            if outcome == "done":
                return
            if outcome == "shrunk":
                to = self.start + self.window
            link = None

    def _pages(self, to: int, link: str | None, now: int) -> Generator[FetchDelta, None, str]:
        fresh = link is None
        path = link or (
            f"/{API_VERSION}/entries?from={quote(format_ts(self.start))}&to={quote(format_ts(to))}"
        )
        seen: set[str] = set()
        total = 0
        first = True
        while True:
            if path in seen:
                raise ExchangeFetchError(
                    f"NCMEC paging repeats: {_shown(path)} was already fetched in the window "
                    f"{format_ts(self.start)} - {format_ts(to)}; stopped"
                )
            seen.add(path)
            try:
                body = self._get(path)
            except PartnerStatusError as err:
                if not fresh and first and err.status in EXPIRED_LINK_STATUSES:
                    log.info(
                        "exchange %s: stored paging link refused (HTTP %s); restarting its window",
                        self.ctx.name,
                        err.status,
                    )
                    return "expired"
                raise
            page = parse_entries(body, f"page {_shown(path)}")
            nxt = self._next(page.next)
            if (
                fresh
                and first
                and nxt
                and to - self.start > 1
                and page.estimated_entries() > self.max_entries
            ):
                # python-threatexchange's probing: too many in one window, shrink it
                guess = (page.max_timestamp or to) - self.start
                self.window = max(1, min((to - self.start) // SHRINK_FACTOR, guess - 1))
                return "shrunk"
            first = False
            if nxt and nxt not in seen:
                self._fetch_ahead(nxt)
            total += len(page.entries)
            updates, problems = self._updates(page)
            problems.extend(page.problems)
            if not nxt:
                self._done(to, total)
                if updates or problems:
                    # an empty window is not a delta of its own: its progress rides on the
                    # next one (the fetcher stores checkpoints only with something to commit)
                    yield FetchDelta(updates, self._checkpoint(), problems)
                return "done"
            yield FetchDelta(updates, self._checkpoint(to=to, next=nxt, next_at=now), problems)
            path = nxt

    def _done(self, to: int, total: int) -> None:
        """The window ``[start, to)`` is exhausted: the checkpoint moves to its end."""
        span = to - self.start
        if total < GROW_BELOW:
            self.window = span * 2
        elif total > self.max_entries // 2:
            self.window = max(1, span // 2)
        else:
            self.window = span
        self.start = to

    def _next(self, link: str) -> str:
        """A ``next`` link checked: a path of this API (``/v2/entries?...``), never another
        host; '' when there is none."""
        if not link:
            return ""
        if len(link) > MAX_NEXT_LEN or not link.startswith(f"/{API_VERSION}/entries?"):
            raise ExchangeFetchError(f"NCMEC sent an unusable paging link: {link[:200]!r}")
        return link

    def _updates(self, page: EntriesPage) -> tuple[dict[str, ExchangeRecord | None], list[Problem]]:
        """The page's records. Each record's partner metadata is an :class:`EncodedMeta`
        whose canonical JSON text (sorted keys, as ``json.dumps(meta, sort_keys=True)``) is
        written here from the entry's parts: the fetcher's digest and stored metadata need no
        encoding of their own."""
        updates: dict[str, ExchangeRecord | None] = {}
        problems: list[Problem] = []
        take = self.take
        take_json = self._take_json
        for e in page.entries:
            if self.only_esp and e.member_id not in self.only_esp:
                continue
            key = e.key
            if e.deleted:
                for fp in take:
                    updates[f"{key}:{fp}"] = None
                continue
            classification = e.classification
            label = f"ncmec_category:{classification}" if classification else ""
            head = None
            for fp, value in e.fingerprints.items():
                st = take.get(fp)
                if st is None:
                    if fp not in FINGERPRINTS:
                        problems.append(
                            Problem(
                                "unknown_signal_type",
                                f"entry {key[:120]}",
                                f"fingerprint type {fp!r} is not one NCMEC documents",
                            )
                        )
                    continue
                if head is None:
                    # the keys in sorted order: classification, entry_id, entry_type,
                    # fingerprint, member, member_id, timestamp
                    head = (
                        f'{{"classification": {json_scalar(classification)}, '
                        f'"entry_id": {json_str(e.id)}, "entry_type": {json_str(e.entry_type)}, '
                        '"fingerprint": '
                    )
                    tail = (
                        f', "member": {json_str(e.member_name)}, '
                        f'"member_id": {json_scalar(e.member_id)}, '
                        f'"timestamp": {json_scalar(e.timestamp)}}}'
                    )
                meta = EncodedMeta(
                    member_id=e.member_id,
                    member=e.member_name,
                    entry_id=e.id,
                    entry_type=e.entry_type,
                    classification=classification,
                    timestamp=e.timestamp,
                    fingerprint=fp,
                )
                meta.json = f"{head}{take_json[fp]}{tail}"
                updates[f"{key}:{fp}"] = ExchangeRecord(st, value, label, meta)
        return updates, problems


def whoami(ctx: FetchContext) -> Member:
    """``/v2/status``: the member these credentials belong to (a credentials check)."""
    return Client(ctx).status()


register(NcmecExchange)

__all__ = [
    "ENVIRONMENTS",
    "FINGERPRINTS",
    "Client",
    "EntriesPage",
    "Entry",
    "Member",
    "NcmecExchange",
    "feedback_name",
    "format_ts",
    "parse_entries",
    "parse_ts",
    "whoami",
]
