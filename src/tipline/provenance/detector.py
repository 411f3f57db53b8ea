"""Learned AI-image detectors, plugged in by the user: an ONNX model described by a model card.

Tipline ships no detector weights. A user who has a classifier (UnivFD, a model fine-tuned on
their own material, ...) exports it to ONNX and describes it in a small JSON *model card*::

    {
      "format": "tipline-detector-card/1",
      "name": "my-univfd-export",
      "onnx": "univfd.onnx",                  // relative to the card
      "sha256": null,                         // optional: refuse a different model file
      "input": {"name": null, "size": [224, 224], "resize": "center_crop",
                "interpolation": "bicubic", "layout": "NCHW", "channel_order": "RGB",
                "scale": 0.00392156862745098,  // 1/255: pixels to [0, 1] first
                "mean": [0.481, 0.458, 0.408], "std": [0.269, 0.261, 0.276]},
      "output": {"name": null, "index": 0, "kind": "logit",
                 "meaning": "logit that the image is AI-generated"},
      "threshold": null,                      // written by `tipline detector calibrate`
      "calibration": null
    }

``tipline detector calibrate`` scores folders of the user's own benign images and writes the
threshold that keeps the false-positive rate at the target. A detector's finding is a
*suspicion*: signal ``detector``, verdict ``ai_generated`` only above the calibrated threshold,
and ``ai_evidence`` never counts it as strong. Published detectors fall to near chance on
generators they were not trained on (see docs/provenance-c2pa-watermarks-detectors.md): a
score ranks items for review; it is never a verdict.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from PIL import Image

from tipline.config import Limits
from tipline.errors import ItemError, TiplineError
from tipline.findings import Finding
from tipline.media.decode import decode_rgb
from tipline.media.sniff import SNIFF_BYTES, MediaType, sniff
from tipline.provenance import ReadContext, register_reader

CARD_FORMAT = "tipline-detector-card/1"
Resize = Literal["center_crop", "stretch"]
OutputKind = Literal["probability", "logit", "softmax"]

_INTERPOLATION = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}
#: How many of the highest benign calibration scores the card keeps (for confidences).
_TAIL_MIN = 200


class DetectorError(TiplineError):
    """A model card or model that cannot be used."""


@dataclass(slots=True)
class ModelCard:
    """A parsed model card. ``raw`` keeps every key, so saving preserves the user's notes."""

    path: Path
    name: str
    onnx: Path
    sha256: str | None
    input_name: str | None
    size: tuple[int, int]  # width, height
    resize: Resize
    interpolation: str
    layout: Literal["NCHW", "NHWC"]
    channel_order: Literal["RGB", "BGR"]
    scale: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    output_name: str | None
    output_index: int
    output_kind: OutputKind
    meaning: str
    threshold: float | None
    calibration: dict[str, Any] | None
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> ModelCard:
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except OSError as err:
            raise DetectorError(f"cannot read model card {path}: {err.strerror}") from None
        except json.JSONDecodeError as err:
            raise DetectorError(f"model card {path} is not JSON: {err}") from None
        if not isinstance(raw, dict):
            raise DetectorError(f"model card {path} must be a JSON object")
        try:
            return cls._parse(path, raw)
        except (KeyError, TypeError, ValueError) as err:
            raise DetectorError(f"model card {path}: {_card_problem(err)}") from None

    @classmethod
    def _parse(cls, path: Path, raw: dict[str, Any]) -> ModelCard:
        if raw.get("format") != CARD_FORMAT:
            raise ValueError(f'"format" must be "{CARD_FORMAT}"')
        inp = raw["input"]
        out = raw["output"]
        size = inp["size"]
        if not (isinstance(size, list) and len(size) == 2 and all(int(v) > 0 for v in size)):
            raise ValueError('"input.size" must be [width, height]')
        mean = _triple(inp.get("mean", [0.0, 0.0, 0.0]), "input.mean")
        std = _triple(inp.get("std", [1.0, 1.0, 1.0]), "input.std")
        if any(s == 0 for s in std):
            raise ValueError('"input.std" must not contain 0')
        resize = inp.get("resize", "center_crop")
        if resize not in ("center_crop", "stretch"):
            raise ValueError('"input.resize" must be "center_crop" or "stretch"')
        interpolation = inp.get("interpolation", "bilinear")
        if interpolation not in _INTERPOLATION:
            raise ValueError(f'"input.interpolation" must be one of {sorted(_INTERPOLATION)}')
        layout = inp.get("layout", "NCHW")
        if layout not in ("NCHW", "NHWC"):
            raise ValueError('"input.layout" must be "NCHW" or "NHWC"')
        order = inp.get("channel_order", "RGB")
        if order not in ("RGB", "BGR"):
            raise ValueError('"input.channel_order" must be "RGB" or "BGR"')
        kind = out.get("kind", "probability")
        if kind not in ("probability", "logit", "softmax"):
            raise ValueError('"output.kind" must be "probability", "logit" or "softmax"')
        threshold = raw.get("threshold")
        return cls(
            path=path,
            name=str(raw.get("name") or path.stem),
            onnx=(path.parent / str(raw["onnx"])).resolve(),
            sha256=raw.get("sha256") or None,
            input_name=inp.get("name") or None,
            size=(int(size[0]), int(size[1])),
            resize=resize,
            interpolation=interpolation,
            layout=layout,
            channel_order=order,
            scale=float(inp.get("scale", 1 / 255)),
            mean=mean,
            std=std,
            output_name=out.get("name") or None,
            output_index=int(out.get("index", 0)),
            output_kind=kind,
            meaning=str(out.get("meaning", "")),
            threshold=None if threshold is None else float(threshold),
            calibration=raw.get("calibration"),
            raw=raw,
        )

    def save(self) -> None:
        """Write threshold and calibration back, keeping every other key as the user wrote it."""
        raw = dict(self.raw)
        raw["threshold"] = self.threshold
        raw["calibration"] = self.calibration
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(raw, indent=2) + "\n")
        os.replace(tmp, self.path)


def _triple(value: Any, what: str) -> tuple[float, float, float]:
    if isinstance(value, (int, float)):
        v = float(value)
        return (v, v, v)
    if isinstance(value, list) and len(value) == 3:
        return (float(value[0]), float(value[1]), float(value[2]))
    raise ValueError(f'"{what}" must be a number or three numbers')


def _card_problem(err: Exception) -> str:
    if isinstance(err, KeyError):
        return f"missing key {err}"
    return str(err)


class Detector:
    """An ONNX classifier run by onnxruntime on the CPU, as its card describes."""

    def __init__(self, card: ModelCard, threads: int = 1) -> None:
        self.card = card
        if not card.onnx.is_file():
            raise DetectorError(f"model file {card.onnx} (named by {card.path}) does not exist")
        if card.sha256:
            digest = _sha256(card.onnx)
            if digest.lower() != card.sha256.lower():
                raise DetectorError(
                    f"model file {card.onnx} has SHA-256 {digest}, the card says {card.sha256}"
                )
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = max(1, threads)
        opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(
                str(card.onnx), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as err:
            raise DetectorError(f"onnxruntime cannot load {card.onnx}: {err}") from None
        inputs = self.session.get_inputs()
        names = [i.name for i in inputs]
        self.input_name = card.input_name or names[0]
        if self.input_name not in names:
            raise DetectorError(f"the model has no input {self.input_name!r} (it has {names})")
        outputs = [o.name for o in self.session.get_outputs()]
        self.output_name = card.output_name or outputs[0]
        if self.output_name not in outputs:
            raise DetectorError(f"the model has no output {self.output_name!r} (it has {outputs})")

    def preprocess(self, rgb: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        c = self.card
        im = Image.fromarray(rgb)
        width, height = c.size
        method = _INTERPOLATION[c.interpolation]
        if c.resize == "stretch":
            im = im.resize((width, height), method)
        else:
            f = max(width / im.width, height / im.height)
            rw, rh = max(width, round(im.width * f)), max(height, round(im.height * f))
            im = im.resize((rw, rh), method)
            left, top = (rw - width) // 2, (rh - height) // 2
            im = im.crop((left, top, left + width, top + height))
        x: npt.NDArray[np.float32] = np.asarray(im, dtype=np.float32) * np.float32(c.scale)
        x = np.divide(x - np.asarray(c.mean, np.float32), np.asarray(c.std, np.float32))
        if c.channel_order == "BGR":
            x = x[..., ::-1]
        if c.layout == "NCHW":
            x = x.transpose(2, 0, 1)
        return np.ascontiguousarray(x[None], dtype=np.float32)

    def score_rgb(self, rgb: npt.NDArray[np.uint8]) -> float:
        """The model's score for one image, as a probability-like number (higher = more AI)."""
        (out,) = self.session.run([self.output_name], {self.input_name: self.preprocess(rgb)})
        values: npt.NDArray[np.float64] = np.asarray(out, dtype=np.float64).reshape(-1)
        kind = self.card.output_kind
        if kind == "softmax":
            e = np.exp(values - float(values.max())).astype(np.float64)
            values = e / float(e.sum())
        if not 0 <= self.card.output_index < values.size:
            raise DetectorError(
                f"output index {self.card.output_index} is outside the model's "
                f"{values.size} outputs"
            )
        v = float(values[self.card.output_index])
        if kind == "logit":
            v = 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))
        return v

    def score_bytes(self, data: bytes, media_type: MediaType, limits: Limits) -> float:
        return self.score_rgb(decode_rgb(data, media_type, limits))

    def finding(self, score: float) -> Finding:
        """A suspicion above the calibrated threshold; ``unknown`` (a score to rank by) below."""
        c = self.card
        evidence: dict[str, Any] = {
            "model": c.name,
            "score": score,
            "threshold": c.threshold,
            "calibrated": c.threshold is not None,
            "note": "a ranking signal, never a verdict",
        }
        exceed = benign_exceedance(c.calibration, score)
        if exceed is not None:
            evidence["benign_exceedance"] = exceed
        if c.threshold is None or score < c.threshold:
            return Finding("detector", "unknown", generator=None, evidence=evidence, confidence=0.0)
        n = int((c.calibration or {}).get("n_benign") or 0)
        # Confidence: how rarely the user's own benign images scored this high (a conservative
        # p-value: (k + 1) / (n + 1)).
        k = round((exceed or 0.0) * n)
        confidence = 1.0 - (k + 1) / (n + 1) if n else 0.5
        return Finding("detector", "ai_generated", evidence=evidence, confidence=confidence)


def benign_exceedance(calibration: dict[str, Any] | None, score: float) -> float | None:
    """Share of the calibration's benign images that scored at least ``score``.

    The card keeps the highest benign scores (``benign_tail``); a score below all of them is
    exceeded by at least that share, which is what is returned then (a lower bound)."""
    if not calibration:
        return None
    tail = calibration.get("benign_tail") or []
    n = int(calibration.get("n_benign") or 0)
    if not n:
        return None
    return sum(1 for s in tail if s >= score) / n


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Scan integration


@dataclass(frozen=True, slots=True)
class DetectorSettings:
    card: Path
    threads: int = 1
    limits: Limits = field(default_factory=Limits)


_loaded: dict[tuple[str, float], Detector] = {}


def load_detector(card_path: str | Path, threads: int = 1) -> Detector:
    """The detector for a card, loaded once per process (reloaded when the card changes)."""
    p = Path(card_path).resolve()
    try:
        key = (str(p), p.stat().st_mtime)
    except OSError as err:
        raise DetectorError(f"cannot read model card {p}: {err.strerror}") from None
    if key not in _loaded:
        _loaded.clear()
        _loaded[key] = Detector(ModelCard.load(p), threads)
    return _loaded[key]


def read_detector(data: bytes, media_type: MediaType, settings: DetectorSettings) -> list[Finding]:
    """One ``detector`` finding for an image; an ``error`` finding if it cannot be scored."""
    if not media_type.is_image:
        return []
    try:
        det = load_detector(settings.card, settings.threads)
        return [det.finding(det.score_bytes(data, media_type, settings.limits))]
    except (ItemError, DetectorError) as err:
        return [Finding("detector", "error", error=str(err), confidence=0.0)]
    except Exception as err:  # the model must not stop a scan
        msg = f"{type(err).__name__}: {err}"[:300]
        return [Finding("detector", "error", error=msg, confidence=0.0)]


#: The model card ``analyse`` uses when detectors are asked for (``include_detectors``); set
#: by ``configure`` or this environment variable (which reaches scan worker processes).
ENV_CARD = "TIPLINE_DETECTOR_CARD"
_configured_card: Path | None = None


def configure(card: str | Path | None) -> None:
    """Use this model card for ``analyse(..., include_detectors=True)`` in this process."""
    global _configured_card
    _configured_card = Path(card) if card is not None else None


def _registered_reader(ctx: ReadContext) -> list[Finding]:
    card = _configured_card  # the detector_card setting, set by the entry points (configure)
    if card is None:
        return []
    limits = Limits(max_pixels=ctx.max_pixels, max_decode_seconds=ctx.max_decode_seconds)
    return read_detector(ctx.data, ctx.media_type, DetectorSettings(card=card, limits=limits))


register_reader(
    "detector", _registered_reader, kinds=("image",), signal="detector", cost=90, detector=True
)


# ---------------------------------------------------------------------------------------------
# Calibration


def iter_images(paths: Iterable[str | Path]) -> Iterator[tuple[Path, bytes, MediaType]]:
    """Every image under the given files and folders (by content), in a stable order."""
    for root in paths:
        root = Path(root)
        if root.is_dir():
            files: Iterable[Path] = sorted(p for p in root.rglob("*") if p.is_file())
        elif root.is_file():
            files = [root]
        else:
            raise DetectorError(f"{root} is not a file or folder")
        for f in files:
            try:
                data = f.read_bytes()
            except OSError:
                continue
            mt = sniff(data[:SNIFF_BYTES])
            if mt.is_image:
                yield f, data, mt


@dataclass(slots=True)
class ScoredSet:
    scores: list[float] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def score_folders(det: Detector, paths: Iterable[str | Path], limits: Limits) -> ScoredSet:
    out = ScoredSet()
    for f, data, mt in iter_images(paths):
        try:
            out.scores.append(det.score_bytes(data, mt, limits))
        except ItemError as err:
            out.skipped.append(f"{f}: {err}")
    return out


def threshold_for_fpr(benign: list[float], fpr: float) -> float:
    """The lowest threshold at which at most ``floor(fpr * n)`` benign scores reach it."""
    if not benign:
        raise DetectorError("no benign image could be scored")
    if not 0 < fpr < 1:
        raise DetectorError("the target false-positive rate must be between 0 and 1")
    ranked = sorted(benign, reverse=True)
    allowed = math.floor(fpr * len(ranked))
    if allowed >= len(ranked):
        allowed = len(ranked) - 1
    return float(np.nextafter(ranked[allowed], math.inf))


def binomial_upper(k: int, n: int, confidence: float = 0.95) -> float:
    """Clopper-Pearson upper bound on a rate after k events in n trials."""
    if n == 0:
        return 1.0
    if k >= n:
        return 1.0

    def cdf(p: float) -> float:
        return math.fsum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k + 1))

    lo, hi = k / n, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if cdf(mid) > 1 - confidence:
            lo = mid
        else:
            hi = mid
    return hi


@dataclass(slots=True)
class Calibration:
    threshold: float
    n_benign: int
    false_positives: int
    target_fpr: float
    fpr_upper_95: float
    skipped: list[str]
    n_ai: int = 0
    detected: int = 0

    @property
    def measured_fpr(self) -> float:
        return self.false_positives / self.n_benign

    @property
    def too_few(self) -> bool:
        """Fewer benign images than it takes to show the target rate at 95% confidence."""
        return self.fpr_upper_95 > self.target_fpr * 1.5 or self.n_benign < 3 / self.target_fpr


def calibrate(
    det: Detector,
    benign: Iterable[str | Path],
    fpr: float,
    ai: Iterable[str | Path] = (),
    limits: Limits | None = None,
    write: bool = True,
) -> Calibration:
    """Score the benign folders, set the card's threshold for ``fpr`` and (by default) save it."""
    limits = limits or Limits()
    benign = [str(p) for p in benign]
    ai = [str(p) for p in ai]
    neg = score_folders(det, benign, limits)
    threshold = threshold_for_fpr(neg.scores, fpr)
    fp = sum(1 for s in neg.scores if s >= threshold)
    result = Calibration(
        threshold=threshold,
        n_benign=len(neg.scores),
        false_positives=fp,
        target_fpr=fpr,
        fpr_upper_95=binomial_upper(fp, len(neg.scores)),
        skipped=list(neg.skipped),
    )
    pos = ScoredSet()
    if ai:
        pos = score_folders(det, ai, limits)
        result.n_ai = len(pos.scores)
        result.detected = sum(1 for s in pos.scores if s >= threshold)
        result.skipped += pos.skipped
    n = len(neg.scores)
    keep = max(_TAIL_MIN, math.ceil(3 * fpr * n))
    card = det.card
    card.threshold = threshold
    card.calibration = {
        "date": time.strftime("%Y-%m-%d"),
        "target_fpr": fpr,
        "n_benign": n,
        "false_positives": fp,
        "measured_fpr": fp / n,
        "fpr_upper_95": result.fpr_upper_95,
        "benign_folders": benign,
        "n_ai": result.n_ai,
        "detected_ai": result.detected,
        "ai_folders": ai,
        "model_sha256": _sha256(card.onnx),
        "benign_tail": sorted(neg.scores, reverse=True)[:keep],
        "note": "threshold for the target false-positive rate on these benign images; "
        "re-calibrate on your own material whenever the model or the material changes",
    }
    if write:
        card.save()
    return result
