"""Recall beyond plain PDQ (bench/recall.py measures it at scale): each extra query finds a
transformed copy plain PDQ misses, and unrelated images find nothing.

Every image is benign: scikit-image sample photographs that show no people, transformed here,
and procedural images from bench/synthetic.py.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import recall
import synthetic
from tipline.record import ItemRecord
from tipline.scan.hashing import HashOptions, hash_bytes
from tipline.signals import pdq_variants

FAST = HashOptions(pdq_mode="fast", provenance=False)
ALL = replace(FAST, dihedral=True, trim_borders=True, crop_queries=True)
#: transform -> the query group (name or prefix) that must find it where plain PDQ does not
NEEDS = {
    "rotate_90": "dihedral",
    "flip": "dihedral",
    "border_8pct": "border_trimmed",
    "caption_band": "border_trimmed",
    "pillarbox_blur": "border_trimmed",
    "crop_2pct": "uncrop_",
    "crop_5pct": "uncrop_",
}


@pytest.fixture(scope="module")
def bank() -> tuple[list[np.ndarray], object]:
    import skimage.data

    origs = [
        np.asarray(Image.fromarray(getattr(skimage.data, n)()).convert("RGB"))
        for n in ("chelsea", "coffee")
    ]
    index, _ = recall.build_bank([("o", a) for a in origs])
    return origs, index


def _found(index: object, rec: ItemRecord, eid: int) -> set[str | None]:
    return {m.via for m in index.match(rec) if m.entry_id == eid}  # type: ignore[attr-defined]


@pytest.mark.parametrize("transform", list(recall.TRANSFORMS))
def test_each_transform_is_found(bank: tuple[list[np.ndarray], object], transform: str) -> None:
    """Plain PDQ misses each framed, rotated or re-cropped copy; the query group for it finds
    it (crop_5pct: recall 67% in bench/recall.py, so one of the two originals suffices)."""
    origs, index = bank
    found = 0
    for i, arr in enumerate(origs):
        im = recall.TRANSFORMS[transform](Image.fromarray(arr))
        data = recall.jpeg(im, 50 if transform == "jpeg_q50" else 90)
        rec = hash_bytes(data, "q.jpg", ALL)
        plain = recall.restrict(rec, {None})
        if transform not in NEEDS:
            assert _found(index, plain, i + 1) == {None}
            found += 1
            continue
        assert not _found(index, plain, i + 1), "plain PDQ already finds it"
        rec.matches = index.match(rec)  # type: ignore[attr-defined]
        vias = [m.get("via") for m in rec.to_json()["matches"] if m["entry_id"] == i + 1]
        assert all(str(v).startswith(NEEDS[transform]) for v in vias), vias
        found += bool(vias)
    assert found >= (1 if transform == "crop_5pct" else len(origs))


def test_options_off_leave_the_record_as_before() -> None:
    data = recall.jpeg(recall.TRANSFORMS["border_8pct"](Image.fromarray(recall._scene(
        np.random.default_rng(1), 320, 240))))  # fmt: skip
    rec = hash_bytes(data, "q.jpg", FAST)
    assert rec.pdq_variants is None and rec.pdq_dihedral is None
    assert "pdq_variants" not in rec.to_json()
    on = hash_bytes(data, "q.jpg", ALL)
    assert set(on.pdq_variants or {}) == {"border_trimmed", *pdq_variants.CROPS}
    assert ItemRecord.from_json(on.to_json()).pdq_variants == on.pdq_variants


def test_unrelated_images_match_nothing(bank: tuple[list[np.ndarray], object]) -> None:
    _, index = bank
    rng = np.random.default_rng(5)
    for k in range(40):
        fn = synthetic.PROCEDURAL[k % len(synthetic.PROCEDURAL)]
        y = np.clip(fn(rng, 160, 200), 0, 255).astype(np.uint8)
        data = recall.jpeg(Image.fromarray(y).convert("RGB"))
        assert index.match(hash_bytes(data, "u.jpg", ALL)) == []  # type: ignore[attr-defined]


def test_trim_box_finds_the_picture() -> None:
    pic = np.random.default_rng(2).uniform(0, 255, (100, 140)).astype(np.float32)
    framed = np.pad(pic, ((12, 12), (20, 20)), constant_values=3.0)
    assert pdq_variants.trim_box(framed) == (12, 112, 20, 160)
    assert pdq_variants.trim_box(pic) is None
