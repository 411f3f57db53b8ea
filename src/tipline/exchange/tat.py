"""The ``tat`` exchange type: Tech Against Terrorism's hash list (TCAP, JSON over HTTPS), as
python-threatexchange's ``TATHashListAPI`` client models it (docs/exchanges.md, "tat").

The protocol: ``POST {base}/token-auth/tcap/`` (form fields ``username``, ``password``,
``resend``) answers ``{"token": <JWT>}``; ``GET {base}/api/hash-list/v2/all?order=asc&after=``
with ``Authorization: Bearer <JWT>`` answers ``{count, next, previous, checkpoint, results:
[{hash_digest, algorithm, ideology, file_type, deleted, updated_on, created_on, id}]}``, where
``checkpoint`` (``"<updated_on>,<id>"`` of the page's last entry) is the ``after`` of the next
page and ``next`` is null on the last page.

* Records are keyed by TAT's entry ``id``; ``deleted`` true is a tombstone for it.
* ``algorithm`` ``PDQ`` / ``MD5`` / ``SHA1`` / ``SHA256`` map to Tipline's signal types of those
  names; anything else is skipped and counted as ``unknown_signal_type``.
* The checkpoint is the last committed page's ``checkpoint``; it never moves back (a page whose
  ``"ts,id"`` is before ours keeps ours); a page that repeats ours while saying there is more
  stops the fetch with an error instead of looping.
* One token per run; a 401 on the list (an expired JWT) gets one fresh token, then fails.
  401 / 403 on the token mark the exchange failing; 429 / 5xx carry ``retry_after`` for the
  fetcher's backoff; pages go through :func:`tipline.net.fetch.fetch` (address policy,
  ``max_page_bytes``). The JWT is never logged or stored.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from tipline.exchange.api import (
    Checkpoint,
    ConfigField,
    ExchangeConfigError,
    ExchangeFetchError,
    ExchangeRecord,
    ExchangeType,
    FetchContext,
    FetchDelta,
    PartnerStatusError,
    Problem,
    parse_json_object,
    partner_status_error,
    register,
)
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

DEFAULT_BASE_URL = "https://app.terrorismanalytics.org"
DEFAULT_MAX_PAGE_BYTES = 64 * 1024 * 1024
#: TAT ``algorithm`` (upper case) -> Tipline signal type
ALGORITHMS: dict[str, str] = {"PDQ": "pdq", "MD5": "md5", "SHA1": "sha1", "SHA256": "sha256"}
MAX_CHECKPOINT_LEN = 200
MAX_TOKEN_BYTES = 64 * 1024


def _status_error(status: int, retry_after: float | None, what: str) -> PartnerStatusError:
    return partner_status_error("TAT", status, retry_after, what)


def parse_after(text: Any) -> tuple[float, int] | None:
    """A ``"<ts>,<id>"`` checkpoint as ``(ts, id)``; None if it is not one."""
    if not isinstance(text, str) or len(text) > MAX_CHECKPOINT_LEN:
        return None
    ts_text, sep, id_text = text.partition(",")
    if not sep:
        return None
    try:
        ts, ident = float(ts_text), int(id_text)
    except ValueError:
        return None
    if ts != ts or ts < 0:  # NaN
        return None
    return ts, ident


def _epoch(value: Any) -> float | None:
    """``updated_on`` / ``created_on``: epoch seconds or an ISO 8601 time."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value == value else None
    if isinstance(value, str) and len(value) <= 64:
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.timestamp()
    return None


@dataclass(slots=True)
class Entry:
    id: int
    hash_digest: str
    algorithm: str
    ideology: str
    file_type: str
    deleted: bool
    updated_on: float | None
    created_on: Any


@dataclass(slots=True)
class HashListPage:
    next: str | None
    checkpoint: str
    entries: list[Entry]
    problems: list[Problem]


def _text(value: Any, limit: int = 100) -> str:
    return value[:limit] if isinstance(value, str) else ""


def parse_page(body: bytes, where: str = "page") -> HashListPage:
    """A hash-list page; an unusable page raises, a bad entry is a :class:`Problem`."""
    doc = parse_json_object(body, "TAT", where)
    nxt = doc.get("next")
    if nxt is not None and not isinstance(nxt, str):
        raise ExchangeFetchError(f"TAT {where}: next is not a link or null")
    cp = doc.get("checkpoint")
    if cp is None:
        cp = ""
    if cp and parse_after(cp) is None:
        raise ExchangeFetchError(f"TAT {where}: checkpoint {str(cp)[:60]!r} is not 'ts,id'")
    if nxt and not cp:
        raise ExchangeFetchError(f"TAT {where}: a next page without a checkpoint")
    raw = doc.get("results")
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise ExchangeFetchError(f"TAT {where}: results is not a list")
    entries: list[Entry] = []
    problems: list[Problem] = []
    for n, item in enumerate(raw, 1):
        got = _entry(item)
        if isinstance(got, str):
            problems.append(Problem("malformed", f"{where} result #{n}", got))
        else:
            entries.append(got)
    return HashListPage(nxt or None, str(cp), entries, problems)


def _entry(item: Any) -> Entry | str:
    if not isinstance(item, dict):
        return f"a result must be an object, not {type(item).__name__}"
    ident = item.get("id")
    if isinstance(ident, bool) or not isinstance(ident, int):
        return "id is not a number"
    digest = item.get("hash_digest")
    algo = item.get("algorithm")
    deleted = item.get("deleted", False)
    if not isinstance(deleted, bool):
        return f"entry {ident}: deleted is not true or false"
    if not isinstance(algo, str) or not algo or len(algo) > 40:
        return f"entry {ident}: algorithm is not a short string"
    if not isinstance(digest, str) or not digest.strip() or len(digest) > 1024:
        if not deleted:
            return f"entry {ident}: hash_digest is not a usable string"
        digest = ""
    return Entry(
        ident,
        digest.strip(),
        algo,
        _text(item.get("ideology")),
        _text(item.get("file_type")),
        deleted,
        _epoch(item.get("updated_on")),
        item.get("created_on") if isinstance(item.get("created_on"), str | int | float) else None,
    )


class Client:
    """TCAP over :mod:`tipline.net.fetch` (GET) and a pinned POST for the token."""

    def __init__(self, ctx: FetchContext) -> None:
        cfg = ctx.config
        self.base = str(cfg.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
        creds = ctx.credentials or {}
        self.user = str(creds.get("username") or "")
        self.password = str(creds.get("password") or "")
        if not self.user or not self.password:
            raise ExchangeFetchError(
                f"exchange {ctx.name}: no TAT credentials (username and password) are set"
            )
        self.settings: FetchSettings = dataclasses.replace(
            ctx.fetch_settings,
            max_bytes=int(cfg.get("max_page_bytes") or DEFAULT_MAX_PAGE_BYTES),
            total_timeout=float(cfg.get("timeout") or 60),
        )
        self._token: str | None = None

    def token(self, fresh: bool = False) -> str:
        if self._token is not None and not fresh:
            return self._token
        form = urlencode({"username": self.user, "password": self.password, "resend": "False"})
        try:
            sent = send_pinned(
                "POST",
                f"{self.base}/token-auth/tcap/",
                form.encode(),
                {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
                self.settings,
                keep_bytes=MAX_TOKEN_BYTES,
            )
        except (FetchTimeoutError, FetchConnectError) as err:
            raise ExchangeFetchError(str(err)) from None
        except FetchError as err:
            raise ExchangeFetchError(f"TAT token: {err}") from None
        if not 200 <= sent.status < 300:
            wait = (sent.headers.get("retry-after") or "").strip()
            raise _status_error(
                sent.status, float(min(int(wait), 86_400)) if wait.isdigit() else None, "token"
            )
        try:
            doc = json.loads(sent.text)
        except (ValueError, RecursionError):
            doc = None
        token = doc.get("token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token or len(token) >= MAX_TOKEN_BYTES - 100:
            raise ExchangeFetchError("TAT token: the answer holds no usable token")
        self._token = token
        return token

    def hash_list(self, after: str) -> bytes:
        url = f"{self.base}/api/hash-list/v2/all?{urlencode({'order': 'asc', 'after': after})}"
        what = f"the hash list after {after[:60]!r}"
        for attempt in (0, 1):
            headers = {"Authorization": f"Bearer {self.token(fresh=attempt == 1)}"}
            try:
                return fetch(url, self.settings, headers=headers).content
            except HTTPStatusError as err:
                if err.status == 401 and attempt == 0:
                    continue  # an expired JWT: one fresh token
                raise _status_error(err.status, err.retry_after, what) from None
            except FetchError as err:
                raise ExchangeFetchError(f"TAT {what}: {err}") from None
        raise AssertionError("unreachable")  # pragma: no cover


class TatExchange(ExchangeType):
    """Tech Against Terrorism's hash list (see the module docstring)."""

    name = "tat"
    description = (
        "Tech Against Terrorism hash list (TCAP, JWT): PDQ, MD5, SHA-1, SHA-256 hashes of "
        "terrorist content in update order, deletions."
    )
    config_fields = (
        ConfigField(
            "base_url",
            "string",
            default=DEFAULT_BASE_URL,
            help="TCAP's base URL (another one: a replay server).",
        ),
        ConfigField(
            "max_page_bytes",
            "number",
            default=DEFAULT_MAX_PAGE_BYTES,
            help="Largest page accepted, in bytes.",
        ),
        ConfigField("timeout", "number", default=60, help="Seconds for one page."),
    )
    credential_fields = (
        ConfigField("username", "string", required=True, help="TCAP user name."),
        ConfigField("password", "string", required=True, help="TCAP password."),
    )

    def validate_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        out = super().validate_config(config)
        base = str(out.get("base_url") or DEFAULT_BASE_URL).strip().rstrip("/")
        if not base.lower().startswith(("http://", "https://")):
            raise ExchangeConfigError("tat config: base_url must be http:// or https://")
        out["base_url"] = base
        if not 1024 <= int(out["max_page_bytes"]) <= 1024 * 1024 * 1024:
            raise ExchangeConfigError("tat config: max_page_bytes must be 1 KiB to 1 GiB")
        if not 0 < float(out["timeout"]) <= 3600:
            raise ExchangeConfigError("tat config: timeout must be 0 to 3600 seconds")
        return out

    def validate_credentials(self, credentials: Mapping[str, Any]) -> dict[str, Any]:
        out = super().validate_credentials(credentials)
        if not str(out["username"]).strip() or not str(out["password"]):
            raise ExchangeConfigError("tat credentials: username and password must not be empty")
        return out

    def fetch_iter(self, ctx: FetchContext, checkpoint: Checkpoint | None) -> Iterator[FetchDelta]:
        client = Client(ctx)
        after = str((checkpoint.state if checkpoint else {}).get("after") or "")
        if after and parse_after(after) is None:
            after = ""
        known = signal_types()
        take = {k: v for k, v in ALGORITHMS.items() if v in known}
        page_no = 0
        while True:
            page_no += 1
            page = parse_page(client.hash_list(after), f"page {page_no} after {after[:40]!r}")
            updates: dict[str, ExchangeRecord | None] = {}
            problems = list(page.problems)
            for e in page.entries:
                key = str(e.id)
                if e.deleted:
                    updates[key] = None
                    continue
                st = take.get(e.algorithm.upper())
                if st is None:
                    problems.append(
                        Problem(
                            "unknown_signal_type",
                            f"entry {key}",
                            f"TAT algorithm {e.algorithm!r} is not one Tipline takes",
                        )
                    )
                    continue
                updates[key] = ExchangeRecord(
                    st,
                    e.hash_digest,
                    "",
                    {
                        "id": e.id,
                        "algorithm": e.algorithm,
                        "ideology": e.ideology,
                        "file_type": e.file_type,
                        "updated_on": e.updated_on,
                        "created_on": e.created_on,
                    },
                )
            ours, theirs = parse_after(after), parse_after(page.checkpoint)
            moved = theirs is not None and (ours is None or theirs > ours)
            if page.next and not moved:
                raise ExchangeFetchError(
                    f"TAT paging repeats: page {page_no} after {after[:60]!r} names checkpoint "
                    f"{page.checkpoint[:60]!r}, no further; stopped"
                )
            if moved:
                after = page.checkpoint
            pos = parse_after(after)
            cp = Checkpoint({"after": after}, int(pos[0]) if pos else None, not page.next)
            yield FetchDelta(updates, cp, problems)
            if not page.next:
                return


register(TatExchange)

__all__ = ["ALGORITHMS", "DEFAULT_BASE_URL", "Client", "TatExchange", "parse_after", "parse_page"]
