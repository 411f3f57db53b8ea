"""HMA's ``tests/test_e2e_workflow.py``, replayed over HTTP (HMA 1.1.7,
``hasher-matcher-actioner/src/OpenMediaMatch/``)."""

from __future__ import annotations

import random

import httpx

from hma_compat.conftest import create_bank


def _examples() -> list[str]:
    """16 benign PDQ examples as python-threatexchange's have them: 12 near-duplicates of one
    hash (a few bits apart) and 4 unrelated hashes."""
    rng = random.Random(1609)
    base = rng.getrandbits(256)
    near = [
        base ^ sum(1 << b for b in rng.sample(range(256), rng.randint(1, 12))) for _ in range(12)
    ]
    return [f"{h:064x}" for h in [*near, *(rng.getrandbits(256) for _ in range(4))]]


def test_add_hashes_and_find_match(client: httpx.Client) -> None:
    """tests/test_e2e_workflow.py::test_add_hashes_and_find_match; curation.py
    ``bank_add_as_signals``, matching.py ``index_status`` and ``lookup_get``: 16 hashes added,
    the index holds 16, the last one is found alone at distance "0", an unrelated one not."""
    create_bank(client, "TEST_BANK")
    hashes = _examples()
    ids = []
    for pdq in hashes:
        r = client.post("/c/bank/TEST_BANK/signal", json={"pdq": pdq})
        assert r.status_code == 200, r.text
        ids.append(r.json()["id"])
    assert ids == list(range(ids[0], ids[0] + 16))
    r = client.get("/m/index/status", params={"signal_type": "pdq"})
    assert r.status_code == 200
    info = r.json()["pdq"]
    assert info["present"] is True and info["size"] == len(hashes)
    r = client.get("/m/lookup", params={"signal_type": "pdq", "signal": hashes[-1]})
    assert r.status_code == 200
    assert r.json() == {"TEST_BANK": [{"bank_content_id": ids[-1], "distance": "0"}]}
    r = client.get("/m/lookup", params={"signal_type": "pdq", "signal": "5" * 64})
    assert r.status_code == 200 and r.json() == {}
