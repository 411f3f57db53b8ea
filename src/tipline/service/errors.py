"""The service's one HTTP error: :class:`HttpError` (status, message, optional code), and the
one exception handler that answers it.

Every refusal a route or dependency makes (authentication, permissions, request bodies, HMA
and ``/api/v1`` validation, the review desk's media) raises ``HttpError``; :func:`install`
registers the handler. Domain errors of the layers below (``BankError``, ``IndexNotLoadedError``,
database errors) keep their own handlers in :mod:`tipline.service.app`, which map them to
statuses there.

Why here and not in ``tipline.errors`` (the bottom layer): an HTTP status is the service's
vocabulary. Nothing below the service raises one: ``tipline.accounts`` (users, tokens, roles)
only answers yes or no (``Principal.can``) and raises ``UserError``, and the service's
dependency turns a no into a 401 / 403. Keeping the type in the service keeps the library free
of HTTP, as the layer rule (tests/test_layers.py) intends. It is still a ``TiplineError``, so
``str(err)`` is the whole one-line message.

The answer: ``{"message": ...}`` with the status and the error's headers (HMA's shape, which
every route uses), plus ``"code"`` when the error carries one. HMA-compatible routes never set a
code, so their bodies stay exactly HMA's. One exception to JSON: a person navigating the review
desk in a browser (a ``GET`` of a ``/desk`` page that accepts HTML) is sent to sign in on a 401
and shown a "Not allowed" page on a 403.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from jinja2 import Environment

from tipline.errors import TiplineError


class HttpError(TiplineError):
    """A request refused with ``status`` and a one-line ``message`` for the client.

    ``code``: an optional machine-readable name of the failure, answered as ``"code"``.
    ``headers``: sent with the answer (``WWW-Authenticate``, ``Retry-After``, ...).
    ``problems``: the individual problems when there are several (intake's validation lists
    them on its form page and in its API answer).
    """

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        problems: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})
        self.problems = list(problems)

    def body(self) -> dict[str, Any]:
        """The JSON answer: ``{"message"}``, with ``"code"`` when there is one."""
        out: dict[str, Any] = {"message": self.message}
        if self.code is not None:
            out["code"] = self.code
        return out


_DENIED_PAGE = Environment(autoescape=True).from_string(
    """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Not allowed - Tipline</title></head>
<body><main><h1>Not allowed</h1><p role="alert">{{ message }}</p>
<p><a href="/desk">Back to the desk</a></p></main></body></html>
"""
)


def _wants_page(request: Request) -> bool:
    """A person navigating the desk's pages (not its media or assets, not a script)."""
    return (
        request.method == "GET"
        and request.url.path.startswith("/desk")
        and not request.url.path.startswith(("/desk/media/", "/desk/assets/"))
        and "text/html" in request.headers.get("accept", "")
    )


async def handle(request: Request, exc: Exception) -> Response:
    """THE handler of :class:`HttpError`."""
    assert isinstance(exc, HttpError)
    if _wants_page(request):
        # A person navigating the review desk: send them to sign in, or say no in words.
        if exc.status == 401:
            return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
        if exc.status == 403:
            return HTMLResponse(
                _DENIED_PAGE.render(message=exc.message),
                status_code=403,
                headers={"Cache-Control": "no-store"},
            )
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


def install(app: FastAPI) -> None:
    """Register :func:`handle` for :class:`HttpError` on ``app`` (idempotent)."""
    app.add_exception_handler(HttpError, handle)
