"""Model files: hashes, headers, static pickle inspection, hostile input and model banks.

Every fixture is written here: tiny random tensors with neutral metadata (a "landscape_style_v1"
LoRA trained on the tags "mountain" and "lake"), pickles built with ``pickle.dumps`` of plain
dicts or by hand from opcodes, and GGUF headers with neutral keys. Nothing is ever unpickled:
the tests also make every unpickling entry point raise while the reader runs.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from tipline.banks import Bank, Entry
from tipline.errors import InvalidSignalError
from tipline.findings import Finding
from tipline.index.bank_index import BankIndex
from tipline.media import sniff as sn
from tipline.provenance import model_files
from tipline.record import ItemRecord, Match
from tipline.scan.hashing import HashOptions
from tipline.scan.items import scan_file
from tipline.signals.types import signal_type
from tipline.store.banks import open_bank_store as open_store

MiB = 1024 * 1024

# ---- fixture builders ------------------------------------------------------------------------

SD1_LORA = {
    "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 320),
    "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": (320, 4),
    "lora_unet_down_blocks_0_attentions_0_proj_in.alpha": (),
    "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (4, 768),
    "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": (3072, 4),
}
KOHYA_META = {
    "ss_output_name": "landscape_style_v1",
    "ss_network_module": "networks.lora",
    "ss_network_dim": "4",
    "ss_base_model_version": "sd_v1",
    "ss_num_train_images": "8",
    "ss_training_comment": "test pattern run",
    "ss_tag_frequency": json.dumps({"10_landscape": {"mountain": 5, "lake": 3}}),
    "ss_dataset_dirs": json.dumps({"10_landscape": {"n_repeats": 10, "img_count": 8}}),
    "ss_new_sd_model_hash": "ab" * 32,
}


def safetensors(
    tensors: dict[str, tuple[int, ...]], meta: dict[str, str] | None = None, seed: int = 0
) -> bytes:
    rng = np.random.default_rng(seed)
    header: dict[str, Any] = {}
    blobs: list[bytes] = []
    off = 0
    for name, shape in tensors.items():
        b = rng.standard_normal(shape).astype(np.float16).tobytes()
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if meta is not None:
        header["__metadata__"] = meta
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


def header_len(data: bytes) -> int:
    return int(struct.unpack("<Q", data[:8])[0])


def torch_like_pickle(names: list[str]) -> bytes:
    """A protocol-2 state dict pickle written opcode by opcode: what torch.save puts in
    data.pkl, with the globals torch uses (never loaded; static inspection only)."""
    out = bytearray(b"\x80\x02ccollections\nOrderedDict\n)R")
    for i, n in enumerate(names):
        raw = n.encode()
        out += b"X" + struct.pack("<I", len(raw)) + raw
        out += b"ctorch._utils\n_rebuild_tensor_v2\n("
        out += b"(X\x07\x00\x00\x00storagectorch\nHalfStorage\nX" + struct.pack("<I", 1)
        out += str(i).encode() + b"X\x03\x00\x00\x00cpuK\x04tQ"  # persistent id
        out += b"K\x00K\x02\x85K\x01\x85\x89ccollections\nOrderedDict\n)RtR"
        out += b"s"
    out += b"."
    return bytes(out)


def torch_zip(pickle_bytes: bytes, extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle_bytes)
        z.writestr("archive/data/0", np.arange(16, dtype=np.float16).tobytes())
        z.writestr("archive/byteorder", b"little")
        z.writestr("archive/version", b"3\n")
        for k, v in (extra or {}).items():
            z.writestr(k, v)
    return buf.getvalue()


class Evil:
    """Its pickle would run a shell command if anyone unpickled it. Nobody does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"echo pwned > {self.marker}",))


def gguf_string(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def gguf(
    kv: list[tuple[str, bytes]],
    tensors: list[tuple[str, list[int]]],
    *,
    kv_count: int | None = None,
    tensor_count: int | None = None,
) -> bytes:
    out = bytearray(b"GGUF" + struct.pack("<I", 3))
    out += struct.pack("<QQ", len(tensors) if tensor_count is None else tensor_count,
                       len(kv) if kv_count is None else kv_count)  # fmt: skip
    for key, typed_value in kv:
        out += gguf_string(key) + typed_value
    for name, dims in tensors:
        out += gguf_string(name) + struct.pack("<I", len(dims))
        out += b"".join(struct.pack("<Q", d) for d in dims) + struct.pack("<IQ", 1, 0)
    return bytes(out + b"\x00" * 64)


def gv_str(s: str) -> bytes:
    return struct.pack("<I", 8) + gguf_string(s)


def gv_u32(v: int) -> bytes:
    return struct.pack("<II", 4, v)


def gv_str_array(items: list[str]) -> bytes:
    return struct.pack("<IIQ", 9, 8, len(items)) + b"".join(gguf_string(s) for s in items)


FLUX_GGUF_KV = [
    ("general.architecture", gv_str("flux")),
    ("general.name", gv_str("landscape_style_v1")),
    ("general.file_type", gv_u32(1)),
    ("tokenizer.ggml.tokens", gv_str_array(["mountain", "lake", "valley", "river"])),
]
FLUX_TENSORS = [("double_blocks.0.img_attn.qkv.weight", [64, 192]), ("img_in.weight", [64, 16])]


@pytest.fixture(autouse=True)
def _never_unpickle(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Any unpickling while a test runs fails the test (building fixtures uses dumps only)."""

    def refuse(*a: object, **k: object) -> object:
        raise AssertionError("something tried to unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    yield


def one(path: Path) -> Finding:
    findings = model_files.describe_model(path)
    assert len(findings) == 1
    return findings[0]


def scan(path: Path, options: HashOptions | None = None) -> dict[str, ItemRecord]:
    out: list[ItemRecord] = []
    scan_file(str(path), options or HashOptions(), out.append)
    return {r.path.rsplit("!", 1)[-1] if "!" in r.path else Path(r.path).name: r for r in out}


# ---- sniffing --------------------------------------------------------------------------------


def test_sniff_model_formats() -> None:
    assert sn.sniff(safetensors(SD1_LORA, KOHYA_META)) is sn.SAFETENSORS
    assert sn.sniff(safetensors({}, {})) is sn.SAFETENSORS
    assert sn.sniff(gguf(FLUX_GGUF_KV, FLUX_TENSORS)) is sn.GGUF
    assert sn.sniff(torch_zip(torch_like_pickle(["a.weight"]))) is sn.PYTORCH
    assert sn.sniff(pickle.dumps({"a": [1, 2]}, protocol=2)) is sn.PICKLE
    assert sn.sniff(pickle.dumps({"a": [1, 2]}, protocol=5)) is sn.PICKLE
    plain = io.BytesIO()
    with zipfile.ZipFile(plain, "w") as z:
        z.writestr("notes/readme.txt", "a benign note")
    assert sn.sniff(plain.getvalue()) is sn.ZIP
    assert sn.sniff(b'{"a": 1}\n').kind == "text"
    assert sn.sniff(bytes(range(256)) * 2).kind == "other"


# ---- safetensors -----------------------------------------------------------------------------


def test_kohya_lora_hashes_metadata_and_fingerprint(tmp_path: Path) -> None:
    data = safetensors(SD1_LORA, KOHYA_META)
    p = tmp_path / "landscape_style_v1.safetensors"
    p.write_bytes(data)
    f = one(p)
    assert f.signal == "model_file" and f.verdict == "model" and f.error is None
    assert f.generator == "SD1.x"
    ev = f.evidence
    sha = hashlib.sha256(data).hexdigest()
    assert (
        ev["hashes"]
        == {
            "sha256": sha,
            "autov1": None,  # under 2 MiB, as Civitai shows it
            "autov2": sha[:10],
            "autov3": hashlib.sha256(data[8 + header_len(data) :]).hexdigest(),
        }
    )
    assert ev["format"] == "safetensors" and ev["tensor_count"] == 5
    assert ev["architecture"] == {
        "family": "SD1.x", "type": "lora", "source": "kohya", "declared": "sd_v1", "lora_rank": 4,
    }  # fmt: skip
    assert ev["metadata"]["ss_output_name"] == "landscape_style_v1"
    assert ev["metadata"]["tag_count"] == 2 and ev["metadata"]["dataset_dir_count"] == 1
    assert ev["base_model_hash"] == "ab" * 32
    # training captions, folders and comments are sensitive: only under "text"
    assert ev["text"]["tag_frequency"] == {"10_landscape": {"mountain": 5, "lake": 3}}
    assert "10_landscape" in ev["text"]["dataset_dirs"]
    assert ev["text"]["training_comment"] == "test pattern run"
    assert "ss_tag_frequency" not in ev["metadata"]
    public = json.dumps(f.to_json())
    assert "mountain" not in public and "10_landscape" not in public


def test_autov1_on_files_of_2_mib_and_more(tmp_path: Path) -> None:
    data = safetensors({"model.diffusion_model.input_blocks.0.0.weight": (1024, 1100)}, {})
    assert len(data) > 2 * MiB
    p = tmp_path / "big.safetensors"
    p.write_bytes(data)
    ev = one(p).evidence
    assert ev["hashes"]["autov1"] == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    assert ev["architecture"]["family"] == "SD1.x"


@pytest.mark.parametrize(
    ("names", "meta", "family", "kind"),
    [
        (["lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight",
          "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight"], None, "SDXL", "lora"),
        (["transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight",
          "transformer.single_transformer_blocks.0.attn.to_q.lora_B.weight"], None, "Flux", "lora"),
        (["lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight"], None, "Flux", "lora"),
        (["lora_unet_input_blocks_1_1_proj_in.hada_w1_a"], None, "SD1.x/2.x", "lycoris"),
        (["model.diffusion_model.label_emb.0.0.weight"], None, "SDXL", "checkpoint"),
        (["conditioner.embedders.1.model.ln_final.weight"], None, "SDXL", "checkpoint"),
        (["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"], None,
         "SD2.x", "checkpoint"),
        (["double_blocks.0.img_attn.qkv.weight"], None, "Flux", "checkpoint"),
        (["encoder.down.0.block.0.conv1.weight", "decoder.up.0.block.0.conv1.weight"], None,
         "VAE", "vae"),
        (["model.layers.0.self_attn.q_proj.weight"], None, "LLM", "checkpoint"),
        (["lora_unet_x.lora_down.weight"], {"modelspec.architecture": "flux-1-dev/lora"},
         "Flux", "lora"),
        (["a.weight"], {"modelspec.architecture": "stable-diffusion-xl-v1-base"}, "SDXL",
         "checkpoint"),
    ],
)  # fmt: skip
def test_architecture_fingerprints(
    tmp_path: Path, names: list[str], meta: dict[str, str] | None, family: str, kind: str
) -> None:
    p = tmp_path / "m.safetensors"
    p.write_bytes(safetensors({n: (2, 3) for n in names}, meta))
    f = one(p)
    assert (f.generator, f.evidence["architecture"]["type"]) == (family, kind)


def test_metadata_that_contradicts_tensor_names_is_reported(tmp_path: Path) -> None:
    p = tmp_path / "m.safetensors"
    names = ["lora_te1_a.lora_down.weight", "lora_te2_b.lora_down.weight"]
    p.write_bytes(safetensors({n: (2, 3) for n in names}, {"ss_base_model_version": "sd_v1"}))
    ev = one(p).evidence
    assert ev["architecture"]["family"] == "SD1.x"  # what it declares...
    assert any("look like SDXL" in w for w in ev["warnings"])  # ...and what it is


def test_modelspec_text_is_private_and_thumbnail_dropped(tmp_path: Path) -> None:
    meta = {
        "modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
        "modelspec.title": "Landscape Style",
        "modelspec.author": "an example author",
        "modelspec.thumbnail": "data:image/png;base64,AAAA",
    }
    p = tmp_path / "m.safetensors"
    p.write_bytes(safetensors({"lora_unet_a.lora_down.weight": (2, 3)}, meta))
    ev = one(p).evidence
    assert ev["metadata"]["modelspec.title"] == "Landscape Style"
    assert ev["metadata"]["has_thumbnail"] is True
    assert ev["text"]["author"] == "an example author"
    assert "base64" not in json.dumps(ev)


# ---- hostile safetensors (each: an error finding, hashes still computed) --------------------


def _bad(tmp_path: Path, data: bytes) -> Finding:
    p = tmp_path / "bad.safetensors"
    p.write_bytes(data)
    f = one(p)
    assert f.verdict == "error" and f.error
    assert f.evidence["hashes"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert f.evidence["hashes"]["autov3"] is None
    return f


def test_length_field_larger_than_the_file(tmp_path: Path) -> None:
    f = _bad(tmp_path, struct.pack("<Q", 5000) + b'{"a": 1}' + b"\x00" * 100)
    assert "larger than the file" in (f.error or "")


def test_two_gigabyte_header_claim(tmp_path: Path) -> None:
    f = _bad(tmp_path, struct.pack("<Q", 2 * 1024**3) + b'{"__metadata__": {}}' + b"\x00" * 64)
    assert "exceeds the cap" in (f.error or "")


def test_header_json_nested_too_deeply_or_broken(tmp_path: Path) -> None:
    deep = b"{" + b'"a":' * 1 + b"[" * 200_000 + b"]" * 200_000 + b"}"
    f = _bad(tmp_path, struct.pack("<Q", len(deep)) + deep)
    assert "nested too deeply" in (f.error or "") or "not JSON" in (f.error or "")
    broken = b'{"a": [1, 2'
    assert "not JSON" in (_bad(tmp_path, struct.pack("<Q", len(broken)) + broken).error or "")


def test_truncated_tensor_data_is_a_warning_not_an_error(tmp_path: Path) -> None:
    data = safetensors(SD1_LORA, KOHYA_META)
    p = tmp_path / "cut.safetensors"
    p.write_bytes(data[:-100])
    f = one(p)
    assert f.verdict == "model"
    assert any(w.startswith("truncated") for w in f.evidence["warnings"])


# ---- pickles: static inspection only --------------------------------------------------------


def test_pytorch_zip_state_dict(tmp_path: Path) -> None:
    names = ["model.diffusion_model.input_blocks.0.0.weight", "cond_stage_model.transformer.x"]
    p = tmp_path / "landscape.ckpt"
    p.write_bytes(torch_zip(torch_like_pickle(names)))
    f = one(p)
    ev = f.evidence
    assert f.verdict == "model" and ev["format"] == "pytorch-zip"
    assert "torch._utils._rebuild_tensor_v2" in ev["globals"]
    assert "torch.HalfStorage" in ev["globals"]
    assert ev["unsafe_globals"] == [] and ev["dangerous"] is False
    assert f.generator == "SD1.x"


def test_legacy_pickle_of_a_plain_state_dict(tmp_path: Path) -> None:
    sd = collections.OrderedDict(
        (n, [0.0, 1.0]) for n in ["lora_unet_a.lora_down.weight", "lora_te1_b.lora_up.weight"]
    )
    p = tmp_path / "lora.pt"
    p.write_bytes(pickle.dumps(sd, protocol=2) + b"\x00" * 32)  # raw storages follow in .pt
    f = one(p)
    assert f.evidence["format"] == "pickle" and f.evidence["globals"] == ["collections.OrderedDict"]
    assert f.verdict == "model" and f.generator == "SDXL"
    assert f.evidence["dangerous"] is False


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("container", ["legacy", "zip"])
def test_malicious_pickle_is_flagged_and_never_run(
    tmp_path: Path, protocol: int, container: str
) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(
        {"state_dict": collections.OrderedDict(a=[1, 2]), "x": Evil(marker), "y": Evil(marker)},
        protocol=protocol,
    )
    p = tmp_path / "evil.ckpt"
    p.write_bytes(payload if container == "legacy" else torch_zip(payload))
    f = one(p)
    system = f"{os.system.__module__}.system"  # posix.system here
    assert system in f.evidence["dangerous_globals"]
    assert f.evidence["dangerous"] is True
    assert system in f.evidence["unsafe_globals"]
    # and the whole scan path: record, finding, nothing executed
    rec = scan(p)["evil.ckpt"]
    assert rec.provenance and rec.provenance[0].evidence["dangerous"] is True
    assert rec.sha256 == hashlib.sha256(p.read_bytes()).hexdigest()
    assert not marker.exists()


def test_protocol_0_and_hidden_imports(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    text_pickle = pickle.dumps(Evil(marker), protocol=0)
    rep = model_files.inspect_pickle(io.BytesIO(text_pickle), len(text_pickle))
    assert rep.dangerous_globals == [f"{os.system.__module__}.system"]
    # STACK_GLOBAL whose operands are not literal strings: the file hides what it imports
    hidden = b"\x80\x04NN\x93)R."
    rep = model_files.inspect_pickle(io.BytesIO(hidden), len(hidden))
    assert rep.dangerous_globals == ["<unresolved STACK_GLOBAL>"]
    assert not marker.exists()


def test_pickle_with_huge_length_claims_is_an_error_not_a_crash(tmp_path: Path) -> None:
    claim = b"\x8d" + struct.pack("<Q", 2**62) + b"xx."  # BINUNICODE8 claiming 4 EiB
    p = tmp_path / "claim.pt"
    p.write_bytes(b"\x80\x04\x95" + struct.pack("<Q", len(claim)) + claim)
    f = one(p)
    assert f.verdict == "error" and "cap" in (f.error or "")
    claim = b"\x8d" + struct.pack("<Q", 4096) + b"xx."  # under the cap, beyond the file
    p.write_bytes(b"\x80\x04\x95" + struct.pack("<Q", len(claim)) + claim)
    f = one(p)
    assert f.verdict == "error" and "remain" in (f.error or "")


# ---- GGUF ------------------------------------------------------------------------------------


def test_gguf_header(tmp_path: Path) -> None:
    p = tmp_path / "landscape.gguf"
    p.write_bytes(gguf(FLUX_GGUF_KV, FLUX_TENSORS))
    f = one(p)
    ev = f.evidence
    assert f.verdict == "model" and f.generator == "Flux"
    assert ev["version"] == 3 and ev["tensor_count"] == 2 and ev["kv_count"] == 4
    assert ev["metadata"]["general.name"] == "landscape_style_v1"
    assert ev["metadata"]["general.architecture"] == "flux"
    assert "tokenizer.ggml.tokens" not in ev["metadata"]
    assert ev["hashes"]["autov3"] is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (gguf([], [], tensor_count=2**62), "cap"),
        (gguf([], [], kv_count=2**60), "cap"),
        (gguf([], [], kv_count=50_000), "cannot fit"),
        (gguf([("general.name", struct.pack("<IQ", 8, 2**40))], []), "claims"),
        (gguf([("k", struct.pack("<IIQ", 9, 4, 2**40))], []), "cap"),
        (gguf([("k", struct.pack("<IIQ", 9, 8, 10**6))], []), "cannot fit"),
        (gguf([("k", struct.pack("<I", 77))], []), "unknown value type"),
        (b"GGUF" + struct.pack("<I", 3) + b"\x01", "remain"),
    ],
)
def test_gguf_absurd_counts(tmp_path: Path, data: bytes, message: str) -> None:
    p = tmp_path / "bad.gguf"
    p.write_bytes(data)
    f = one(p)
    assert f.verdict == "error" and message in (f.error or "")
    assert f.evidence["hashes"]["sha256"] == hashlib.sha256(data).hexdigest()


# ---- zips ------------------------------------------------------------------------------------


def test_zip_that_is_not_a_model(tmp_path: Path) -> None:
    p = tmp_path / "model.pt"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("notes/readme.txt", "a benign note")
    f = one(p)
    assert f.verdict == "error" and "no */data.pkl" in (f.error or "")
    recs = scan(p)  # scanned as the archive it is
    assert set(recs) == {"model.pt", "notes/readme.txt"}
    assert recs["model.pt"].provenance is None or not any(
        x.signal == "model_file" for x in recs["model.pt"].provenance
    )


def test_zip_posing_as_pytorch_is_scanned_as_an_archive(tmp_path: Path) -> None:
    img = io.BytesIO()
    Image.new("RGB", (64, 64), (40, 90, 160)).save(img, "PNG")
    p = tmp_path / "model.pth"
    p.write_bytes(
        torch_zip(pickle.dumps({"a": [1]}, protocol=2), {"photos/lake.png": img.getvalue()})
    )
    assert sn.sniff(p.read_bytes()[:512]) is sn.PYTORCH
    recs = scan(p)
    assert "photos/lake.png" in recs and recs["photos/lake.png"].media_type == "image/png"
    assert recs["archive/data.pkl"].media_type == sn.PICKLE.mime  # inspected as a member


# ---- scan integration ------------------------------------------------------------------------


def test_scan_records_and_a_bad_file_does_not_stop_the_run(tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    lora = safetensors(SD1_LORA, KOHYA_META)
    (d / "landscape_style_v1.safetensors").write_bytes(lora)
    (d / "claim.safetensors").write_bytes(struct.pack("<Q", 2 * 1024**3) + b'{"a"' + b"\0" * 600)
    (d / "absurd.gguf").write_bytes(gguf([], [], tensor_count=2**62) + b"\0" * 600)
    (d / "model.gguf").write_bytes(gguf(FLUX_GGUF_KV, FLUX_TENSORS))
    from tipline.scan.runner import run_scan

    out: list[ItemRecord] = []
    summary = run_scan([str(d)], HashOptions(), None, out.extend, jobs=1)
    recs = {Path(r.path).name: r for r in out}
    assert summary.items == 4 and summary.errors == 0
    good = recs["landscape_style_v1.safetensors"]
    assert good.media_type == "application/x-safetensors"
    assert good.autov2 == hashlib.sha256(lora).hexdigest()[:10]
    assert good.autov3 == hashlib.sha256(lora[8 + header_len(lora) :]).hexdigest()
    assert good.ai_evidence == "strong"
    assert good.provenance and good.provenance[0].verdict == "model"
    assert "text" not in good.provenance[0].evidence  # no --include-text
    for bad in ("claim.safetensors", "absurd.gguf"):
        assert recs[bad].sha256 and recs[bad].provenance
        assert recs[bad].provenance[0].verdict == "error"
    assert recs["model.gguf"].provenance and recs["model.gguf"].provenance[0].generator == "Flux"
    again = ItemRecord.from_json(json.loads(json.dumps(good.to_json())))
    assert again.to_json() == good.to_json()


def test_model_file_inside_an_archive(tmp_path: Path) -> None:
    lora = safetensors(SD1_LORA, KOHYA_META)
    p = tmp_path / "share.zip"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("loras/landscape_style_v1.safetensors", lora)
    rec = scan(p)["loras/landscape_style_v1.safetensors"]
    assert rec.autov3 == hashlib.sha256(lora[8 + header_len(lora) :]).hexdigest()
    assert rec.container == str(p) and rec.provenance and rec.provenance[0].generator == "SD1.x"


def test_bank_add_file_signals_for_a_model(tmp_path: Path) -> None:
    from tipline.scan.hashing import signals_for_file

    lora = safetensors(SD1_LORA, KOHYA_META)
    p = tmp_path / "l.safetensors"
    p.write_bytes(lora)
    sig = signals_for_file(p)
    assert sig["sha256"] == hashlib.sha256(lora).hexdigest()
    assert sig["autov2"] == sig["sha256"][:10] and len(sig["autov3"]) == 64


# ---- signal types and model banks ------------------------------------------------------------


def test_model_signal_types() -> None:
    assert signal_type("autov2").normalise(" ABCDEF0123 ") == "abcdef0123"
    assert signal_type("AutoV3").normalise("22D8CB95B807") == "22d8cb95b807"
    assert signal_type("addnet").name == "autov3"
    assert signal_type("autov3").normalise("A" * 64) == "a" * 64
    assert signal_type("autov1").normalise("4748A7F6") == "4748a7f6"
    for name, bad in (("autov3", "ab" * 5), ("autov1", "abc"), ("autov2", "xyz0123456")):
        with pytest.raises(InvalidSignalError):
            signal_type(name).normalise(bad)


def _matcher(tmp_path: Path, signals: list[tuple[str, str]]) -> tuple[BankIndex, dict[str, int]]:
    store = open_store(tmp_path / "data")
    try:
        store.create_bank(Bank("DEMO_MODELS", description="DEMO-benign-stand-in model hashes"))
        entries = [
            Entry("DEMO_MODELS", signal_type(t).name, signal_type(t).normalise(v), label=f"{t}")
            for t, v in signals
        ]
        ids = store.add_entries(entries)
        bank_entries = list(store.iter_entries("DEMO_MODELS", enabled_only=True))
        banks = store.list_banks()
    finally:
        store.close()
    return BankIndex.build(banks, bank_entries), {
        f"{t}:{v}": i for (t, v), i in zip(signals, ids, strict=True)
    }


def test_model_bank_matches_after_metadata_edit_by_autov3(tmp_path: Path) -> None:
    original = safetensors(SD1_LORA, KOHYA_META)
    edited = safetensors(SD1_LORA, {**KOHYA_META, "ss_output_name": "renamed", "extra": "x"})
    assert hashlib.sha256(original).digest() != hashlib.sha256(edited).digest()
    v3 = hashlib.sha256(original[8 + header_len(original) :]).hexdigest()
    sha = hashlib.sha256(original).hexdigest()
    matcher, ids = _matcher(tmp_path, [("autov3", v3.upper()), ("sha256", sha)])
    p = tmp_path / "edited.safetensors"
    p.write_bytes(edited)
    rec = scan(p)["edited.safetensors"]
    matches = matcher.match(rec)
    assert [(m.signal_type, m.entry_id, m.via) for m in matches] == [
        ("autov3", ids[f"autov3:{v3.upper()}"], None)
    ]
    # Civitai's 12-hex AutoV3 and 10-hex AutoV2 (uppercase, as Civitai shows them)
    matcher2, _ = _matcher(tmp_path / "2", [("autov3", v3[:12].upper()), ("autov2", sha[:10])])
    p2 = tmp_path / "orig.safetensors"
    p2.write_bytes(original)
    got = {m.signal_type for m in matcher2.match(scan(p2)["orig.safetensors"])}
    assert got == {"autov3", "autov2"}


def test_cited_model_and_lora_hashes_match_model_banks(tmp_path: Path) -> None:
    ckpt = b"benign stand-in checkpoint bytes " * 100
    ckpt_sha = hashlib.sha256(ckpt).hexdigest()
    lora = safetensors(SD1_LORA, KOHYA_META)
    lora_v3 = hashlib.sha256(lora[8 + header_len(lora) :]).hexdigest()
    pt_sha = hashlib.sha256(b"a .pt lora stand-in").hexdigest()
    matcher, ids = _matcher(
        tmp_path, [("sha256", ckpt_sha), ("autov3", lora_v3), ("sha256", pt_sha)]
    )
    rec = ItemRecord(path="image.png", media_type="image/png")
    rec.provenance = [
        Finding(
            "generator_metadata",
            "ai_generated",
            generator="AUTOMATIC1111",
            evidence={
                "model_hash": ckpt_sha[:10].upper(),
                "loras": [
                    {"name": "landscape_style_v1", "hash": lora_v3[:12]},
                    {"name": "other", "hash": pt_sha[:12]},
                ],
            },
        )
    ]
    got = {(m.entry_id, m.signal_type, m.via) for m in matcher.match(rec)}
    assert got == {
        (ids[f"sha256:{ckpt_sha}"], "sha256", "cited_model"),
        (ids[f"autov3:{lora_v3}"], "autov3", "cited_lora"),
        (ids[f"sha256:{pt_sha}"], "sha256", "cited_lora"),
    }
    # a LoRA that cites its base model (kohya ss_new_sd_model_hash) links to it too
    matcher2, ids2 = _matcher(tmp_path / "2", [("sha256", "ab" * 32)])
    p = tmp_path / "l.safetensors"
    p.write_bytes(lora)
    via = [(m.via, m.entry_id) for m in matcher2.match(scan(p)["l.safetensors"])]
    assert via == [("cited_base_model", ids2[f"sha256:{'ab' * 32}"])]
    m = Match("B", 1, "autov3", 0, "x", via="cited_lora")
    assert ItemRecord.from_json(ItemRecord("p", matches=[m]).to_json()).matches[0].via == (
        "cited_lora"
    )


def test_image_infotext_citing_a_banked_model_end_to_end(tmp_path: Path) -> None:
    """A PNG whose A1111 parameters cite a model and a LoRA in a model bank: the image links
    to the models that made it (through the generator-metadata reader)."""
    lora = safetensors(SD1_LORA, KOHYA_META)
    v3 = hashlib.sha256(lora[8 + header_len(lora) :]).hexdigest()
    ckpt_sha = hashlib.sha256(b"benign stand-in checkpoint").hexdigest()
    params = (
        "mountain lake at dawn, test pattern\nNegative prompt: blurry\n"
        f"Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 64x64, "
        f"Model hash: {ckpt_sha[:10]}, Model: landscape_base, "
        f'Lora hashes: "landscape_style_v1: {v3[:12]}", Version: v1.6.0'
    )
    info = PngInfo()
    info.add_text("parameters", params)
    p = tmp_path / "landscape.png"
    Image.new("RGB", (64, 64), (90, 140, 200)).save(p, "PNG", pnginfo=info)
    rec = scan(p)["landscape.png"]
    if not rec.provenance or not any(f.evidence.get("model_hash") for f in rec.provenance):
        pytest.skip("generator-metadata reader not available in this build")
    matcher, ids = _matcher(tmp_path, [("sha256", ckpt_sha), ("autov3", v3)])
    got = {(m.via, m.entry_id) for m in matcher.match(rec)}
    assert got == {
        ("cited_model", ids[f"sha256:{ckpt_sha}"]),
        ("cited_lora", ids[f"autov3:{v3}"]),
    }


def test_scan_cli_with_a_model_bank(tmp_path: Path) -> None:
    lora = safetensors(SD1_LORA, KOHYA_META)
    v3 = hashlib.sha256(lora[8 + header_len(lora) :]).hexdigest()
    data = tmp_path / "data"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "landscape_style_v1.safetensors").write_bytes(lora)
    env = {**os.environ, "TIPLINE_DATA_DIR": str(data)}
    cli = [sys.executable, "-m", "tipline"]
    subprocess.run([*cli, "bank", "create", "DEMO_MODELS"], env=env, check=True)
    subprocess.run(
        [*cli, "bank", "add", "DEMO_MODELS", f"autov3:{v3[:12].upper()}", "--label",
         "DEMO-benign-stand-in"], env=env, check=True,
    )  # fmt: skip
    r = subprocess.run(
        [*cli, "scan", str(tmp_path / "in"), "-j", "1"], env=env, capture_output=True, text=True
    )
    assert r.returncode == 1, r.stderr
    rec = json.loads(r.stdout.splitlines()[0])
    assert rec["autov3"] == v3 and rec["matches"][0]["signal_type"] == "autov3"
    assert rec["provenance"][0]["signal"] == "model_file"
