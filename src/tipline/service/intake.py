"""Intake: the public report form and the partner report API.

Public form (``GET/POST /report``): a server-rendered page that works without JavaScript. URLs
(one per line), an optional upload, a description and an optional contact; anonymous reports are
welcome. It answers with a reference number page. Protections:

* CSRF: a signed double-submit token. ``GET /report`` sets a random nonce in a cookie and puts
  the nonce, signed with the server secret (itsdangerous, 2 h lifetime), in a hidden field;
  ``POST`` accepts only when the field verifies and carries the cookie's nonce.
* Rate limit: a token bucket per client IP address, in this process (``form_burst`` reports at
  once, refilled at ``form_per_hour``). Several API processes each keep their own buckets, so a
  multi-process deployment should also rate-limit at the reverse proxy (docs/deployment.md).
* Size limits: the whole request (``Content-Length`` checked first, then counted while reading)
  and the upload; 413 with a clear page. The body must arrive within ``body_timeout`` seconds
  (a slow-loris upload gets 408). Malformed multipart is a 400.

Partner API (token with ``report:submit``): ``POST /api/v1/reports`` (one report, JSON),
``POST /api/v1/reports/bulk`` (up to ``bulk_max`` reports) and ``GET /api/v1/reports/{ref}``.
An ``Idempotency-Key`` header (single) or ``idempotency_key`` field (bulk) makes a retried
request return the original report instead of creating a second one (unique per partner token
and key in the database, so two racing retries also end in one report).

Every accepted report is committed in ONE transaction with its uploads and its first pipeline
job (``ingest``), so an accepted report can never be left unprocessed, and nothing is kept for a
request that failed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from itsdangerous import BadSignature, URLSafeTimedSerializer
from jinja2 import DictLoader, Environment, select_autoescape
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from tipline.audit import log as audit
from tipline.crawl.engine import Budgets, Policy
from tipline.service import crawls_api
from tipline.service.auth import require
from tipline.service.bodies import read_limited_body
from tipline.service.errors import HttpError
from tipline.store.jobs import JobQueue
from tipline.store.tables import ApiToken, Report, ReportItem, Upload

MiB = 1024 * 1024
CSRF_COOKIE = "tipline_report_csrf"
CSRF_FIELD = "csrf_token"
_REF_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U


# -- settings ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IntakeSettings:
    #: signs the form's CSRF tokens; every API process of one deployment needs the same value
    secret: bytes
    max_upload_bytes: int = 64 * MiB
    #: the whole form or API request (uploads + fields + multipart overhead)
    max_request_bytes: int = 65 * MiB
    max_urls: int = 100
    max_url_chars: int = 2048
    max_description_chars: int = 20_000
    max_contact_chars: int = 500
    #: uploads per partner API report
    max_api_uploads: int = 10
    bulk_max: int = 500
    #: public form: reports a client may send at once, and the hourly refill
    form_burst: float = 5.0
    form_per_hour: float = 30.0
    #: seconds allowed for the request body to arrive (slow-loris guard)
    body_timeout: float = 60.0
    csrf_max_age: int = 7200
    #: Secure flag on the CSRF cookie: "auto" follows the request's scheme
    cookie_secure: str = "auto"

    @classmethod
    def from_service(cls, settings: Any, **overrides: Any) -> IntakeSettings:
        """From :class:`~tipline.service.settings.ServiceSettings`: the upload limit, and the
        secret from ``$TIPLINE_SECRET_KEY`` or ``<data_dir>/secret.key`` (made on first use)."""
        max_upload = int(getattr(settings, "max_upload_bytes", 64 * MiB))
        values: dict[str, Any] = {
            "secret": load_secret(Path(settings.data_dir)),
            "max_upload_bytes": max_upload,
            "max_request_bytes": max_upload + MiB,
        }
        values.update(overrides)
        return cls(**values)


def load_secret(data_dir: Path, env: dict[str, str] | None = None) -> bytes:
    """The server secret: ``$TIPLINE_SECRET_KEY``, else ``<data_dir>/secret.key`` (created with
    mode 0600 on first use, so every process of one deployment shares it)."""
    from tipline.service.settings import env_setting

    configured: str = env_setting("secret_key", env)  # the secret_key setting
    if configured:
        return configured.encode()
    path = data_dir / "secret.key"
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(value)
    return value


# -- rate limiting -------------------------------------------------------------------------------


@dataclass
class TokenBucket:
    """Per-key token buckets in this process. ``take(key)`` -> seconds to wait (0: allowed)."""

    capacity: float
    per_second: float
    clock: Callable[[], float] = time.monotonic
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, key: str) -> float:
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - last) * self.per_second)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                if len(self._buckets) > 100_000:  # forget full buckets; bounded memory
                    self._prune(now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.per_second if self.per_second > 0 else 3600.0

    def _prune(self, now: float) -> None:
        for k, (t, last) in list(self._buckets.items()):
            if t + (now - last) * self.per_second >= self.capacity:
                del self._buckets[k]


# -- the context ---------------------------------------------------------------------------------


@dataclass
class IntakeContext:
    session_factory: sessionmaker[Session]
    queue: JobQueue
    settings: IntakeSettings
    limiter: TokenBucket | None = None
    #: a new crawl's budgets and policy (``[crawl]``): a report's ``crawl`` may narrow them
    crawl_defaults: tuple[Budgets, Policy] = field(default_factory=lambda: (Budgets(), Policy()))

    def __post_init__(self) -> None:
        if self.limiter is None:
            self.limiter = TokenBucket(self.settings.form_burst, self.settings.form_per_hour / 3600)

    @property
    def signer(self) -> URLSafeTimedSerializer:
        return URLSafeTimedSerializer(self.settings.secret, salt="tipline-report-form")


def _ctx(request: Request) -> IntakeContext:
    """The app's intake context, built at start-up (``create_app``, or :func:`install_intake`)."""
    ctx = getattr(getattr(request.app.state, "ctx", None), "intake", None)
    if not isinstance(ctx, IntakeContext):
        raise HttpError(503, "intake is not configured on this server")
    return ctx


# -- validation and creation ---------------------------------------------------------------------


@dataclass(slots=True)
class NewReport:
    urls: list[str] = field(default_factory=list)
    description: str = ""
    contact: str | None = None
    uploads: list[tuple[str, bytes]] = field(default_factory=list)
    idempotency_key: str | None = None
    #: a crawl of the report's URLs (partner API): None none, else the budget overrides
    crawl: dict[str, int | float] | None = None


def check_url(line: str, max_chars: int) -> str:
    """A reported URL, or ValueError with why not. Never fetched here."""
    url = line.strip()
    if len(url) > max_chars:
        raise ValueError(f"longer than {max_chars} characters")
    if any(ord(c) < 32 or c.isspace() for c in url):
        raise ValueError("contains spaces or control characters")
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):(?!\d)", url)
    if "://" not in url and scheme is not None:
        raise ValueError(f"only http and https URLs can be reported, not {scheme.group(1)}:")
    if "://" not in url:
        url = "http://" + url  # "example.com/x" as people type it
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("only http and https URLs can be reported")
    if not parts.hostname:
        raise ValueError("has no host name")
    return url


def validate(new: NewReport, s: IntakeSettings) -> NewReport:
    problems: list[str] = []
    urls: list[str] = []
    for n, line in enumerate(new.urls, 1):
        if not line.strip():
            continue
        try:
            urls.append(check_url(line, s.max_url_chars))
        except ValueError as err:
            problems.append(f"URL {n} ({line.strip()[:80]!r}): {err}")
    urls = list(dict.fromkeys(urls))
    if len(urls) > s.max_urls:
        problems.append(f"too many URLs: {len(urls)} (at most {s.max_urls} per report)")
    if len(new.description) > s.max_description_chars:
        problems.append(f"description longer than {s.max_description_chars:,} characters")
    contact = (new.contact or "").strip() or None
    if contact is not None and len(contact) > s.max_contact_chars:
        problems.append(f"contact longer than {s.max_contact_chars} characters")
    for name, data in new.uploads:
        if len(data) > s.max_upload_bytes:
            raise HttpError(
                413,
                f"upload {name[:80]!r} is {len(data):,} bytes; the limit is "
                f"{s.max_upload_bytes:,} bytes",
            )
    if not urls and not new.uploads:
        problems.append("give at least one URL or upload a file")
    if problems:
        raise HttpError(
            400, "the report could not be accepted: " + "; ".join(problems), problems=problems
        )
    if new.crawl is not None and not any(u.lower().startswith(("http:", "https:")) for u in urls):
        raise HttpError(400, "crawl needs at least one http(s) URL in the report")
    return NewReport(
        urls, new.description.strip(), contact, new.uploads, new.idempotency_key, new.crawl
    )


def new_reference(now: datetime | None = None) -> str:
    year = (now or datetime.now(UTC)).year
    code = "".join(secrets.choice(_REF_ALPHABET) for _ in range(8))
    return f"TL-{year}-{code[:4]}-{code[4:]}"


def _add_report(
    session: Session,
    queue: JobQueue,
    new: NewReport,
    source: str,
    partner_token_id: int | None,
    crawl_defaults: tuple[Budgets, Policy] | None = None,
) -> Report:
    report = Report(
        reference=new_reference(),
        source=source,
        description=new.description,
        contact=new.contact,
        urls=list(new.urls),
        status="received",
        partner_token_id=partner_token_id,
        idempotency_key=new.idempotency_key,
        submitted_at=datetime.now(UTC),
    )
    session.add(report)
    session.flush()
    for name, data in new.uploads:
        session.add(
            Upload(
                report_id=report.id,
                filename=name[:255],
                data=data,
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
            )
        )
    queue.enqueue(
        "ingest", {"report_id": report.id}, dedupe_key=f"ingest:{report.id}", session=session
    )
    if new.crawl is not None:  # the crawl and its job commit with the report, or neither
        crawls_api.start_for_report(
            session, queue, report, new.crawl, crawl_defaults or (Budgets(), Policy())
        )
    return report


def _existing(session: Session, token_id: int | None, key: str) -> Report | None:
    stmt = select(Report).where(Report.idempotency_key == key)
    stmt = stmt.where(
        Report.partner_token_id.is_(None)
        if token_id is None
        else Report.partner_token_id == token_id
    )
    return session.scalars(stmt).first()


def create_reports(
    ctx: IntakeContext,
    reports: list[NewReport],
    source: str,
    partner_token_id: int | None = None,
    actor: str = "public",
    ip: str | None = None,
) -> list[tuple[Report, bool]]:
    """Store ``reports`` (already validated) with their ingest jobs in one transaction.

    Returns (report, created) per input: created False when its idempotency key named an
    earlier report (which is returned instead). A concurrent request that inserted the same
    key first makes the transaction fail on the unique constraint; it is then retried once and
    finds that report.

    Each new report is a ``report.create`` audit event in the same transaction. Public
    reporters are recorded as ``public`` with no address: the form promises anonymity."""
    for attempt in range(3):
        try:
            with ctx.session_factory() as session, session.begin():
                out: list[tuple[Report, bool]] = []
                seen: dict[str, Report] = {}
                for new in reports:
                    key = new.idempotency_key
                    if key is not None:
                        prior = seen.get(key) or _existing(session, partner_token_id, key)
                        if prior is not None:
                            out.append((prior, False))
                            continue
                    report = _add_report(
                        session, ctx.queue, new, source, partner_token_id, ctx.crawl_defaults
                    )
                    details: dict[str, Any] = {
                        "source": source,
                        "urls": len(new.urls),
                        "uploads": len(new.uploads),
                    }
                    if new.crawl is not None:
                        details["crawl"] = new.crawl
                    audit.record(
                        session, actor, "report.create", "report", report.reference, ip, details
                    )
                    if key is not None:
                        seen[key] = report
                    out.append((report, True))
                return out
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


# -- request bodies ------------------------------------------------------------------------------


async def _parse_form(request: Request, body: bytes, s: IntakeSettings) -> dict[str, Any]:
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        raise HttpError(400, "the form must be sent as multipart/form-data")
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    replay = Request(request.scope, receive)
    out: dict[str, Any] = {}
    try:
        form = await replay.form(max_files=1, max_fields=16, max_part_size=MiB)
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                data = await value.read(s.max_upload_bytes + 1)
                if value.filename or data:
                    out[key] = (value.filename or "upload", data)
            else:
                out[key] = value
        await form.close()
    except MultiPartException as err:
        raise HttpError(400, f"malformed form data: {err.message}") from None
    except Exception as err:  # starlette wraps parser errors in HTTPException(400)
        detail = getattr(err, "detail", None) or str(err) or type(err).__name__
        raise HttpError(400, f"malformed form data: {detail}") from None
    return out


# -- pages ---------------------------------------------------------------------------------------

_PAGES = {
    "base.html": """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{% block title %}Report{% endblock %} - Tipline</title>
<style>body{font-family:system-ui,sans-serif;max-width:42rem;margin:2rem auto;padding:0 1rem;
line-height:1.5}label{display:block;margin-top:1rem;font-weight:600}textarea,input[type=text]
{width:100%;box-sizing:border-box}.err{color:#a00}.ref{font-size:1.6rem;font-weight:700}</style>
</head><body>{% block body %}{% endblock %}</body></html>""",
    "form.html": """{% extends "base.html" %}{% block title %}Report content{% endblock %}
{% block body %}
<h1>Report online child sexual abuse material</h1>
<p>Do not send images of abuse by e-mail or message. Reporting is anonymous unless you give a
way to contact you. Please do not look for more material.</p>
{% if problems %}<div class="err" role="alert"><p>Your report was not sent:</p>
<ul>{% for p in problems %}<li>{{ p }}</li>{% endfor %}</ul></div>{% endif %}
<form method="post" action="/report" enctype="multipart/form-data">
<input type="hidden" name="csrf_token" value="{{ csrf_token }}">
<label for="urls">Web address(es), one per line</label>
<textarea id="urls" name="urls" rows="4">{{ urls }}</textarea>
<label for="upload">Or a file (optional, up to {{ max_upload_mb }} MB)</label>
<input id="upload" type="file" name="upload">
<label for="description">What did you see, and where? (optional)</label>
<textarea id="description" name="description" rows="5">{{ description }}</textarea>
<label for="contact">How we can contact you (optional)</label>
<input id="contact" type="text" name="contact" value="{{ contact }}">
<p><button type="submit">Send report</button></p>
</form>{% endblock %}""",
    "thanks.html": """{% extends "base.html" %}{% block title %}Report received{% endblock %}
{% block body %}<h1>Thank you: your report was received</h1>
<p>Your reference number is</p><p class="ref">{{ reference }}</p>
<p>Quote it if you contact us about this report. An analyst will assess what you reported.</p>
<p><a href="/report">Make another report</a></p>{% endblock %}""",
    "error.html": """{% extends "base.html" %}{% block title %}{{ title }}{% endblock %}
{% block body %}<h1>{{ title }}</h1><p class="err">{{ message }}</p>
<p><a href="/report">Back to the report form</a></p>{% endblock %}""",
}
_env = Environment(loader=DictLoader(_PAGES), autoescape=select_autoescape(default=True))

_TITLES = {
    400: "The report could not be read",
    403: "The form has expired",
    408: "The upload took too long",
    413: "The report is too large",
    429: "Too many reports",
    503: "The service is busy",
}


def _page(name: str, status: int = 200, **values: Any) -> HTMLResponse:
    return HTMLResponse(_env.get_template(name).render(**values), status_code=status)


def _error_page(status: int, message: str, headers: dict[str, str] | None = None) -> HTMLResponse:
    resp = _page("error.html", status, title=_TITLES.get(status, "Error"), message=message)
    resp.headers.update(headers or {})
    return resp


def _secure(request: Request, s: IntakeSettings) -> bool:
    if s.cookie_secure in ("true", "false"):
        return s.cookie_secure == "true"
    return request.url.scheme == "https"


def _form_page(
    request: Request,
    ctx: IntakeContext,
    status: int = 200,
    problems: list[str] | None = None,
    values: dict[str, str] | None = None,
) -> HTMLResponse:
    nonce = secrets.token_urlsafe(24)
    v = values or {}
    resp = _page(
        "form.html",
        status,
        csrf_token=ctx.signer.dumps(nonce),
        problems=problems or [],
        urls=v.get("urls", ""),
        description=v.get("description", ""),
        contact=v.get("contact", ""),
        max_upload_mb=ctx.settings.max_upload_bytes // MiB,
    )
    resp.set_cookie(
        CSRF_COOKIE,
        nonce,
        max_age=ctx.settings.csrf_max_age,
        httponly=True,
        samesite="strict",
        secure=_secure(request, ctx.settings),
        path="/report",
    )
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _csrf_ok(ctx: IntakeContext, request: Request, token: Any) -> bool:
    nonce = request.cookies.get(CSRF_COOKIE)
    if not nonce or not isinstance(token, str) or len(token) > 300:
        return False
    try:
        signed = ctx.signer.loads(token, max_age=ctx.settings.csrf_max_age)
    except BadSignature:
        return False
    return isinstance(signed, str) and hmac.compare_digest(signed, nonce)


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


# -- routes --------------------------------------------------------------------------------------

routes = APIRouter()


@routes.get("/report", response_class=HTMLResponse, include_in_schema=False)
async def report_form(request: Request) -> Response:
    """The public report form (no JavaScript needed)."""
    return _form_page(request, _ctx(request))


@routes.post("/report", response_class=HTMLResponse, include_in_schema=False)
async def report_submit(request: Request) -> Response:
    """Accept a report from the public form: rate limit, size limits, CSRF, validation."""
    ctx = _ctx(request)
    s = ctx.settings
    assert ctx.limiter is not None
    wait = ctx.limiter.take(client_ip(request))
    if wait > 0:
        retry = str(int(wait) + 1)
        return _error_page(
            429,
            f"Too many reports from your connection. Please try again in {retry} seconds.",
            {"Retry-After": retry},
        )
    values: dict[str, str] = {}
    try:
        body = await read_limited_body(request, s.max_request_bytes, s.body_timeout)
        form = await _parse_form(request, body, s)
        values = {k: v for k, v in form.items() if isinstance(v, str)}
        if not _csrf_ok(ctx, request, form.get(CSRF_FIELD)):
            raise HttpError(
                403,
                "The form was not sent from this site or has expired. Reload the report page "
                "and send it again.",
            )
        upload = form.get("upload")
        # the page's nonce names this submission: a double click or a reload of the answer
        # page gives the same report, not a second one
        nonce = request.cookies.get(CSRF_COOKIE, "")
        form_key = "form:" + hashlib.sha256(nonce.encode()).hexdigest()[:40]
        new = validate(
            NewReport(
                urls=values.get("urls", "").splitlines(),
                description=values.get("description", ""),
                contact=values.get("contact", ""),
                uploads=[upload] if isinstance(upload, tuple) else [],
                idempotency_key=form_key,
            ),
            s,
        )
    except HttpError as err:
        if err.status == 400 and err.problems:
            return _form_page(request, ctx, 400, err.problems, values)
        return _error_page(err.status, err.message)
    try:
        [(report, _)] = await run_in_threadpool(create_reports, ctx, [new], "public_form")
    except SQLAlchemyError:
        return _error_page(
            503,
            "The report could not be saved just now; nothing was kept. Please try again in a "
            "minute.",
            {"Retry-After": "30"},
        )
    resp = _page("thanks.html", 200, reference=report.reference)
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _actor(principal: Any) -> str:
    return str(getattr(principal, "actor", None) or "partner")


def _json_error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"message": message, **extra}, status_code=status)


def _api_report(
    item: Any,
    s: IntakeSettings,
    idem: str | None,
    crawl_defaults: tuple[Budgets, Policy] = (Budgets(), Policy()),
) -> NewReport:
    if not isinstance(item, dict):
        raise HttpError(400, "each report must be a JSON object")
    unknown = sorted(
        set(item) - {"urls", "description", "contact", "uploads", "idempotency_key", "crawl"}
    )
    if unknown:
        raise HttpError(400, f"unknown field(s): {', '.join(unknown)}")
    urls = item.get("urls", [])
    if isinstance(urls, str):
        urls = [urls]
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise HttpError(400, "urls must be a list of strings")
    description = item.get("description", "")
    contact = item.get("contact")
    if not isinstance(description, str) or not (contact is None or isinstance(contact, str)):
        raise HttpError(400, "description and contact must be strings")
    raw_uploads = item.get("uploads", [])
    if not isinstance(raw_uploads, list) or len(raw_uploads) > s.max_api_uploads:
        raise HttpError(400, f"uploads must be a list of at most {s.max_api_uploads} objects")
    uploads: list[tuple[str, bytes]] = []
    for n, up in enumerate(raw_uploads, 1):
        if not isinstance(up, dict) or not isinstance(up.get("content_base64"), str):
            raise HttpError(400, f"upload {n}: want {{'filename', 'content_base64'}}")
        try:
            data = base64.b64decode(up["content_base64"], validate=True)
        except (binascii.Error, ValueError):
            raise HttpError(400, f"upload {n}: content_base64 is not valid base64") from None
        uploads.append((str(up.get("filename") or f"upload-{n}"), data))
    key = item.get("idempotency_key", idem)
    if key is not None:
        key = _check_key(key)
    crawl = crawls_api.crawl_request(item.get("crawl"), crawl_defaults)
    return validate(NewReport(list(urls), description, contact, uploads, key, crawl), s)


def _check_key(key: Any) -> str:
    if not isinstance(key, str) or not 1 <= len(key) <= 200 or not key.isprintable():
        raise HttpError(400, "an idempotency key must be 1 to 200 printable characters")
    return key


def _reply(report: Report) -> dict[str, Any]:
    return {
        "reference": report.reference,
        "submitted_at": report.submitted_at.isoformat(),
        "urls": len(report.urls or []),
        "status_url": f"/api/v1/reports/{report.reference}",
    }


async def _json_body(request: Request, s: IntakeSettings, limit: int) -> Any:
    body = await read_limited_body(request, limit, s.body_timeout)
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise HttpError(400, f"the body is not valid JSON: {str(err)[:200]}") from None


def _api_limit(s: IntakeSettings) -> int:
    """The largest JSON body (single or bulk): the request limit, as base64 (4/3), plus room
    for the fields around it."""
    return s.max_request_bytes * 4 // 3 + MiB


@routes.post("/api/v1/reports", status_code=201, tags=["reports"])
async def api_submit(
    request: Request, principal: Any = Depends(require("report:submit"))
) -> Response:
    """Submit one report. Send ``Idempotency-Key``: a retry with the same key returns the
    original report (same body and status, header ``Idempotent-Replayed: true``)."""
    ctx = _ctx(request)
    token_id = getattr(principal, "token_id", None)
    try:
        idem = request.headers.get("idempotency-key")
        if idem is not None:
            idem = _check_key(idem)
        payload = await _json_body(request, ctx.settings, _api_limit(ctx.settings))
        new = _api_report(payload, ctx.settings, idem, ctx.crawl_defaults)
    except HttpError as err:
        return _json_error(err.status, err.message, problems=err.problems)
    try:
        [(report, created)] = await run_in_threadpool(
            create_reports,
            ctx,
            [new],
            "partner_api",
            token_id,
            _actor(principal),
            client_ip(request),
        )
    except SQLAlchemyError:
        return _json_error(503, "database unavailable; nothing was stored, retry later")
    resp = JSONResponse(_reply(report), status_code=201)
    if not created:
        resp.headers["Idempotent-Replayed"] = "true"
    return resp


@routes.post("/api/v1/reports/bulk", tags=["reports"])
async def api_submit_bulk(
    request: Request, principal: Any = Depends(require("report:submit"))
) -> Response:
    """Submit up to ``bulk_max`` reports: ``{"reports": [{..., "idempotency_key": "k"}]}``.
    Each report is accepted or rejected on its own; the answer lists one result per report in
    order (``reference`` and ``created``, or ``error``)."""
    ctx = _ctx(request)
    s = ctx.settings
    token_id = getattr(principal, "token_id", None)
    try:
        payload = await _json_body(request, s, _api_limit(s))
        if not isinstance(payload, dict) or not isinstance(payload.get("reports"), list):
            raise HttpError(400, 'want {"reports": [...]}')
        items = payload["reports"]
        if len(items) > s.bulk_max:
            raise HttpError(413, f"{len(items)} reports; at most {s.bulk_max} per request")
    except HttpError as err:
        return _json_error(err.status, err.message)
    results: list[dict[str, Any]] = [{} for _ in items]
    valid: list[tuple[int, NewReport]] = []
    for i, item in enumerate(items):
        try:
            valid.append((i, _api_report(item, s, None, ctx.crawl_defaults)))
        except HttpError as err:
            results[i] = {"index": i, "error": err.message}
    try:
        stored = await run_in_threadpool(
            create_reports,
            ctx,
            [n for _, n in valid],
            "partner_api",
            token_id,
            _actor(principal),
            client_ip(request),
        )
    except SQLAlchemyError:
        return _json_error(503, "database unavailable; nothing was stored, retry later")
    for (i, _), (report, created) in zip(valid, stored, strict=True):
        results[i] = {"index": i, "created": created, **_reply(report)}
    accepted = len(valid)
    return JSONResponse(
        {"accepted": accepted, "rejected": len(items) - accepted, "results": results}
    )


def _status(session: Session, ref: str, principal: Any) -> dict[str, Any] | None:
    report = session.scalar(select(Report).where(Report.reference == ref))
    if report is None:
        return None
    can_read_all = callable(getattr(principal, "can", None)) and principal.can("report:read")
    if not can_read_all:
        owner = (
            session.scalar(select(ApiToken.user_id).where(ApiToken.id == report.partner_token_id))
            if report.partner_token_id is not None
            else None
        )
        if owner is None or owner != getattr(principal, "user_id", None):
            return None
    n_items = len(
        session.scalars(select(ReportItem.item_id).where(ReportItem.report_id == report.id)).all()
    )
    return {
        "reference": report.reference,
        "status": report.status,
        "submitted_at": report.submitted_at.isoformat(),
        "urls": len(report.urls or []),
        "items": n_items,
    }


@routes.get("/api/v1/reports/{ref}", tags=["reports"])
async def api_report_status(
    ref: str, request: Request, principal: Any = Depends(require("report:submit"))
) -> Response:
    """A report's processing status (partners see their own reports only)."""
    ctx = _ctx(request)
    if len(ref) > 32:
        return _json_error(404, "no such report")

    def look() -> dict[str, Any] | None:
        with ctx.session_factory() as session:
            return _status(session, ref, principal)

    try:
        found = await run_in_threadpool(look)
    except SQLAlchemyError:
        return _json_error(503, "database unavailable, retry later")
    if found is None:
        return _json_error(404, "no such report")
    return JSONResponse(found)


def router(app_ctx: Any = None) -> APIRouter:
    """The intake routes; they read the context ``create_app`` built (``app.state.ctx``)."""
    return routes


def install_intake(app: FastAPI, ctx: IntakeContext) -> None:
    """Attach the intake routes and ``ctx`` to ``app`` (tests, embedding)."""
    from tipline.service.context import route_contexts

    route_contexts(app).intake = ctx
    app.include_router(routes)
