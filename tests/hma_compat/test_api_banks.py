"""HMA's ``tests/test_api_banks.py``, replayed over HTTP (paths below are under
``hasher-matcher-actioner/src/OpenMediaMatch/`` in facebook/ThreatExchange, HMA 1.1.7).

HMA's test for stored metadata fetches a photograph from github.com; the local checkerboard
stands in for it (the scenario is about the metadata, not the image)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import httpx

from hma_compat.conftest import Images, add_hash_to_bank, create_bank


def _add(client: httpx.Client, bank: str, images: Images, **kw: object) -> httpx.Response:
    return client.post(
        f"/c/bank/{bank}/content",
        params={"url": images.url("image1.jpg"), "content_type": "photo"},
        **kw,  # type: ignore[arg-type]
    )


def test_banks_empty_index(client: httpx.Client) -> None:
    """tests/test_api_banks.py::test_banks_empty_index; curation.py ``banks_index``."""
    r = client.get("/c/banks")
    assert r.status_code == 200 and r.json() == []


def test_banks_create(client: httpx.Client) -> None:
    """tests/test_api_banks.py::test_banks_create; curation.py ``bank_create`` (names
    ``^[A-Z_][A-Z0-9_]*$``, else 400; 201 with the bank; listed by ``banks_index``)."""
    assert client.post("/c/banks", json={"name": "01_TEST_BANK"}).status_code == 400
    assert client.post("/c/banks", json={"name": "my_test_bank"}).status_code == 400
    r = client.post("/c/banks", json={"name": "MY_TEST_BANK_01"})
    assert r.status_code == 201
    assert r.json() == {"matching_enabled_ratio": 1.0, "name": "MY_TEST_BANK_01"}
    assert client.get("/c/banks").json() == [r.json()]
    # an existing name is 403; a missing one is schemas/curation.py's 422
    assert client.post("/c/banks", json={"name": "MY_TEST_BANK_01"}).status_code == 403
    r = client.post("/c/banks", json={})
    assert r.status_code == 422 and r.json()[0]["loc"] == ["name"]


def test_banks_update(client: httpx.Client) -> None:
    """tests/test_api_banks.py::test_banks_update; curation.py ``bank_update``: validated
    rename, ``enabled`` sets the ratio to 0 or 1, ``enabled_ratio`` sets it as given."""
    assert client.post("/c/banks", json={"name": "MY_TEST_BANK"}).status_code == 201
    assert client.put("/c/bank/MY_TEST_BANK", json={"name": "1_invalid_name"}).status_code == 400
    r = client.put("/c/bank/MY_TEST_BANK", json={"name": "MY_TEST_BANK_RENAMED"})
    assert r.status_code == 200 and r.json()["name"] == "MY_TEST_BANK_RENAMED"
    r = client.put("/c/bank/MY_TEST_BANK_RENAMED", json={"enabled": False})
    assert r.status_code == 200 and r.json()["matching_enabled_ratio"] == 0
    r = client.put("/c/bank/MY_TEST_BANK_RENAMED", json={"enabled_ratio": 0.5})
    assert r.status_code == 200 and r.json()["matching_enabled_ratio"] == 0.5
    assert client.get("/c/banks").json() == [
        {"name": "MY_TEST_BANK_RENAMED", "matching_enabled_ratio": 0.5}
    ]
    assert client.get("/c/bank/MY_TEST_BANK").status_code == 404


def test_banks_delete(client: httpx.Client) -> None:
    """tests/test_api_banks.py::test_banks_delete; curation.py ``bank_delete``: 200, and
    200 again for a bank that is no longer there."""
    assert client.post("/c/banks", json={"name": "MY_TEST_BANK"}).status_code == 201
    assert client.delete("/c/bank/MY_TEST_BANK").status_code == 200
    r = client.delete("/c/bank/MY_TEST_BANK")
    assert r.status_code == 200 and r.json() == {"message": "Done"}


def test_bank_get_content(client: httpx.Client, images: Images) -> None:
    """tests/test_api_banks.py::test_bank_get_content; curation.py ``bank_get_content``."""
    create_bank(client, "TEST_BANK_GET")
    r = _add(client, "TEST_BANK_GET", images)
    assert r.status_code == 200, r.text
    cid = r.json()["id"]
    r = client.get(f"/c/bank/TEST_BANK_GET/content/{cid}")
    assert r.status_code == 200 and r.json()["id"] == cid
    assert r.json()["bank"] == {"name": "TEST_BANK_GET", "matching_enabled_ratio": 1.0}
    assert r.json()["disable_until_ts"] == 1


def test_bank_get_content_404(client: httpx.Client) -> None:
    """tests/test_api_banks.py::test_bank_get_content_404: no bank, then no content: 404."""
    assert client.get("/c/bank/TEST_BANK_GET/content/1").status_code == 404
    create_bank(client, "TEST_BANK_GET")
    r = client.get("/c/bank/TEST_BANK_GET/content/1")
    assert r.status_code == 404 and "message" in r.json()


def test_banks_add_content(client: httpx.Client, images: Images) -> None:
    """tests/test_api_banks.py::test_banks_add_content; curation.py ``bank_add_file`` by URL:
    the new id and the image's PDQ, bit for bit the reference hash (HMA hashes with
    python-threatexchange's PdqSignal)."""
    create_bank(client, "NEW_BANK")
    r = _add(client, "NEW_BANK", images)
    assert r.status_code == 200, r.text
    assert r.json() == {"id": r.json()["id"], "signals": {"pdq": images.pdq["image1.jpg"]}}


def test_bank_update_content(client: httpx.Client, images: Images) -> None:
    """tests/test_api_banks.py::test_bank_update_content; curation.py ``bank_update_content``:
    a future ``disable_until_ts`` is stored and answered as given."""
    create_bank(client, "TEST_BANK_UPDATE")
    cid = _add(client, "TEST_BANK_UPDATE", images).json()["id"]
    ts = int((datetime.now() + timedelta(days=365)).timestamp())
    r = client.put(f"/c/bank/TEST_BANK_UPDATE/content/{cid}", json={"disable_until_ts": ts})
    assert r.status_code == 200, r.text
    assert r.json()["disable_until_ts"] == ts
    assert client.get(f"/c/bank/TEST_BANK_UPDATE/content/{cid}").json()["disable_until_ts"] == ts


def test_bank_update_content_400(client: httpx.Client, images: Images) -> None:
    """tests/test_api_banks.py::test_bank_update_content_400; curation.py
    ``bank_update_content``: more than five years ahead (or negative) is 400."""
    create_bank(client, "TEST_BANK_UPDATE")
    cid = _add(client, "TEST_BANK_UPDATE", images).json()["id"]
    for ts in (9999999999, -1, "soon"):
        r = client.put(f"/c/bank/TEST_BANK_UPDATE/content/{cid}", json={"disable_until_ts": ts})
        assert r.status_code == 400, (ts, r.text)


def test_disable_until_ts_matching(client: httpx.Client, images: Images) -> None:
    """threatexchange/storage/interfaces.py ``BankContentConfig.enabled`` with matching.py
    ``lookup``: content disabled until a time does not match until that time passes, then
    matches again by itself; ``raw_lookup`` ignores it (matching.py ``raw_lookup``)."""
    create_bank(client, "TIMED")
    cid = add_hash_to_bank(client, "TIMED", images, "image1.jpg")
    query = {"signal_type": "pdq", "signal": images.pdq["image1.jpg"]}
    until = int(time.time()) + 2
    client.put(f"/c/bank/TIMED/content/{cid}", json={"disable_until_ts": until})
    assert client.get("/m/lookup", params=query).json() == {}
    assert client.get("/m/raw_lookup", params=query).json() == {"matches": [cid]}
    time.sleep(max(0.0, until - time.time()) + 0.2)
    assert client.get("/m/lookup", params=query).json() == {
        "TIMED": [{"bank_content_id": cid, "distance": "0"}]
    }


def test_banks_delete_content(client: httpx.Client, images: Images) -> None:
    """tests/test_api_banks.py::test_banks_delete_content; curation.py
    ``bank_delete_content``: ``{"deleted": 1}``."""
    create_bank(client, "NEW_BANK")
    cid = add_hash_to_bank(client, "NEW_BANK", images, "image1.jpg")
    r = client.delete(f"/c/bank/NEW_BANK/content/{cid}")
    assert r.status_code == 200 and r.json() == {"deleted": 1}


def test_banks_add_metadata(client: httpx.Client, images: Images) -> None:
    """tests/test_api_banks.py::test_banks_add_metadata; curation.py
    ``_validate_bank_add_metadata`` (schemas/curation.py ``BankedContentMetadata``,
    ``extra="forbid"``): an unknown key is 400, HMA's keys are fine."""
    create_bank(client, "NEW_BANK")
    r = _add(client, "NEW_BANK", images, json={"metadata": {"invalid_metadata": 5}})
    assert r.status_code == 400, r.text
    r = _add(client, "NEW_BANK", images, json={"metadata": "not an object"})
    assert r.status_code == 400
    r = _add(
        client,
        "NEW_BANK",
        images,
        json={"metadata": {"content_id": "1197433091", "json": {"asdf": {}}}},
    )
    assert r.status_code == 200, r.text


def test_banks_add_hash_index(client: httpx.Client, images: Images) -> None:
    """tests/test_api_banks.py::test_banks_add_hash_index; matching.py ``raw_lookup``: each
    image finds its own content only. Tipline's index is updated in the request that adds
    (HMA's test builds it by hand first)."""
    create_bank(client, "NEW_BANK")
    first = add_hash_to_bank(client, "NEW_BANK", images, "image1.jpg")
    create_bank(client, "NEW_BANK_2")
    second = add_hash_to_bank(client, "NEW_BANK", images, "image2.jpg")
    assert second == first + 1
    for name, cid in (("image1.jpg", first), ("image2.jpg", second)):
        r = client.get("/m/raw_lookup", params={"signal_type": "pdq", "signal": images.pdq[name]})
        assert r.status_code == 200 and r.json() == {"matches": [cid]}


def test_same_hash_twice_is_new_content(client: httpx.Client, images: Images) -> None:
    """storage/postgres/impl.py ``bank_add_content``: every add is a new content item with
    its own note and metadata, even for a hash the bank already holds."""
    create_bank(client, "TWICE")
    a = _add(client, "TWICE", images, json={"note": "first"}).json()["id"]
    b = _add(
        client, "TWICE", images, json={"note": "second", "metadata": {"content_id": "b"}}
    ).json()["id"]
    assert a != b
    assert client.get(f"/c/bank/TWICE/content/{a}").json()["note"] == "first"
    got = client.get(f"/c/bank/TWICE/content/{b}").json()
    assert got["note"] == "second" and got["metadata"]["content_id"] == "b"
    r = client.get("/m/lookup", params={"signal_type": "pdq", "signal": images.pdq["image1.jpg"]})
    assert sorted(m["bank_content_id"] for m in r.json()["TWICE"]) == [a, b]


def test_bank_get_content_with_signals(client: httpx.Client, images: Images) -> None:
    """tests/test_api_banks.py::test_bank_get_content_with_signals; curation.py
    ``bank_get_content``: signals only with ``include_signals=true``."""
    create_bank(client, "TEST_BANK_GET_SIGS")
    cid = _add(client, "TEST_BANK_GET_SIGS", images).json()["id"]
    r = client.get(f"/c/bank/TEST_BANK_GET_SIGS/content/{cid}")
    assert r.status_code == 200 and r.json()["id"] == cid and "signals" not in r.json()
    r = client.get(f"/c/bank/TEST_BANK_GET_SIGS/content/{cid}", params={"include_signals": "true"})
    assert r.json()["signals"] == {"pdq": images.pdq["image1.jpg"]}


def test_bank_get_content_returns_stored_metadata(client: httpx.Client, images: Images) -> None:
    """tests/test_api_banks.py::test_bank_get_content_returns_stored_metadata; curation.py
    ``bank_get_content`` (metadata included by default)."""
    create_bank(client, "TEST_BANK_METADATA")
    metadata = {
        "content_id": "ext-id-123",
        "content_uri": "https://example.com/item/123",
        "json": {"source": "test", "nested": {"key": "value"}},
    }
    r = _add(client, "TEST_BANK_METADATA", images, json={"metadata": metadata})
    assert r.status_code == 200, r.text
    got = client.get(f"/c/bank/TEST_BANK_METADATA/content/{r.json()['id']}").json()
    assert got["metadata"]["content_id"] == metadata["content_id"]
    assert got["metadata"]["content_uri"] == metadata["content_uri"]
    assert got["metadata"]["json"] == metadata["json"]


def test_bank_get_content_include_metadata_false(client: httpx.Client, images: Images) -> None:
    """tests/test_api_banks.py::test_bank_get_content_include_metadata_false."""
    create_bank(client, "TEST_BANK_NO_METADATA")
    meta = {"content_id": "id1", "content_uri": "https://example.com/1"}
    r = _add(client, "TEST_BANK_NO_METADATA", images, json={"metadata": meta})
    assert r.status_code == 200, r.text
    got = client.get(
        f"/c/bank/TEST_BANK_NO_METADATA/content/{r.json()['id']}",
        params={"include_metadata": "false"},
    ).json()
    assert "metadata" not in got


def test_bank_add_content_with_note(client: httpx.Client, images: Images) -> None:
    """tests/test_api_banks.py::test_bank_add_content_with_note; curation.py
    ``_validate_bank_add_note`` (a JSON body beside ``?url=``)."""
    create_bank(client, "TEST_BANK_NOTE")
    r = _add(client, "TEST_BANK_NOTE", images, json={"note": "Reported by user X"})
    assert r.status_code == 200, r.text
    got = client.get(f"/c/bank/TEST_BANK_NOTE/content/{r.json()['id']}").json()
    assert got["note"] == "Reported by user X"


def test_bank_add_content_without_note_omitted(client: httpx.Client, images: Images) -> None:
    """tests/test_api_banks.py::test_bank_add_content_without_note_omitted."""
    create_bank(client, "TEST_BANK_NO_NOTE")
    cid = _add(client, "TEST_BANK_NO_NOTE", images).json()["id"]
    assert "note" not in client.get(f"/c/bank/TEST_BANK_NO_NOTE/content/{cid}").json()


def test_bank_update_content_note(client: httpx.Client, images: Images) -> None:
    """tests/test_api_banks.py::test_bank_update_content_note; curation.py
    ``bank_update_content``: PUT sets, changes and clears a note."""
    create_bank(client, "TEST_BANK_NOTE_UPDATE")
    cid = _add(client, "TEST_BANK_NOTE_UPDATE", images).json()["id"]
    path = f"/c/bank/TEST_BANK_NOTE_UPDATE/content/{cid}"
    for note in ("Initial note", "Updated note"):
        assert client.put(path, json={"note": note}).status_code == 200
        assert client.get(path).json()["note"] == note
    assert client.put(path, json={"note": ""}).status_code == 200
    assert "note" not in client.get(path).json()
    assert client.put(path, json={"note": "x" * 256}).status_code == 400


def test_bank_add_note_too_long(client: httpx.Client, images: Images) -> None:
    """tests/test_api_banks.py::test_bank_add_note_too_long; curation.py ``_validate_note``."""
    create_bank(client, "TEST_BANK_NOTE_LONG")
    assert _add(client, "TEST_BANK_NOTE_LONG", images, json={"note": "x" * 256}).status_code == 400


def test_bank_add_hash_with_note(client: httpx.Client) -> None:
    """tests/test_api_banks.py::test_bank_add_hash_with_note; curation.py
    ``bank_add_as_signals``."""
    create_bank(client, "TEST_BANK_HASH_NOTE")
    r = client.post(
        "/c/bank/TEST_BANK_HASH_NOTE/signal",
        json={"pdq": "0" * 64, "note": "Hash from campaign ABC"},
    )
    assert r.status_code == 200, r.text
    got = client.get(f"/c/bank/TEST_BANK_HASH_NOTE/content/{r.json()['id']}").json()
    assert got["note"] == "Hash from campaign ABC"


def test_bank_get_content_without_metadata_omitted(client: httpx.Client, images: Images) -> None:
    """tests/test_api_banks.py::test_bank_get_content_without_metadata_omitted."""
    create_bank(client, "TEST_BANK_NO_META")
    cid = _add(client, "TEST_BANK_NO_META", images).json()["id"]
    assert "metadata" not in client.get(f"/c/bank/TEST_BANK_NO_META/content/{cid}").json()
