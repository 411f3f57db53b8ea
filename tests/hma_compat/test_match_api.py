"""HMA's ``tests/test_match_api.py``, replayed over HTTP (paths below are under
``hasher-matcher-actioner/src/OpenMediaMatch/`` in facebook/ThreatExchange, HMA 1.1.7).

HMA fills its ``SAMPLE`` bank from the static sample exchange; with no exchange installed the
replay makes the bank itself and adds its own example signals (benign: random PDQ hashes and
the MD5 of a neutral text), one per signal type, as the sample exchange does."""

from __future__ import annotations

import hashlib
import random

import httpx
import pytest

from hma_compat.conftest import create_bank

EXAMPLE = {
    "pdq": f"{random.Random(11).getrandbits(256):064x}",
    "video_md5": hashlib.md5(b"DEMO-benign-stand-in: bluebird").hexdigest(),
}


@pytest.fixture
def sample_data(client: httpx.Client) -> httpx.Client:
    """matching tests' ``client_with_sample_data``: a SAMPLE bank holding examples of every
    signal type, the index ready."""
    create_bank(client, "SAMPLE")
    for st, value in EXAMPLE.items():
        r = client.post("/c/bank/SAMPLE/signal", json={st: value})
        assert r.status_code == 200, r.text
    assert client.get("/status").status_code == 200
    return client


@pytest.fixture
def multi_bank(client: httpx.Client) -> httpx.Client:
    """``client_with_multi_bank_data``: BANK_A, BANK_B and BANK_C each hold the same PDQ."""
    for bank in ("BANK_A", "BANK_B", "BANK_C"):
        create_bank(client, bank)
        assert (
            client.post(f"/c/bank/{bank}/signal", json={"pdq": EXAMPLE["pdq"]}).status_code == 200
        )
    return client


def test_raw_lookups(sample_data: httpx.Client) -> None:
    """tests/test_match_api.py::test_raw_lookups; matching.py ``raw_lookup``: every signal
    type finds its example; with ``include_distance`` as many matches, each with an id and a
    distance."""
    client = sample_data
    types = {t["name"] for t in client.get("/c/signal_type").json()}
    # HMA's default config has these two; Tipline also answers to text TLSH (python-
    # threatexchange's text_tlsh), as an HMA with that extension enabled lists it
    assert types == {"pdq", "video_md5", "tlsh"}
    for st, value in EXAMPLE.items():
        query: dict[str, str] = {"signal": value, "signal_type": st}
        r = client.get("/m/raw_lookup", params=query)
        assert r.status_code == 200, r.text
        count = len(r.json()["matches"])
        assert count >= 1
        r = client.get("/m/raw_lookup", params={**query, "include_distance": "True"})
        assert r.status_code == 200
        matches = r.json()["matches"]
        assert len(matches) == count
        for m in matches:
            assert "bank_content_id" in m and "distance" in m
    # a missing parameter is schemas/matching.py's 422 with pydantic's list
    r = client.get("/m/raw_lookup", params={"signal_type": "pdq"})
    assert r.status_code == 422 and r.json()[0]["loc"] == ["signal"]


def test_lookups(sample_data: httpx.Client) -> None:
    """tests/test_match_api.py::test_lookups; matching.py ``lookup_get``: each example is
    found in SAMPLE only (the distance is a string: "0", or "-" for exact types)."""
    client = sample_data
    for st, value in EXAMPLE.items():
        r = client.get("/m/lookup", params={"signal": value, "signal_type": st})
        assert r.status_code == 200, r.text
        body = r.json()
        assert list(body) == ["SAMPLE"] and len(body["SAMPLE"]) > 0
        for m in body["SAMPLE"]:
            assert set(m) == {"bank_content_id", "distance"}
            assert m["distance"] == ("0" if st == "pdq" else "-")


def test_raw_lookup_with_bank_filter(multi_bank: httpx.Client) -> None:
    """tests/test_match_api.py::test_raw_lookup_with_bank_filter; matching.py
    ``lookup_signal`` (``banks`` filter)."""
    query = {"signal": EXAMPLE["pdq"], "signal_type": "pdq"}
    cases = {None: 3, "BANK_A": 1, "BANK_A,BANK_B": 2, "NON_EXISTENT_BANK": 0}
    for banks, n in cases.items():
        params = query if banks is None else {**query, "banks": banks}
        r = multi_bank.get("/m/raw_lookup", params=params)
        assert r.status_code == 200 and len(r.json()["matches"]) == n, (banks, r.text)


def test_raw_lookup_with_distance_and_bank_filter(multi_bank: httpx.Client) -> None:
    """tests/test_match_api.py::test_raw_lookup_with_distance_and_bank_filter; matching.py
    ``lookup_signal_with_distance``."""
    r = multi_bank.get(
        "/m/raw_lookup",
        params={
            "signal": EXAMPLE["pdq"],
            "signal_type": "pdq",
            "include_distance": "true",
            "banks": "BANK_A,BANK_B",
        },
    )
    assert r.status_code == 200
    matches = r.json()["matches"]
    assert len(matches) == 2
    for m in matches:
        assert "bank_content_id" in m and m["distance"] == "0"


def test_lookup_with_bank_filter(multi_bank: httpx.Client) -> None:
    """tests/test_match_api.py::test_lookup_with_bank_filter; matching.py ``lookup``
    (``banks`` intersected with the enabled banks)."""
    query = {"signal": EXAMPLE["pdq"], "signal_type": "pdq"}
    cases = {
        None: {"BANK_A", "BANK_B", "BANK_C"},
        "BANK_A": {"BANK_A"},
        "BANK_A,BANK_C": {"BANK_A", "BANK_C"},
        "NON_EXISTENT_BANK": set(),
    }
    for banks, want in cases.items():
        params = query if banks is None else {**query, "banks": banks}
        r = multi_bank.get("/m/lookup", params=params)
        assert r.status_code == 200 and set(r.json()) == want, (banks, r.text)
        assert all(len(v) > 0 for v in r.json().values())


def test_upload_and_url_lookups_honour_banks(client: httpx.Client, images: object) -> None:
    """matching.py ``lookup_post`` and ``lookup_get`` with ``url``: the ``banks`` filter
    applies to uploads and URLs too."""
    from hma_compat.conftest import Images, add_hash_to_bank

    assert isinstance(images, Images)
    for bank in ("KEEP", "SKIP"):
        create_bank(client, bank)
        add_hash_to_bank(client, bank, images, "image1.jpg")
    data = images.files["image1.jpg"][1]
    r = client.post(
        "/m/lookup", params={"banks": "KEEP"}, files={"photo": ("a.jpg", data, "image/jpeg")}
    )
    assert r.status_code == 200 and set(r.json()["pdq"]) == {"KEEP"}
    r = client.get("/m/lookup", params={"url": images.url("image1.jpg"), "banks": "KEEP"})
    assert set(r.json()["pdq"]) == {"KEEP"}
    # with signal_type beside url, the answer is that type's (matching.py lookup_get)
    r = client.get("/m/lookup", params={"url": images.url("image1.jpg"), "signal_type": "pdq"})
    assert set(r.json()) == {"KEEP", "SKIP"}


def test_enabled_ratio_coinflip(client: httpx.Client) -> None:
    """matching.py ``lookup``: a bank with ``matching_enabled_ratio`` r is seen when r is at
    least the lookup's coin flip, ``random.Random(seed)`` of the request's ``seed``;
    ``bypass_coinflip=true`` (``POST /m/lookup``) sees every bank, disabled ones too."""
    create_bank(client, "HALF")
    assert client.put("/c/bank/HALF", json={"enabled_ratio": 0.5}).json() == {
        "name": "HALF",
        "matching_enabled_ratio": 0.5,
    }
    client.post("/c/bank/HALF/signal", json={"pdq": EXAMPLE["pdq"]})
    seen = 0
    for seed in range(40):
        flip = random.Random(str(seed)).random()
        r = client.get(
            "/m/lookup", params={"signal_type": "pdq", "signal": EXAMPLE["pdq"], "seed": str(seed)}
        )
        assert ("HALF" in r.json()) == (flip <= 0.5), seed
        seen += "HALF" in r.json()
    assert 5 < seen < 35
    # raw_lookup checks no ratio at all
    r = client.get("/m/raw_lookup", params={"signal_type": "pdq", "signal": EXAMPLE["pdq"]})
    assert len(r.json()["matches"]) == 1


def test_signal_type_config(client: httpx.Client) -> None:
    """curation.py ``get_all_signal_types``, ``update_signal_type_config`` (HMA answers 500
    there; what it means: stored, 204), ``signal_type_index_status`` and
    ``get_all_content_types``: their shapes; a type at 0 is not enabled for lookups."""
    assert client.get("/c/signal_type").json() == [
        {"name": "pdq", "enabled_ratio": 1.0},
        {"name": "video_md5", "enabled_ratio": 1.0},
        {"name": "tlsh", "enabled_ratio": 1.0},
    ]
    assert client.get("/c/content_type").json() == [
        {"name": "photo", "enabled": True},
        {"name": "video", "enabled": True},
    ]
    create_bank(client, "TYPES")
    client.post("/c/bank/TYPES/signal", json={"pdq": EXAMPLE["pdq"]})
    idx = client.get("/c/signal_type/index").json()
    assert set(idx) == {"pdq", "video_md5", "tlsh"}
    assert set(idx["pdq"]) == {
        "db_size",
        "index_size",
        "index_out_of_date",
        "newest_db_item",
        "index_built_to",
    }
    assert idx["pdq"]["db_size"] == idx["pdq"]["index_size"] == 1
    assert idx["pdq"]["index_out_of_date"] is False
    assert client.get("/c/signal_type/index", params={"signal_type": "nope"}).status_code == 400
    try:
        r = client.put("/c/signal_type/video_md5", json={"enabled_ratio": 0.0})
        assert r.status_code == 204
        assert {"name": "video_md5", "enabled_ratio": 0.0} in client.get("/c/signal_type").json()
        r = client.get("/m/lookup", params={"signal_type": "video_md5", "signal": "0" * 32})
        assert r.status_code == 400 and "not enabled" in r.json()["message"]
    finally:
        assert (
            client.put("/c/signal_type/video_md5", json={"enabled_ratio": 1.0}).status_code == 204
        )
    assert client.put("/c/signal_type/pdq", json={}).status_code == 400
