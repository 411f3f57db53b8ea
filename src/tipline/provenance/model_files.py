"""Model files (.safetensors, .ckpt/.pt/.pth/.bin, .gguf): hashes and headers, never the weights.

Offenders share fine-tuned checkpoints and LoRAs. This module identifies them without loading
them: it reads the header of each format with a cap on every length and count, and computes the
hashes Civitai and AUTOMATIC1111 use, in one streaming pass over the file:

- ``sha256`` of the file (with ``md5`` and ``sha1`` in the same pass, for the scan record);
- ``autov1``: ``sha256(file[0x100000:0x110000])[:8]``, A1111's legacy "Model hash" (null for
  files under 2 MiB, as Civitai shows it);
- ``autov2``: the first 10 hex of the file's SHA-256 (A1111's current "Model hash");
- ``autov3`` (kohya/addnet hash): SHA-256 of the bytes from ``8 + N`` to the end of a
  safetensors file, i.e. the tensor data only. Editing the metadata does not change it. A1111's
  "Lora hashes" cite its first 12 hex.

Pickle-based formats (PyTorch zip with ``*/data.pkl``, legacy concatenated pickles) are NEVER
unpickled: :func:`inspect_pickle` walks the opcode stream with ``pickletools.genops``, emulates
the stack just enough to resolve ``STACK_GLOBAL``, lists every imported global and flags those
outside an allow-list (``unsafe_globals``) and those known to run code (``dangerous_globals``).

Training metadata is sensitive: kohya's captions (``ss_tag_frequency``), dataset directory names,
comments, authors and descriptions go under ``evidence["text"]`` (analysts only); ModelSpec
thumbnails (base64 images) are never copied anywhere.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickletools
import re
import struct
import zipfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from tipline.findings import Finding
from tipline.media.sniff import GGUF, PICKLE, PYTORCH, SAFETENSORS, SNIFF_BYTES, MediaType, sniff

MiB = 1024 * 1024

# ---- caps (every length and count read from a file is checked against one of these) ----------
#: Largest safetensors JSON header (the safetensors reference implementation's own cap).
MAX_SAFETENSORS_HEADER = 100 * MiB
#: Tensors listed in one header (SDXL checkpoints have ~2,500; big LLM shards a few thousand).
MAX_TENSORS = 200_000
#: Keys in ``__metadata__``.
MAX_METADATA_KEYS = 10_000
#: Largest JSON value inside the metadata that is parsed (ss_tag_frequency, ss_datasets...).
MAX_METADATA_JSON = 32 * MiB
#: Nesting allowed in a parsed metadata JSON value.
MAX_JSON_DEPTH = 32
#: Characters kept of one structured metadata value in the summary.
MAX_SUMMARY_VALUE = 512
#: Tensor / key names kept for the architecture fingerprint.
MAX_NAMES = 200_000
#: Largest pickle read from a zip member or parsed from a legacy stream.
MAX_PICKLE_BYTES = 256 * MiB
#: Opcodes walked per pickle (a state dict of 3,000 tensors is ~100,000).
MAX_PICKLE_OPS = 5_000_000
#: Largest single opcode argument (a string or bytes literal).
MAX_PICKLE_ARG = 16 * MiB
#: Pickles read one after another from a legacy stream (torch's legacy format writes 5).
MAX_PICKLES = 8
#: Largest line read for a text-mode (protocol 0) opcode.
MAX_PICKLE_LINE = 64 * 1024
#: Zip entries in a PyTorch archive, and the largest central directory read.
MAX_ZIP_MEMBERS = 200_000
MAX_ZIP_DIRECTORY = 64 * MiB
#: GGUF limits: key/values, tensors, one string, one array, array nesting.
MAX_GGUF_KV = 65_536
MAX_GGUF_TENSORS = 1_000_000
MAX_GGUF_STRING = 16 * MiB
MAX_GGUF_ARRAY = 16_000_000
MAX_GGUF_DEPTH = 3
MAX_GGUF_DIMS = 8
#: Globals listed per file.
MAX_GLOBALS = 1_000

AUTOV1_START = 0x100000
AUTOV1_END = 0x110000
#: Civitai shows no AutoV1 for files under 2 MiB.
AUTOV1_MIN_SIZE = 2 * MiB
HASH_CHUNK = 1024 * 1024


class ModelFormatError(ValueError):
    """The file's structure is broken or exceeds a cap. The message is one line."""


# ---- hashes ----------------------------------------------------------------------------------


@dataclass(slots=True)
class ModelHashes:
    size: int
    md5: str
    sha1: str
    sha256: str
    autov1: str | None
    autov2: str
    autov3: str | None

    def signals(self) -> dict[str, str]:
        """The bank signals of this file (signal type -> lowercase hex)."""
        out = {"md5": self.md5, "sha1": self.sha1, "sha256": self.sha256, "autov2": self.autov2}
        if self.autov1:
            out["autov1"] = self.autov1
        if self.autov3:
            out["autov3"] = self.autov3
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "autov1": self.autov1,
            "autov2": self.autov2,
            "autov3": self.autov3,
        }


def hash_model_stream(
    f: IO[bytes], size: int | None = None, tensor_start: int | None = None
) -> ModelHashes:
    """Every model hash in one sequential pass from the start of ``f``.

    ``tensor_start`` is ``8 + N`` for a safetensors file whose header parsed (AutoV3 covers the
    bytes from there to the end); without it AutoV3 is null.
    """
    f.seek(0)
    md5 = hashlib.md5(usedforsecurity=False)
    sha1 = hashlib.sha1(usedforsecurity=False)
    sha256 = hashlib.sha256()
    v3 = hashlib.sha256() if tensor_start is not None else None
    v1 = hashlib.sha256()
    pos = 0
    while chunk := f.read(HASH_CHUNK):
        n = len(chunk)
        md5.update(chunk)
        sha1.update(chunk)
        sha256.update(chunk)
        end = pos + n
        if v3 is not None and tensor_start is not None and end > tensor_start:
            v3.update(memoryview(chunk)[max(0, tensor_start - pos) :])
        if pos < AUTOV1_END and end > AUTOV1_START:
            v1.update(memoryview(chunk)[max(0, AUTOV1_START - pos) : AUTOV1_END - pos])
        pos = end
    full = sha256.hexdigest()
    total = pos
    return ModelHashes(
        size=total,
        md5=md5.hexdigest(),
        sha1=sha1.hexdigest(),
        sha256=full,
        autov1=v1.hexdigest()[:8] if total >= AUTOV1_MIN_SIZE else None,
        autov2=full[:10],
        autov3=v3.hexdigest() if v3 is not None else None,
    )


# ---- bounded reading -------------------------------------------------------------------------


class _Bounded:
    """Reads from a seekable file, refusing any claim larger than what is left or a cap."""

    def __init__(self, f: IO[bytes], size: int, start: int = 0) -> None:
        self.f = f
        self.size = size
        self.pos = start
        f.seek(start)

    @property
    def left(self) -> int:
        return self.size - self.pos

    def read(self, n: int, what: str = "field", cap: int | None = None) -> bytes:
        if n < 0:
            raise ModelFormatError(f"{what}: negative length {n}")
        if cap is not None and n > cap:
            raise ModelFormatError(f"{what} claims {n:,} bytes (cap {cap:,})")
        if n > self.left:
            raise ModelFormatError(
                f"{what} claims {n:,} bytes but only {self.left:,} remain in the file"
            )
        data = self.f.read(n)
        if len(data) != n:
            raise ModelFormatError(f"{what}: file ended early")
        self.pos += n
        return data

    def skip(self, n: int, what: str = "field") -> None:
        if n < 0 or n > self.left:
            raise ModelFormatError(
                f"{what} claims {n:,} bytes but only {self.left:,} remain in the file"
            )
        self.pos += n
        self.f.seek(self.pos)

    def unpack(self, fmt: str, what: str) -> Any:
        st = struct.Struct("<" + fmt)
        vals = st.unpack(self.read(st.size, what))
        return vals[0] if len(vals) == 1 else vals


# ---- safetensors -----------------------------------------------------------------------------


@dataclass(slots=True)
class SafetensorsHeader:
    header_len: int
    tensors: dict[str, dict[str, Any]]
    metadata: dict[str, str]
    warnings: list[str] = field(default_factory=list)

    @property
    def tensor_start(self) -> int:
        return 8 + self.header_len


def read_safetensors_header(f: IO[bytes], size: int) -> SafetensorsHeader:
    """Parse the JSON header only. Raises ModelFormatError on a bad or oversized header."""
    if size < 8:
        raise ModelFormatError(f"safetensors file of {size} bytes has no length field")
    r = _Bounded(f, size)
    n = int(r.unpack("Q", "header length"))
    if n > MAX_SAFETENSORS_HEADER:
        raise ModelFormatError(
            f"safetensors header length {n:,} exceeds the cap of {MAX_SAFETENSORS_HEADER:,} bytes"
        )
    if n > size - 8:
        raise ModelFormatError(
            f"safetensors header length {n:,} is larger than the file ({size - 8:,} bytes after "
            "the length field)"
        )
    raw = r.read(n, "safetensors header")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ModelFormatError(f"safetensors header is not UTF-8 (byte {err.start})") from None
    del raw
    try:
        obj = json.loads(text)
    except RecursionError:
        raise ModelFormatError("safetensors header JSON is nested too deeply") from None
    except ValueError as err:
        raise ModelFormatError(f"safetensors header is not JSON: {str(err)[:120]}") from None
    del text
    if not isinstance(obj, dict):
        raise ModelFormatError("safetensors header is not a JSON object")
    warnings: list[str] = []
    meta_raw = obj.pop("__metadata__", None)
    metadata: dict[str, str] = {}
    if meta_raw is not None:
        if not isinstance(meta_raw, dict):
            warnings.append("__metadata__ is not an object; ignored")
        else:
            if len(meta_raw) > MAX_METADATA_KEYS:
                warnings.append(
                    f"__metadata__ has {len(meta_raw):,} keys; first {MAX_METADATA_KEYS:,} kept"
                )
            for i, (k, v) in enumerate(meta_raw.items()):
                if i >= MAX_METADATA_KEYS:
                    break
                metadata[str(k)] = v if isinstance(v, str) else json.dumps(v)[:MAX_METADATA_JSON]
    if len(obj) > MAX_TENSORS:
        raise ModelFormatError(
            f"safetensors header lists {len(obj):,} tensors (cap {MAX_TENSORS:,})"
        )
    tensors: dict[str, dict[str, Any]] = {}
    data_len = size - 8 - n
    bad = 0
    max_end = 0
    for name, info in obj.items():
        if (
            not isinstance(info, dict)
            or not isinstance(info.get("dtype"), str)
            or not _int_list(info.get("shape"), MAX_GGUF_DIMS)
            or not _int_list(info.get("data_offsets"), 2, exact=True)
        ):
            bad += 1
            continue
        begin, end = info["data_offsets"]
        if begin > end:
            bad += 1
            continue
        max_end = max(max_end, end)
        tensors[str(name)] = info
    if bad:
        warnings.append(f"{bad:,} tensor entries malformed")
    if max_end > data_len:
        warnings.append(
            f"truncated: tensors need {max_end:,} data bytes, the file holds {data_len:,}"
        )
    return SafetensorsHeader(n, tensors, metadata, warnings)


def _int_list(v: object, max_len: int, exact: bool = False) -> bool:
    if not isinstance(v, list) or len(v) > max_len or (exact and len(v) != max_len):
        return False
    return all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in v)


def _json_value(s: str) -> Any:
    """A JSON-encoded metadata value, or None if it is too large, too deep or not JSON."""
    if len(s) > MAX_METADATA_JSON:
        return None
    try:
        v = json.loads(s)
    except (ValueError, RecursionError):
        return None
    return v if _depth(v) <= MAX_JSON_DEPTH else None


def _depth(v: Any, d: int = 0) -> int:
    if d > MAX_JSON_DEPTH:
        return d
    if isinstance(v, dict):
        return max((_depth(x, d + 1) for x in v.values()), default=d + 1)
    if isinstance(v, list):
        return max((_depth(x, d + 1) for x in v), default=d + 1)
    return d


#: Metadata that is free text or describes training data: analysts only (evidence["text"]).
SENSITIVE_KEYS = frozenset(
    {
        "ss_tag_frequency",
        "ss_dataset_dirs",
        "ss_reg_dataset_dirs",
        "ss_datasets",
        "ss_training_comment",
        "ss_caption_prefix",
        "ss_caption_suffix",
        "modelspec.author",
        "modelspec.description",
        "modelspec.usage_hint",
        "modelspec.trigger_phrase",
        "modelspec.tags",
        "modelspec.license",
    }
)
#: Never copied: images (possibly of the very material) and bulky blobs.
DROPPED_KEYS = frozenset({"modelspec.thumbnail", "ss_bucket_info"})


def summarise_metadata(meta: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(structured summary, sensitive text) from a safetensors ``__metadata__`` map."""
    summary: dict[str, Any] = {}
    text: dict[str, Any] = {}
    for k, v in meta.items():
        if k in DROPPED_KEYS:
            if k == "modelspec.thumbnail":
                summary["has_thumbnail"] = True
            continue
        if k in SENSITIVE_KEYS:
            continue
        if k.startswith(("ss_", "sshs_", "modelspec.")) or k in ("format", "sd_merge_recipe"):
            summary[k] = v if len(v) <= MAX_SUMMARY_VALUE else v[:MAX_SUMMARY_VALUE] + "…"
    tags: dict[str, dict[str, int]] = {}
    dirs: dict[str, Any] = {}
    tf = _json_value(meta["ss_tag_frequency"]) if "ss_tag_frequency" in meta else None
    if isinstance(tf, dict):
        for d, counts in tf.items():
            if isinstance(counts, dict):
                tags[str(d)] = {str(t): c for t, c in counts.items() if isinstance(c, int)}
    dd = _json_value(meta["ss_dataset_dirs"]) if "ss_dataset_dirs" in meta else None
    if isinstance(dd, dict):
        dirs.update({str(d): v for d, v in dd.items()})
    datasets = _json_value(meta["ss_datasets"]) if "ss_datasets" in meta else None
    if isinstance(datasets, list):  # newer kohya: per-dataset tag_frequency and subsets
        for ds in datasets:
            if not isinstance(ds, dict):
                continue
            tfd = ds.get("tag_frequency")
            if isinstance(tfd, dict):
                for d, counts in tfd.items():
                    if isinstance(counts, dict):
                        tags.setdefault(str(d), {}).update(
                            {str(t): c for t, c in counts.items() if isinstance(c, int)}
                        )
            for sub in ds.get("subsets", []) if isinstance(ds.get("subsets"), list) else []:
                if isinstance(sub, dict) and isinstance(sub.get("image_dir"), str):
                    dirs.setdefault(
                        sub["image_dir"],
                        {k: sub.get(k) for k in ("num_repeats", "img_count") if k in sub},
                    )
    if tags:
        text["tag_frequency"] = tags
        summary["tag_count"] = len({t for c in tags.values() for t in c})
    if dirs:
        text["dataset_dirs"] = dirs
        summary["dataset_dir_count"] = len(dirs)
    for k, name in (
        ("ss_training_comment", "training_comment"),
        ("modelspec.author", "author"),
        ("modelspec.description", "description"),
        ("modelspec.trigger_phrase", "trigger_phrase"),
        ("modelspec.usage_hint", "usage_hint"),
        ("modelspec.tags", "tags"),
        ("ss_caption_prefix", "caption_prefix"),
        ("ss_caption_suffix", "caption_suffix"),
    ):
        if meta.get(k):
            text[name] = meta[k][:MAX_METADATA_JSON]
    if meta.get("ss_reg_dataset_dirs"):
        rd = _json_value(meta["ss_reg_dataset_dirs"])
        if isinstance(rd, dict) and rd:
            text["reg_dataset_dirs"] = {str(d): v for d, v in rd.items()}
    return summary, text


# ---- architecture fingerprint ----------------------------------------------------------------


@dataclass(slots=True)
class Architecture:
    #: model family: SD1.x, SD2.x, SD1.x/2.x, SDXL, SD3, Flux, LLM, VAE... or None
    family: str | None = None
    #: checkpoint, lora, lycoris, embedding, vae, or None
    type: str | None = None
    #: where the answer came from: modelspec, kohya, gguf, tensor_names
    source: str | None = None
    #: the raw declared value (modelspec.architecture, ss_base_model_version...)
    declared: str | None = None
    lora_rank: int | None = None

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"family": self.family, "type": self.type, "source": self.source}
        if self.declared is not None:
            d["declared"] = self.declared
        if self.lora_rank is not None:
            d["lora_rank"] = self.lora_rank
        return d


_MODELSPEC_FAMILIES = (
    ("stable-diffusion-xl", "SDXL"),
    ("stable-diffusion-v1", "SD1.x"),
    ("stable-diffusion-v2", "SD2.x"),
    ("stable-diffusion-3", "SD3"),
    ("stable-cascade", "Stable Cascade"),
    ("flux", "Flux"),
    ("pixart", "PixArt"),
    ("hunyuan", "Hunyuan"),
    ("auraflow", "AuraFlow"),
)
_KOHYA_FAMILIES = (
    ("sdxl", "SDXL"),
    ("sd_v1", "SD1.x"),
    ("sd_v2", "SD2.x"),
    ("sd3", "SD3"),
    ("flux", "Flux"),
)
_GGUF_FAMILIES = {"sd1": "SD1.x", "sd2": "SD2.x", "sdxl": "SDXL", "sd3": "SD3", "flux": "Flux"}


def _map_family(value: str, table: Iterable[tuple[str, str]]) -> str | None:
    v = value.lower()
    for prefix, fam in table:
        if v.startswith(prefix) or prefix in v:
            return fam
    return None


def fingerprint(names: Iterable[str], shapes: dict[str, list[int]] | None = None) -> Architecture:
    """Model family and type from tensor (or state-dict key) names alone."""
    ns = list(names)[:MAX_NAMES]
    has = _Has(ns)
    arch = Architecture(source="tensor_names")
    kohya = has.prefix("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_", "lora_te3_")
    peft = has.sub(".lora_A.", ".lora_B.", ".lora_A_", ".lora.down.", ".lora.up.", ".lora_down.")
    if kohya or peft:
        arch.type = "lora"
        if has.sub(".hada_w1_a", ".lokr_w1", ".oft_blocks", ".oft_diag", ".lokr_w2"):
            arch.type = "lycoris"
        if has.prefix("lora_te1_", "lora_te2_") or has.sub("text_encoder_2.", "add_embedding"):
            arch.family = "SDXL"
        elif has.sub("double_blocks", "single_blocks", "single_transformer_blocks"):
            arch.family = "Flux"
        elif has.sub("joint_blocks"):
            arch.family = "SD3"
        elif has.prefix("lora_te_", "lora_unet_"):
            arch.family = _sd1_or_sd2(ns, shapes)
        elif has.sub("self_attn.q_proj", "mlp.gate_proj", ".layers."):
            arch.family = "LLM"
        arch.lora_rank = _lora_rank(ns, shapes)
        return arch
    if has.sub("double_blocks.0.img_attn", "single_blocks.0.linear1", "single_transformer_blocks"):
        arch.family, arch.type = "Flux", "checkpoint"
    elif has.sub("joint_blocks.0."):
        arch.family, arch.type = "SD3", "checkpoint"
    elif has.sub("label_emb.0.0.weight", "conditioner.embedders.1", "add_embedding.linear_1"):
        arch.family, arch.type = "SDXL", "checkpoint"
    elif has.sub("cond_stage_model.model.transformer.resblocks"):
        arch.family, arch.type = "SD2.x", "checkpoint"
    elif has.sub("cond_stage_model.transformer.", "model.diffusion_model.input_blocks"):
        arch.family, arch.type = "SD1.x", "checkpoint"
        if has.sub("cond_stage_model.model."):
            arch.family = "SD2.x"
    elif has.sub("down_blocks.0.resnets") and has.sub("mid_block"):
        arch.family, arch.type = "SD1.x/2.x", "checkpoint"
    elif has.sub("encoder.down.0.block", "decoder.up.0.block") and not has.sub("diffusion_model"):
        arch.family, arch.type = "VAE", "vae"
    elif has.exact("emb_params", "string_to_param", "clip_l", "clip_g", "string_to_token"):
        arch.type = "embedding"
        arch.family = "SDXL" if has.exact("clip_g") else None
    elif has.sub("self_attn.q_proj", "attn_q.weight", "transformer.h.0.", "mlp.gate_proj"):
        arch.family, arch.type = "LLM", "checkpoint"
    else:
        arch.source = None
    return arch


class _Has:
    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.set = set(names)

    def prefix(self, *ps: str) -> bool:
        return any(n.startswith(ps) for n in self.names)

    def sub(self, *ss: str) -> bool:
        return any(s in n for n in self.names for s in ss)

    def exact(self, *ks: str) -> bool:
        return any(k in self.set for k in ks)


def _sd1_or_sd2(names: list[str], shapes: dict[str, list[int]] | None) -> str:
    """kohya LoRA text-encoder modules: CLIP ViT-L (768 wide) is SD1.x, OpenCLIP-H (1024) SD2.x."""
    if shapes:
        for n in names:
            if n.startswith("lora_te_") and n.endswith(".lora_down.weight"):
                shape = shapes.get(n)
                if shape and len(shape) >= 2:
                    if shape[1] == 768:
                        return "SD1.x"
                    if shape[1] == 1024:
                        return "SD2.x"
    return "SD1.x/2.x"


def _lora_rank(names: list[str], shapes: dict[str, list[int]] | None) -> int | None:
    if not shapes:
        return None
    ranks: Counter[int] = Counter()
    for n in names:
        if n.endswith((".lora_down.weight", ".lora_A.weight")):
            shape = shapes.get(n)
            if shape:
                ranks[shape[0]] += 1
    return ranks.most_common(1)[0][0] if ranks else None


def declared_architecture(meta: dict[str, str]) -> Architecture | None:
    """What the metadata says (ModelSpec first, then kohya's ss_* keys)."""
    spec = meta.get("modelspec.architecture")
    if spec:
        base, _, kind = spec.partition("/")
        return Architecture(
            family=_map_family(base, _MODELSPEC_FAMILIES) or base[:80],
            type=(kind or "checkpoint").lower()[:40],
            source="modelspec",
            declared=spec[:120],
        )
    ver = meta.get("ss_base_model_version")
    module = meta.get("ss_network_module", "")
    if ver or module:
        mtype: str | None = "lora" if module else None
        if "lycoris" in module.lower():
            mtype = "lycoris"
        fam = _map_family(ver, _KOHYA_FAMILIES) if ver else None
        if fam is None and meta.get("ss_v2") == "True":
            fam = "SD2.x"
        return Architecture(
            family=fam, type=mtype, source="kohya", declared=(ver or module)[:120] or None
        )
    return None


def _combine(
    declared: Architecture | None, seen: Architecture, warnings: list[str]
) -> Architecture:
    if declared is None:
        return seen
    if (
        seen.family
        and declared.family
        and seen.family != declared.family
        and not (seen.family == "SD1.x/2.x" and declared.family in ("SD1.x", "SD2.x"))
    ):
        warnings.append(
            f"metadata declares {declared.family} but tensor names look like {seen.family}"
        )
    declared.lora_rank = seen.lora_rank
    if declared.type is None:
        declared.type = seen.type
    if declared.family is None:
        declared.family = seen.family
    return declared


# ---- pickle (static inspection only) ---------------------------------------------------------

#: Globals a state dict needs; nothing here runs code chosen by the file.
SAFE_GLOBALS = frozenset(
    [f"torch._utils._rebuild_{n}" for n in (
        "tensor", "tensor_v2", "tensor_v3", "parameter", "parameter_with_state", "qtensor",
        "sparse_tensor", "sparse_csr_tensor", "meta_tensor_no_storage", "nested_tensor",
        "wrapper_subclass", "device_tensor_from_numpy")]
    + [f"torch.{n}" for n in (
        "_tensor._rebuild_from_type", "_tensor._rebuild_from_type_v2", "Size", "device",
        "nn.parameter.Parameter", "storage.UntypedStorage", "storage.TypedStorage",
        "UntypedStorage", "per_tensor_affine", "per_channel_affine", "contiguous_format",
        "channels_last", "preserve_format")]
    + [f"{b}.{n}" for b in ("builtins", "__builtin__") for n in (
        "set", "frozenset", "bytearray", "slice", "complex", "int", "float", "bool", "str",
        "list", "dict", "tuple")]
    + ["collections.OrderedDict", "numpy.core.multiarray._reconstruct",
       "numpy._core.multiarray._reconstruct", "numpy.core.multiarray.scalar",
       "numpy._core.multiarray.scalar", "numpy.ndarray", "numpy.dtype", "_codecs.encode"]
)  # fmt: skip
_TORCH_STORAGE = re.compile(r"^torch\.(cuda\.)?[A-Za-z0-9]*Storage$")
_TORCH_DTYPE = re.compile(
    r"^torch\.(u?int(8|16|32|64)|float(8_\w+|16|32|64)?|bfloat16|half|double|long|short|"
    r"bool|cfloat|cdouble|complex(32|64|128)|q(u)?int\w*|bits\w*)$"
)
#: Modules whose every attribute can run commands, load code, or touch files or the network.
DANGEROUS_MODULES = frozenset({
    "os", "posix", "nt", "subprocess", "sys", "shutil", "socket", "runpy", "pty", "commands",
    "popen2", "webbrowser", "importlib", "imp", "code", "codeop", "pdb", "bdb", "ctypes",
    "multiprocessing", "asyncio", "pickle", "_pickle", "cPickle", "dill", "marshal", "types",
    "signal", "http", "urllib", "urllib2", "requests", "httplib", "ftplib", "smtplib",
    "telnetlib", "aiohttp", "pip", "venv", "ensurepip", "distutils", "setuptools", "platform",
    "tempfile", "pathlib", "io", "_io", "zipimport", "threading", "_thread", "timeit", "trace",
    "cProfile", "profile", "pydoc",
})  # fmt: skip
#: Single attributes known to run code or load more pickles (the loaders are spelled as pairs).
DANGEROUS_GLOBALS = frozenset(
    [f"{b}.{n}" for b in ("builtins", "__builtin__", "__builtins__") for n in (
        "eval", "exec", "execfile", "compile", "open", "file", "getattr", "setattr", "delattr",
        "__import__", "apply", "breakpoint", "input", "globals", "locals", "vars", "reload",
        "help", "memoryview")]
    + [f"{m}.{n}" for m, n in (
        ("torch", "load"), ("torch.serialization", "load"), ("torch.hub", "load"),
        ("numpy", "load"), ("torch.storage", "_load_from_bytes"),
        ("torch._inductor.codecache", "compile_file"), ("torch.hub", "download_url_to_file"),
        ("numpy.testing._private.utils", "runstring"), ("operator", "attrgetter"),
        ("operator", "methodcaller"), ("operator", "call"), ("functools", "partial"),
        ("functools", "reduce"), ("copyreg", "_reconstructor"),
        ("code.InteractiveInterpreter", "runsource"))]
)  # fmt: skip


def classify_global(name: str) -> str:
    """``safe``, ``dangerous`` or ``unsafe`` (not on the allow-list; may or may not run code)."""
    if name in SAFE_GLOBALS or _TORCH_STORAGE.match(name) or _TORCH_DTYPE.match(name):
        return "safe"
    if name in DANGEROUS_GLOBALS:
        return "dangerous"
    if name.startswith("<"):  # unresolved STACK_GLOBAL: the file hides what it imports
        return "dangerous"
    root = name.split(".", 1)[0]
    if root in DANGEROUS_MODULES:
        return "dangerous"
    return "unsafe"


@dataclass(slots=True)
class PickleReport:
    globals: list[str] = field(default_factory=list)
    strings: list[str] = field(default_factory=list)
    opcodes: int = 0
    pickles: int = 0
    #: opcodes that call something (REDUCE, BUILD, INST, OBJ, NEWOBJ, NEWOBJ_EX)
    calls: int = 0
    protocol: int | None = None
    error: str | None = None

    @property
    def unsafe_globals(self) -> list[str]:
        return [g for g in self.globals if classify_global(g) != "safe"]

    @property
    def dangerous_globals(self) -> list[str]:
        return [g for g in self.globals if classify_global(g) == "dangerous"]


class _CappedPickleStream:
    """What ``pickletools.genops`` reads from: refuses oversized arguments and long lines."""

    def __init__(self, f: IO[bytes], size: int) -> None:
        self.f = f
        self.start = f.tell()
        self.size = size  # bytes available from start

    def tell(self) -> int:
        return self.f.tell() - self.start

    def read(self, n: int = -1) -> bytes:
        left = self.size - self.tell()
        if n < 0:
            n = left
        if n > MAX_PICKLE_ARG:
            raise ModelFormatError(
                f"pickle opcode argument of {n:,} bytes (cap {MAX_PICKLE_ARG:,})"
            )
        if n > left:
            raise ModelFormatError(f"pickle opcode claims {n:,} bytes, only {left:,} remain")
        return self.f.read(n)

    def readline(self, limit: int = -1) -> bytes:
        left = self.size - self.tell()
        cap = min(MAX_PICKLE_LINE, left)
        line = self.f.readline(cap)
        if not line.endswith(b"\n"):
            raise ModelFormatError(f"pickle text line longer than {cap:,} bytes or unterminated")
        return line


_STRING_OPS = frozenset(
    {
        "SHORT_BINUNICODE",
        "BINUNICODE",
        "BINUNICODE8",
        "UNICODE",
        "STRING",
        "BINSTRING",
        "SHORT_BINSTRING",
    }
)
_CALL_OPS = frozenset({"REDUCE", "BUILD", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX"})
_MARK = object()


def inspect_pickle(f: IO[bytes], size: int, *, multi: bool = False) -> PickleReport:
    """Walk the opcodes of the pickle(s) at ``f``'s position; never executes anything.

    ``multi``: keep reading pickles that follow one another (torch's legacy format) while the
    next byte is a PROTO opcode.
    """
    rep = PickleReport()
    seen_globals: dict[str, None] = {}
    seen_strings: dict[str, None] = {}
    stream = _CappedPickleStream(f, min(size, MAX_PICKLE_BYTES) if not multi else size)
    try:
        while rep.pickles < (MAX_PICKLES if multi else 1):
            if rep.pickles and multi:
                here = stream.tell()
                if stream.size - here < 2:
                    break
                nxt = f.read(1)
                f.seek(stream.start + here)
                if nxt != b"\x80":
                    break
            _walk_one(stream, rep, seen_globals, seen_strings)
            rep.pickles += 1
    except ModelFormatError as err:
        rep.error = str(err)
    except (ValueError, struct.error, IndexError, KeyError, OverflowError, EOFError) as err:
        rep.error = f"malformed pickle: {str(err)[:160]}"
    rep.globals = list(seen_globals)[:MAX_GLOBALS]
    rep.strings = list(seen_strings)
    return rep


def _walk_one(
    stream: _CappedPickleStream,
    rep: PickleReport,
    seen_globals: dict[str, None],
    seen_strings: dict[str, None],
) -> None:
    stack: list[object] = []
    memo: dict[int, object] = {}
    for op, arg, _pos in pickletools.genops(cast(IO[bytes], stream)):
        rep.opcodes += 1
        if rep.opcodes > MAX_PICKLE_OPS:
            raise ModelFormatError(f"pickle has more than {MAX_PICKLE_OPS:,} opcodes")
        name = op.name
        if name == "PROTO" and rep.protocol is None:
            rep.protocol = _int(arg)
        if name in _CALL_OPS:
            rep.calls += 1
        if name in ("GLOBAL", "INST"):
            mod, _, qual = str(arg).partition(" ")
            _add_global(seen_globals, f"{mod}.{qual}")
        elif name == "STACK_GLOBAL":
            top = stack[-1] if len(stack) >= 1 else None
            second = stack[-2] if len(stack) >= 2 else None
            if isinstance(second, str) and isinstance(top, str):
                _add_global(seen_globals, f"{second}.{top}")
            else:
                _add_global(seen_globals, "<unresolved STACK_GLOBAL>")
        # memo handling (values tracked only for strings, to resolve STACK_GLOBAL)
        if name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[_int(arg)] = stack[-1] if stack else None
            continue
        if name == "MEMOIZE":
            memo[len(memo)] = stack[-1] if stack else None
            continue
        if name in ("GET", "BINGET", "LONG_BINGET"):
            stack.append(memo.get(_int(arg)))
            continue
        before, after = op.stack_before, op.stack_after
        numtopop = len(before)
        if pickletools.markobject in before or (name == "POP" and stack and stack[-1] is _MARK):
            while stack and stack[-1] is not _MARK:
                stack.pop()
            if stack:
                stack.pop()
            numtopop = (
                before.index(pickletools.markobject) if pickletools.markobject in before else 0
            )
        if numtopop:
            del stack[-numtopop:]
        if name in _STRING_OPS:
            s = arg.decode("latin-1") if isinstance(arg, bytes) else str(arg)
            stack.append(s)
            if len(seen_strings) < MAX_NAMES and len(s) <= 512:
                seen_strings[s] = None
        elif name == "MARK":
            stack.append(_MARK)
        else:
            stack.extend([None] * len(after))


def _int(v: object) -> int:
    return v if isinstance(v, int) else -1


def _add_global(seen: dict[str, None], name: str) -> None:
    if len(seen) < MAX_GLOBALS:
        seen[name[:200]] = None


# ---- PyTorch zip -----------------------------------------------------------------------------

_TORCH_MEMBER = re.compile(
    r"^(data\.pkl|constants\.pkl|version|\.format_version|byteorder|\.storage_alignment|"
    r"data/\d+|\.data/.*|code/.*|constants/.*|extra/.*|attributes\.pkl|serialization_id)$"
)


@dataclass(slots=True)
class TorchZipLayout:
    """What the central directory of a zip says about it being a PyTorch archive."""

    #: member names of the pickles (``prefix/data.pkl``, ``prefix/constants.pkl``)
    pickles: list[str] = field(default_factory=list)
    members: int = 0
    #: members that a torch archive does not hold (an ordinary archive with a data.pkl in it)
    unexpected: list[str] = field(default_factory=list)
    #: storages whose bytes sniff as media (something hidden as a tensor)
    embedded_media: list[str] = field(default_factory=list)
    torchscript: bool = False
    error: str | None = None

    @property
    def is_model(self) -> bool:
        return self.error is None and bool(self.pickles) and not self.unexpected


def _zip_directory_ok(f: IO[bytes], size: int) -> str | None:
    """Check the end-of-central-directory claims before zipfile loads the whole directory."""
    tail_len = min(size, 65_557)
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    i = tail.rfind(b"PK\x05\x06")
    if i < 0 or len(tail) - i < 22:
        return "zip end-of-central-directory record not found"
    entries, cd_size = struct.unpack("<HI", tail[i + 10 : i + 16])
    if entries == 0xFFFF or cd_size == 0xFFFFFFFF:
        j = tail.rfind(b"PK\x06\x06", 0, i)
        if j >= 0 and len(tail) - j >= 56:
            entries, cd_size = struct.unpack("<QQ", tail[j + 32 : j + 48])
    if entries > MAX_ZIP_MEMBERS:
        return f"zip claims {entries:,} members (cap {MAX_ZIP_MEMBERS:,})"
    if cd_size > MAX_ZIP_DIRECTORY or cd_size > size:
        return f"zip central directory of {cd_size:,} bytes (cap {MAX_ZIP_DIRECTORY:,})"
    return None


def torch_zip_layout(f: IO[bytes], size: int, *, sniff_storages: bool = True) -> TorchZipLayout:
    layout = TorchZipLayout()
    problem = _zip_directory_ok(f, size)
    if problem:
        layout.error = problem
        return layout
    f.seek(0)
    try:
        with zipfile.ZipFile(f) as zf:
            infos = zf.infolist()
            layout.members = len(infos)
            prefixes = {i.filename.split("/", 1)[0] for i in infos}
            for info in infos:
                head, sep, rest = info.filename.partition("/")
                local = rest if sep else head
                if local == "data.pkl" and not info.is_dir():
                    layout.pickles.insert(0, info.filename)
                elif local == "constants.pkl" and not info.is_dir():
                    layout.pickles.append(info.filename)
                if local.startswith("code/"):
                    layout.torchscript = True
                if info.is_dir():
                    continue
                odd = not sep or len(prefixes) != 1 or not _TORCH_MEMBER.match(local)
                if odd and len(layout.unexpected) < 20:
                    layout.unexpected.append(info.filename[:200])
            if not any(p.endswith("data.pkl") for p in layout.pickles):
                layout.error = "not a PyTorch model: the zip has no */data.pkl member"
                return layout
            if sniff_storages and not layout.unexpected:
                for info in infos:
                    local = info.filename.partition("/")[2]
                    if not local.startswith("data/") or info.file_size < 16:
                        continue
                    with zf.open(info) as m:
                        kind = sniff(m.read(SNIFF_BYTES)).kind
                    if kind in ("image", "video", "archive", "compressed"):
                        layout.embedded_media.append(info.filename[:200])
                        if len(layout.embedded_media) >= 20:
                            break
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as err:
        layout.error = f"unreadable zip: {str(err)[:160]}"
    except NotImplementedError as err:
        layout.error = f"unsupported zip feature: {str(err)[:160]}"
    return layout


def _read_zip_pickles(f: IO[bytes], layout: TorchZipLayout) -> PickleReport:
    combined = PickleReport()
    f.seek(0)
    with zipfile.ZipFile(f) as zf:
        for name in layout.pickles[:4]:
            info = zf.getinfo(name)
            if info.file_size > MAX_PICKLE_BYTES:
                raise ModelFormatError(
                    f"{name} is {info.file_size:,} bytes (cap {MAX_PICKLE_BYTES:,})"
                )
            compressed = info.compress_type != zipfile.ZIP_STORED and info.compress_size > 0
            if compressed and info.file_size / info.compress_size > 1000:
                raise ModelFormatError(f"{name}: compression ratio looks like a zip bomb")
            with zf.open(info) as m:
                data = m.read(MAX_PICKLE_BYTES + 1)
            if len(data) > MAX_PICKLE_BYTES:
                raise ModelFormatError(f"{name} exceeds {MAX_PICKLE_BYTES:,} bytes")
            rep = inspect_pickle(io.BytesIO(data), len(data))
            combined.globals += [g for g in rep.globals if g not in combined.globals]
            combined.strings += rep.strings[: MAX_NAMES - len(combined.strings)]
            combined.opcodes += rep.opcodes
            combined.calls += rep.calls
            combined.pickles += rep.pickles
            combined.protocol = combined.protocol or rep.protocol
            if rep.error and combined.error is None:
                combined.error = f"{name}: {rep.error}"
    return combined


# ---- GGUF ------------------------------------------------------------------------------------

_GGUF_SCALARS: dict[int, tuple[str, str]] = {
    0: ("B", "uint8"),
    1: ("b", "int8"),
    2: ("H", "uint16"),
    3: ("h", "int16"),
    4: ("I", "uint32"),
    5: ("i", "int32"),
    6: ("f", "float32"),
    7: ("?", "bool"),
    10: ("Q", "uint64"),
    11: ("q", "int64"),
    12: ("d", "float64"),
}
GGUF_STRING = 8
GGUF_ARRAY = 9


@dataclass(slots=True)
class GgufHeader:
    version: int
    tensor_count: int
    kv_count: int
    kv: dict[str, Any]
    tensor_names: list[str]
    tensor_shapes: dict[str, list[int]]
    warnings: list[str] = field(default_factory=list)


class _Gguf:
    def __init__(self, r: _Bounded, version: int) -> None:
        self.r = r
        self.len_fmt = "I" if version == 1 else "Q"

    def length(self, what: str) -> int:
        return int(self.r.unpack(self.len_fmt, what))

    def string(self, what: str, cap: int = MAX_GGUF_STRING, keep: bool = True) -> str:
        n = self.length(what + " length")
        if not keep:
            if n > cap:
                raise ModelFormatError(f"{what} claims {n:,} bytes (cap {cap:,})")
            self.r.skip(n, what)
            return ""
        return self.r.read(n, what, cap).decode("utf-8", "replace")

    def value(self, vtype: int, what: str, depth: int = 0) -> Any:
        if vtype in _GGUF_SCALARS:
            return self.r.unpack(_GGUF_SCALARS[vtype][0], what)
        if vtype == GGUF_STRING:
            return self.string(what)
        if vtype == GGUF_ARRAY:
            if depth >= MAX_GGUF_DEPTH:
                raise ModelFormatError(f"{what}: arrays nested deeper than {MAX_GGUF_DEPTH}")
            etype = int(self.r.unpack("I", what + " element type"))
            count = self.length(what + " count")
            if count > MAX_GGUF_ARRAY:
                raise ModelFormatError(
                    f"{what}: array of {count:,} elements (cap {MAX_GGUF_ARRAY:,})"
                )
            if etype in _GGUF_SCALARS:
                size = struct.calcsize("<" + _GGUF_SCALARS[etype][0])
                if count <= 16:
                    return [self.value(etype, what, depth + 1) for _ in range(count)]
                self.r.skip(count * size, what)
                return {"array": _GGUF_SCALARS[etype][1], "count": count}
            if etype == GGUF_STRING:
                min_size = 4 if self.len_fmt == "I" else 8
                if count * min_size > self.r.left:
                    raise ModelFormatError(
                        f"{what}: {count:,} strings cannot fit in the {self.r.left:,} bytes left"
                    )
                for _ in range(count):
                    self.string(what + " element", keep=False)
                return {"array": "string", "count": count}
            if etype == GGUF_ARRAY:
                if count * 12 > self.r.left:
                    raise ModelFormatError(f"{what}: {count:,} nested arrays cannot fit")
                for _ in range(count):
                    self.value(GGUF_ARRAY, what, depth + 1)
                return {"array": "array", "count": count}
            raise ModelFormatError(f"{what}: unknown array element type {etype}")
        raise ModelFormatError(f"{what}: unknown value type {vtype}")


def read_gguf_header(f: IO[bytes], size: int) -> GgufHeader:
    r = _Bounded(f, size)
    if r.read(4, "magic") != b"GGUF":
        raise ModelFormatError("not a GGUF file (bad magic)")
    version = int(r.unpack("I", "version"))
    warnings: list[str] = []
    if version not in (1, 2, 3):
        if version > 0xFFFF:
            raise ModelFormatError(f"GGUF version {version} (byte-swapped or corrupt)")
        warnings.append(f"unknown GGUF version {version}; read as version 3")
    g = _Gguf(r, version)
    tensor_count = g.length("tensor_count")
    kv_count = g.length("kv_count")
    if kv_count > MAX_GGUF_KV:
        raise ModelFormatError(f"GGUF claims {kv_count:,} key/values (cap {MAX_GGUF_KV:,})")
    if tensor_count > MAX_GGUF_TENSORS:
        raise ModelFormatError(f"GGUF claims {tensor_count:,} tensors (cap {MAX_GGUF_TENSORS:,})")
    # Each key/value needs at least 8 + 4 + 1 bytes and each tensor info at least 8 + 4 + 4 + 8.
    if kv_count * 13 + tensor_count * 24 > r.left:
        raise ModelFormatError(
            f"GGUF claims {kv_count:,} key/values and {tensor_count:,} tensors, which cannot fit "
            f"in the {r.left:,} bytes left"
        )
    kv: dict[str, Any] = {}
    for i in range(kv_count):
        key = g.string(f"key {i}", cap=64 * 1024)
        vtype = int(r.unpack("I", f"type of {key[:60]!r}"))
        kv[key] = g.value(vtype, f"value of {key[:60]!r}")
    names: list[str] = []
    shapes: dict[str, list[int]] = {}
    try:
        for i in range(tensor_count):
            name = g.string(f"tensor {i} name", cap=64 * 1024)
            n_dims = int(r.unpack("I", "n_dims"))
            if n_dims > MAX_GGUF_DIMS:
                raise ModelFormatError(f"tensor {name[:60]!r} has {n_dims} dimensions")
            dims = [int(r.unpack("Q", "dim")) for _ in range(n_dims)]
            r.read(12, "tensor type and offset")
            if len(names) < MAX_NAMES:
                names.append(name)
                shapes[name] = dims
    except ModelFormatError as err:
        warnings.append(f"tensor table: {err}")
    return GgufHeader(version, tensor_count, kv_count, kv, names, shapes, warnings)


_GGUF_TEXT_KEYS = ("general.author", "general.description", "general.license.name")


def _gguf_summary(kv: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    summary: dict[str, Any] = {}
    text: dict[str, Any] = {}
    for k, v in kv.items():
        if k in _GGUF_TEXT_KEYS and isinstance(v, str):
            text[k.split(".", 1)[1]] = v
            continue
        if k.startswith("tokenizer.") and not isinstance(v, int | float | bool):
            continue
        if isinstance(v, str):
            if len(v) <= MAX_SUMMARY_VALUE:
                summary[k] = v
        elif isinstance(v, bool | int | float | dict):
            summary[k] = v
        if len(summary) >= 200:
            break
    return summary, text


# ---- the reader ------------------------------------------------------------------------------

FORMATS = {
    SAFETENSORS.mime: "safetensors",
    GGUF.mime: "gguf",
    PYTORCH.mime: "pytorch-zip",
    PICKLE.mime: "pickle",
}


@dataclass(slots=True)
class ModelReport:
    """One model file: its hashes (null only if it could not be read) and one finding."""

    format: str
    hashes: ModelHashes | None
    finding: Finding
    #: a PyTorch-looking zip that holds other things too: scan it as an archive as well
    treat_as_archive: bool = False

    @property
    def findings(self) -> list[Finding]:
        return [self.finding]


def inspect_model(
    f: BinaryIO, size: int, media_type: MediaType | None = None, *, hashes: bool = True
) -> ModelReport:
    """Identify and fingerprint the model file in ``f`` (seekable). Never raises for bad input.

    Structural problems become a Finding with verdict ``error`` (hashes are still computed);
    the caller's item and run go on.
    """
    f.seek(0)
    mt = media_type or sniff(f.read(SNIFF_BYTES))
    fmt = FORMATS.get(mt.mime)
    evidence: dict[str, Any] = {"format": fmt or mt.mime}
    text: dict[str, Any] = {}
    warnings: list[str] = []
    arch = Architecture()
    tensor_start: int | None = None
    verdict = "model"
    error: str | None = None
    treat_as_archive = False
    try:
        if fmt == "safetensors":
            hdr = read_safetensors_header(f, size)
            tensor_start = hdr.tensor_start
            warnings += hdr.warnings
            shapes = {k: list(v["shape"]) for k, v in hdr.tensors.items()}
            seen = fingerprint(hdr.tensors, shapes)
            summary, text = summarise_metadata(hdr.metadata)
            arch = _combine(declared_architecture(hdr.metadata), seen, warnings)
            evidence["tensor_count"] = len(hdr.tensors)
            evidence["dtypes"] = dict(Counter(str(v["dtype"]) for v in hdr.tensors.values()))
            evidence["parameters"] = sum(_prod(s) for s in shapes.values())
            evidence["metadata"] = summary
            evidence["metadata_keys"] = len(hdr.metadata)
            _cite(evidence, hdr.metadata)
        elif fmt == "gguf":
            g = read_gguf_header(f, size)
            warnings += g.warnings
            summary, text = _gguf_summary(g.kv)
            evidence.update(version=g.version, tensor_count=g.tensor_count, kv_count=g.kv_count)
            evidence["metadata"] = summary
            seen = fingerprint(g.tensor_names, g.tensor_shapes)
            declared_arch = g.kv.get("general.architecture")
            if isinstance(declared_arch, str):
                fam = _GGUF_FAMILIES.get(declared_arch.lower())
                arch = Architecture(
                    family=fam or ("LLM" if seen.family in (None, "LLM") else seen.family),
                    type=seen.type or "checkpoint",
                    source="gguf",
                    declared=declared_arch[:80],
                )
            else:
                arch = seen
        elif fmt == "pytorch-zip":
            layout = torch_zip_layout(f, size)
            evidence["members"] = layout.members
            if layout.torchscript:
                evidence["torchscript"] = True
            if layout.error:
                raise ModelFormatError(layout.error)
            if layout.unexpected or layout.embedded_media:
                treat_as_archive = True
                if layout.unexpected:
                    evidence["unexpected_members"] = layout.unexpected
                    warnings.append("zip holds members a PyTorch archive does not: scanned too")
                if layout.embedded_media:
                    evidence["embedded_media"] = layout.embedded_media
                    warnings.append("tensor storages that are media files: scanned too")
            rep = _read_zip_pickles(f, layout)
            arch = _pickle_evidence(rep, evidence, warnings)
        elif fmt == "pickle":
            f.seek(0)
            rep = inspect_pickle(f, size, multi=True)
            arch = _pickle_evidence(rep, evidence, warnings)
            if not _looks_like_model(rep, arch):
                verdict = "unknown"
        else:
            raise ModelFormatError(f"not a model file (content is {mt.mime})")
    except ModelFormatError as err:
        verdict, error = "error", str(err)
    except (OSError, MemoryError) as err:
        verdict, error = "error", f"{type(err).__name__}: {str(err)[:160]}"
    mh: ModelHashes | None = None
    if hashes and fmt is not None:
        try:
            mh = hash_model_stream(f, size, tensor_start)
        except OSError as err:
            warnings.append(f"hashing failed: {err}")
    if mh is not None:
        evidence["hashes"] = mh.to_json()
    if arch.type is not None or arch.family is not None:
        evidence["architecture"] = arch.to_json()
    if warnings:
        evidence["warnings"] = warnings[:20]
    if text:
        evidence["text"] = text
    finding = Finding(
        "model_file",
        verdict,  # type: ignore[arg-type]
        generator=arch.family,
        evidence=evidence,
        confidence=1.0 if verdict == "model" else 0.5,
        error=error,
    )
    return ModelReport(fmt or "unknown", mh, finding, treat_as_archive)


def _prod(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _cite(evidence: dict[str, Any], meta: dict[str, str]) -> None:
    """Hashes this model's metadata cites (its base model), matched against model banks too."""
    base = meta.get("ss_new_sd_model_hash")
    if base and re.fullmatch(r"[0-9a-fA-F]{8,64}", base):
        evidence["base_model_hash"] = base.lower()
    for k in ("sshs_model_hash", "sshs_legacy_hash", "modelspec.hash_sha256"):
        v = meta.get(k, "").removeprefix("0x")
        if v and re.fullmatch(r"[0-9a-fA-F]{8,64}", v):
            evidence.setdefault("declared_hashes", {})[k] = v.lower()


def _pickle_evidence(
    rep: PickleReport, evidence: dict[str, Any], warnings: list[str]
) -> Architecture:
    evidence["pickle"] = {
        "protocol": rep.protocol,
        "opcodes": rep.opcodes,
        "pickles": rep.pickles,
        "calls": rep.calls,
    }
    evidence["globals"] = rep.globals
    evidence["unsafe_globals"] = rep.unsafe_globals
    evidence["dangerous_globals"] = rep.dangerous_globals
    evidence["dangerous"] = bool(rep.dangerous_globals)
    if rep.error:
        warnings.append(f"pickle: {rep.error}")
        if not rep.globals:  # nothing learnt before the pickle broke
            raise ModelFormatError(rep.error)
    return fingerprint(rep.strings)


def _looks_like_model(rep: PickleReport, arch: Architecture) -> bool:
    return arch.type is not None or any(
        g.startswith("torch.") or g.startswith("numpy") for g in rep.globals
    )


# ---- entry points ----------------------------------------------------------------------------


def describe_model(path: str | Path) -> list[Finding]:
    """Findings for one model file on disk (for ``tipline inspect``). Never raises for bad input."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, io.SEEK_END)
            f.seek(0)
            mt = sniff(f.read(SNIFF_BYTES))
            if mt.mime == "application/zip":
                mt = PYTORCH  # a .pt that is a plain zip: say why it is not a model
            return inspect_model(f, size, mt).findings
    except OSError as err:
        return [Finding("model_file", "error", error=f"unreadable: {err.strerror or err}")]


def inspect_bytes(data: bytes, media_type: MediaType | None = None) -> ModelReport:
    return inspect_model(io.BytesIO(data), len(data), media_type)


def is_model_type(mt: MediaType) -> bool:
    return mt.mime in FORMATS


# ---- cited hashes (an image or model citing another model) -----------------------------------


def _read_model_ctx(ctx: Any) -> list[Finding]:
    """Provenance reader for in-memory items of kind ``model`` (see tipline.provenance)."""
    return inspect_bytes(ctx.data, ctx.media_type).findings


def _register() -> None:
    try:
        from tipline.provenance import register_reader
    except ImportError:  # pragma: no cover - registry not present
        return
    register_reader("model_file", _read_model_ctx, kinds=("model",), signal="model_file", cost=30)


_register()
