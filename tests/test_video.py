"""Video: vPDQ hashing (fast and reference sampling), the python-threatexchange string format,
matching by frame overlap, scan integration and hostile input.

Every clip here is made by our own code: pans and cuts over scikit-image sample photographs and
a procedural animation, encoded with PyAV (see ``tipline.demo.clips``).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tipline.banks.bank import Bank, Entry
from tipline.banks.formats import parse_hash_list, write_hash_list
from tipline.cli.app import _register, app
from tipline.config import Limits
from tipline.errors import InvalidSignalError
from tipline.index.bank_index import BankIndex
from tipline.index.vpdq import VpdqFrameIndex
from tipline.media.sniff import MP4
from tipline.media.video import sample_frames
from tipline.record import ItemRecord
from tipline.scan.hashing import HashOptions, hash_bytes, signals_for_file
from tipline.scan.items import scan_file
from tipline.signals.pdq import hamming
from tipline.signals.vpdq import (
    VpdqFrame,
    VpdqHash,
    VpdqMatchOptions,
    hash_sample,
    match_vpdq,
)

av = pytest.importorskip("av")

SIZE = (240, 180)
SECONDS = 6.0


@dataclass
class Clips:
    dir: Path

    def __getitem__(self, name: str) -> Path:
        return self.dir / f"{name}.mp4"


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Clips:
    from tipline.demo.clips import build_clips

    d = tmp_path_factory.mktemp("clips")
    build_clips(d, size=SIZE, seconds=SECONDS, kinds=("pan-coffee", "slideshow", "shapes"))
    return Clips(d)


def vhash(path: Path | bytes, mode: str = "reference") -> VpdqHash:
    frames = []
    for s in sample_frames(path, MP4, Limits(), mode):  # type: ignore[arg-type]
        h = hash_sample(s)
        frames.append(VpdqFrame(h.hex, h.quality, s.timestamp))
    return VpdqHash(tuple(frames))


def record(path: Path, mode: str = "fast", **kw: object) -> ItemRecord:
    out: list[ItemRecord] = []
    scan_file(str(path), HashOptions(video_mode=mode, **kw), out.append)  # type: ignore[arg-type]
    assert len(out) == 1
    return out[0]


def encode(
    fmt: str = "mp4",
    n: int = 50,
    size: tuple[int, int] = (64, 48),
    codec: str = "libx264",
    audio: bool = False,
    video: bool = True,
    options: dict[str, str] | None = None,
) -> bytes:
    """A small noise clip (and/or a silent audio track) as bytes."""
    fd, tmp = tempfile.mkstemp(suffix="." + fmt)
    os.close(fd)
    try:
        with av.open(tmp, "w", format=fmt, options=options or {}) as out:
            if video:
                vs = out.add_stream(codec, rate=25)
                vs.width, vs.height = size
                vs.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
            if audio:
                aus = out.add_stream("aac", rate=8000)
            if video:
                rng = np.random.default_rng(0)
                for _ in range(n):
                    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
                    frame = av.VideoFrame.from_ndarray(arr, format="rgb24").reformat(
                        format=vs.pix_fmt
                    )
                    for p in vs.encode(frame):
                        out.mux(p)
                for p in vs.encode(None):
                    out.mux(p)
            if audio:
                for i in range(10):
                    af = av.AudioFrame.from_ndarray(
                        np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono"
                    )
                    af.sample_rate = 8000
                    af.pts = i * 1024
                    for p in aus.encode(af):
                        out.mux(p)
                for p in aus.encode(None):
                    out.mux(p)
        return Path(tmp).read_bytes()
    finally:
        os.unlink(tmp)


def errors_of(data: bytes, mode: str = "fast", **kw: object) -> tuple[ItemRecord, str]:
    rec = hash_bytes(data, "clip.mp4", HashOptions(video_mode=mode, **kw))  # type: ignore[arg-type]
    return rec, " | ".join(rec.errors)


# -- the hash and its string format ---------------------------------------------------------

FRAME_A = "f8f8f0cee0f4a84f06370a22038f63f0b36e2ed596621e1d33e6b39c4e9c9b22"
FRAME_B = "0000000000000000000000000000000000000000000000000000000000000000"


def test_te_string_format_is_python_threatexchanges() -> None:
    h = VpdqHash(
        (VpdqFrame(FRAME_A, 100, 0.0), VpdqFrame(FRAME_B, 7, 1.0), VpdqFrame(FRAME_A, 99, 123.456))
    )
    # json.dumps of "hex,quality,timestamp:.3" strings, exactly as vpdq_to_json writes it
    assert h.to_te_json() == (f'["{FRAME_A},100,0.0", "{FRAME_B},7,1.0", "{FRAME_A},99,1.23e+02"]')
    back = VpdqHash.from_te_json(h.to_te_json())
    assert [f.pdq_hex for f in back.frames] == [FRAME_A, FRAME_B, FRAME_A]
    assert [f.quality for f in back.frames] == [100, 7, 99]
    assert back.frames[2].timestamp == 123.0  # TE's own format keeps 3 significant digits
    assert h.to_strings()[2] == f"{FRAME_A},99,123.456"  # scan records keep milliseconds
    assert VpdqHash.from_strings(h.to_strings()) == h
    assert VpdqHash.from_te_json(" [] ") == VpdqHash()


@pytest.mark.parametrize(
    "signal, reason",
    [
        ("not json", "JSON list"),
        ("[1, 2]", "must be a string"),
        ('{"a": 1}', "JSON list"),
        ('["abc,100,0"]', "64 hex"),
        (f'["{FRAME_A},100"]', "pdq_hex,quality,timestamp"),
        (f'["{FRAME_A},101,0"]', "quality must be 0..100"),
        (f'["{FRAME_A},-1,0"]', "quality must be 0..100"),
        (f'["{FRAME_A},100,-2"]', "timestamp must be >= 0"),
        (f'["{FRAME_A},100,nan"]', "timestamp must be >= 0"),
        (f'["{FRAME_A},100,soon"]', "not a number"),
        ("[" * 100_000, "not valid JSON"),
    ],
)
def test_malformed_signals_are_refused(signal: str, reason: str) -> None:
    with pytest.raises(InvalidSignalError, match=reason):
        VpdqHash.from_te_json(signal)


def test_frame_count_of_a_signal_is_capped() -> None:
    with pytest.raises(InvalidSignalError, match="more than 3 frames"):
        VpdqHash.from_strings([f"{FRAME_A},100,{i}" for i in range(4)], max_frames=3)


# -- matching -------------------------------------------------------------------------------


def flip(hex_: str, bits: int, seed: int) -> str:
    """``hex_`` with ``bits`` distinct bits flipped."""
    rng = np.random.default_rng(seed)
    v = int(hex_, 16)
    for b in rng.choice(256, bits, replace=False):
        v ^= 1 << int(b)
    return f"{v:064x}"


def random_hex(rng: np.random.Generator) -> str:
    return bytes(rng.integers(0, 256, 32, dtype=np.uint8)).hex()


def test_match_percentages_in_both_directions() -> None:
    rng = np.random.default_rng(5)
    base = [random_hex(rng) for _ in range(10)]
    index = VpdqHash(tuple(VpdqFrame(h, 100, float(i)) for i, h in enumerate(base)))
    # 5 query frames: 4 near indexed frames (one of them twice), 1 unrelated; the duplicate and
    # a low-quality frame do not count.
    q = [flip(base[0], 10, 1), flip(base[1], 31, 2), flip(base[2], 5, 3), flip(base[3], 3, 4)]
    frames = [VpdqFrame(h, 90, float(i)) for i, h in enumerate(q)]
    frames += [VpdqFrame(q[0], 90, 9.0), VpdqFrame(random_hex(rng), 90, 5.0)]
    frames += [VpdqFrame(flip(base[4], 1, 5), 49, 6.0)]
    query = VpdqHash(tuple(frames))
    res = match_vpdq(query, index)
    assert res.query_pct == pytest.approx(80.0)  # 4 of 5 unique usable query frames
    assert res.index_pct == pytest.approx(40.0)  # 4 of 10 indexed frames
    assert res.best_distance == 3
    assert res.is_match(VpdqMatchOptions())
    assert not res.is_match(VpdqMatchOptions(index_pct=50))
    back = match_vpdq(index, query)  # the other way round
    assert (back.query_pct, back.index_pct) == pytest.approx((40.0, 80.0))
    assert not back.is_match(VpdqMatchOptions())
    assert back.is_match(VpdqMatchOptions(query_pct=0, index_pct=80))
    # one bit further than the threshold no longer counts
    tight = match_vpdq(query, index, VpdqMatchOptions(distance=30))
    assert tight.query_pct == pytest.approx(60.0)
    # nothing usable on a side: no match, no division by zero
    low = VpdqHash(tuple(VpdqFrame(f.pdq_hex, 10, f.timestamp) for f in index.frames))
    assert match_vpdq(query, low).query_pct == 0.0
    assert not match_vpdq(query, low).is_match(VpdqMatchOptions(query_pct=0))


def test_same_percentages_as_python_threatexchange() -> None:
    brute = pytest.importorskip("threatexchange.extensions.vpdq.vpdq_brute_matcher")
    util = pytest.importorskip("threatexchange.extensions.vpdq.vpdq_util")
    rng = np.random.default_rng(11)
    base = [random_hex(rng) for _ in range(30)]
    for trial in range(20):
        pick = rng.choice(30, 12)
        a = VpdqHash(
            tuple(
                VpdqFrame(flip(base[int(i)], int(rng.integers(0, 45)), trial * 100 + k), 100, k)
                for k, i in enumerate(pick)
            )
        )
        b = VpdqHash(tuple(VpdqFrame(h, int(rng.integers(40, 101)), k) for k, h in enumerate(base)))
        ours = match_vpdq(a, b)
        theirs = brute.match_VPDQ_hash_brute(
            util.json_to_vpdq(a.to_te_json()), util.json_to_vpdq(b.to_te_json()), 50, 31
        )
        assert ours.query_pct == pytest.approx(theirs.query_match_percent)
        assert ours.index_pct == pytest.approx(theirs.compared_match_percent)


def test_frame_index_gives_brute_force_results() -> None:
    rng = np.random.default_rng(3)
    base = [random_hex(rng) for _ in range(40)]
    hashes = []
    for k in range(25):
        picks = rng.choice(40, int(rng.integers(1, 15)))
        hashes.append(
            VpdqHash(
                tuple(
                    VpdqFrame(flip(base[int(i)], int(rng.integers(0, 40)), k * 50 + j), 100, j)
                    for j, i in enumerate(picks)
                )
            )
        )
    index = VpdqFrameIndex()
    for k, h in enumerate(hashes):
        index.add(k, h)
    for q in hashes[:8]:
        got = dict(index.search(q))
        for k, h in enumerate(hashes):
            want = match_vpdq(q, h)
            if want.best_distance is None:
                assert k not in got
            else:
                assert got[k] == want


# -- sampling -------------------------------------------------------------------------------


def test_reference_sampling_is_one_frame_per_second(clips: Clips) -> None:
    h = vhash(clips["slideshow"])
    assert [f.timestamp for f in h.frames] == [float(i) for i in range(int(SECONDS))]
    assert all(f.quality >= 50 for f in h.frames)


def test_reference_mode_equals_the_vpdq_package(clips: Clips) -> None:
    vpdq = pytest.importorskip("vpdq")
    for name in ("slideshow", "pan-coffee-resized", "shapes-reencoded"):
        ours = vhash(clips[name])
        theirs = vpdq.computeHash(str(clips[name]), seconds_per_hash=1.0, thread_count=1)
        te = VpdqHash(tuple(VpdqFrame(f.hex, f.quality, f.timestamp) for f in theirs))
        assert ours.to_te_json() == te.to_te_json()


def test_fast_mode_samples_frames_reference_mode_samples(clips: Clips) -> None:
    for name in ("slideshow", "pan-coffee", "shapes-resized"):
        ref = {f.timestamp: f for f in vhash(clips[name]).frames}
        fast = vhash(clips[name], "fast")
        assert 1 <= len(fast) <= len(ref)
        for f in fast.frames:
            t = round(f.timestamp, 3)
            assert t in ref, (name, t)
            assert hamming(f.pdq_hex, ref[t].pdq_hex) <= 24  # luma plane vs RGB: a few bits


def test_sampling_from_bytes_equals_sampling_from_a_path(clips: Clips) -> None:
    path = clips["pan-coffee"]
    for mode in ("fast", "reference"):
        assert vhash(path.read_bytes(), mode) == vhash(path, mode)


# -- scan, hash, banks ----------------------------------------------------------------------


def test_scan_record_carries_vpdq_and_stream_digests(clips: Clips) -> None:
    import hashlib

    path = clips["slideshow"]
    rec = record(path)
    data = path.read_bytes()
    assert rec.media_type == "video/mp4"
    assert rec.md5 == hashlib.md5(data).hexdigest()
    assert rec.sha256 == hashlib.sha256(data).hexdigest()
    assert rec.size == len(data)
    assert rec.errors == []
    assert rec.vpdq is not None and rec.vpdq_frames == len(rec.vpdq) >= 1
    d = rec.to_json()
    assert d["vpdq_frames"] == rec.vpdq_frames and d["vpdq"] == rec.vpdq
    assert ItemRecord.from_json(json.loads(json.dumps(d))).vpdq == rec.vpdq
    ref = record(path, "reference")
    assert ref.vpdq_frames == int(SECONDS)


def _bank_matcher(*paths: Path) -> BankIndex:
    bank = Bank("KNOWN_VIDEO")
    entries = []
    for i, p in enumerate(paths, start=1):
        sig = signals_for_file(p)  # reference sampling for banks
        entries.append(Entry("KNOWN_VIDEO", "vpdq", sig["vpdq"], label="DEMO", id=i))
        entries.append(Entry("KNOWN_VIDEO", "md5", sig["md5"], label="DEMO", id=100 + i))
    return BankIndex.build([bank], entries)


@pytest.mark.parametrize("mode", ["fast", "reference"])
def test_copies_match_and_unrelated_clips_do_not(clips: Clips, mode: str) -> None:
    matcher = _bank_matcher(clips["pan-coffee"], clips["slideshow"])
    for name, want in [
        ("pan-coffee", 1),
        ("pan-coffee-reencoded", 1),
        ("pan-coffee-resized", 1),
        ("slideshow-reencoded", 2),
        ("slideshow-resized", 2),
        ("shapes", None),
        ("shapes-resized", None),
    ]:
        rec = record(clips[name], mode)
        rec.matches = matcher.match(rec)
        video = [m for m in rec.matches if m.signal_type == "vpdq"]
        if want is None:
            assert video == [], name
            continue
        assert [m.entry_id for m in video] == [want], name
        m = video[0]
        assert m.query_match_pct is not None and m.query_match_pct >= 80
        assert m.index_match_pct is not None and 0 < m.index_match_pct <= 100
        assert m.to_json()["query_match_pct"] == round(m.query_match_pct, 2)
    exact = record(clips["slideshow"], mode)
    exact.matches = matcher.match(exact)
    assert {m.signal_type for m in exact.matches} == {"md5", "vpdq"}


def test_hash_cli_video_mode(clips: Clips) -> None:
    _register()
    runner = CliRunner()
    for mode, frames in [("reference", int(SECONDS)), ("fast", None)]:
        res = runner.invoke(app, ["hash", "--video-mode", mode, str(clips["pan-coffee"])])
        assert res.exit_code == 0, res.output
        d = json.loads(res.output.strip().splitlines()[-1])
        assert d["media_type"] == "video/mp4" and d["vpdq_frames"] == len(d["vpdq"])
        if frames:
            assert d["vpdq_frames"] == frames
    res = runner.invoke(app, ["hash", "--video-mode", "slow", str(clips["pan-coffee"])])
    assert res.exit_code == 2


def test_bank_add_file_and_scan_cli(clips: Clips, tmp_path: Path) -> None:
    _register()
    runner = CliRunner()
    base = ["--data-dir", str(tmp_path / "data")]
    assert runner.invoke(app, [*base, "bank", "create", "KNOWN_VIDEO"]).exit_code == 0
    res = runner.invoke(
        app, [*base, "bank", "add", "KNOWN_VIDEO", "--file", str(clips["slideshow"])]
    )
    assert res.exit_code == 0, res.output
    out = tmp_path / "results.jsonl"
    res = runner.invoke(
        app,
        [
            *base,
            "scan",
            "--no-progress",
            "-j",
            "1",
            "-o",
            str(out),
            str(clips["slideshow-resized"]),
        ],
    )
    assert res.exit_code == 1, res.output  # matched
    d = json.loads(out.read_text().splitlines()[0])
    assert [m["signal_type"] for m in d["matches"]] == ["vpdq"]
    exported = runner.invoke(app, [*base, "bank", "export", "KNOWN_VIDEO", "--format", "te"])
    assert exported.exit_code == 0
    line = next(x for x in exported.output.splitlines() if x.startswith("vpdq "))
    assert VpdqHash.from_te_json(line.split(" ", 1)[1]).frames[0].quality > 0


def test_videos_inside_archives_are_hashed(clips: Clips, tmp_path: Path) -> None:
    import zipfile

    z = tmp_path / "clips.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.write(clips["pan-coffee"], "inner/pan.mp4")
    out: list[ItemRecord] = []
    scan_file(str(z), HashOptions(), out.append)
    member = next(r for r in out if r.path.endswith("!inner/pan.mp4"))
    assert member.vpdq_frames and member.errors == []


# -- hash lists -----------------------------------------------------------------------------


def test_vpdq_signals_in_hash_list_formats(clips: Clips) -> None:
    sig = signals_for_file(clips["pan-coffee"])["vpdq"]
    entries = parse_hash_list(f"vpdq {sig}\n", "te").entries
    assert [e.signal for e in entries] == [sig]
    for fmt in ("te", "te-csv", "jsonl"):
        buf = io.StringIO()
        write_hash_list(entries, fmt, buf)
        back = parse_hash_list(buf.getvalue(), fmt)
        assert back.errors == [] and [e.signal for e in back.entries] == [sig], fmt
    as_list = json.dumps({"signal_type": "vpdq", "signal": json.loads(sig)})
    assert parse_hash_list(as_list, "jsonl").entries[0].signal == sig


@pytest.mark.parametrize(
    "fmt, text",
    [
        ("te", 'md5 d41d8cd98f00b204e9800998ecf8427e\n# note\nvpdq ["abc,100,0.0"]\n'),
        ("te-csv", 'signal_type,signal_str\nmd5,d41d8cd98f00b204e9800998ecf8427e\nvpdq,"[1]"\n'),
        (
            "jsonl",
            '{"signal_type": "md5", "signal": "d41d8cd98f00b204e9800998ecf8427e"}\n\n'
            '{"signal_type": "vpdq", "signal": "[\\"' + FRAME_A + ',100,-1\\"]"}\n',
        ),
    ],
)
def test_malformed_vpdq_in_a_bank_names_its_line(fmt: str, text: str) -> None:
    res = parse_hash_list(text, fmt, source_name="list.txt")
    assert len(res.entries) == 1
    assert len(res.errors) == 1
    err = str(res.errors[0])
    assert err.startswith("list.txt:3: ") and "vpdq" in err


# -- hostile and broken input ---------------------------------------------------------------


def test_truncated_video_without_index_is_a_corrupt_item(clips: Clips) -> None:
    data = clips["pan-coffee"].read_bytes()
    rec, err = errors_of(data[: len(data) // 2])
    assert rec.vpdq is None and err.startswith("corrupt_media: video/mp4 container")
    assert rec.md5 is not None  # digests still computed


@pytest.mark.parametrize("mode", ["fast", "reference"])
def test_truncated_streamable_video_keeps_the_frames_present(mode: str) -> None:
    data = encode(n=100, options={"movflags": "faststart"})
    rec, err = errors_of(data[: len(data) * 6 // 10], mode)
    assert "truncated video" in err and "of the 100 frames" in err
    assert rec.vpdq_frames and rec.vpdq_frames >= 1


def test_corrupt_packets_are_skipped_and_reported(clips: Clips) -> None:
    data = bytearray(clips["shapes"].read_bytes())
    for off in range(len(data) // 4, len(data) * 3 // 4, 997):
        data[off] ^= 0xFF
    rec, err = errors_of(bytes(data), "reference")
    assert rec.vpdq_frames  # most frames still hashed
    assert err == "" or err.startswith("corrupt_media: video stream damaged")


def test_garbage_named_mp4_is_not_decoded(tmp_path: Path) -> None:
    p = tmp_path / "x.mp4"
    p.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 40)
    rec = record(p)
    assert rec.vpdq is None and rec.errors and rec.errors[0].startswith("corrupt_media")


def test_zero_length_video_stream() -> None:
    _, err = errors_of(encode(fmt="matroska", n=0, audio=True))
    assert err == "corrupt_media: video stream holds no frames"


def test_audio_only_file() -> None:
    rec, err = errors_of(encode(video=False, audio=True))
    assert rec.media_type == "video/mp4"  # the container says mp4 (an .m4a)
    assert err == "unsupported_media: audio-only video/mp4 file: no video stream to hash"


def test_zero_byte_video_file(tmp_path: Path) -> None:
    p = tmp_path / "empty.mp4"
    p.write_bytes(b"")
    assert record(p).errors == ["empty_file: zero-byte file; nothing to scan"]


@pytest.mark.parametrize("codec, fmt", [("mjpeg", "avi"), ("ffv1", "matroska")])
def test_absurd_dimensions_are_refused_before_decoding(codec: str, fmt: str) -> None:
    _, err = errors_of(encode(fmt=fmt, n=1, size=(17000, 16), codec=codec))
    assert err.startswith("too_many_pixels: video frames of 17000x16 exceed")


@pytest.mark.parametrize(
    "limits, message",
    [
        (Limits(max_video_pixels=10_000), "too_many_pixels: video frames of 240x180"),
        (Limits(max_video_frames=100), "video_limit: video claims 150 frames"),
        (Limits(max_video_seconds=5), "video_limit: video claims 6 s"),
    ],
)
def test_limits_from_metadata(clips: Clips, limits: Limits, message: str) -> None:
    rec = record(clips["pan-coffee"], limits=limits)
    assert rec.vpdq is None and rec.errors[0].startswith(message)


def test_hash_count_limit_keeps_the_first_frames(clips: Clips) -> None:
    rec = record(clips["pan-coffee"], "reference", limits=Limits(max_video_hashes=3))
    assert rec.vpdq_frames == 3
    assert rec.errors == ["video_limit: hashing stopped at --max-video-hashes 3 frames"]


def test_decode_time_limit(clips: Clips) -> None:
    rec = record(clips["slideshow"], "reference", limits=Limits(max_video_decode_seconds=1e-6))
    assert rec.errors and rec.errors[0].startswith("decode_timeout: video decoding took longer")


def test_other_containers(write: Callable[..., Path]) -> None:
    for fmt, codec, mime in [
        ("webm", "libvpx-vp9", "video/webm"),
        ("matroska", "libx264", "video/webm"),
        ("avi", "mpeg4", "video/x-msvideo"),
    ]:
        rec = record(write(f"c.{fmt}", encode(fmt=fmt, codec=codec, n=30)))
        assert rec.media_type == mime and rec.errors == [] and rec.vpdq_frames, fmt


def test_dedupe_joins_video_copies(clips: Clips) -> None:
    from tipline.triage.clusters import cluster_records

    names = ["pan-coffee", "pan-coffee-reencoded", "pan-coffee-resized", "slideshow", "shapes"]
    recs = [record(clips[n], "reference") for n in names]
    clusters = cluster_records(recs, 31)
    groups = sorted(sorted(Path(m.path).stem for m in c.members) for c in clusters)
    assert groups == [
        ["pan-coffee", "pan-coffee-reencoded", "pan-coffee-resized"],
        ["shapes"],
        ["slideshow"],
    ]
