"""`tipline scan` end to end: matching, formats, exit status, hostile inputs, --resume."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import encode, noise_image, photo
from tipline.banks import Bank, Entry
from tipline.cli.app import _register, app
from tipline.scan.hashing import HashOptions, hash_bytes
from tipline.store.banks import open_bank_store as open_store

_register()
runner = CliRunner()


def run(data: Path, *args: str) -> tuple[int, str, str]:
    res = runner.invoke(app, ["--data-dir", str(data), *args], catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


def records(path: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        assert r["path"] not in out, f"duplicate record {r['path']}"
        out[r["path"]] = r
    return out


@pytest.fixture
def banked(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    """A data dir with bank KNOWN (alert) holding the hashes of two benign photos."""
    data = tmp_path / "data"
    media = tmp_path / "media"
    media.mkdir()
    store = open_store(data)
    store.create_bank(Bank("KNOWN", role="alert"))
    sigs: dict[str, str] = {}
    for name in ("coffee", "rocket"):
        rec = hash_bytes(encode(photo(name), "PNG"), name, HashOptions())
        sigs[name] = rec.pdq or ""
        store.add_entries([Entry("KNOWN", "pdq", rec.pdq or "", label="DEMO-benign-stand-in")])
    store.close()
    return data, media, sigs


def test_scan_finds_transformed_copies_and_exits_1(
    banked: tuple[Path, Path, dict[str, str]],
) -> None:
    data, media, _ = banked
    (media / "sub").mkdir()
    photo("coffee").resize((300, 200)).save(media / "sub" / "coffee-small.jpg", quality=70)
    photo("rocket").save(media / "rocket.webp", "WEBP")
    photo("chelsea").save(media / "cat.jpg")
    code, _, err = run(data, "scan", str(media), "-o", str(media.parent / "out.jsonl"), "-j", "2")
    assert code == 1, err
    recs = records(media.parent / "out.jsonl")
    assert len(recs) == 3
    small = recs[str(media / "sub" / "coffee-small.jpg")]
    assert small["matches"] and small["matches"][0]["bank"] == "KNOWN"
    assert small["matches"][0]["signal_type"] == "pdq"
    assert 0 < small["matches"][0]["distance"] <= 31
    assert small["matches"][0]["label"] == "DEMO-benign-stand-in"
    assert recs[str(media / "rocket.webp")]["matches"]
    assert recs[str(media / "cat.jpg")]["matches"] == []
    for key in (
        "path",
        "media_type",
        "size",
        "md5",
        "sha1",
        "sha256",
        "pdq",
        "pdq_quality",
        "matches",
        "errors",
    ):
        assert key in small


def test_scan_no_match_exits_0_and_prints_jsonl(banked: tuple[Path, Path, dict[str, str]]) -> None:
    data, media, _ = banked
    photo("chelsea").save(media / "cat.png")
    code, out, _ = run(data, "scan", str(media))
    assert code == 0
    rec = json.loads(out.strip())
    assert rec["media_type"] == "image/png" and rec["matches"] == []


def test_overlapping_paths_scan_each_file_once(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    noise_image(1).save(tmp_path / "a" / "b" / "x.png")
    noise_image(2).save(tmp_path / "a" / "y.png")
    code, out, _ = run(tmp_path, "scan", str(tmp_path / "a"), str(tmp_path / "a" / "b"))
    assert code == 0 and len(out.splitlines()) == 2


def test_exact_hash_match_and_bank_selection(tmp_path: Path) -> None:
    data = tmp_path / "d"
    f = tmp_path / "notes.txt"
    f.write_text("benign text file used as a stand-in\n")
    rec = hash_bytes(f.read_bytes(), str(f), HashOptions())
    store = open_store(data)
    store.create_bank(Bank("SHA_BANK"))
    store.create_bank(Bank("OTHER"))
    store.add_entries([Entry("SHA_BANK", "sha256", rec.sha256 or "", label="x")])
    store.close()
    code, out, _ = run(data, "scan", str(f))
    assert code == 1
    m = json.loads(out)["matches"][0]
    assert (m["bank"], m["signal_type"], m["distance"]) == ("SHA_BANK", "sha256", 0)
    code, out, _ = run(data, "scan", str(f), "--bank", "OTHER")
    assert code == 0 and json.loads(out)["matches"] == []
    code, _, _err = run(data, "scan", str(f), "--bank", "NOPE")
    assert code == 2


def test_ignore_bank_suppresses_false_positive(banked: tuple[Path, Path, dict[str, str]]) -> None:
    data, media, sigs = banked
    store = open_store(data)
    store.create_bank(Bank("BENIGN", role="ignore"))
    store.add_entries([Entry("BENIGN", "pdq", sigs["coffee"], label="known benign")])
    store.close()
    photo("coffee").save(media / "coffee.jpg", quality=90)
    code, out, err = run(data, "scan", str(media))
    assert code == 0, err
    rec = json.loads(out)
    roles = {m["bank"]: m for m in rec["matches"]}
    assert roles["BENIGN"]["role"] == "ignore"
    assert roles["KNOWN"]["suppressed_by"] == roles["BENIGN"]["entry_id"]


def test_per_bank_threshold(banked: tuple[Path, Path, dict[str, str]]) -> None:
    data, media, _ = banked
    photo("coffee").resize((300, 200)).save(media / "c.jpg", quality=40)
    code, out, _ = run(data, "scan", str(media))
    dist = json.loads(out)["matches"][0]["distance"]
    assert code == 1 and dist > 0
    store = open_store(data)
    b = store.get_bank("KNOWN")
    b.pdq_threshold = dist - 1
    store.update_bank(b)
    store.close()
    code, out, _ = run(data, "scan", str(media))
    assert code == 0 and json.loads(out)["matches"] == []


def test_dihedral_finds_rotated_copy(banked: tuple[Path, Path, dict[str, str]]) -> None:
    data, media, _ = banked
    photo("rocket").transpose(Image.Transpose.ROTATE_90).save(media / "r.jpg", quality=90)
    # dihedral lookup is now on by default in scan (issue 11 part 3: 8 queries cost ~nothing,
    # bench/recall.py); --no-dihedral gives plain PDQ, which misses the rotated copy
    assert run(data, "scan", str(media), "--no-dihedral")[0] == 0
    for args in ((), ("--dihedral",)):
        code, out, _ = run(data, "scan", str(media), *args)
        rec = json.loads(out)
        assert code == 1 and len(rec["pdq_dihedral"]) == 8 and rec["matches"]
        assert rec["matches"][0]["via"] == "dihedral"


def test_csv_and_html_output(banked: tuple[Path, Path, dict[str, str]]) -> None:
    data, media, _ = banked
    photo("coffee").save(media / "a.jpg")
    photo("chelsea").save(media / "b.jpg")
    (media / "c.jpg").write_bytes(b"")
    out_csv = media.parent / "r.csv"
    code, _, _ = run(data, "scan", str(media), "-o", str(out_csv))
    assert code == 2  # the empty file could not be scanned
    rows = {r["path"]: r for r in csv.DictReader(io.StringIO(out_csv.read_text()))}
    assert rows[str(media / "a.jpg")]["matched"] == "yes"
    assert rows[str(media / "a.jpg")]["banks"] == "KNOWN"
    assert rows[str(media / "b.jpg")]["matched"] == "no"
    assert "empty_file" in rows[str(media / "c.jpg")]["errors"]
    assert not (media.parent / "r.csv.journal.jsonl").exists()
    out_html = media.parent / "r.html"
    run(data, "scan", str(media), "-o", str(out_html))
    html = out_html.read_text()
    assert "KNOWN" in html and "a.jpg" in html and "empty_file" in html
    assert "<img" not in html and "data:image" not in html and "url(" not in html


def test_csv_and_html_show_ai_evidence_without_prompt_text(tmp_path: Path) -> None:
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text(
        "parameters",
        "a lighthouse on a cliff at sunset, oil painting\nNegative prompt: blurry\n"
        "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 512x512, "
        "Model hash: 0123456789, Model: landscape_v1",
    )
    media = tmp_path / "m"
    media.mkdir()
    photo("rocket").save(media / "gen.png", pnginfo=info)
    for name in ("r.csv", "r.html"):
        code, _, _ = run(tmp_path, "scan", str(media), "-o", str(tmp_path / name))
        assert code == 0
    row = next(csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text())))
    assert row["ai_evidence"] == "strong"
    assert "generator_metadata:ai_generated" in row["provenance"]
    for name in ("r.csv", "r.html"):
        text = (tmp_path / name).read_text()
        assert "lighthouse" not in text
    assert "strong" in (tmp_path / "r.html").read_text()


def test_hash_command(tmp_path: Path) -> None:
    p = tmp_path / "x.png"
    noise_image(1, 200, 200).save(p)
    code, out, _ = run(tmp_path, "hash", str(p), "--pdq-mode", "reference", "--dihedral")
    rec = json.loads(out)
    assert code == 0 and "matches" not in rec and len(rec["pdq_dihedral"]) == 8
    assert rec["pdq"] == rec["pdq_dihedral"][0]
    code, _, _ = run(tmp_path, "hash", str(tmp_path / "missing.jpg"))
    assert code == 2


# ---------------------------------------------------------------- hostile input


def _zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def test_archives_scanned_in_place(banked: tuple[Path, Path, dict[str, str]]) -> None:
    data, media, _ = banked
    jpg = encode(photo("coffee"), "JPEG")
    _zip(media / "a.zip", {"inner/c.jpg": jpg, "note.txt": b"hello"})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as t:
        info = tarfile.TarInfo("deep/r.png")
        png = encode(photo("rocket"), "PNG")
        info.size = len(png)
        t.addfile(info, io.BytesIO(png))
    (media / "b.tar.gz").write_bytes(buf.getvalue())
    before = set(os.listdir(media))
    code, out, _ = run(data, "scan", str(media))
    assert set(os.listdir(media)) == before  # nothing extracted
    recs = {json.loads(line)["path"]: json.loads(line) for line in out.splitlines()}
    zpath = f"{media / 'a.zip'}!inner/c.jpg"
    tpath = f"{media / 'b.tar.gz'}!deep/r.png"
    assert recs[zpath]["matches"] and recs[zpath]["container"] == str(media / "a.zip")
    assert recs[tpath]["matches"]
    assert recs[str(media / "a.zip")]["media_type"] == "application/zip"
    assert recs[str(media / "b.tar.gz")]["media_type"] == "application/gzip"
    assert code == 1


def test_zip_bomb_member_is_refused(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z, z.open("zeros.bin", "w") as m:
        chunk = b"\x00" * (1 << 20)
        for _ in range(200):
            m.write(chunk)
    assert bomb.stat().st_size < 1_000_000
    code, out, _ = run(tmp_path, "scan", str(bomb))
    recs = {json.loads(line)["path"]: json.loads(line) for line in out.splitlines()}
    member = recs[f"{bomb}!zeros.bin"]
    assert "compression ratio" in member["errors"][0] and member["sha256"] is None
    assert code == 2


def test_zip_with_lying_size_field(tmp_path: Path) -> None:
    data = b"A" * 100_000
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.txt", data)
    blob = bytearray(raw.getvalue())
    # patch the central directory's uncompressed size (offset 24 in the entry) to claim 10 bytes
    cd = blob.rfind(b"PK\x01\x02")
    blob[cd + 24 : cd + 28] = (10).to_bytes(4, "little")
    (tmp_path / "liar.zip").write_bytes(bytes(blob))
    code, out, _ = run(tmp_path, "scan", str(tmp_path / "liar.zip"))
    recs = [json.loads(line) for line in out.splitlines()]
    member = next(r for r in recs if r["path"].endswith("!a.txt"))
    assert member["errors"] and member["sha256"] is None
    assert code == 2


@pytest.mark.slow
def test_zip_with_100k_members(tmp_path: Path) -> None:
    z = tmp_path / "many.zip"
    with zipfile.ZipFile(z, "w", zipfile.ZIP_STORED) as zf:
        for i in range(100_000):
            zf.writestr(f"m{i}.txt", b"x")
    code, out, _ = run(tmp_path, "scan", str(z), "--max-archive-members", "2000")
    recs = [json.loads(line) for line in out.splitlines()]
    own = next(r for r in recs if r["path"] == str(z))
    assert "100,000 members exceed" in own["errors"][0]
    assert len(recs) == 2001
    assert code == 2


def test_archives_nested_10_deep(tmp_path: Path) -> None:
    inner = encode(noise_image(2), "PNG")
    name = "x.png"
    for level in range(10):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr(name, inner)
        inner, name = buf.getvalue(), f"level{level}.zip"
    (tmp_path / "nested.zip").write_bytes(inner)
    code, out, _ = run(tmp_path, "scan", str(tmp_path / "nested.zip"))
    recs = [json.loads(line) for line in out.splitlines()]
    too_deep = [r for r in recs if any("max-archive-depth" in e for e in r["errors"])]
    assert len(too_deep) == 1 and too_deep[0]["path"].count("!") == 4
    assert too_deep[0]["sha256"]  # still hashed, just not opened
    assert code == 2


def test_bad_inputs_in_one_scan_all_reported(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    (d / "empty.jpg").write_bytes(b"")
    good = encode(noise_image(3, 300, 300), "JPEG")
    (d / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (d / "text.jpg").write_text("hello, I am text\n")
    (d / "good.jpg").write_bytes(good)
    os.symlink(d / "loop_b", d / "loop_a")
    os.symlink(d / "loop_a", d / "loop_b")
    os.mkfifo(d / "pipe")
    code, out, err = run(tmp_path, "scan", str(d), "-j", "2")
    recs = {Path(json.loads(line)["path"]).name: json.loads(line) for line in out.splitlines()}
    assert code == 2
    assert recs["good.jpg"]["errors"] == [] and recs["good.jpg"]["pdq"]
    assert recs["empty.jpg"]["errors"][0].startswith("empty_file")
    assert recs["truncated.jpg"]["errors"][0].startswith("corrupt_media")
    assert recs["text.jpg"]["errors"] == []  # read as the text it is: hashed, not an error
    assert recs["text.jpg"]["warnings"] == ["name says image/jpeg, content is text/plain"]
    assert recs["loop_a"]["errors"][0].startswith("symlink_loop")
    assert recs["pipe"]["errors"][0].startswith("not_a_regular_file")
    assert "6 with errors" in err.replace(",", "") or "with errors" in err


def test_directory_symlink_loop_with_follow(tmp_path: Path) -> None:
    d = tmp_path / "tree"
    (d / "sub").mkdir(parents=True)
    noise_image(1).save(d / "sub" / "a.png")
    os.symlink(d, d / "sub" / "up")
    code, out, _ = run(tmp_path, "scan", str(d), "--follow-symlinks")
    recs = [json.loads(line) for line in out.splitlines()]
    assert any("symlink_loop" in " ".join(r["errors"]) for r in recs)
    assert sum(1 for r in recs if r["path"].endswith("a.png")) == 1
    assert code == 2
    code, out, _ = run(tmp_path, "scan", str(d))  # links to directories not followed by default
    assert code == 0 and len(out.splitlines()) == 1


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "secret.jpg"
    p.write_bytes(encode(noise_image(4), "JPEG"))
    if os.geteuid() == 0:
        # root reads everything; make open() fail the way it does for an unprivileged user
        import builtins

        real_open = builtins.open

        def deny(file: object, *a: object, **k: object) -> object:
            if str(file) == str(p):
                raise PermissionError(13, "Permission denied", str(p))
            return real_open(file, *a, **k)  # type: ignore[call-overload]

        monkeypatch.setattr("tipline.scan.items.open", deny, raising=False)
    else:
        p.chmod(0)
    code, out, _ = run(tmp_path, "scan", str(p), "-j", "1")
    rec = json.loads(out)
    assert code == 2 and rec["errors"][0] == "unreadable: Permission denied"


# ---------------------------------------------------------------- resume


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "tipline", *args]


@pytest.mark.slow
def test_kill_9_then_resume_gives_each_item_exactly_once(tmp_path: Path) -> None:
    media = tmp_path / "media"
    media.mkdir()
    n = 0
    for i in range(160):
        photo("coffee", size=(1200, 800)).rotate(i, expand=False).save(
            media / f"img{i:03}.jpg", quality=90
        )
        n += 1
    members = {f"z/m{i}.png": encode(noise_image(i, 400, 300), "PNG") for i in range(40)}
    _zip(media / "pack.zip", members)
    n += 41
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "TIPLINE_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.Popen(
        _cli("scan", str(media), "-o", str(out), "-j", "2"),
        env=env,
        start_new_session=True,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        if out.exists() and out.read_bytes().count(b"\n") >= 20:
            break
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = out.read_bytes().count(b"\n")
    assert 20 <= partial < n, "the scan should have been interrupted part way"
    with open(out, "ab") as f:  # as if killed in the middle of writing a record
        f.write(b'{"path": "' + str(media).encode() + b"/img000.jp")
    res = subprocess.run(
        _cli("scan", str(media), "-o", str(out), "-j", "2", "--resume"),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    recs = records(out)  # asserts no duplicates
    assert len(recs) == n
    assert all(not r["errors"] for r in recs.values())


def test_a_name_that_disguises_the_content_is_a_warning_in_every_format(tmp_path: Path) -> None:
    """A text file named photo.jpg is read as the text it is, and every output says the name
    lies; names that keep their promise (and families like .mov holding MP4) say nothing."""
    data, media = tmp_path / "data", tmp_path / "media"
    media.mkdir()
    (media / "photo.jpg").write_text("teapot-42 bluebird\n" * 200)  # > the sniffed head
    encode_png = encode(photo("coffee"), "PNG")
    (media / "picture.jpg").write_bytes(encode_png)  # a PNG named .jpg
    (media / "honest.png").write_bytes(encode_png)
    (media / "notes").write_text("no extension: no promise\n")
    with zipfile.ZipFile(media / "bundle.zip", "w") as z:
        z.writestr("inner/holiday.gif", b"plain words, not a GIF\n" * 40)
    out = tmp_path / "r.jsonl"
    code, _, _ = run(data, "scan", str(media), "-o", str(out))
    assert code == 0
    recs = records(out)
    assert recs[str(media / "photo.jpg")]["warnings"] == [
        "name says image/jpeg, content is text/plain"
    ]
    assert recs[str(media / "photo.jpg")]["media_type"] == "text/plain"
    assert recs[str(media / "picture.jpg")]["warnings"] == [
        "name says image/jpeg, content is image/png"
    ]
    assert recs[str(media / "picture.jpg")]["pdq"]  # still hashed as the PNG it is
    assert recs[str(media / "honest.png")]["warnings"] == []
    assert recs[str(media / "notes")]["warnings"] == []
    member = f"{media / 'bundle.zip'}!inner/holiday.gif"
    assert recs[member]["warnings"] == ["name says image/gif, content is text/plain"]
    out_csv = tmp_path / "r.csv"
    run(data, "scan", str(media), "-o", str(out_csv))
    rows = {r["path"]: r for r in csv.DictReader(io.StringIO(out_csv.read_text()))}
    assert rows[str(media / "photo.jpg")]["warnings"] == (
        "name says image/jpeg, content is text/plain"
    )
    assert rows[str(media / "honest.png")]["warnings"] == ""
    out_html = tmp_path / "r.html"
    run(data, "scan", str(media), "-o", str(out_html))
    html = out_html.read_text()
    assert "warning: name says image/jpeg, content is text/plain" in html


def test_disguise_warning_families() -> None:
    from tipline.media.sniff import disguise_warning

    assert disguise_warning("clip.mov", "video/mp4") is None  # one ISO-BMFF family
    assert disguise_warning("clip.mkv", "video/webm") is None  # Matroska
    assert disguise_warning("model.ckpt", "application/x-python-pickle") is None
    assert disguise_warning("a.JPG", "image/jpeg") is None
    assert disguise_warning("a.jpg", "application/x-empty") is None  # nothing to judge
    assert disguise_warning("weights.bin", "text/plain") is None  # .bin promises nothing
    assert disguise_warning("x.zip!dir/a.png", "image/jpeg") == (
        "name says image/png, content is image/jpeg"
    )
    assert disguise_warning(".jpg", "text/plain") is None  # a dot file, not an extension
