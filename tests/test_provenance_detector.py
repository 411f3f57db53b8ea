"""The plug-in detector interface, with a tiny ONNX model built here (no weights ship).

The model is "mean brightness -> logit": an honest stand-in whose scores we can predict, on
benign procedural images (dark and bright flat fields, gradients).
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from tipline.cli.app import _register, app  # noqa: E402
from tipline.findings import ai_evidence  # noqa: E402
from tipline.media.sniff import PNG  # noqa: E402
from tipline.provenance import detector as det  # noqa: E402

GAIN, BIAS = 12.0, -6.0  # logit = 12 * mean(x) - 6 with x in [0, 1]


def tiny_model(path: Path, kind: str = "logit") -> Path:
    """ReduceMean over C, H, W -> Mul -> Add (-> 2-way output for softmax)."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("ReduceMean", ["image"], ["m"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Mul", ["m", "gain"], ["g"]),
        helper.make_node("Add", ["g", "bias"], ["logit"]),
    ]
    inits = [
        helper.make_tensor("gain", TensorProto.FLOAT, [1], [GAIN]),
        helper.make_tensor("bias", TensorProto.FLOAT, [1], [BIAS]),
    ]
    out_name, out_shape = "logit", [1]
    if kind == "softmax":  # [real, ai] logits: [0, logit]
        nodes += [
            helper.make_node("Mul", ["logit", "zero"], ["z"]),
            helper.make_node("Unsqueeze", ["z", "ax"], ["z2"]),
            helper.make_node("Unsqueeze", ["logit", "ax"], ["l2"]),
            helper.make_node("Concat", ["z2", "l2"], ["pair"], axis=1),
        ]
        inits += [
            helper.make_tensor("zero", TensorProto.FLOAT, [1], [0.0]),
            helper.make_tensor("ax", TensorProto.INT64, [1], [1]),
        ]
        out_name, out_shape = "pair", [1, 2]
    graph = helper.make_graph(
        nodes,
        "mean_brightness",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, out_shape)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def write_card(tmp: Path, kind: str = "logit", **extra: Any) -> Path:
    tiny_model(tmp / "tiny.onnx", kind)
    card = {
        "format": det.CARD_FORMAT,
        "name": "tiny-brightness",
        "onnx": "tiny.onnx",
        "input": {
            "size": [32, 32],
            "resize": "center_crop",
            "interpolation": "bilinear",
            "layout": "NCHW",
            "channel_order": "RGB",
            "scale": 1 / 255,
            "mean": [0, 0, 0],
            "std": [1, 1, 1],
        },
        "output": {
            "index": 1 if kind == "softmax" else 0,
            "kind": kind,
            "meaning": "brightness (a stand-in for 'AI-generated')",
        },
        "threshold": None,
        "calibration": None,
        "notes": "kept as written",
        **extra,
    }
    path = tmp / "card.json"
    path.write_text(json.dumps(card))
    return path


def flat_png(level: int, size: tuple[int, int] = (48, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (level, level, level)).save(buf, "PNG")
    return buf.getvalue()


def expected(level: int) -> float:
    return 1 / (1 + math.exp(-(GAIN * level / 255 + BIAS)))


@pytest.mark.parametrize("kind", ["logit", "softmax"])
def test_scores_follow_the_card(tmp_path: Path, kind: str) -> None:
    d = det.Detector(det.ModelCard.load(write_card(tmp_path, kind)))
    for level in (0, 64, 128, 255):
        assert d.score_bytes(flat_png(level), PNG, det.Limits()) == pytest.approx(
            expected(level), abs=1e-5
        )


def test_preprocessing_layout_order_and_normalisation(tmp_path: Path) -> None:
    card = det.ModelCard.load(write_card(tmp_path))
    card.layout, card.channel_order = "NCHW", "BGR"
    card.mean, card.std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    d = det.Detector(card)
    rgb = np.zeros((64, 96, 3), np.uint8)
    rgb[..., 0] = 255  # red
    x = d.preprocess(rgb)
    assert x.shape == (1, 3, 32, 32) and x.dtype == np.float32
    assert x[0, 2].mean() == pytest.approx((1 - 0.5) / 0.25)  # red is last in BGR
    assert x[0, 0].mean() == pytest.approx((0 - 0.5) / 0.25)


def test_uncalibrated_card_gives_scores_but_no_suspicion(tmp_path: Path) -> None:
    d = det.Detector(det.ModelCard.load(write_card(tmp_path)))
    f = d.finding(0.99)
    assert f.signal == "detector" and f.verdict == "unknown"
    assert f.evidence["calibrated"] is False


def benign_folder(root: Path, levels: list[int]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, level in enumerate(levels):
        (root / f"b{i:04d}.png").write_bytes(flat_png(level))
    (root / "notes.txt").write_text("not an image, skipped")
    return root


def test_calibrate_hits_the_target_rate_and_writes_the_card(tmp_path: Path) -> None:
    card_path = write_card(tmp_path)
    levels = list(range(0, 200))  # 200 benign images, brightness 0..199
    benign = benign_folder(tmp_path / "benign", levels)
    d = det.Detector(det.ModelCard.load(card_path))
    result = det.calibrate(d, [benign], fpr=0.05)
    assert result.n_benign == 200
    assert result.false_positives <= 10
    assert result.false_positives == 10  # exactly the brightest 5% (no ties here)
    assert result.threshold == pytest.approx(expected(189), abs=1e-3) or (
        expected(189) < result.threshold <= expected(190)
    )
    saved = json.loads(card_path.read_text())
    assert saved["threshold"] == result.threshold
    assert saved["notes"] == "kept as written"
    cal = saved["calibration"]
    assert cal["n_benign"] == 200 and cal["target_fpr"] == 0.05
    assert cal["false_positives"] == 10
    assert 0.05 < cal["fpr_upper_95"] < 0.1
    assert cal["benign_tail"][0] == pytest.approx(expected(199), abs=1e-5)

    # Reloaded, the detector raises a suspicion above the threshold and only there.
    d2 = det.Detector(det.ModelCard.load(card_path))
    hi = d2.finding(d2.score_bytes(flat_png(250), PNG, det.Limits()))
    lo = d2.finding(d2.score_bytes(flat_png(20), PNG, det.Limits()))
    assert hi.verdict == "ai_generated" and lo.verdict == "unknown"
    assert hi.evidence["benign_exceedance"] == 0.0
    assert 0.99 < hi.confidence < 1.0
    # A classifier's suspicion never counts as strong evidence.
    assert ai_evidence([hi]) == "weak"


def test_threshold_rules() -> None:
    assert det.threshold_for_fpr([0.1, 0.2, 0.3, 0.9], 0.01) > 0.9  # none may pass
    t = det.threshold_for_fpr([0.5] * 10 + [0.1] * 90, 0.05)
    assert t > 0.5  # ties above the allowance are all excluded
    with pytest.raises(det.DetectorError):
        det.threshold_for_fpr([], 0.01)
    assert det.binomial_upper(0, 3000) == pytest.approx(1 - 0.05 ** (1 / 3000), rel=1e-3)


def test_bad_cards_are_reported_plainly(tmp_path: Path) -> None:
    p = tmp_path / "card.json"
    p.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(det.DetectorError, match="format"):
        det.ModelCard.load(p)
    p.write_text(json.dumps({"format": det.CARD_FORMAT, "onnx": "x.onnx", "input": {}}))
    with pytest.raises(det.DetectorError, match="missing key"):
        det.ModelCard.load(p)
    card = write_card(tmp_path, sha256="0" * 64)
    with pytest.raises(det.DetectorError, match="SHA-256"):
        det.Detector(det.ModelCard.load(card))


def test_reader_never_raises(tmp_path: Path) -> None:
    card = write_card(tmp_path)
    [f] = det.read_detector(b"\x89PNG\r\n\x1a\nbroken", PNG, det.DetectorSettings(card=card))
    assert f.verdict == "error"
    [f] = det.read_detector(flat_png(128), PNG, det.DetectorSettings(card=tmp_path / "none"))
    assert f.verdict == "error"


def test_cli_calibrate_then_score(tmp_path: Path) -> None:
    _register()
    card = write_card(tmp_path)
    benign = benign_folder(tmp_path / "benign", list(range(0, 200, 2)))
    ai = benign_folder(tmp_path / "ai", [230, 240, 250])
    runner = CliRunner()
    r = runner.invoke(
        app,
        [
            *("detector", "calibrate", "--card", str(card), "--fpr", "0.05"),
            *("--benign", str(benign), "--ai", str(ai)),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "5 of 100 benign images" in r.output
    assert "detected 3 of 3" in r.output
    assert "cannot show a rate" in r.output  # 100 < 3 / 0.05
    r = runner.invoke(app, ["detector", "score", "--card", str(card), "--json", str(ai)])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    assert [row["verdict"] for row in rows] == ["ai_generated"] * 3
    assert all(row["signal"] == "detector" for row in rows)
