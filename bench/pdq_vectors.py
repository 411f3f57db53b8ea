"""Tipline's PDQ against published test vectors: bit distances per file.

    .venv/bin/python bench/pdq_vectors.py DIR [DIR ...]

For every image under DIR (for example Meta's ``pdq/data/misc-images/modes`` or
python-threatexchange's ``threatexchange/tests/hashing/resources``, which this repository does
not ship), prints the Hamming distance of Tipline's reference and fast PDQ from:

* ``convert``: ``pdqhash.compute(np.asarray(Image.open(f).convert("RGB")))``, the hash of
  the RGB picture (reference mode's extra ``rgb`` query hash where it differs from ``te``);
* ``te``: python-threatexchange's own pipeline (``pdq_hasher.pdq_from_file``), imported if the
  package is installed, else rebuilt from its description (LA and I;16 through
  ``convert("RGB")``, other arrays as they are, 2-D arrays stacked to 3 channels);
* ``orig``: where DIR holds ``original.jpg`` (Meta's modes set: every file is a mode conversion
  of it), the reference hash of that original.

A ``quality`` column per hasher shows where a hash falls under 50 (HMA answers "" there).
Exit status 1 if reference mode differs from ``te`` on any file (from ``convert`` where
python-threatexchange has no hash) (``--check``).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
import pdqhash
from PIL import Image

from tipline.config import Limits
from tipline.media.sniff import SNIFF_BYTES, sniff
from tipline.scan.hashing import HashOptions, hash_bytes
from tipline.signals import pdq

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".gif", ".bmp"}
REF = HashOptions(pdq_mode="reference", provenance=False, limits=Limits())
FAST = HashOptions(pdq_mode="fast", provenance=False, limits=Limits())


def _hex(vec: np.ndarray) -> str:
    return f"{int(''.join(str(int(b)) for b in vec), 2):064x}"


def convert_rgb_pdq(data: bytes) -> tuple[str, int]:
    vec, q = pdqhash.compute(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    return _hex(vec), int(q)


def threatexchange_pdq(path: Path, data: bytes) -> tuple[str | None, int | None, str]:
    """(hex, quality, how) from python-threatexchange, or its pipeline rebuilt."""
    try:
        from threatexchange.signal_type.pdq.pdq_hasher import pdq_from_file
    except ImportError:
        pass
    else:
        try:
            h, q = pdq_from_file(path)
            return h, int(q), "package"
        except Exception as err:  # python-threatexchange raises on some modes
            return None, None, f"package raised {type(err).__name__}"
    im = Image.open(io.BytesIO(data))
    if im.mode in ("LA", "I;16"):
        im = im.convert("RGB")
    arr = np.asarray(im)
    if arr.ndim == 2:
        arr = np.concatenate([arr[..., np.newaxis]] * 3, axis=2)
    try:
        vec, q = pdqhash.compute(arr)
    except Exception as err:  # pdqhash refuses non-8-bit arrays (bool, int32, float)
        return None, None, f"rebuilt, pdqhash raised {type(err).__name__}"
    return _hex(vec), int(q), "rebuilt"


def _d(a: str | None, b: str | None) -> str:
    if not a or not b:
        return "-"
    return str(pdq.hamming(a, b))


def run(dirs: list[Path]) -> tuple[list[dict[str, object]], int]:
    rows: list[dict[str, object]] = []
    mismatches = 0
    for d in dirs:
        files = sorted(p for p in d.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        orig_hex = None
        if (d / "original.jpg").exists():
            orig_hex = hash_bytes((d / "original.jpg").read_bytes(), "original.jpg", REF).pdq
        for p in files:
            data = p.read_bytes()
            try:
                mode = Image.open(io.BytesIO(data)).mode
            except Exception:
                continue
            ref = hash_bytes(data, p.name, REF, sniff(data[:SNIFF_BYTES]))
            fast = hash_bytes(data, p.name, FAST, sniff(data[:SNIFF_BYTES]))
            conv, conv_q = convert_rgb_pdq(data)
            te, te_q, how = threatexchange_pdq(p, data)
            # the policy: python-threatexchange's hash; where it has none, convert("RGB")'s
            want = (te, te_q) if te is not None else (conv, conv_q)
            if (ref.pdq, ref.pdq_quality) != want:
                mismatches += 1
            rows.append(
                {
                    "file": str(p.relative_to(d)),
                    "mode": mode,
                    "ref_q": ref.pdq_quality,
                    "ref~convert": _d(ref.pdq, conv),
                    "ref~te": _d(ref.pdq, te),
                    "te_q": te_q,
                    "te": how,
                    "ref~orig": _d(ref.pdq, orig_hex),
                    "te~orig": _d(te, orig_hex),
                    "fast~ref": _d(fast.pdq, ref.pdq),
                    "fast_q": fast.pdq_quality,
                    "errors": "; ".join(ref.errors),
                }
            )
    return rows, mismatches


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("dirs", nargs="+", type=Path)
    ap.add_argument(
        "--check", action="store_true", help="exit 1 if reference != python-threatexchange"
    )
    args = ap.parse_args(argv)
    rows, mismatches = run(args.dirs)
    if not rows:
        print("no images found")
        return 1
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths[c]) for c in cols))
    exact = sum(1 for r in rows if r["ref~convert"] == "0")
    print(f"\nreference == pdqhash(convert('RGB')) bit for bit: {exact}/{len(rows)} files")
    te_same = sum(1 for r in rows if r["ref~te"] == "0" and r["te_q"] == r["ref_q"])
    print(f"reference == python-threatexchange (hash and quality): {te_same}/{len(rows)} files")
    return 1 if (args.check and mismatches) else 0


if __name__ == "__main__":
    sys.exit(main())
