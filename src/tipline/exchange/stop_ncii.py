"""The ``stop_ncii`` exchange type: StopNCII.org's hash API (JSON over HTTPS), as
python-threatexchange's ``StopNCIIAPI`` client models it (docs/exchanges.md, "stop_ncii").

The protocol: ``GET {base}/FetchHashes?startTimestamp=&pageSize=&nextPageToken=`` with the
headers ``Ocp-Apim-Subscription-Key`` (the subscription key) and ``x-functions-key`` (the
FetchHashes function key) answers ``{count, nextPageToken, nextSetTimestamp, hasMoreRecords,
hashRecords: [{lastModtimestamp, signalType, hashValue, hashStatus, caseNumbers{},
CSPFeedbacks[]}]}``. A *set* is every record changed since ``startTimestamp``, paged by
``nextPageToken`` until ``hasMoreRecords`` is false; its ``nextSetTimestamp`` is where the next
set starts. ``POST {base}/SubmitFeedback`` (with the SubmitFeedback function key) takes
``{count, hashFeedbacks: [{hashValue, signalType, feedbackValue, tags}]}``. ``POST
{base}/SubmitHashes`` (its own function key; only where the operator has StopNCII's permission
to submit: the ``submit`` setting) takes ``{count, hashRecords: [{lastModtimestamp, signalType,
hashValue, CSPFeedbacks: [{feedbackValue, tags}]}]}``: our pushed hashes.

What this module does about each pitfall:

* **Tombstones by status**: a record whose ``hashStatus`` is ``Withdrawn`` or ``Deleted`` is a
  tombstone for its key ``<signalType>:<hashValue>``. (python-threatexchange compares the
  *hashValue* with those words, so withdrawn hashes are never removed there.)
* **Checkpoint**: the set's start and, mid-set, the page token to go on with; once a set's last
  page is committed, the set's ``nextSetTimestamp``. It never moves back (a partner answering
  an older ``nextSetTimestamp`` keeps ours). It also holds when it was made: one older than
  30 days (StopNCII keeps withdrawals that long) is stale, and the fetcher fetches from
  scratch and tombstones what that pass does not see again.
* **A page that repeats** (a token already used in this set) stops the fetch with an error.
* Signal types: ``ImagePDQ`` -> ``pdq``, ``VideoMD5`` -> ``md5``; the others (``VideoTMK``,
  ``Text``, ``URL``, anything new) are skipped and counted as ``unknown_signal_type``; a record
  that is not an object or has fields of the wrong type is a ``malformed`` problem; invalid
  hashes are counted by the fetcher with the record's key.
* A page that is not JSON, not an object, or whose paging fields have the wrong types fails
  the fetch with an error saying so. 429 / 5xx are an :class:`ExchangeFetchError` with
  ``retry_after`` (the fetcher backs off); 401 / 403 say the keys were refused (the exchange's
  status shows it failing); pages go through :func:`tipline.net.fetch.fetch` (address policy,
  ``max_page_bytes``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from tipline.exchange.api import (
    MAX_ERROR_BODY_CHARS,
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

log = logging.getLogger("tipline.exchange.stop_ncii")

DEFAULT_BASE_URL = "https://api.stopncii.org/v1"
DEFAULT_PAGE_SIZE = 800
DEFAULT_MAX_PAGE_BYTES = 64 * 1024 * 1024
#: StopNCII keeps withdrawals this long: an older checkpoint fetches from scratch.
STALE_SECONDS = 30 * 86400
#: StopNCII signal types, with the Tipline signal type each maps to.
SIGNAL_TYPES: dict[str, str] = {"ImagePDQ": "pdq", "VideoMD5": "md5"}
SIGNAL_TYPE_OF: dict[str, str] = {v: k for k, v in SIGNAL_TYPES.items()}
#: ``hashStatus`` values that withdraw a hash.
TOMBSTONE_STATUSES = frozenset({"Withdrawn", "Deleted"})
MAX_TOKEN_LEN = 4096
MAX_HASH_LEN = 1024
#: opinion category -> StopNCII ``feedbackValue``
FEEDBACK_VALUES: dict[str, str] = {"positive": "Blocked", "negative": "NotBlocked"}
#: Hashes per SubmitHashes request.
SUBMIT_BATCH = 500
#: What a CSP can say of a hash it submits (python-threatexchange's feedback values).
SUBMIT_VALUES = ("Blocked", "PendingReview", "NotBlocked", "None")


def _status_error(status: int, retry_after: float | None, what: str) -> PartnerStatusError:
    return partner_status_error(
        "StopNCII",
        status,
        retry_after,
        what,
        refused="keys",
        check="subscription_key and function keys",
    )


# -- pages -----------------------------------------------------------------------------------


@dataclass(slots=True)
class HashRecord:
    last_mod: int
    signal_type: str
    hash_value: str
    hash_status: str
    case_count: int

    @property
    def key(self) -> str:
        return f"{self.signal_type}:{self.hash_value}"


@dataclass(slots=True)
class HashesPage:
    count: int
    next_token: str
    next_set_ts: int | None
    has_more: bool
    records: list[HashRecord]
    problems: list[Problem]


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value)


def parse_page(body: bytes, where: str = "page") -> HashesPage:
    """A FetchHashes answer. A page that is unusable as a whole raises
    :class:`ExchangeFetchError`; a bad record in a good page is a :class:`Problem`."""
    doc = parse_json_object(body, "StopNCII", where)
    token = doc.get("nextPageToken")
    if token is None:
        token = ""
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LEN:
        raise ExchangeFetchError(f"StopNCII {where}: nextPageToken is not a usable string")
    has_more = doc.get("hasMoreRecords", False)
    if not isinstance(has_more, bool):
        raise ExchangeFetchError(f"StopNCII {where}: hasMoreRecords is not true or false")
    next_set = doc.get("nextSetTimestamp")
    next_set_ts = _int(next_set)
    if next_set is not None and (next_set_ts is None or next_set_ts < 0):
        raise ExchangeFetchError(f"StopNCII {where}: nextSetTimestamp is not a timestamp")
    raw = doc.get("hashRecords")
    if raw is None:
        raw = []
    if not isinstance(raw, list):
        raise ExchangeFetchError(f"StopNCII {where}: hashRecords is not a list")
    count = _int(doc.get("count"))
    if has_more and not token:
        raise ExchangeFetchError(f"StopNCII {where}: hasMoreRecords without a nextPageToken")
    records: list[HashRecord] = []
    problems: list[Problem] = []
    for n, item in enumerate(raw, 1):
        got = _record(item)
        if isinstance(got, str):
            problems.append(Problem("malformed", f"{where} record #{n}", got))
        else:
            records.append(got)
    return HashesPage(
        count if count is not None else len(raw), token, next_set_ts, has_more, records, problems
    )


def _record(item: Any) -> HashRecord | str:
    """One ``hashRecords`` item, or why it is unusable."""
    if not isinstance(item, dict):
        return f"a record must be an object, not {type(item).__name__}"
    st = item.get("signalType")
    value = item.get("hashValue")
    status = item.get("hashStatus", "")
    if not isinstance(st, str) or not st or len(st) > 40:
        return "signalType is not a short string"
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_HASH_LEN:
        return f"{st} record: hashValue is not a usable string"
    if not isinstance(status, str) or len(status) > 40:
        return f"{st} record {value[:80]!r}: hashStatus is not a short string"
    last_mod = _int(item.get("lastModtimestamp"))
    if last_mod is None:
        return f"{st} record {value[:80]!r}: lastModtimestamp is not a number"
    cases = item.get("caseNumbers") or {}
    if not isinstance(cases, dict):
        return f"{st} record {value[:80]!r}: caseNumbers is not an object"
    return HashRecord(last_mod, st, value.strip(), status, len(cases))


# -- HTTP ------------------------------------------------------------------------------------


class Client:
    """The StopNCII API over :mod:`tipline.net.fetch` (GET) and a pinned POST."""

    def __init__(self, ctx: FetchContext) -> None:
        cfg = ctx.config
        self.base = str(cfg.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
        creds = ctx.credentials or {}
        self.subscription_key = str(creds.get("subscription_key") or "")
        self.fetch_key = str(creds.get("fetch_function_key") or "")
        self.feedback_key = str(creds.get("feedback_function_key") or "")
        if not self.subscription_key or not self.fetch_key:
            raise ExchangeFetchError(
                f"exchange {ctx.name}: no StopNCII keys (subscription_key and "
                "fetch_function_key) are set"
            )
        self.settings: FetchSettings = dataclasses.replace(
            ctx.fetch_settings,
            max_bytes=int(cfg.get("max_page_bytes") or DEFAULT_MAX_PAGE_BYTES),
            total_timeout=float(cfg.get("timeout") or 60),
        )

    def _headers(self, function_key: str) -> dict[str, str]:
        return {
            "Ocp-Apim-Subscription-Key": self.subscription_key,
            "x-functions-key": function_key,
            "Accept": "application/json",
        }

    def fetch_hashes(self, start_ts: int, page_size: int, token: str) -> bytes:
        params: dict[str, Any] = {"startTimestamp": start_ts, "pageSize": page_size}
        if token:
            params["nextPageToken"] = token
        url = f"{self.base}/FetchHashes?{urlencode(params)}"
        what = f"FetchHashes from {start_ts}" + (" (next page)" if token else "")
        try:
            res = fetch(url, self.settings, headers=self._headers(self.fetch_key))
        except HTTPStatusError as err:
            raise _status_error(err.status, err.retry_after, what) from None
        except FetchError as err:
            raise ExchangeFetchError(f"StopNCII {what}: {err}") from None
        return res.content

    def post(self, endpoint: str, doc: Mapping[str, Any], function_key: str) -> int:
        try:
            sent = send_pinned(
                "POST",
                f"{self.base}/{endpoint}",
                json.dumps(doc).encode(),
                {**self._headers(function_key), "Content-Type": "application/json"},
                self.settings,
                keep_bytes=MAX_ERROR_BODY_CHARS,
            )
        except (FetchTimeoutError, FetchConnectError) as err:
            raise ExchangeFetchError(str(err)) from None
        except FetchError as err:
            raise ExchangeFetchError(f"StopNCII {endpoint}: {err}") from None
        if not 200 <= sent.status < 300:
            wait = (sent.headers.get("retry-after") or "").strip()
            raise partner_status_error(
                "StopNCII",
                sent.status,
                float(min(int(wait), 86_400)) if wait.isdigit() else None,
                endpoint,
                refused="keys",
                check="subscription_key and function keys",
                body=sent.text,
            )
        return sent.status


# -- the exchange type -----------------------------------------------------------------------


class StopNCIIExchange(ExchangeType):
    """StopNCII.org's hash API (see the module docstring)."""

    name = "stop_ncii"
    description = (
        "StopNCII.org hash API (JSON, subscription + function keys): PDQ and video MD5 hashes "
        "by set, withdrawals, Blocked/NotBlocked feedback."
    )
    config_fields = (
        ConfigField(
            "base_url",
            "string",
            default=DEFAULT_BASE_URL,
            help="The API's base URL (another one: a replay server).",
        ),
        ConfigField(
            "start_ts",
            "number",
            default=0,
            help="Fetch records changed from this time on (epoch seconds) on the first fetch.",
        ),
        ConfigField(
            "page_size", "number", default=DEFAULT_PAGE_SIZE, help="Records per page (1-800)."
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
            help="Send analysts' grades of matched hashes back as feedback.",
        ),
        ConfigField(
            "feedback_tags",
            "string",
            default="",
            help="Comma-separated tags sent with every feedback (besides the opinion's).",
        ),
        ConfigField(
            "submit",
            "boolean",
            default=False,
            help="The operator has StopNCII's permission to submit hashes (SubmitHashes): our "
            "banks may be pushed to it (`tipline exchange push`).",
        ),
        ConfigField(
            "submit_signal_types",
            "string",
            default="pdq",
            help="Tipline signal types pushed, comma-separated: pdq (ImagePDQ), md5 (VideoMD5: "
            "only for banks of video hashes). Others are skipped.",
        ),
        ConfigField(
            "submit_feedback",
            "enum",
            default="Blocked",
            choices=SUBMIT_VALUES,
            help="The CSP feedback sent with each submitted hash.",
        ),
    )
    credential_fields = (
        ConfigField("subscription_key", "string", required=True, help="Ocp-Apim-Subscription-Key."),
        ConfigField(
            "fetch_function_key", "string", required=True, help="FetchHashes x-functions-key."
        ),
        ConfigField("feedback_function_key", "string", help="SubmitFeedback x-functions-key."),
        ConfigField("submit_function_key", "string", help="SubmitHashes x-functions-key."),
    )
    accepts_opinions = True
    accepts_submissions = True
    submission_batch = SUBMIT_BATCH

    def validate_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        out = super().validate_config(config)
        base = str(out.get("base_url") or DEFAULT_BASE_URL).strip().rstrip("/")
        if not base.lower().startswith(("http://", "https://")):
            raise ExchangeConfigError("stop_ncii config: base_url must be http:// or https://")
        out["base_url"] = base
        if int(out["start_ts"]) < 0:
            raise ExchangeConfigError("stop_ncii config: start_ts must be >= 0")
        if not 1 <= int(out["page_size"]) <= DEFAULT_PAGE_SIZE:
            raise ExchangeConfigError("stop_ncii config: page_size must be 1 to 800")
        if not 1024 <= int(out["max_page_bytes"]) <= 1024 * 1024 * 1024:
            raise ExchangeConfigError("stop_ncii config: max_page_bytes must be 1 KiB to 1 GiB")
        if not 0 < float(out["timeout"]) <= 3600:
            raise ExchangeConfigError("stop_ncii config: timeout must be 0 to 3600 seconds")
        tags = [t.strip() for t in str(out.get("feedback_tags") or "").split(",") if t.strip()]
        out["feedback_tags"] = ",".join(tags)
        kinds = [k.strip() for k in str(out.get("submit_signal_types") or "").split(",")]
        kinds = [k for k in kinds if k]
        bad = [k for k in kinds if k not in SIGNAL_TYPE_OF]
        if bad:
            raise ExchangeConfigError(
                f"stop_ncii config: submit_signal_types takes {', '.join(SIGNAL_TYPE_OF)}, not "
                f"{', '.join(repr(k[:32]) for k in bad)}"
            )
        out["submit_signal_types"] = ",".join(dict.fromkeys(kinds))
        return out

    def takes_submissions(self, config: Mapping[str, Any]) -> bool:
        """Only where the operator says it has StopNCII's permission (``submit``)."""
        value = config.get("submit", False)
        return value is True or str(value).strip().lower() in ("1", "true", "yes", "on")

    def push_refusal(
        self, ctx: FetchContext, key: str, record: ExchangeRecord | None
    ) -> str | None:
        if record is None:
            return (
                "StopNCII has no call to withdraw a submitted hash (its hashes are withdrawn "
                "by the people who submitted them): not sent"
            )
        allowed = [k for k in str(ctx.config.get("submit_signal_types") or "pdq").split(",") if k]
        if record.signal_type not in allowed:
            return (
                f"signal type {record.signal_type!r} is not pushed to StopNCII "
                f"(submit_signal_types: {', '.join(allowed) or 'none'})"
            )
        return None

    def submit_records(
        self, ctx: FetchContext, records: Mapping[str, ExchangeRecord | None]
    ) -> dict[str, str]:
        """SubmitHashes: each record as ``{lastModtimestamp, signalType, hashValue,
        CSPFeedbacks: [{feedbackValue, tags}]}`` (the ``submit_feedback`` value, the
        ``feedback_tags`` and the entry's tags), :data:`SUBMIT_BATCH` per request. StopNCII
        keeps a hash once per (signal type, value), so submitting again changes nothing.
        Withdrawals and other signal types are refused by :meth:`push_refusal` (the push job
        never sends them); given here anyway, they come back as problems."""
        if not self.takes_submissions(ctx.config):
            raise ExchangeError(
                f"exchange {ctx.name}: pushing to StopNCII needs its permission (the exchange's "
                "submit setting is off)"
            )
        client = Client(ctx)
        key = str((ctx.credentials or {}).get("submit_function_key") or "")
        if not key:
            raise ExchangeError(
                f"exchange {ctx.name}: no StopNCII submit_function_key is set; hashes cannot be "
                "submitted"
            )
        value = str(ctx.config.get("submit_feedback") or "Blocked")
        base_tags = [t.strip()[:100] for t in str(ctx.config.get("feedback_tags") or "").split(",")]
        problems: dict[str, str] = {}
        hashes: list[dict[str, Any]] = []
        now = int(ctx.clock())
        for k, rec in records.items():
            why = self.push_refusal(ctx, k, rec)
            if why or rec is None:
                problems[k] = why or "a withdrawal"
                continue
            raw = rec.meta.get("tags") if isinstance(rec.meta, Mapping) else None
            tags = [t for t in base_tags if t]
            for t in raw if isinstance(raw, list) else []:
                t = str(t).strip()[:100]
                if t and t not in tags:
                    tags.append(t)
            hashes.append(
                {
                    "lastModtimestamp": now,
                    "signalType": SIGNAL_TYPE_OF[rec.signal_type],
                    "hashValue": rec.signal,
                    "CSPFeedbacks": [{"feedbackValue": value, "tags": tags[:20]}],
                }
            )
        for at in range(0, len(hashes), SUBMIT_BATCH):
            part = hashes[at : at + SUBMIT_BATCH]
            client.post("SubmitHashes", {"count": len(part), "hashRecords": part}, key)
        return problems

    def validate_credentials(self, credentials: Mapping[str, Any]) -> dict[str, Any]:
        out = super().validate_credentials(credentials)
        for k in ("subscription_key", "fetch_function_key"):
            if not str(out[k]).strip():
                raise ExchangeConfigError(f"stop_ncii credentials: {k} must not be empty")
        return out

    def is_stale(self, checkpoint: Checkpoint, now: float) -> bool:
        made = checkpoint.state.get("fetched_at")
        if not isinstance(made, int | float) or isinstance(made, bool):
            made = checkpoint.progress_ts
        if made is None:
            return True
        return now - float(made) > STALE_SECONDS

    def fetch_iter(self, ctx: FetchContext, checkpoint: Checkpoint | None) -> Iterator[FetchDelta]:
        return _Fetch(ctx, checkpoint).deltas()

    def submit_opinion(self, ctx: FetchContext, opinion: Opinion) -> None:
        """StopNCII feedback on one hash: ``positive`` is ``Blocked``, ``negative``
        ``NotBlocked``, with the opinion's reasons (and the configured tags) as tags. Sending
        the same feedback again sets the same state (the feedback queue may deliver twice)."""
        value = FEEDBACK_VALUES.get(opinion.category)
        if value is None:
            raise ExchangeError(
                "StopNCII takes positive (Blocked) or negative (NotBlocked) feedback only, not "
                f"{opinion.category!r} (record {opinion.record_key[:120]})"
            )
        st, hash_value = _feedback_target(opinion)
        client = Client(ctx)
        if not client.feedback_key:
            raise ExchangeError(
                f"exchange {ctx.name}: no StopNCII feedback_function_key is set; feedback "
                "cannot be sent"
            )
        tags = [t.strip() for t in str(ctx.config.get("feedback_tags") or "").split(",")]
        tags = [t[:100] for t in tags if t]
        for r in opinion.reasons:
            r = str(r).strip()[:100]
            if r and r not in tags:
                tags.append(r)
        doc = {
            "count": 1,
            "hashFeedbacks": [
                {
                    "hashValue": hash_value,
                    "signalType": st,
                    "feedbackValue": value,
                    "tags": tags,
                }
            ],
        }
        client.post("SubmitFeedback", doc, client.feedback_key)


def _feedback_target(opinion: Opinion) -> tuple[str, str]:
    """(StopNCII signal type, hash value) of the record an opinion is about: from its
    partner metadata as fetched, else from its key ``<signalType>:<hashValue>``."""
    st = opinion.meta.get("signalType")
    value = opinion.signal
    if not isinstance(st, str) or st not in SIGNAL_TYPES:
        st, _, value = opinion.record_key.partition(":")
    if st not in SIGNAL_TYPES or not value:
        raise ExchangeError(f"not a StopNCII record key: {opinion.record_key[:120]!r}")
    return st, value


# -- the fetch -------------------------------------------------------------------------------


class _Fetch:
    """One fetch_iter: the set from the checkpoint, page by page, to its end."""

    def __init__(self, ctx: FetchContext, checkpoint: Checkpoint | None) -> None:
        self.ctx = ctx
        cfg = ctx.config
        self.client = Client(ctx)
        self.page_size = int(cfg.get("page_size") or DEFAULT_PAGE_SIZE)
        state = dict(checkpoint.state) if checkpoint else {}
        start = _int(state.get("set_ts"))
        self.set_ts = start if start is not None else int(cfg.get("start_ts") or 0)
        token = state.get("token")
        self.token = token if isinstance(token, str) else ""
        known = signal_types()
        self.take = {k: v for k, v in SIGNAL_TYPES.items() if v in known}

    def _checkpoint(self, set_ts: int, token: str, up_to_date: bool) -> Checkpoint:
        state: dict[str, Any] = {"set_ts": set_ts, "fetched_at": int(self.ctx.clock())}
        if token:
            state["token"] = token
        return Checkpoint(state, set_ts, up_to_date)

    def deltas(self) -> Iterator[FetchDelta]:
        seen: set[str] = set()
        token = self.token
        page_no = 0
        while True:
            if token:
                if token in seen:
                    raise ExchangeFetchError(
                        f"StopNCII paging repeats: the page token {token[:60]!r} was already "
                        f"used in the set from {self.set_ts}; stopped"
                    )
                seen.add(token)
            page_no += 1
            body = self.client.fetch_hashes(self.set_ts, self.page_size, token)
            page = parse_page(body, f"page {page_no} of the set from {self.set_ts}")
            updates, problems = self._updates(page)
            problems.extend(page.problems)
            if page.has_more:
                token = page.next_token
                yield FetchDelta(updates, self._checkpoint(self.set_ts, token, False), problems)
                continue
            nxt = page.next_set_ts
            if nxt is None:
                nxt = max([self.set_ts, *(r.last_mod + 1 for r in page.records)])
            if nxt < self.set_ts:
                log.warning(
                    "exchange %s: StopNCII's nextSetTimestamp %s is before the set's start %s; "
                    "the checkpoint stays",
                    self.ctx.name,
                    nxt,
                    self.set_ts,
                )
                nxt = self.set_ts
            yield FetchDelta(updates, self._checkpoint(nxt, "", True), problems)
            return

    def _updates(self, page: HashesPage) -> tuple[dict[str, ExchangeRecord | None], list[Problem]]:
        updates: dict[str, ExchangeRecord | None] = {}
        problems: list[Problem] = []
        for r in page.records:
            st = self.take.get(r.signal_type)
            if st is None:
                problems.append(
                    Problem(
                        "unknown_signal_type",
                        f"record {r.key[:120]}",
                        f"StopNCII signal type {r.signal_type!r} is not one Tipline takes "
                        f"(takes: {', '.join(self.take)})",
                    )
                )
                continue
            if r.hash_status in TOMBSTONE_STATUSES:
                updates[r.key] = None
                continue
            updates[r.key] = ExchangeRecord(
                st,
                r.hash_value,
                "",
                {
                    "hashStatus": r.hash_status,
                    "caseNumbers": r.case_count,
                    "lastModtimestamp": r.last_mod,
                    "signalType": r.signal_type,
                },
            )
        return updates, problems


register(StopNCIIExchange)

__all__ = [
    "DEFAULT_BASE_URL",
    "SIGNAL_TYPES",
    "STALE_SECONDS",
    "Client",
    "HashRecord",
    "HashesPage",
    "StopNCIIExchange",
    "parse_page",
]
