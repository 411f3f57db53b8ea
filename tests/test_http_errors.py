"""The service's one HTTP error type and its one handler (tipline.service.errors)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tipline.errors import TiplineError
from tipline.service import errors
from tipline.service.errors import HttpError


def _client() -> TestClient:
    app = FastAPI()
    errors.install(app)

    @app.get("/plain")
    async def plain() -> None:
        raise HttpError(409, "someone else holds it")

    @app.get("/coded")
    async def coded() -> None:
        raise HttpError(400, "bad thing", "bad_thing", headers={"Retry-After": "5"})

    @app.get("/desk/page")
    async def page() -> None:
        raise HttpError(401, "authentication required")

    @app.get("/desk/denied")
    async def denied() -> None:
        raise HttpError(403, "permission 'review:senior' required")

    @app.get("/desk/media/1/full")
    async def media() -> None:
        raise HttpError(
            403, "claim the item's cluster first", headers={"Cache-Control": "no-store"}
        )

    return TestClient(app)


def test_message_only_unless_a_code_is_given() -> None:
    c = _client()
    res = c.get("/plain")
    assert (res.status_code, res.json()) == (409, {"message": "someone else holds it"})
    res = c.get("/coded")
    assert res.status_code == 400
    assert res.json() == {"message": "bad thing", "code": "bad_thing"}
    assert res.headers["retry-after"] == "5"


def test_is_a_tipline_error_with_the_message_as_text() -> None:
    err = HttpError(404, "no such item", problems=["a", "b"])
    assert isinstance(err, TiplineError)
    assert (str(err), err.status, err.code, err.problems) == ("no such item", 404, None, ["a", "b"])


def test_a_person_on_the_desk_gets_pages_scripts_get_json() -> None:
    c = _client()
    html = {"accept": "text/html"}
    res = c.get("/desk/page", headers=html, follow_redirects=False)
    assert res.status_code == 303 and res.headers["location"] == "/login?next=/desk/page"
    res = c.get("/desk/denied", headers=html)
    assert res.status_code == 403 and "Not allowed" in res.text
    assert c.get("/desk/denied").json() == {"message": "permission 'review:senior' required"}
    res = c.get("/desk/media/1/full", headers=html)
    assert res.status_code == 403 and res.json() == {"message": "claim the item's cluster first"}
    assert res.headers["cache-control"] == "no-store"
