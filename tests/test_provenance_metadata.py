"""Generator metadata, IPTC, stealth metadata: every tool, privacy, and hostile containers.

Every file is benign: procedural images wrapped in each tool's metadata format by
tests/fixtures_provenance.py, with neutral prompts.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from typer.testing import CliRunner

import fixtures_provenance as fx
from tipline import provenance
from tipline.cli.app import _register, app
from tipline.findings import Finding
from tipline.media.sniff import PNG, sniff
from tipline.provenance import containers, stealth
from tipline.record import ItemRecord
from tipline.scan.hashing import HashOptions, hash_bytes

_register()
runner = CliRunner()
CATALOGUE = fx.catalogue()


def analyse(data: bytes, include_text: bool = True) -> list[Finding]:
    return provenance.analyse(data, include_text=include_text, only=_BUILTIN)


_BUILTIN = ("generator_metadata", "iptc", "stealth_metadata")


def found(findings: list[Finding], signal: str = "generator_metadata") -> list[Finding]:
    return [f for f in findings if f.signal == signal and f.verdict != "error"]


def errors(findings: list[Finding]) -> list[str]:
    return [f.error or "" for f in findings if f.verdict == "error"]


def one(findings: list[Finding], signal: str = "generator_metadata") -> Finding:
    hits = found(findings, signal)
    assert len(hits) == 1, [f.to_json(True) for f in findings]
    return hits[0]


# --- every tool --------------------------------------------------------------------------------

# fixture -> (signal, generator, facts that must be in evidence)
EXPECTED: dict[str, tuple[str, str, dict[str, Any]]] = {
    "a1111.png": ("generator_metadata", "AUTOMATIC1111",
                  {"model": fx.MODEL, "model_hash": fx.MODEL_HASH, "seed": fx.SEED, "steps": 28,
                   "cfg": 6.5, "sampler": "DPM++ 2M", "scheduler": "Karras", "size": "512x384",
                   "vae": "sdxl-vae.safetensors", "version": "v1.10.1", "clip_skip": 2}),
    "a1111-itxt-unicode.png": ("generator_metadata", "AUTOMATIC1111", {"model": fx.MODEL}),
    "forge.png": ("generator_metadata", "Forge", {"model": fx.MODEL}),
    "sdnext.png": ("generator_metadata", "SD.Next", {"app": "SD.Next", "backend": "Diffusers"}),
    "civitai.png": ("generator_metadata", "Civitai", {"model_hash": fx.MODEL_HASH}),
    "a1111-utf16be.jpg": ("generator_metadata", "AUTOMATIC1111", {"seed": fx.SEED}),
    "a1111-utf16le.jpg": ("generator_metadata", "AUTOMATIC1111", {"seed": fx.SEED}),
    "a1111-utf16be.webp": ("generator_metadata", "AUTOMATIC1111", {"seed": fx.SEED}),
    "a1111.gif": ("generator_metadata", "AUTOMATIC1111", {"seed": fx.SEED}),
    "comfyui.png": ("generator_metadata", "ComfyUI",
                    {"model": f"{fx.MODEL}.safetensors", "seed": fx.SEED, "steps": 20,
                     "sampler": "euler", "size": "512x384", "graphs": ["prompt", "workflow"]}),
    "comfyui.webp": ("generator_metadata", "ComfyUI",
                     {"model": f"{fx.MODEL}.safetensors", "graphs": ["prompt", "workflow"]}),
    "invokeai-v3.png": ("generator_metadata", "InvokeAI",
                        {"model": fx.MODEL, "model_base": "sdxl", "seed": fx.SEED,
                         "version": "4.2.4", "size": "512x384"}),
    "invokeai-v2.png": ("generator_metadata", "InvokeAI",
                        {"model": fx.MODEL, "model_hash": fx.MODEL_HASH, "seed": fx.SEED}),
    "invokeai-dream.png": ("generator_metadata", "InvokeAI",
                           {"seed": fx.SEED, "steps": 50, "sampler": "k_lms", "size": "512x512"}),
    "novelai.png": ("generator_metadata", "NovelAI",
                    {"model": "Stable Diffusion XL", "model_hash": "9CC2F394", "seed": fx.SEED,
                     "sampler": "k_euler_ancestral", "signed": True}),
    "novelai-comment-only.png": ("generator_metadata", "NovelAI", {"seed": fx.SEED}),
    "novelai.webp": ("generator_metadata", "NovelAI", {"model_hash": "9CC2F394"}),
    "stealth-alpha-info.png": ("stealth_metadata", "AUTOMATIC1111",
                               {"mode": "alpha", "magic": "stealth_pnginfo", "seed": fx.SEED}),
    "stealth-alpha-comp.png": ("stealth_metadata", "NovelAI",
                               {"mode": "alpha", "magic": "stealth_pngcomp",
                                "model_hash": "9CC2F394"}),
    "stealth-rgb-info.png": ("stealth_metadata", "AUTOMATIC1111",
                             {"mode": "rgb", "magic": "stealth_rgbinfo"}),
    "stealth-rgb-comp.png": ("stealth_metadata", "NovelAI",
                             {"mode": "rgb", "magic": "stealth_rgbcomp"}),
    "stealth-alpha-info.webp": ("stealth_metadata", "NovelAI", {"mode": "alpha"}),
    "fooocus.png": ("generator_metadata", "Fooocus",
                    {"model": f"{fx.MODEL}.safetensors", "model_hash": fx.MODEL_HASH,
                     "version": "Fooocus v2.5.5", "size": "512x384", "performance": "Speed"}),
    "fooocus-a1111.png": ("generator_metadata", "Fooocus", {"metadata_scheme": "a1111"}),
    "fooocus.jpg": ("generator_metadata", "Fooocus",
                    {"metadata_scheme": "fooocus", "software": "Fooocus v2.5.5"}),
    "ruinedfooocus.png": ("generator_metadata", "RuinedFooocus", {"model_hash": fx.MODEL_HASH}),
    "fooocus-mre.png": ("generator_metadata", "Fooocus-MRE", {"model": fx.MODEL}),
    "fooocus-mre.jpg": ("generator_metadata", "Fooocus-MRE", {"model": fx.MODEL}),
    "swarmui.png": ("generator_metadata", "SwarmUI",
                    {"model": fx.MODEL, "seed": fx.SEED, "version": "0.9.5.0",
                     "model_hash": "0x" + "ab" * 32}),
    "swarmui.jpg": ("generator_metadata", "SwarmUI", {"model": fx.MODEL}),
    "easydiffusion.png": ("generator_metadata", "Easy Diffusion",
                          {"model": fx.MODEL, "seed": fx.SEED, "steps": 25, "size": "512x384"}),
    "easydiffusion-old.png": ("generator_metadata", "Easy Diffusion", {"model": fx.MODEL}),
    "drawthings.png": ("generator_metadata", "Draw Things",
                       {"model": f"{fx.MODEL}_f16.ckpt", "seed": fx.SEED, "size": "512x384",
                        "software": "Draw Things"}),
    "midjourney.png": ("generator_metadata", "Midjourney",
                       {"job_id": "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b", "version": "6.1",
                        "created": "2024-06-01T12:00:00Z"}),
    "software-novelai.jpg": ("generator_metadata", "NovelAI", {"software": "NovelAI"}),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_tool(name: str) -> None:
    signal, generator, facts = EXPECTED[name]
    findings = analyse(CATALOGUE[name]())
    assert not errors(findings), errors(findings)
    f = one(findings, signal)
    assert f.generator == generator
    assert f.verdict == "ai_generated"
    for k, v in facts.items():
        assert f.evidence.get(k) == v, (k, f.evidence)
    assert provenance.ai_evidence(findings) == "strong"


def test_every_catalogue_file_is_covered() -> None:
    not_tools = {"a1111-extras.png", "camera.jpg", "plain.png"}
    iptc = {n for n in CATALOGUE if n.startswith("iptc-")}
    assert set(CATALOGUE) - set(EXPECTED) - not_tools - iptc == set()


def test_a1111_loras_embeddings_and_prompt() -> None:
    f = one(analyse(CATALOGUE["a1111.png"]()))
    assert f.evidence["loras"] == [
        {"name": fx.LORA, "hash": fx.LORA_HASH, "weight": 0.7, "kind": "lora"}
    ]
    assert f.evidence["embeddings"] == [{"name": "calm-sea", "hash": "5566778899aa"}]
    assert f.evidence["text"]["prompt"] == fx.PROMPT
    assert f.evidence["text"]["negative_prompt"] == fx.NEGATIVE
    assert f.evidence["text"]["settings"]["Lora hashes"] == f"{fx.LORA}: {fx.LORA_HASH}"


def test_civitai_hashes_and_resources() -> None:
    f = one(analyse(CATALOGUE["civitai.png"]()))
    assert f.evidence["hashes"] == {"model": fx.MODEL_HASH, f"lora:{fx.LORA}": fx.LORA_HASH}
    types = [r["type"] for r in f.evidence["civitai_resources"]]
    assert types == ["checkpoint", "lora"]
    lora = next(x for x in f.evidence["loras"] if x["name"] == fx.LORA)
    assert lora["hash"] == fx.LORA_HASH


def test_infotext_quoted_values_and_three_pair_rule() -> None:
    from tipline.provenance.infotext import parse_infotext, split_pairs

    pairs = split_pairs('Steps: 20, Note: "a, b: c\\nd", Seed: 5, Hashes: {"a": "b, c"}, X: 1')
    assert pairs == [
        ("Steps", "20"), ("Note", "a, b: c\nd"), ("Seed", "5"), ("Hashes", '{"a": "b, c"}'),
        ("X", "1"),
    ]  # fmt: skip
    two = parse_infotext("a lighthouse\nSteps: 20, Seed: 5")
    assert not two.has_settings_line and two.prompt == "a lighthouse\nSteps: 20, Seed: 5"
    neg = parse_infotext("a lighthouse\nNegative prompt: fog\nmore fog\nSteps: 1, Seed: 2, Size: 3")
    assert (neg.prompt, neg.negative_prompt) == ("a lighthouse", "fog\nmore fog")


def test_parameters_without_settings_is_weak_and_free_comments_are_ignored() -> None:
    fs = analyse(fx.png_text({"parameters": "a lighthouse on a cliff"}))
    f = one(fs)
    assert f.confidence < 0.9 and provenance.ai_evidence(fs) == "weak"
    # a JPEG comment or EXIF UserComment without infotext structure is not a generator
    assert analyse(fx.jpeg(comment="Created with an image editor")) == []
    assert analyse(fx.jpeg(fx._exif_uc("holiday, beach: 2019"))) == []


def test_comfyui_positive_negative_traced_and_notes_are_text() -> None:
    f = one(analyse(CATALOGUE["comfyui.png"]()))
    assert f.evidence["text"]["prompt"] == "a lighthouse on a cliff at sunset"
    assert f.evidence["text"]["negative_prompt"] == fx.NEGATIVE
    assert f.evidence["text"]["notes"] == ["remember to try the harbour scene"]
    assert f.evidence["loras"][0]["name"] == f"{fx.LORA}.safetensors"
    assert "CheckpointLoaderSimple" in f.evidence["node_types"]


def test_comfyui_node_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    from tipline.provenance import comfy

    monkeypatch.setattr(comfy, "MAX_NODES", 50)
    graph = {str(i): {"class_type": "CLIPTextEncode", "inputs": {"text": "a"}} for i in range(500)}
    f = one(analyse(fx.png_text({"prompt": json.dumps(graph)})))
    assert f.evidence["truncated"] is True and f.evidence["node_count"] == 50


def test_a1111_extras_is_weak_ai_edited() -> None:
    fs = analyse(CATALOGUE["a1111-extras.png"]())
    assert one(fs).verdict == "ai_edited" and provenance.ai_evidence(fs) == "weak"


@pytest.mark.parametrize(
    ("name", "verdict", "evidence"),
    [
        ("iptc-ai.jpg", "ai_generated", "strong"),
        ("iptc-ai.webp", "ai_generated", "strong"),
        ("iptc-composite.jpg", "ai_edited", "strong"),
        ("iptc-capture.jpg", "not_ai", "none"),
    ],
)
def test_iptc_digital_source_type(name: str, verdict: str, evidence: str) -> None:
    fs = analyse(CATALOGUE[name]())
    f = one(fs, "iptc")
    assert f.verdict == verdict
    assert f.evidence["uri"].startswith("http://cv.iptc.org/newscodes/digitalsourcetype/")
    assert provenance.ai_evidence(fs) == evidence


def test_iptc_attribute_form_and_ai_system() -> None:
    xmp = fx.xmp_packet("").replace(
        'rdf:about=""',
        'rdf:about="" Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/'
        'digitalsourcetype/trainedAlgorithmicMedia" Iptc4xmpExt:AISystemUsed="ExampleGen"',
    )
    f = one(analyse(fx.jpeg(xmp=xmp)), "iptc")
    assert (f.verdict, f.generator, f.evidence["ai_system"]) == (
        "ai_generated", "ExampleGen", "ExampleGen"
    )  # fmt: skip


def test_midjourney_author_and_prompt_are_text() -> None:
    fs = analyse(CATALOGUE["midjourney.png"]())
    f = one(fs)
    assert f.evidence["text"]["author"] == "example-user-42"
    assert f.evidence["text"]["prompt"] == "a lighthouse on a cliff at sunset, oil painting"
    assert f.evidence["parameters"]["ar"] == "4:3"
    assert one(fs, "iptc").verdict == "ai_generated"


def test_camera_and_plain_files_have_no_findings() -> None:
    assert analyse(CATALOGUE["camera.jpg"]()) == []
    assert analyse(CATALOGUE["plain.png"]()) == []


# --- privacy -----------------------------------------------------------------------------------

SECRETS = (
    "lighthouse", "harbour", "blurry", "example-user-42", "remember to try", "calm-sea: 55",
)  # fmt: skip


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_no_free_text_without_include_text(name: str) -> None:
    data = CATALOGUE[name]()
    findings = provenance.analyse(data, only=_BUILTIN)
    assert all("text" not in f.evidence for f in findings)
    dumped = json.dumps([f.to_json(include_text=True) for f in findings])
    for secret in SECRETS:
        assert secret not in dumped, (name, secret)


def test_include_text_keeps_prompts() -> None:
    data = CATALOGUE["a1111.png"]()
    rec = hash_bytes(data, "x.png", HashOptions(include_text=True))
    assert rec.provenance is not None
    assert fx.PROMPT in json.dumps(rec.to_json())
    rec2 = hash_bytes(data, "x.png", HashOptions())
    assert "lighthouse" not in json.dumps(rec2.to_json())
    assert rec2.to_json()["provenance"][0]["evidence"]["model"] == fx.MODEL


def test_structured_values_are_one_short_line() -> None:
    long_model = "m" * 5000 + "\nsecond line"
    info = fx.A1111_INFOTEXT.replace(f"Model: {fx.MODEL}", f"Model: {json.dumps(long_model)}")
    f = one(analyse(fx.png_text({"parameters": info}), include_text=False))
    assert len(f.evidence["model"]) == 256 and "\n" not in f.evidence["model"]


# --- integration: record, CLI ------------------------------------------------------------------


def test_record_round_trip_and_no_provenance() -> None:
    data = CATALOGUE["comfyui.png"]()
    rec = hash_bytes(data, "c.png", HashOptions())
    d = rec.to_json()
    assert d["ai_evidence"] == "strong"
    assert d["provenance"][0]["generator"] == "ComfyUI"
    back = ItemRecord.from_json(json.loads(json.dumps(d)))
    assert back.to_json() == d
    off = hash_bytes(data, "c.png", HashOptions(provenance=False)).to_json()
    assert "provenance" not in off and "ai_evidence" not in off
    assert off["pdq"] == d["pdq"] and not off["errors"]


def test_provenance_problems_never_fail_the_item() -> None:
    bad = fx.png_text({"prompt": "{not json", "workflow": json.dumps(fx.COMFY_WORKFLOW)})
    rec = hash_bytes(bad, "bad.png", HashOptions())
    assert rec.errors == [] and rec.pdq is not None
    assert rec.ai_evidence == "strong"
    assert any(f.verdict == "error" for f in rec.provenance or [])
    # a bad CRC makes Pillow refuse the PNG (PDQ error), provenance is still there
    crc = fx.png(None, [fx.text("parameters", fx.A1111_INFOTEXT, bad_crc=True)])
    rec = hash_bytes(crc, "crc.png", HashOptions())
    assert rec.ai_evidence == "strong"
    assert not any("CRC" in e for e in rec.errors)


def test_hash_cli_flags(tmp_path: Path) -> None:
    p = tmp_path / "a.png"
    p.write_bytes(CATALOGUE["a1111.png"]())
    res = runner.invoke(app, ["hash", str(p)], catch_exceptions=False)
    d = json.loads(res.stdout)
    assert res.exit_code == 0 and d["ai_evidence"] == "strong" and "lighthouse" not in res.stdout
    res = runner.invoke(app, ["hash", str(p), "--include-text"], catch_exceptions=False)
    assert "lighthouse" in res.stdout
    res = runner.invoke(app, ["hash", str(p), "--no-provenance"], catch_exceptions=False)
    assert "provenance" not in json.loads(res.stdout)


def test_scan_cli_resume_keeps_provenance(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a1111.png", "comfyui.png", "plain.png"):
        (folder / name).write_bytes(CATALOGUE[name]())
    out = tmp_path / "out.jsonl"
    data = tmp_path / "data"
    args = ["--data-dir", str(data), "scan", str(folder), "-o", str(out), "--no-progress"]
    res = runner.invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.stderr
    recs = {Path(json.loads(x)["path"]).name: json.loads(x) for x in out.read_text().splitlines()}
    assert recs["a1111.png"]["ai_evidence"] == "strong"
    assert recs["plain.png"]["ai_evidence"] == "none"
    res = runner.invoke(app, [*args, "--resume"], catch_exceptions=False)
    assert res.exit_code == 0
    again = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(again) == 3


def test_inspect_cli(tmp_path: Path) -> None:
    p = tmp_path / "m.png"
    p.write_bytes(CATALOGUE["midjourney.png"]())
    res = runner.invoke(app, ["inspect", str(p)], catch_exceptions=False)
    assert res.exit_code == 0
    assert "Midjourney" in res.stdout and "STRONG" in res.stdout
    assert "lighthouse" not in res.stdout and "example-user-42" not in res.stdout
    assert "withheld" in res.stdout
    res = runner.invoke(app, ["inspect", str(p), "--include-text"], catch_exceptions=False)
    assert "lighthouse" in res.stdout and "disturbing" in res.stdout
    res = runner.invoke(app, ["inspect", str(p), "--json"], catch_exceptions=False)
    d = json.loads(res.stdout)
    assert d["ai_evidence"] == "strong" and "lighthouse" not in res.stdout
    res = runner.invoke(app, ["inspect", str(tmp_path)])
    assert res.exit_code == 2


def test_inspect_makes_control_characters_visible() -> None:
    from tipline.cli.inspect import safe

    assert safe("a\x1b[31mb\u202ec\nd") == "a\\u001b[31mb\\u202ec\nd"


# --- registry ----------------------------------------------------------------------------------


def test_reader_exception_becomes_error_finding_and_others_run() -> None:
    def boom(ctx: provenance.ReadContext) -> list[Finding]:
        raise RuntimeError("reader bug")

    def sees_text(ctx: provenance.ReadContext) -> list[Finding]:
        texts = [f.evidence.get("text") for f in ctx.findings]
        return [Finding("keyword", "unknown", evidence={"saw_text": any(texts)})]

    provenance.register_reader("test_boom", boom, signal="watermark", cost=1)
    provenance.register_reader("test_late", sees_text, signal="keyword", cost=99)
    try:
        data = CATALOGUE["a1111.png"]()
        fs = provenance.analyse(data, only=(*_BUILTIN, "test_boom", "test_late"))
        assert any(f.signal == "watermark" and "reader bug" in (f.error or "") for f in fs)
        assert one(fs).generator == "AUTOMATIC1111"
        assert one(fs, "keyword").evidence["saw_text"] is True  # later readers see the text
        assert provenance.has_readers("image")
    finally:
        provenance.unregister_reader("test_boom")
        provenance.unregister_reader("test_late")


# --- hostile and broken input: each problem is an error finding, the rest goes on --------------


def test_bad_crc_is_reported_and_text_still_read() -> None:
    fs = analyse(fx.png(None, [fx.text("parameters", fx.A1111_INFOTEXT, bad_crc=True)]))
    assert any("bad CRC in tEXt" in e for e in errors(fs))
    f = one(fs)
    assert f.generator == "AUTOMATIC1111" and "(bad CRC)" in f.evidence["source"]


def test_ztxt_bomb_is_an_error_and_other_chunks_are_read() -> None:
    bomb = fx.ztxt("workflow", b"\x00" * (containers.MAX_TEXT_BYTES + 1024))
    assert len(bomb) < 100_000
    fs = analyse(fx.png(None, [bomb, fx.text("parameters", fx.A1111_INFOTEXT)]))
    assert any("decompression bomb" in e for e in errors(fs))
    assert one(fs).generator == "AUTOMATIC1111"


def test_total_text_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(containers, "MAX_TOTAL_TEXT", 3000)
    chunks = [fx.ztxt(f"k{i}", "x" * 1000) for i in range(5)]
    fs = analyse(fx.png(None, [*chunks, fx.text("parameters", fx.A1111_INFOTEXT)]))
    assert any("text budget" in e for e in errors(fs))


def test_invalid_json_in_one_graph_keeps_the_other() -> None:
    data = fx.png_text({"prompt": "{not json", "workflow": json.dumps(fx.COMFY_WORKFLOW)})
    fs = analyse(data)
    assert any("ComfyUI prompt: invalid JSON" in e for e in errors(fs))
    f = one(fs)
    assert f.generator == "ComfyUI" and f.evidence["graphs"] == ["workflow"]


@pytest.mark.parametrize(
    "pairs",
    [
        {"parameters": '{"sui_image_params": '},
        {"invokeai_metadata": "{"},
        {"sd-metadata": "[1, 2"},
        {"Software": "NovelAI", "Comment": '{"prompt": '},
        {"workflow": "[" * 100_000 + "]" * 100_000},
    ],
)
def test_invalid_or_hostile_json_is_an_error(pairs: dict[str, str]) -> None:
    fs = analyse(fx.png_text(pairs))
    assert errors(fs), [f.to_json(True) for f in fs]


def test_broken_utf16_user_comment() -> None:
    bad = b"UNICODE\x00" + "Steps: 1".encode("utf-16-be") + b"\xd8\x00\x00a"  # lone surrogate
    exif = fx.tiff({0x0131: fx.ascii_tag("NovelAI")}, {0x9286: (7, bad)})
    fs = analyse(fx.jpeg(exif))
    assert any("UserComment" in e and "UTF-16" in e for e in errors(fs))
    assert one(fs).generator == "NovelAI"  # the Software tag was still read
    odd = fx.tiff({}, {0x9286: (7, b"UNICODE\x00" + b"\x00a\x00b\x01")})
    assert any("odd number" in e for e in errors(analyse(fx.jpeg(odd))))


def test_huge_text_chunk_count() -> None:
    many = [fx.text("parameters", fx.A1111_INFOTEXT)] + [
        fx.text(f"k{i}", "v") for i in range(containers.MAX_TEXT_CHUNKS + 500)
    ]
    fs = analyse(fx.png(None, many))
    assert any("501 skipped" in e for e in errors(fs))
    assert one(fs).generator == "AUTOMATIC1111"


def test_huge_chunk_count_stops_walking(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(containers, "MAX_CHUNKS", 300)
    junk = [fx.chunk(b"zzZz", b"") for _ in range(1000)]
    fs = analyse(fx.png(None, [fx.text("parameters", fx.A1111_INFOTEXT), *junk]))
    assert any("more than 300 chunks" in e for e in errors(fs))
    assert one(fs).generator == "AUTOMATIC1111"


def test_chunks_after_idat_are_read() -> None:
    data = fx.png(None, [], [fx.text("parameters", fx.A1111_INFOTEXT)])
    assert "parameters" not in Image.open(io.BytesIO(data)).info  # Pillow: only after load()
    f = one(analyse(data))
    assert f.generator == "AUTOMATIC1111" and "(after IDAT)" in f.evidence["source"]


def test_text_chunk_over_pillow_limit_is_read() -> None:
    workflow = dict(fx.COMFY_WORKFLOW)
    big_note = {"id": 99, "type": "Note", "widgets_values": ["calm sea " * 200_000]}
    workflow["nodes"] = [*fx.COMFY_WORKFLOW["nodes"], big_note]  # type: ignore[list-item]
    s = json.dumps(workflow)
    assert len(s) > PngImagePlugin.MAX_TEXT_CHUNK
    data = fx.png(None, [fx.ztxt("workflow", s), fx.text("prompt", json.dumps(fx.COMFY_PROMPT))])
    with pytest.raises(ValueError):
        Image.open(io.BytesIO(data)).load()  # Pillow refuses the chunk
    f = one(analyse(data))
    assert f.generator == "ComfyUI" and f.evidence["model"] == f"{fx.MODEL}.safetensors"


def test_truncated_and_corrupt_png_structure() -> None:
    good = fx.png_text({"parameters": fx.A1111_INFOTEXT})
    cut = good[: good.index(b"IDAT") + 20]
    fs = analyse(cut)
    assert any("past the end" in e for e in errors(fs))
    assert one(fs).generator == "AUTOMATIC1111"
    bad_type = good[:-12] + struct.pack(">I", 0) + b"\x00\x01\x02\x03" + b"\x00" * 4
    assert any("invalid chunk type" in e for e in errors(analyse(bad_type)))
    bad_utf8 = fx.png(None, [fx.itxt("parameters", b"\xff\xfe bad")])
    assert any("not valid UTF-8" in e for e in errors(analyse(bad_utf8)))
    corrupt_z = fx.chunk(b"zTXt", b"workflow\x00\x00" + b"\x78\x9cnot-zlib")
    assert any("corrupt compressed" in e for e in errors(analyse(fx.png(None, [corrupt_z]))))
    no_keyword = fx.chunk(b"tEXt", b"\x00value")
    assert any("keyword" in e for e in errors(analyse(fx.png(None, [no_keyword]))))


def test_malformed_exif() -> None:
    exif = fx.tiff({0x0131: fx.ascii_tag("NovelAI"), 0x013B: fx.ascii_tag("x" * 40)})
    big_count = exif[:8] + b"\xff\xff" + exif[10:]  # IFD0 claims 65535 entries
    assert any("entries" in e or "truncated" in e for e in errors(analyse(fx.jpeg(big_count))))
    wild = exif[:4] + struct.pack(">I", 10_000_000) + exif[8:]  # IFD0 far outside the data
    assert any("outside" in e for e in errors(analyse(fx.jpeg(wild))))
    assert any("byte order" in e for e in errors(analyse(fx.jpeg(b"XX" + exif[2:]))))
    # a value pointing past the end: that entry is dropped, the Software tag still read
    at = exif.index(b"x" * 40)
    cut = exif[:at]
    fs = analyse(fx.jpeg(cut))
    assert any("point outside" in e for e in errors(fs))
    assert one(fs).generator == "NovelAI"


def test_truncated_jpeg_webp_gif() -> None:
    jpg = fx.jpeg(fx._exif_uc(fx.A1111_INFOTEXT))
    cut = jpg[:40]
    assert any("truncated" in e for e in errors(analyse(cut)))
    wp = CATALOGUE["a1111-utf16be.webp"]()
    assert any("truncated" in e or "past the end" in e for e in errors(analyse(wp[:60])))
    gf = CATALOGUE["a1111.gif"]()
    fs = analyse(gf[: len(gf) - 30])
    assert any("GIF" in e for e in errors(fs))
    assert one(fs).generator == "AUTOMATIC1111"  # the comment came before the cut


def test_xmp_entities_are_refused_never_expanded_or_fetched() -> None:
    laughs = (
        '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">'
        '<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">&b;</x:xmpmeta>'
    )
    fs = analyse(fx.jpeg(xmp=laughs))
    assert any("XMP" in e for e in errors(fs))
    external = (
        '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "http://127.0.0.1:9/x">]>'
        "<x>&e; http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia</x>"
    )
    fs = analyse(fx.jpeg(xmp=external))
    assert any("XMP" in e for e in errors(fs))
    assert one(fs, "iptc").verdict == "ai_generated"  # bounded regex fallback


def test_stealth_errors() -> None:
    img = fx.landscape(200, 150, alpha=True)
    # a length field claiming more bits than the image holds
    marked = fx.stealth(img, b"x" * 10, "alpha")
    plane = marked[:, :, 3].T.copy().reshape(-1)
    plane[120:152] = (plane[120:152] & 0xFE) | 1  # length = 2**32 - 1
    marked[:, :, 3] = plane.reshape(200, 150).T
    fs = analyse(fx.png(marked))
    assert any("impossible" in e for e in errors(fs))
    # a gzip bomb in a *comp payload
    import gzip

    big = gzip.compress(b"\x00" * (stealth.MAX_PAYLOAD_BYTES + 10), 9)
    bomb = _raw_stealth(fx.landscape(400, 400, alpha=True), b"stealth_pngcomp", big)
    assert any("bomb" in e for e in errors(analyse(fx.png(bomb))))
    # corrupt gzip
    junk = _raw_stealth(img, b"stealth_pngcomp", b"not gzip at all")
    assert any("corrupt" in e for e in errors(analyse(fx.png(junk))))


def _raw_stealth(pixels: Any, magic: bytes, payload: bytes) -> Any:
    bits = np.unpackbits(np.frombuffer(magic + struct.pack(">I", len(payload) * 8) + payload,
                                       dtype=np.uint8))  # fmt: skip
    out = pixels.copy()
    h, w = out.shape[:2]
    flat = out[:, :, 3].T.copy().reshape(-1)
    assert bits.size <= flat.size
    flat[: bits.size] = (flat[: bits.size] & 0xFE) | bits
    out[:, :, 3] = flat.reshape(w, h).T
    return out


def test_stealth_check_is_cheap_on_unmarked_images(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_full_decode(*a: object, **k: object) -> None:
        raise AssertionError("decoded pixels without a magic")

    monkeypatch.setattr(stealth, "_full", no_full_decode)
    for pixels in (fx.landscape(300, 200, alpha=True), fx.landscape(300, 200), fx.color_bars()):
        assert analyse(fx.png(pixels)) == []
    # tiny images (magic spans several columns) still decode correctly
    small = fx.stealth(fx.landscape(60, 4, alpha=True), b"tiny", "alpha")
    monkeypatch.undo()
    f = one(analyse(fx.png(small)), "stealth_metadata")
    assert f.evidence["text"]["payload"] == "tiny"


def test_stealth_survives_stripped_chunks_but_not_jpeg() -> None:
    marked = fx.stealth(fx.landscape(200, 150, alpha=True), fx.A1111_INFOTEXT.encode(), "alpha")
    assert one(analyse(fx.png(marked)), "stealth_metadata").generator == "AUTOMATIC1111"
    assert analyse(fx.jpeg(pixels=marked[:, :, :3])) == []


def test_png_layout_for_interlaced_and_16bit_is_safe() -> None:
    img = Image.fromarray(fx.landscape(64, 48))
    buf = io.BytesIO()
    img.save(buf, "PNG", interlace=1)  # Pillow ignores interlace on save; stays safe either way
    assert analyse(buf.getvalue()) == []
    arr16 = fx.landscape(64, 48)[:, :, 0].astype(np.uint16) * 257
    buf = io.BytesIO()
    Image.fromarray(arr16).save(buf, "PNG")
    assert analyse(buf.getvalue()) == []


def test_container_walker_never_raises_on_random_bytes() -> None:
    rng = np.random.default_rng(5)
    seeds = [CATALOGUE[n]() for n in ("a1111.png", "fooocus.jpg", "comfyui.webp", "a1111.gif")]
    for base in seeds:
        for _ in range(40):
            data = bytearray(base)
            for pos in rng.integers(8, len(data), 6):
                data[int(pos)] = int(rng.integers(0, 256))
            mt = sniff(bytes(data[:512]))
            provenance.analyse(bytes(data), mt, only=_BUILTIN)  # must not raise


def test_zlib_helper_rejects_trailing_garbage_and_truncation() -> None:
    z = zlib.compress(b"hello")
    assert containers.inflate(z, 100, "t") == b"hello"
    with pytest.raises(containers.ChunkError):
        containers.inflate(z[:-3], 100, "t")
    assert PNG.is_image


def test_lossy_webp_with_lossless_alpha_keeps_stealth() -> None:
    img = fx.stealth(
        fx.landscape(200, 150, alpha=True), json.dumps(fx.NOVELAI_BAG).encode(), "alpha"
    )
    f = one(analyse(fx.webp(pixels=img, lossless=False)), "stealth_metadata")
    assert f.generator == "NovelAI"


def test_gif_xmp_extension_and_tiff() -> None:
    gif = fx.gif("a plain comment")
    xmp = fx.iptc_xmp("trainedAlgorithmicMedia").encode()
    magic_trailer = bytes([1, *range(255, -1, -1)]) + b"\x00"
    data = gif[:-1] + b"\x21\xff\x0bXMP DataXMP" + xmp + magic_trailer + b"\x3b"
    fs = analyse(data)
    assert one(fs, "iptc").verdict == "ai_generated" and not errors(fs)
    exif = Image.Exif()
    exif[0x0131] = "NovelAI"
    buf = io.BytesIO()
    Image.fromarray(fx.landscape()).save(buf, "TIFF", exif=exif)
    assert one(analyse(buf.getvalue())).generator == "NovelAI"


def test_gif_block_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(containers, "MAX_GIF_BLOCKS", 3)
    big = Image.fromarray(fx.landscape(300, 200)).convert("P", palette=Image.Palette.ADAPTIVE)
    buf = io.BytesIO()
    big.save(buf, "GIF")
    assert any("data blocks" in e for e in errors(analyse(buf.getvalue())))
