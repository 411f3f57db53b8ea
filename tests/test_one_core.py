"""One core: `tipline scan` and the service match with the same BankIndex and get the same
answers; every registered signal type keeps the signal-type contract; a banked video reported
to the service is matched by vPDQ in the pipeline (a real `tipline worker`)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from conftest import encode, noise_image, photo
from tipline.banks.bank import Bank, Entry
from tipline.banks.formats import FORMATS, parse_hash_list, write_hash_list
from tipline.errors import InvalidSignalError
from tipline.findings import Finding
from tipline.index.bank_index import BankIndex
from tipline.index.signal_index import new_index
from tipline.record import ItemRecord
from tipline.scan.runner import bank_index_for_scan
from tipline.service.matching import MatchService
from tipline.signals import types as signal_types
from tipline.signals.types import SignalType, registered
from tipline.store.banks import SqlBankStore

# --------------------------------------------------------------------------- contract


def _types() -> list[SignalType]:
    return list(registered().values())


@pytest.mark.parametrize("st", _types(), ids=lambda t: t.name)
def test_signal_type_normalises_its_examples_and_refuses_junk(st: SignalType) -> None:
    assert len(st.examples) >= 2, "each type ships two examples for the docs and these tests"
    for ex in st.examples:
        once = st.normalise(ex)
        assert st.normalise(once) == once
    assert len({st.normalise(e) for e in st.examples}) == len(st.examples)
    for junk in ("", "zz" * 16, "not a hash"):
        with pytest.raises(InvalidSignalError):
            st.normalise(junk)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("st", _types(), ids=lambda t: t.name)
def test_signal_type_round_trips_through_every_bank_format(st: SignalType, fmt: str) -> None:
    entries = [Entry("B", st.name, st.normalise(e), id=i) for i, e in enumerate(st.examples)]
    buf = io.StringIO()
    assert write_hash_list(entries, fmt, buf) == len(entries)
    parsed = parse_hash_list(io.StringIO(buf.getvalue()), fmt, default_signal_type=st.name)
    assert parsed.errors == []
    assert [(e.signal_type, e.signal) for e in parsed.entries] == [
        (e.signal_type, e.signal) for e in entries
    ]


@pytest.mark.parametrize("st", _types(), ids=lambda t: t.name)
def test_signal_type_index_adds_removes_and_queries(st: SignalType) -> None:
    a, b = (st.normalise(e) for e in st.examples[:2])
    index = new_index(st.index, None)
    index.add([1, 2], [a, b])
    assert len(index) == 2
    got = index.query([a], st.default_threshold)
    assert 1 in got.ids.tolist()
    assert int(got.distances[got.ids.tolist().index(1)]) == 0
    index.remove([1])
    assert len(index) == 1
    assert 1 not in index.query([a], st.default_threshold).ids.tolist()
    assert st.distance(a, a) == 0 and st.distance(a, b) > 0


def _record_for(st: SignalType, signal: str) -> ItemRecord:
    rec = ItemRecord(path="x")
    value: object = json.loads(signal) if st.name == "vpdq" else signal
    setattr(rec, st.record_field, value)
    if st.name == "pdq":
        rec.pdq_quality = 100
    return rec


@pytest.mark.parametrize("st", _types(), ids=lambda t: t.name)
def test_signal_type_matches_an_item_through_the_bank_index(st: SignalType) -> None:
    a, b = (st.normalise(e) for e in st.examples[:2])
    idx = BankIndex.build([Bank("B")], [Entry("B", st.name, a, label="L", id=7)])
    rec = _record_for(st, a)
    assert st.record_queries(rec), f"{st.name}: a record carrying the signal gives a query"
    [m] = idx.match(rec)
    assert (m.bank, m.entry_id, m.signal_type, m.distance, m.label) == ("B", 7, st.name, 0, "L")
    assert idx.match(_record_for(st, b)) == [] or st.uses_bank_threshold


def test_a_registered_type_is_used_everywhere_and_unregistered_again() -> None:
    colour = SignalType(
        "colour_md5",
        32,
        "test-only: a second exact type",
        examples=("0" * 31 + "1", "0" * 31 + "2"),
        record_field="md5",
    )
    signal_types.register(colour)
    try:
        assert signal_types.signal_type("colour_md5") is colour
        idx = BankIndex.build([Bank("B")], [Entry("B", "colour_md5", "0" * 31 + "1", id=1)])
        [m] = idx.match(ItemRecord(path="x", md5="0" * 31 + "1"))
        assert m.signal_type == "colour_md5"
    finally:
        signal_types.unregister("colour_md5")
    with pytest.raises(InvalidSignalError):
        signal_types.signal_type("colour_md5")


# --------------------------------------------------------------------------- equivalence

RNG = np.random.default_rng(2026)


def _code() -> np.ndarray:
    return RNG.integers(0, 256, 32, dtype=np.uint8)


def _flip(code: np.ndarray, n: int) -> str:
    c = code.copy()
    for bit in RNG.choice(256, n, replace=False).tolist():
        c[bit // 8] ^= 1 << (bit % 8)
    return c.tobytes().hex()


def _hex(n: int) -> str:
    return "".join("0123456789abcdef"[int(x)] for x in RNG.integers(0, 16, n))


def _frames(codes: list[np.ndarray]) -> list[str]:
    return [f"{c.tobytes().hex()},100,{i}.000" for i, c in enumerate(codes)]


def _corpus() -> tuple[list[Bank], list[Entry], list[ItemRecord]]:
    banks = [
        Bank("ALERT", "alert", 31),
        Bank("TIGHT", "alert", 8),
        Bank("BENIGN", "ignore", 31),
        Bank("OFF", "alert", 31, enabled=False),
    ]
    entries: list[Entry] = []
    records: list[ItemRecord] = []

    def entry(bank: str, st: str, sig: str, label: str = "") -> None:
        entries.append(Entry(bank, st, sig, label=label or f"{bank}-{st}"))

    pdq = [_code() for _ in range(40)]
    for i, c in enumerate(pdq):
        entry(["ALERT", "TIGHT", "BENIGN", "OFF"][i % 4], "pdq", c.tobytes().hex())
    entry("BENIGN", "pdq", pdq[0].tobytes().hex())  # suppresses ALERT's first
    for i, c in enumerate(pdq[:24]):
        dihedral = [_code().tobytes().hex() for _ in range(7)] + [_flip(c, 5 + i)]
        records.append(ItemRecord(path=f"p{i}", pdq=_flip(c, i), pdq_quality=90))
        records.append(
            ItemRecord(
                path=f"d{i}",
                pdq=dihedral[0],
                pdq_quality=90,
                pdq_dihedral=dihedral,  # one rotation is near a banked code
            )
        )
    records.append(ItemRecord(path="lowq", pdq=pdq[1].tobytes().hex(), pdq_quality=10))
    for st, n in (("md5", 32), ("sha1", 40), ("sha256", 64)):
        for bank in ("ALERT", "BENIGN", "OFF"):
            value = _hex(n)
            entry(bank, st, value)
            records.append(ItemRecord(path=f"{st}-{bank}", **{st: value}))  # type: ignore[arg-type]
    shared = _hex(32)
    entry("ALERT", "md5", shared)
    entry("BENIGN", "md5", shared)
    records.append(ItemRecord(path="md5-both", md5=shared))
    # model files: own hashes and hashes an image cites
    v1, v2, v3, v3short, full = _hex(8), _hex(10), _hex(64), _hex(12), _hex(64)
    entry("ALERT", "autov1", v1)
    entry("ALERT", "autov2", v2)
    entry("ALERT", "autov3", v3)
    entry("TIGHT", "autov3", v3short)
    entry("ALERT", "sha256", full)
    records.append(ItemRecord(path="model", autov1=v1, autov2=v2, autov3=v3))
    records.append(ItemRecord(path="model-short", autov3=v3short + _hex(52)))
    finding = Finding(
        "generator_metadata",
        "ai_generated",
        "AUTOMATIC1111",
        evidence={
            "model_hash": full[:10],
            "loras": [{"name": "x", "hash": v3[:12]}, {"name": "y", "hash": v3short}],
        },
    )
    records.append(ItemRecord(path="cites.png", provenance=[finding]))
    records.append(
        ItemRecord(
            path="cites-v1.png",
            provenance=[Finding("generator_metadata", "ai_generated", evidence={"model_hash": v1})],
        )
    )
    # videos
    vids = [[_code() for _ in range(6)] for _ in range(3)]
    for i, frames in enumerate(vids):
        entry(
            ["ALERT", "BENIGN", "OFF"][i],
            "vpdq",
            json.dumps([f.split(",")[0] + ",100,0.0" for f in _frames(frames)]),
        )
    for i, frames in enumerate(vids):
        near = [np.frombuffer(bytes.fromhex(_flip(c, 3)), np.uint8) for c in frames]
        records.append(ItemRecord(path=f"v{i}.mp4", vpdq=_frames(near)))
        records.append(ItemRecord(path=f"v{i}-cut.mp4", vpdq=_frames(near[:2] + [_code()] * 4)))
    records.append(ItemRecord(path="v-unrelated.mp4", vpdq=_frames([_code() for _ in range(5)])))
    records.append(ItemRecord(path="nothing"))
    return banks, entries, records


def _normalised(entries: list[Entry]) -> list[Entry]:
    out = []
    for e in entries:
        st = signal_types.signal_type(e.signal_type)
        out.append(Entry(e.bank, st.name, st.normalise(e.signal), label=e.label))
    return out


def _dump(matches: list) -> list[dict]:  # type: ignore[type-arg]
    return [m.to_json() for m in matches]


def test_scan_and_service_give_identical_matches(engine: Engine) -> None:
    """The same banks and records through the scan path (a bulk-built index of the enabled
    banks) and the service path (the live index: half the entries there at start-up, half
    added while it runs, a bank and some entries disabled and enabled again on the way)."""
    banks, raw, records = _corpus()
    entries = _normalised(raw)
    store = SqlBankStore(engine)
    for b in banks:
        store.create_bank(b)
    half = len(entries) // 2
    store.add_entries(entries[:half])
    service = MatchService(lambda: store, None)
    service.load()
    try:
        service.add_entries(entries[half:])
        some = [e.id for e in store.iter_entries("ALERT")][:5]
        service.set_entries_enabled("ALERT", some, False)
        service.set_entries_enabled("ALERT", some, True)
        service.update_bank(Bank("TIGHT", "alert", 8, enabled=False))
        service.update_bank(Bank("TIGHT", "alert", 8, enabled=True))
        scan = bank_index_for_scan(store)
        matched = 0
        for rec in records:
            want = _dump(scan.match(rec))
            assert _dump(service.match_record(rec)) == want, rec.path
            matched += bool(want)
        kinds = {
            (m.signal_type, m.via is not None, m.suppressed_by is not None)
            for rec in records
            for m in scan.match(rec)
        }
    finally:
        service.close()
        store.close()
    # the corpus exercises every signal type, cited hashes and the ignore rule
    assert {k[0] for k in kinds} == {
        "pdq",
        "md5",
        "sha1",
        "sha256",
        "autov1",
        "autov2",
        "autov3",
        "vpdq",
    }
    assert any(k[1] for k in kinds) and any(k[2] for k in kinds)
    assert matched > len(records) // 2


def test_dihedral_on_and_off_agree_between_scan_and_service(engine: Engine) -> None:
    code = _code()
    store = SqlBankStore(engine)
    store.create_bank(Bank("ALERT"))
    store.add_entries([Entry("ALERT", "pdq", code.tobytes().hex(), label="L")])
    service = MatchService(lambda: store, None)
    service.load()
    try:
        scan = bank_index_for_scan(store)
        far = _code().tobytes().hex()
        off = ItemRecord(path="r", pdq=far, pdq_quality=90)
        on = ItemRecord(path="r", pdq=far, pdq_quality=90, pdq_dihedral=[far, _flip(code, 4)])
        assert scan.match(off) == service.match_record(off) == []
        [m] = scan.match(on)
        assert _dump(service.match_record(on)) == _dump([m]) and m.distance == 4
    finally:
        service.close()
        store.close()


def test_scan_cli_and_service_agree_on_real_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tipline scan --dihedral` on real files, and the service's match of the records it
    printed: the same matches (a mirrored copy found through its dihedral hashes)."""
    from PIL import Image

    from tipline.cli.app import _register, app
    from tipline.scan.hashing import HashOptions, hash_bytes

    data = tmp_path / "data"
    monkeypatch.setenv("TIPLINE_DATA_DIR", str(data))
    files = tmp_path / "files"
    files.mkdir()
    original = photo("astronaut", (256, 256))
    (files / "copy.png").write_bytes(encode(original.resize((240, 240)), "PNG"))
    (files / "mirror.png").write_bytes(
        encode(original.transpose(Image.Transpose.FLIP_LEFT_RIGHT), "PNG")
    )
    (files / "other.png").write_bytes(encode(noise_image(3, 200, 150), "PNG"))
    rec = hash_bytes(encode(original, "PNG"), "o.png", HashOptions(provenance=False))
    _register()
    runner = CliRunner()
    for args in (
        ["bank", "create", "KNOWN"],
        ["bank", "add", "KNOWN", "--signal-type", "pdq", rec.pdq or "", "--label", "L"],
        ["bank", "add", "KNOWN", "--signal-type", "md5", rec.md5 or ""],
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
    out = tmp_path / "r.jsonl"
    res = runner.invoke(app, ["scan", str(files), "--dihedral", "-o", str(out), "--jobs", "1"])
    assert res.exit_code == 1, res.output
    printed = [ItemRecord.from_json(json.loads(line)) for line in out.read_text().splitlines()]
    store = SqlBankStore(f"sqlite:///{data / 'tipline.sqlite3'}")
    service = MatchService(lambda: store, None)
    service.load()
    try:
        for r in printed:
            want = [m.to_json() for m in r.matches]
            assert _dump(service.match_record(r)) == want, r.path
        by_name = {Path(r.path).name: r for r in printed}
        assert by_name["mirror.png"].matches and by_name["copy.png"].matches
        assert by_name["other.png"].matches == []
    finally:
        service.close()
        store.close()


# --------------------------------------------------------------------------- video e2e


@pytest.mark.slow
def test_reported_video_in_a_bank_is_matched_by_vpdq_in_the_pipeline(
    db_url: str, engine: Engine, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """A report carrying a re-encoded copy of a banked video, through the intake and a real
    `tipline worker` process: the item is matched by the bank's vPDQ entry."""
    pytest.importorskip("av")
    from tipline.demo.clips import render_clip, transcode
    from tipline.scan.hashing import signals_for_file
    from tipline.service.intake import IntakeContext, IntakeSettings, NewReport, create_reports
    from tipline.store.jobs import JobQueue
    from tipline.store.tables import Item

    original = render_clip(tmp_path / "orig.mp4", "pan-coffee", (240, 180), 6.0)
    copy = transcode(original, tmp_path / "copy.mp4", crf=36)
    sig = signals_for_file(original)
    store = SqlBankStore(engine)
    store.create_bank(Bank("KNOWN_VIDEO"))
    # only the vPDQ signal is banked: the copy's bytes differ, so no MD5 can match
    store.add_entries([Entry("KNOWN_VIDEO", "vpdq", sig["vpdq"], label="DEMO-benign")])
    ctx = IntakeContext(session_factory, JobQueue(engine), IntakeSettings(secret=b"s"))
    new = NewReport(uploads=[("clip.mp4", copy.read_bytes())])
    create_reports(ctx, [new], "partner_api")
    env = {
        **os.environ,
        "TIPLINE_DATA_DIR": str(tmp_path / "data"),
        "TIPLINE_DATABASE_URL": db_url,
        "TIPLINE_MEDIA_MODE": "hash-only",
        "TIPLINE_FETCH_URLS": "0",
    }
    res = subprocess.run(
        [sys.executable, "-m", "tipline", "worker", "--drain", "--poll-interval", "0.05"],
        env=env,
        capture_output=True,
        timeout=240,
        check=False,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    with session_factory() as s:
        item = s.scalars(select(Item)).one()
        assert item.media_type == "video/mp4"
        [m] = item.matches
        assert (m["bank"], m["signal_type"], m["label"]) == ("KNOWN_VIDEO", "vpdq", "DEMO-benign")
        assert m["query_match_pct"] >= 80
        assert item.status == "matched"
