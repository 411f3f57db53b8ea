"""The ``fb_threatexchange`` exchange type: Meta's ThreatExchange (the Graph API's
``/threat_updates`` edge of a privacy group), as python-threatexchange's
``FBThreatExchangeSignalExchangeAPI`` reads it (docs/exchanges.md, "fb_threatexchange").

The protocol: ``GET {base}/v21.0/{privacy_group}/threat_updates/?access_token={app_id}|{secret}
&start_time=&stop_time=&limit=&fields=...`` answers ``{"data": [update, ...], "paging":
{"next": url}}``; an update has ``id``, ``indicator``, ``type`` (``PDQ``, ``MD5``,
``VIDEO_MD5``, ``URI``, ...), ``last_updated``, ``should_delete`` and ``descriptors``
(``{"data": [{"id", "owner": {"id", "name"}, "tags", "status", ...}]}``). Reactions go to
``POST {base}/v21.0/{descriptor id}/reactions`` with ``reaction=SAW_THIS_TOO`` (we saw it too:
a positive opinion) or ``DISAGREE_WITH_TAGS`` (a negative one).

What this module does about each pitfall:

* **Windows.** Per privacy group, a window ``[done, stop)`` (``stop``: the clock when the
  window began) is paged to its end, then ``done`` moves to ``stop``. Mid-window the
  checkpoint holds the window's ``stop`` and the ``paging.next`` link, so a fetch killed (or
  time-boxed) there resumes at the next page; replaying part of a window is harmless because
  records are keyed ``<privacy_group>:<id>``. ``done`` never moves back.
* **Paging links** are followed only when they point at the configured base (same scheme,
  host and port) and this group's ``threat_updates`` path; anything else (another host a
  response names) stops the fetch with an error. The access token a link carries is
  stripped before the link is stored: the checkpoint never holds a secret; it is added back
  when the link is fetched. A page whose link was already fetched in this window stops the
  fetch with an error instead of looping.
* **Tombstones**: ``should_delete`` true, or no descriptors left (ThreatExchange #834).
* **Signal types**: ``PDQ`` -> ``pdq``, ``MD5`` and ``VIDEO_MD5`` -> ``md5``; any other type
  is skipped and counted (``unknown_signal_type``) with the update's id; invalid hashes are
  counted by the fetcher with the record's key (which names the update).
* **Staleness**: ThreatExchange keeps deletions 90 days, so a group whose last complete
  window ended more than 85 days ago is stale: the fetcher fetches from scratch and then
  tombstones what that pass did not see again.
* **Hostile answers**: malformed JSON, a page that is not an object, ``data`` not a list are
  an :class:`ExchangeFetchError`; an update of the wrong shape is a ``malformed`` problem and
  is skipped; Graph errors (``{"error": {"message", "code"}}``, HTTP 400/401/403) are an
  error naming Graph's code and message (code 190: the access token was refused); 429 / 5xx
  are an :class:`ExchangeFetchError` with ``retry_after`` (the fetcher backs off); pages go
  through :func:`tipline.net.fetch.fetch` (address policy, ``max_page_bytes``, no redirects);
  the token never appears in an error.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

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
    parse_json_object,
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

log = logging.getLogger("tipline.exchange.fb_threatexchange")

GRAPH_URL = "https://graph.facebook.com"
API_VERSION = "v21.0"
DEFAULT_PAGE_SIZE = 100
DEFAULT_MAX_PAGE_BYTES = 32 * 1024 * 1024
#: ThreatExchange keeps deletions 90 days; python-threatexchange calls a checkpoint stale at 85.
STALE_SECONDS = 85 * 86400
MAX_NEXT_LEN = 4096
#: The fields asked of each update (python-threatexchange's list).
FIELDS = (
    "id,indicator,type,last_updated,should_delete,"
    "descriptors{id,reactions,my_reactions,owner{id,name},tags,status,added_on}"
)
#: ThreatExchange indicator types -> Tipline signal types.
SIGNAL_TYPES: dict[str, str] = {"PDQ": "pdq", "MD5": "md5", "VIDEO_MD5": "md5"}
POSITIVE_REACTION = "SAW_THIS_TOO"
NEGATIVE_REACTION = "DISAGREE_WITH_TAGS"
#: Graph's error code for an access token that is invalid or expired.
BAD_TOKEN_CODE = 190
#: How much of a refused request's answer is kept to read Graph's error object from.
ERROR_BODY_BYTES = 16384
_GROUP_ID = re.compile(r"^[0-9]{1,30}$")
_GRAPH_ID = re.compile(r"^[0-9A-Za-z_-]{1,80}$")


def parse_time(value: Any) -> int | None:
    """A Graph time (epoch seconds, or ``2020-07-10T21:39:17+0000``) as epoch seconds; None
    if it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value)
    if not isinstance(value, str) or len(value) > 40:
        return None
    text = value.strip()
    if text.isdigit():
        return int(text)
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    elif re.search(r"[+-]\d{4}$", text):
        text = text[:-2] + ":" + text[-2:]
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp())


# -- the exchange type -----------------------------------------------------------------------


class ThreatExchange(ExchangeType):
    """Meta's ThreatExchange ``/threat_updates`` (see the module docstring)."""

    name = "fb_threatexchange"
    description = (
        "Meta ThreatExchange (Graph API): threat updates of privacy groups (PDQ, MD5), "
        "deletions, reactions as feedback."
    )
    config_fields = (
        ConfigField(
            "privacy_groups",
            "string",
            required=True,
            help="Comma-separated privacy group ids to fetch.",
        ),
        ConfigField(
            "base_url",
            "string",
            help="Instead of https://graph.facebook.com: another base URL (a replay server).",
        ),
        ConfigField(
            "page_size", "number", default=DEFAULT_PAGE_SIZE, help="Updates per page (limit)."
        ),
        ConfigField(
            "start_ts",
            "number",
            default=0,
            help="Fetch updates from this time on (epoch seconds) on the first fetch.",
        ),
        ConfigField(
            "max_page_bytes",
            "number",
            default=DEFAULT_MAX_PAGE_BYTES,
            help="Largest page accepted, in bytes.",
        ),
        ConfigField("timeout", "number", default=60, help="Seconds for one page."),
        ConfigField(
            "feedback",
            "boolean",
            default=True,
            help="Send analysts' grades of matched updates back as reactions.",
        ),
    )
    credential_fields = (
        ConfigField("app_id", "string", help="ThreatExchange app id (with app_secret)."),
        ConfigField("app_secret", "string", help="The app's secret."),
        ConfigField(
            "access_token", "string", help="Instead of app id and secret: an access token."
        ),
    )
    accepts_opinions = True

    def validate_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        out = super().validate_config(config)
        base = out.get("base_url")
        if base:
            base = str(base).strip().rstrip("/")
            if not base.lower().startswith(("http://", "https://")):
                raise ExchangeConfigError(
                    "fb_threatexchange config: base_url must be http:// or https://"
                )
            out["base_url"] = base
        groups = [p.strip() for p in str(out["privacy_groups"]).split(",") if p.strip()]
        if not groups or not all(_GROUP_ID.match(g) for g in groups):
            raise ExchangeConfigError(
                "fb_threatexchange config: privacy_groups must be one or more numeric ids"
            )
        out["privacy_groups"] = ",".join(dict.fromkeys(groups))
        if not 1 <= int(out["page_size"]) <= 1000:
            raise ExchangeConfigError("fb_threatexchange config: page_size must be 1 to 1000")
        if int(out["start_ts"]) < 0:
            raise ExchangeConfigError("fb_threatexchange config: start_ts must be >= 0")
        if not 1024 <= int(out["max_page_bytes"]) <= 1024 * 1024 * 1024:
            raise ExchangeConfigError(
                "fb_threatexchange config: max_page_bytes must be 1 KiB to 1 GiB"
            )
        if not 0 < float(out["timeout"]) <= 3600:
            raise ExchangeConfigError("fb_threatexchange config: timeout must be 0 to 3600 s")
        return out

    def validate_credentials(self, credentials: Mapping[str, Any]) -> dict[str, Any]:
        out = super().validate_credentials(credentials)
        token = str(out.get("access_token") or "")
        app_id, secret = str(out.get("app_id") or ""), str(out.get("app_secret") or "")
        if not token and not (app_id and secret):
            raise ExchangeConfigError(
                "fb_threatexchange credentials: give app_id and app_secret, or access_token"
            )
        if app_id and not app_id.isdigit():
            raise ExchangeConfigError("fb_threatexchange credentials: app_id must be a number")
        if any(c in token + secret for c in "&# \t\r\n"):
            raise ExchangeConfigError(
                "fb_threatexchange credentials: unexpected characters in the secret or token"
            )
        return out

    def is_stale(self, checkpoint: Checkpoint, now: float) -> bool:
        """A group whose last complete window ended more than 85 days ago (and that is not
        mid-window): deletions since may be gone from ThreatExchange."""
        groups = checkpoint.state.get("groups")
        if not isinstance(groups, Mapping):
            return False
        for st in groups.values():
            if not isinstance(st, Mapping) or st.get("next"):
                continue
            done = st.get("done")
            if isinstance(done, int) and done > 0 and now - done > STALE_SECONDS:
                return True
        return False

    def fetch_iter(self, ctx: FetchContext, checkpoint: Checkpoint | None) -> Iterator[FetchDelta]:
        return _Fetch(ctx, checkpoint).deltas()

    def submit_opinion(self, ctx: FetchContext, opinion: Opinion) -> None:
        """A reaction on each descriptor of the record (from its partner metadata):
        ``positive`` is ``SAW_THIS_TOO``, ``negative`` ``DISAGREE_WITH_TAGS``. Reacting twice
        with the same reaction leaves the same reaction (idempotent)."""
        if opinion.category == "positive":
            reaction = POSITIVE_REACTION
        elif opinion.category == "negative":
            reaction = NEGATIVE_REACTION
        else:
            raise ExchangeError(
                "ThreatExchange takes positive or negative opinions only, not "
                f"{opinion.category!r} (record {opinion.record_key[:120]})"
            )
        ids = opinion.meta.get("descriptor_ids")
        if not isinstance(ids, list) or not ids:
            raise ExchangeError(
                f"record {opinion.record_key[:120]!r} has no ThreatExchange descriptor ids "
                "in its metadata"
            )
        client = Client(ctx)
        for d in ids[:20]:
            if not isinstance(d, str) or not _GRAPH_ID.match(d):
                raise ExchangeError(f"not a ThreatExchange descriptor id: {str(d)[:80]!r}")
            client.post(f"/{API_VERSION}/{d}/reactions", {"reaction": reaction})


# -- HTTP ------------------------------------------------------------------------------------


class Client:
    """The Graph API over :mod:`tipline.net.fetch` (GET) and a pinned POST."""

    def __init__(self, ctx: FetchContext) -> None:
        cfg = ctx.config
        self.base = str(cfg.get("base_url") or GRAPH_URL).rstrip("/")
        parts = urlsplit(self.base)
        self.origin = (parts.scheme.lower(), parts.netloc.lower())
        self.base_path = parts.path.rstrip("/")
        creds = ctx.credentials or {}
        token = str(creds.get("access_token") or "")
        app_id, secret = str(creds.get("app_id") or ""), str(creds.get("app_secret") or "")
        if not token and app_id and secret:
            token = f"{app_id}|{secret}"
        if not token:
            raise ExchangeFetchError(
                f"exchange {ctx.name}: no ThreatExchange credentials (app_id and app_secret, "
                "or access_token) are set"
            )
        self.token = token
        self._secrets = [s for s in (token, secret) if s]
        self.settings: FetchSettings = dataclasses.replace(
            ctx.fetch_settings,
            max_bytes=int(cfg.get("max_page_bytes") or DEFAULT_MAX_PAGE_BYTES),
            total_timeout=float(cfg.get("timeout") or 60),
            max_redirects=0,
        )

    def redact(self, text: str) -> str:
        for s in self._secrets:
            text = text.replace(s, "[secret]").replace(quote(s, safe=""), "[secret]")
        return text

    def with_token(self, path_and_query: str) -> str:
        """The URL of ``path_and_query`` (under the base, no token) with the token added."""
        path, _, query = path_and_query.partition("?")
        pairs = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "access_token"]
        return f"{self.base}{path}?" + urlencode([("access_token", self.token), *pairs])

    def get_json(self, path_and_query: str) -> Any:
        url = self.with_token(path_and_query)
        try:
            res = fetch(
                url,
                self.settings,
                headers={"Accept": "application/json"},
                keep_error_bytes=ERROR_BODY_BYTES,
            )
        except HTTPStatusError as err:
            raise self._status_error(
                err.status,
                err.retry_after,
                path_and_query,
                err.body.decode("utf-8", "replace"),
            ) from None
        except FetchError as err:
            raise ExchangeFetchError(
                self.redact(f"ThreatExchange {_shown(path_and_query)}: {err}")
            ) from None
        return _parse_json(res.content, _shown(path_and_query), self)

    def post(self, path: str, form: Mapping[str, str]) -> int:
        body = urlencode([("access_token", self.token), *form.items()]).encode()
        try:
            sent = send_pinned(
                "POST",
                self.base + path,
                body,
                {"Content-Type": "application/x-www-form-urlencoded"},
                self.settings,
                keep_bytes=ERROR_BODY_BYTES,
            )
        except (FetchTimeoutError, FetchConnectError, FetchError) as err:
            raise ExchangeFetchError(self.redact(f"ThreatExchange {_shown(path)}: {err}")) from None
        if not 200 <= sent.status < 300:
            wait = (sent.headers.get("retry-after") or "").strip()
            raise self._status_error(
                sent.status,
                float(min(int(wait), 86_400)) if wait.isdigit() else None,
                path,
                sent.text,
            )
        return sent.status

    def _status_error(
        self,
        status: int,
        retry_after: float | None,
        path: str,
        body: str,
    ) -> PartnerStatusError:
        where = _shown(path)
        if status == 429 or status >= 500:
            return PartnerStatusError(
                f"ThreatExchange answered HTTP {status} for {where}; backing off",
                status,
                retry_after,
            )
        code, message = _graph_error(body)
        said = f" (Graph error {code}: {self.redact(message)[:200]})" if code is not None else ""
        if code == BAD_TOKEN_CODE or (code is None and status in (401, 403)):
            msg = (
                f"ThreatExchange refused the access token (HTTP {status}){said} for {where}: "
                "check the exchange's app id and secret or access token"
            )
        else:
            msg = f"ThreatExchange answered HTTP {status}{said} for {where}"
        return PartnerStatusError(msg, status, retry_after)


def _graph_error(text: str | bytes) -> tuple[int | None, str]:
    """Graph's ``{"error": {"message", "code"}}`` in an answer's body: (code, message), or
    (None, '')."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        return None, ""
    return _graph_error_of(doc)


def _graph_error_of(doc: Any) -> tuple[int | None, str]:
    """Graph's error object in a parsed answer: (code, message), or (None, '')."""
    err = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(err, dict):
        return None, ""
    code = err.get("code")
    message = err.get("message")
    return (
        code if isinstance(code, int) and not isinstance(code, bool) else -1,
        message if isinstance(message, str) else "",
    )


def _shown(path: str) -> str:
    """A path for messages (never holds the token: links are stored without it)."""
    return path[:300]


def _parse_json(body: bytes, where: str, client: Client) -> dict[str, Any]:
    doc = parse_json_object(body, "ThreatExchange", where, excerpt=120)
    if "error" in doc:
        code, message = _graph_error_of(doc)
        msg = client.redact(message)[:200]
        if code == BAD_TOKEN_CODE:
            raise ExchangeFetchError(
                f"ThreatExchange refused the access token (Graph error {code}: {msg}) for {where}"
            )
        raise ExchangeFetchError(f"ThreatExchange {where}: Graph error {code}: {msg}")
    return doc


# -- the fetch -------------------------------------------------------------------------------


class _Fetch:
    """One fetch_iter: every privacy group, each window paged to its end."""

    def __init__(self, ctx: FetchContext, checkpoint: Checkpoint | None) -> None:
        self.ctx = ctx
        cfg = ctx.config
        self.client = Client(ctx)
        self.groups = [g for g in str(cfg.get("privacy_groups") or "").split(",") if g]
        self.page_size = int(cfg.get("page_size") or DEFAULT_PAGE_SIZE)
        self.start_ts = int(cfg.get("start_ts") or 0)
        known = signal_types()
        self.take = {te: st for te, st in SIGNAL_TYPES.items() if st in known}
        stored = checkpoint.state.get("groups") if checkpoint else None
        self.state: dict[str, dict[str, Any]] = {}
        self.finished = False
        for g in self.groups:
            st = stored.get(g) if isinstance(stored, Mapping) else None
            self.state[g] = dict(st) if isinstance(st, Mapping) else {}

    def _checkpoint(self, up_to_date: bool = False) -> Checkpoint:
        dones = [int(s.get("done") or self.start_ts) for s in self.state.values()]
        return Checkpoint(
            {"groups": {g: dict(s) for g, s in self.state.items()}},
            min(dones) if dones else None,
            up_to_date,
        )

    def deltas(self) -> Iterator[FetchDelta]:
        now = int(self.ctx.clock())
        for g in self.groups:
            yield from self._group(g, now, last=g == self.groups[-1])
        if not self.finished:
            yield FetchDelta({}, self._checkpoint(True))

    def _group(self, group: str, now: int, last: bool) -> Iterator[FetchDelta]:
        """The group's window paged to its end. Its last page, if it is the last group's, is
        the fetch's last delta (up to date); an empty last page of another group yields
        nothing (its progress rides on the next delta: the fetcher stores checkpoints only
        with something to commit)."""
        st = self.state[group]
        start = int(st.get("done") or self.start_ts)
        link = st.get("next") if isinstance(st.get("next"), str) else None
        stop = st.get("stop")
        if link and isinstance(stop, int) and stop > start:
            path = self._next(group, link)  # a stored link is checked again
        else:
            if start >= now:
                # nothing new yet, or our clock went back: the checkpoint stays
                return
            stop = now
            st.pop("next", None)
            query = urlencode(
                [
                    ("start_time", str(start)),
                    ("stop_time", str(stop)),
                    ("limit", str(self.page_size)),
                    ("fields", FIELDS),
                ]
            )
            path = f"/{API_VERSION}/{group}/threat_updates/?{query}"
        st["stop"] = stop
        seen: set[str] = set()
        while True:
            seen.add(path)
            doc = self.client.get_json(path)
            updates, problems = self._updates(group, doc, path)
            nxt = self._next(group, _paging_next(doc, path))
            if nxt and nxt in seen:
                raise ExchangeFetchError(
                    f"ThreatExchange paging repeats: {_shown(nxt)} was already fetched in "
                    f"privacy group {group}'s window {start} - {stop}; stopped"
                )
            if not nxt:
                st.pop("next", None)
                st.pop("stop", None)
                st["done"] = max(int(st.get("done") or 0), stop)
                if last:
                    self.finished = True
                    yield FetchDelta(updates, self._checkpoint(True), problems)
                elif updates or problems:
                    yield FetchDelta(updates, self._checkpoint(), problems)
                return
            st["next"] = nxt
            yield FetchDelta(updates, self._checkpoint(), problems)
            path = nxt

    def _next(self, group: str, link: str) -> str:
        """A paging link checked and made relative to the base, its token removed: only the
        base's own host and this group's ``threat_updates``; '' when there is none."""
        if not link:
            return ""
        if len(link) > MAX_NEXT_LEN:
            raise ExchangeFetchError(f"ThreatExchange sent a paging link of {len(link)} bytes")
        parts = urlsplit(link)
        c = self.client
        own = f"{c.base_path}/{API_VERSION}/{group}/threat_updates"
        if parts.scheme or parts.netloc:
            if (parts.scheme.lower(), parts.netloc.lower()) != c.origin:
                raise ExchangeFetchError(
                    "ThreatExchange sent a paging link to another host "
                    f"({parts.netloc[:100]!r}, not {c.origin[1]!r}); refused"
                )
            path = parts.path
        else:
            path = parts.path if parts.path.startswith(c.base_path) else c.base_path + parts.path
        if path.rstrip("/") != own or parts.fragment:
            raise ExchangeFetchError(
                f"ThreatExchange sent a paging link outside {own}: {c.redact(path)[:200]!r}; "
                "refused"
            )
        pairs = [
            (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "access_token"
        ]
        rel = path[len(c.base_path) :]
        return urlunsplit(("", "", rel, urlencode(pairs), ""))

    def _updates(
        self, group: str, doc: dict[str, Any], where: str
    ) -> tuple[dict[str, ExchangeRecord | None], list[Problem]]:
        data = doc.get("data")
        if not isinstance(data, list):
            raise ExchangeFetchError(
                f"ThreatExchange {_shown(where)}: 'data' is not a list ({type(data).__name__})"
            )
        updates: dict[str, ExchangeRecord | None] = {}
        problems: list[Problem] = []
        for n, item in enumerate(data, 1):
            got = self._update(group, item)
            if isinstance(got, Problem):
                if got.where == "":
                    got = Problem(got.kind, f"privacy group {group} update #{n}", got.reason)
                problems.append(got)
            elif got is not None:
                key, record = got
                updates[key] = record
        return updates, problems

    def _update(self, group: str, item: Any) -> tuple[str, ExchangeRecord | None] | Problem | None:
        if not isinstance(item, dict):
            return Problem("malformed", "", f"an update that is a {type(item).__name__}")
        uid = item.get("id")
        if isinstance(uid, int) and not isinstance(uid, bool):
            uid = str(uid)
        if not isinstance(uid, str) or not _GRAPH_ID.match(uid):
            return Problem("malformed", "", "an update without a usable 'id'")
        where = f"update {group}:{uid}"
        te_type, indicator = item.get("type"), item.get("indicator")
        if not isinstance(te_type, str) or not isinstance(indicator, str):
            return Problem("malformed", where, "'type' and 'indicator' must be strings")
        delete = item.get("should_delete", False)
        if not isinstance(delete, bool):
            return Problem("malformed", where, "'should_delete' must be true or false")
        descriptors = item.get("descriptors")
        if descriptors is None:
            descs: list[Any] = []
        elif isinstance(descriptors, dict) and isinstance(descriptors.get("data", []), list):
            descs = list(descriptors.get("data") or [])
        else:
            return Problem("malformed", where, "'descriptors' must be {'data': [...]}")
        if not all(isinstance(d, dict) for d in descs):
            return Problem("malformed", where, "a descriptor that is not an object")
        signal_type = self.take.get(te_type)
        if signal_type is None:
            return Problem(
                "unknown_signal_type",
                where,
                f"ThreatExchange type {te_type[:40]!r} is not one Tipline takes",
            )
        key = f"{group}:{uid}"
        if delete or not descs:
            return key, None  # ThreatExchange #834: no descriptors left is a deletion
        owners: list[dict[str, str]] = []
        ids: list[str] = []
        tags: list[str] = []
        statuses: list[str] = []
        first_tags: list[str] = []
        for d in descs[:50]:
            did = d.get("id")
            if isinstance(did, int | str) and not isinstance(did, bool):
                ids.append(str(did)[:80])
            owner = d.get("owner")
            if isinstance(owner, dict):
                owners.append(
                    {"id": str(owner.get("id", ""))[:40], "name": str(owner.get("name", ""))[:200]}
                )
            dtags = d.get("tags")
            if isinstance(dtags, list):
                got = [str(t)[:100] for t in dtags if isinstance(t, str)][:50]
                if got and not first_tags:
                    first_tags = got
                tags.extend(t for t in got if t not in tags)
            status = d.get("status")
            if isinstance(status, str) and status[:40] not in statuses:
                statuses.append(status[:40])
        last = parse_time(item.get("last_updated"))
        return key, ExchangeRecord(
            signal_type,
            indicator.strip().lower(),
            ",".join(first_tags)[:200],
            {
                "privacy_group": group,
                "id": uid,
                "type": te_type,
                "descriptor_ids": ids,
                "owners": owners,
                "tags": tags[:100],
                "status": statuses,
                "last_updated": last,
            },
        )


def _paging_next(doc: dict[str, Any], where: str) -> str:
    paging = doc.get("paging")
    if paging is None:
        return ""
    if not isinstance(paging, dict):
        raise ExchangeFetchError(f"ThreatExchange {_shown(where)}: 'paging' is not an object")
    nxt = paging.get("next")
    if nxt is None or nxt == "":
        return ""
    if not isinstance(nxt, str):
        raise ExchangeFetchError(f"ThreatExchange {_shown(where)}: 'paging.next' is not a string")
    return nxt


register(ThreatExchange)

__all__ = [
    "API_VERSION",
    "GRAPH_URL",
    "SIGNAL_TYPES",
    "STALE_SECONDS",
    "Client",
    "ThreatExchange",
    "parse_time",
]
