"""Generator metadata: what image generation tools write into their files, parsed into findings.

Three readers registered by ``tipline.provenance``:

* ``read_metadata``: text chunks, EXIF, comments and XMP of every tool in
  docs/provenance.md (AUTOMATIC1111/Forge/SD.Next, ComfyUI, InvokeAI, NovelAI, Fooocus and its
  forks, SwarmUI, Easy Diffusion, Draw Things, Midjourney) plus EXIF/XMP software markers.
* ``read_iptc``: the IPTC digital source type in XMP.
* ``read_stealth``: NovelAI "stealth pnginfo" in pixel LSBs (see ``stealth.py``).

Structured facts (model, hashes, LoRAs, seed, sampler...) go straight into ``evidence``; free
text (prompts, negative prompts, captions, authors, raw settings) only under ``evidence["text"]``,
which ``analyse`` drops unless text was asked for. Structured string values are cut to one line
of at most 256 characters, so a prompt smuggled into a model name cannot leak much.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tipline.findings import Finding, Verdict
from tipline.provenance import comfy
from tipline.provenance.containers import TextEntry
from tipline.provenance.infotext import (
    looks_like_infotext,
    lora_tags,
    name_hash_list,
    parse_infotext,
)
from tipline.provenance.xmp import XmpFacts, parse_xmp, source_type_term

if TYPE_CHECKING:
    from tipline.provenance import ReadContext

#: Longest JSON document parsed (big ComfyUI workflows are a few MiB).
MAX_JSON_CHARS = 16 * 1024 * 1024
#: Longest free-text value kept under evidence["text"] (longer ones are cut and marked).
MAX_EVIDENCE_TEXT = 64 * 1024
#: Longest structured string value.
MAX_VALUE = 256

A1111 = "AUTOMATIC1111"
STRONG = 0.95
MARKER = 0.9
WEAK = 0.6


class ParseError(Exception):
    pass


# --- helpers -----------------------------------------------------------------------------------


def clip_text(s: str) -> str:
    if len(s) <= MAX_EVIDENCE_TEXT:
        return s
    return s[:MAX_EVIDENCE_TEXT] + f"… [{len(s) - MAX_EVIDENCE_TEXT:,} more characters cut]"


def value(v: Any) -> str | None:
    """A structured string: one line, at most MAX_VALUE characters."""
    if v is None or isinstance(v, (dict, list)):
        return None
    s = " ".join(str(v).split())
    return s[:MAX_VALUE] if s else None


def number(v: Any) -> int | float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return v
    if isinstance(v, str):
        s = v.strip()
        if len(s) > 40:
            return None
        try:
            return int(s)
        except ValueError:
            try:
                return float(s)
            except ValueError:
                return None
    return None


def load_json(s: str, what: str) -> Any:
    if len(s) > MAX_JSON_CHARS:
        raise ParseError(f"{what}: JSON of {len(s):,} characters exceeds the cap; not parsed")
    try:
        return json.loads(s)
    except json.JSONDecodeError as err:
        raise ParseError(
            f"{what}: invalid JSON ({err.msg} at line {err.lineno} column {err.colno})"
        ) from None
    except RecursionError:
        raise ParseError(f"{what}: JSON nested too deeply") from None


def _norm_key(k: str) -> str:
    return k.strip().lower().replace(" ", "_").replace("-", "_")


class Out:
    """Findings of one reader, with helpers that keep text and facts apart."""

    def __init__(self, signal: Any = "generator_metadata") -> None:
        self.signal = signal
        self.findings: list[Finding] = []

    def error(self, message: str, generator: str | None = None, source: str | None = None) -> None:
        ev = {"source": source} if source else {}
        self.findings.append(
            Finding(self.signal, "error", generator=generator, evidence=ev, error=message)
        )

    def add(
        self,
        generator: str | None,
        facts: dict[str, Any],
        text: dict[str, Any],
        confidence: float,
        source: str,
        verdict: Verdict = "ai_generated",
    ) -> Finding:
        ev: dict[str, Any] = {"source": source}
        ev.update({k: v for k, v in facts.items() if v not in (None, "", [], {})})
        t = {k: _clip_any(v) for k, v in text.items() if v not in (None, "", [], {})}
        if t:
            ev["text"] = t
        f = Finding(self.signal, verdict, generator=generator, evidence=ev, confidence=confidence)
        self.findings.append(f)
        return f

    def generators(self) -> set[str]:
        return {f.generator for f in self.findings if f.verdict != "error" and f.generator}


def _clip_any(v: Any) -> Any:
    if isinstance(v, str):
        return clip_text(v)
    if isinstance(v, list):
        return [_clip_any(x) for x in v[:100]]
    if isinstance(v, dict):
        return {str(k)[:MAX_VALUE]: _clip_any(x) for k, x in list(v.items())[:200]}
    return v


def _merge_loras(*lists: list[dict[str, Any]]) -> list[dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for lst in lists:
        for item in lst:
            name = value(item.get("name"))
            if not name:
                continue
            cur = merged.setdefault(name.lower(), {"name": name})
            for k in ("hash", "weight", "kind"):
                if item.get(k) is not None and k not in cur:
                    cur[k] = value(item[k]) if k != "weight" else number(item[k])
            if len(merged) >= 200:
                break
    return list(merged.values())


# --- AUTOMATIC1111 / Forge / SD.Next infotext --------------------------------------------------

_INT_KEYS = {
    "Steps": "steps",
    "Seed": "seed",
    "Clip skip": "clip_skip",
    "Hires steps": "hires_steps",
}
_FLOAT_KEYS = {"CFG scale": "cfg", "Denoising strength": "denoise"}
_STR_KEYS = {
    "Sampler": "sampler", "Schedule type": "scheduler", "Size": "size", "Model": "model",
    "Model hash": "model_hash", "VAE": "vae", "VAE hash": "vae_hash", "Version": "version",
    "App": "app", "Backend": "backend", "Hires upscaler": "hires_upscaler", "RNG": "rng",
    "Refiner": "refiner", "Variation seed": "variation_seed", "Hires upscale": "hires_upscale",
}  # fmt: skip


def parse_a1111(
    text: str,
    source: str,
    out: Out,
    *,
    require_structure: bool = True,
    scheme: str | None = None,
) -> Finding | None:
    """A1111-style infotext. Without a believable settings line it is only a weak hint."""
    info = parse_infotext(text)
    structured = info.known_keys >= 2
    if not structured and require_structure:
        return None
    s = info.settings
    facts: dict[str, Any] = {}
    for key, name in _INT_KEYS.items():
        if key in s:
            n = number(s[key])
            facts[name] = int(n) if n is not None else value(s[key])
    for key, name in _FLOAT_KEYS.items():
        if key in s:
            facts[name] = number(s[key]) if number(s[key]) is not None else value(s[key])
    for key, name in _STR_KEYS.items():
        if key in s:
            facts[name] = value(s[key])
    loras = name_hash_list(s["Lora hashes"]) if "Lora hashes" in s else []
    if "TI hashes" in s:
        facts["embeddings"] = name_hash_list(s["TI hashes"])[:100]
    generator = A1111
    if "Hashes" in s:
        try:
            hashes = load_json(s["Hashes"], "infotext Hashes")
            if not isinstance(hashes, dict):
                raise ParseError("infotext Hashes: not a JSON object")
            facts["hashes"] = {value(k): value(v) for k, v in list(hashes.items())[:100]}
            for k, v in hashes.items():
                if isinstance(k, str) and k.startswith("lora:"):
                    loras.append({"name": k[5:], "hash": v})
                elif k == "model" and "model_hash" not in facts:
                    facts["model_hash"] = value(v)
        except ParseError as err:
            out.error(str(err), A1111, source)
    if "Civitai resources" in s:
        try:
            res = load_json(s["Civitai resources"], "infotext Civitai resources")
            if not isinstance(res, list):
                raise ParseError("infotext Civitai resources: not a JSON list")
            facts["civitai_resources"] = [_civitai_resource(r) for r in res[:100]]
            for r in facts["civitai_resources"]:
                if r.get("type") == "lora" and r.get("modelName"):
                    loras.append({"name": r["modelName"], "hash": r.get("hash")})
        except ParseError as err:
            out.error(str(err), A1111, source)
        if "Version" not in s:
            generator = "Civitai"
    version = str(facts.get("version") or "")
    if s.get("App", "").strip().lower() == "sd.next" or "Backend" in s:
        generator = "SD.Next"
    elif re.match(r"^f\d+\.\d+", version):
        generator = "Forge"
    elif "fooocus" in version.lower() or scheme == "a1111":
        generator = "Fooocus"
    elif "comfyui" in version.lower():
        generator = "ComfyUI"
    facts["loras"] = _merge_loras(loras, lora_tags(info.prompt))
    if scheme:
        facts["metadata_scheme"] = value(scheme)
    txt: dict[str, Any] = {"prompt": info.prompt, "negative_prompt": info.negative_prompt}
    if s:
        txt["settings"] = dict(s)
    if "User" in s:
        txt["user"] = s["User"]
    if not structured:
        facts["note"] = "parameters text without a recognisable settings line"
    for p in info.problems:
        out.error(f"infotext: {p}", generator, source)
    return out.add(generator, facts, txt, STRONG if structured else WEAK, source)


def _civitai_resource(r: Any) -> dict[str, Any]:
    if not isinstance(r, dict):
        return {}
    keep = ("type", "modelName", "modelVersionName", "modelVersionId", "modelId", "weight", "hash")
    return {k: value(r[k]) if k != "weight" else number(r[k]) for k in keep if k in r}


# --- JSON metadata (Fooocus, RuinedFooocus, Fooocus-MRE, SwarmUI, Draw Things, generic) --------

_ALIASES: dict[str, tuple[str, ...]] = {
    "model": ("model", "base_model", "base_model_name", "model_name", "use_stable_diffusion_model",
              "stable_diffusion_model", "model_weights", "sd_model", "ckpt_name", "checkpoint"),
    "model_hash": ("model_hash", "base_model_hash", "sd_model_hash"),
    "refiner": ("refiner_model", "refinermodel", "refiner"),
    "vae": ("vae", "use_vae_model", "vae_model", "vae_name"),
    "seed": ("seed",),
    "steps": ("steps", "num_inference_steps", "sampling_steps"),
    "cfg": ("cfg", "cfg_scale", "cfgscale", "guidance_scale", "scale"),
    "sampler": ("sampler", "sampler_name"),
    "scheduler": ("scheduler", "schedule_type", "noise_schedule"),
    "denoise": ("denoise", "denoising_strength", "strength"),
    "clip_skip": ("clip_skip", "clipskip"),
    "performance": ("performance",),
    "version": ("version", "app_version", "swarm_version", "software"),
}  # fmt: skip
_PROMPT_KEYS = ("prompt", "positive_prompt", "c")
_NEGATIVE_KEYS = ("negative_prompt", "negativeprompt", "negative", "uc")
_EXTRA_TEXT_KEYS = (
    "full_prompt",
    "full_negative_prompt",
    "prompt_expansion",
    "fooocus_v2_expansion",
)
_NUMERIC = {"seed", "steps", "cfg", "denoise", "clip_skip"}


def json_facts(obj: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(structured facts, free text) from a flat generator JSON, by common key names."""
    norm = {_norm_key(k): v for k, v in obj.items() if isinstance(k, str)}
    facts: dict[str, Any] = {}
    for name, keys in _ALIASES.items():
        for k in keys:
            if k in norm and norm[k] not in (None, ""):
                v = norm[k]
                if isinstance(v, dict):  # InvokeAI-style model objects
                    facts[name] = value(v.get("model_name") or v.get("name"))
                    if v.get("hash"):
                        facts[f"{name}_hash"] = value(v.get("hash"))
                    if v.get("base") or v.get("base_model"):
                        facts[f"{name}_base"] = value(v.get("base") or v.get("base_model"))
                elif name in _NUMERIC:
                    n = number(v)
                    facts[name] = n if n is not None else value(v)
                else:
                    facts[name] = value(v)
                break
    w, h = number(norm.get("width")), number(norm.get("height"))
    if w and h:
        facts["size"] = f"{int(w)}x{int(h)}"
    elif norm.get("resolution") or norm.get("size"):
        size = value(norm.get("resolution") or norm.get("size")) or ""
        m = re.fullmatch(r"\(?\s*(\d{1,6})\s*[,x×]\s*(\d{1,6})\s*\)?", size)
        facts["size"] = f"{m.group(1)}x{m.group(2)}" if m else size
    facts["loras"] = _json_loras(norm)
    if isinstance(norm.get("styles"), list):
        facts["styles"] = [value(x) for x in norm["styles"][:50] if value(x)]
    text: dict[str, Any] = {}
    for k in _PROMPT_KEYS:
        if isinstance(norm.get(k), str):
            text["prompt"] = norm[k]
            break
    for k in _NEGATIVE_KEYS:
        if isinstance(norm.get(k), str):
            text["negative_prompt"] = norm[k]
            break
    for k in _EXTRA_TEXT_KEYS:
        if norm.get(k):
            text[k] = (
                norm[k] if isinstance(norm[k], str) else json.dumps(norm[k])[:MAX_EVIDENCE_TEXT]
            )
    if isinstance(text.get("prompt"), str):
        facts["loras"] = _merge_loras(facts["loras"], lora_tags(text["prompt"]))
    return facts, text


def _json_loras(norm: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    raw = norm.get("loras", norm.get("lora", norm.get("use_lora_model")))
    items = raw if isinstance(raw, list) else [raw] if raw else []
    lw = norm.get("loraweights")
    weights: list[Any] = lw if isinstance(lw, list) else []
    for i, item in enumerate(items[:100]):
        if isinstance(item, str):
            name, _, w = item.partition(" : ")
            d: dict[str, Any] = {"name": name}
            if number(w) is not None:
                d["weight"] = number(w)
            elif i < len(weights) and number(weights[i]) is not None:
                d["weight"] = number(weights[i])
            out.append(d)
        elif isinstance(item, list) and item:
            strs = [x for x in item if isinstance(x, str)]
            nums = [x for x in item if number(x) is not None and not isinstance(x, str)]
            hashes = [x for x in strs if re.fullmatch(r"[0-9A-Fa-f]{8,64}", x)]
            names = [x for x in strs if x not in hashes]
            if names:
                d = {"name": names[0]}
                if hashes:
                    d["hash"] = hashes[0]
                if nums:
                    d["weight"] = nums[0]
                out.append(d)
        elif isinstance(item, dict):
            inner = item.get("lora") or item.get("model") or item
            if isinstance(inner, dict):
                lname = inner.get("model_name") or inner.get("name") or inner.get("file")
                if isinstance(lname, str) and lname:
                    d = {"name": lname}
                    if inner.get("hash"):
                        d["hash"] = inner["hash"]
                    if number(item.get("weight")) is not None:
                        d["weight"] = number(item.get("weight"))
                    out.append(d)
    # Fooocus v1 keys: "LoRA 1": "name : 0.5"
    for k, v in norm.items():
        if re.fullmatch(r"lora_\d{1,2}", k) and isinstance(v, str) and v.strip().lower() != "none":
            name, _, w = v.partition(" : ")
            out.append({"name": name, "weight": number(w)})
    return _merge_loras(out)


def classify_json(
    obj: Any, source: str, out: Out, hint: str | None = None, scheme: str | None = None
) -> Finding | None:
    """A JSON document from a generator: recognise the tool and pull the facts."""
    if not isinstance(obj, dict):
        return None
    if isinstance(obj.get("sui_image_params"), dict):
        return _swarm(obj, source, out)
    norm = {_norm_key(k): v for k, v in obj.items() if isinstance(k, str)}
    software = str(norm.get("software") or "")
    version = str(norm.get("version") or "")
    facts, text = json_facts(obj)
    generator: str | None = None
    conf = STRONG
    if "ruinedfooocus" in software.lower():
        generator = "RuinedFooocus"
    elif "fooocus-mre" in software.lower() or "fooocus_mre" in software.lower():
        generator = "Fooocus-MRE"
    elif (
        "fooocus" in (software + version).lower()
        or scheme == "fooocus"
        or norm.get("metadata_scheme") == "fooocus"
    ):
        generator = "Fooocus"
    elif _novelai_shape(norm):
        return _novelai({}, obj, source, out)
    elif hint == "Draw Things" or ("c" in norm and ("sampler" in norm or "model" in norm)):
        generator = "Draw Things"
        if isinstance(norm.get("v2"), dict):
            facts["loras"] = _merge_loras(facts.get("loras", []), _json_loras(norm["v2"]))
        conf = STRONG if hint == "Draw Things" else MARKER
    elif "use_stable_diffusion_model" in norm:
        generator = "Easy Diffusion"
    elif "positive_prompt" in norm and ("generation_mode" in norm or "app_version" in norm):
        generator = "InvokeAI"
    elif hint:
        generator, conf = hint, MARKER
    elif "prompt" in text and any(k in facts for k in ("seed", "steps", "sampler", "cfg")):
        generator, conf = "unknown", WEAK
        facts["note"] = "generation parameters of an unrecognised tool"
    if generator is None:
        return None
    if scheme and generator == "Fooocus":
        facts["metadata_scheme"] = value(scheme)
    return out.add(generator, facts, text, conf, source)


def _swarm(obj: dict[str, Any], source: str, out: Out) -> Finding:
    params = obj["sui_image_params"]
    facts, text = json_facts(params)
    models = obj.get("sui_models")
    if isinstance(models, list):
        facts["model_hashes"] = [
            {k: value(m.get(k)) for k in ("name", "param", "hash") if m.get(k)}
            for m in models[:50]
            if isinstance(m, dict)
        ]
        for m in facts["model_hashes"]:
            if m.get("param") == "model" and m.get("hash") and "model_hash" not in facts:
                facts["model_hash"] = m["hash"]
    return out.add("SwarmUI", facts, text, STRONG, source)


# --- NovelAI -----------------------------------------------------------------------------------


def _novelai_shape(norm: dict[str, Any]) -> bool:
    keys = set(norm)
    return (
        "uc" in keys
        and "sampler" in keys
        and bool(
            keys
            & {
                "n_samples",
                "noise_schedule",
                "request_type",
                "signed_hash",
                "v4_prompt",
                "uncond_scale",
            }
        )
    )


def _novelai(
    bag: dict[str, str], comment: dict[str, Any] | None, source: str, out: Out
) -> Finding | None:
    facts: dict[str, Any] = {}
    text: dict[str, Any] = {}
    src = bag.get("Source", "")
    if src:
        parts = src.split()
        if parts and re.fullmatch(r"[0-9A-Fa-f]{8}", parts[-1]):
            facts["model"] = value(" ".join(parts[:-1]))
            facts["model_hash"] = parts[-1]
        else:
            facts["model"] = value(src)
    if bag.get("Generation time"):
        facts["generation_time"] = value(bag["Generation time"])
    if bag.get("Software"):
        facts["software"] = value(bag["Software"])
    if bag.get("Description"):
        text["prompt"] = bag["Description"]
    if bag.get("Title"):
        text["title"] = bag["Title"]
    if comment:
        cf, ct = json_facts(comment)
        for k, v in cf.items():
            facts.setdefault(k, v)
        for k, v in ct.items():
            text.setdefault(k, v)
        for k in ("request_type", "sm", "sm_dyn", "n_samples", "cfg_rescale", "noise_schedule"):
            if k in comment and value(comment[k]) is not None:
                facts.setdefault(k, value(comment[k]))
        if comment.get("signed_hash"):
            facts["signed"] = True
        v4 = comment.get("v4_prompt")
        if isinstance(v4, dict) and isinstance(v4.get("caption"), dict):
            cap = v4["caption"]
            text["v4_base_caption"] = cap.get("base_caption")
            chars = cap.get("char_captions")
            if isinstance(chars, list):
                text["v4_char_captions"] = [
                    c.get("char_caption") for c in chars[:20] if isinstance(c, dict)
                ]
    is_nai = "novelai" in bag.get("Software", "").lower() or src.lower().startswith("novelai")
    conf = STRONG if is_nai else MARKER
    if not is_nai and not comment:
        return None
    return out.add("NovelAI", facts, text, conf, source)


# --- Midjourney, Easy Diffusion, InvokeAI ------------------------------------------------------

_MJ_JOB = re.compile(
    r"Job ID:\s*([0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})"
)
_MJ_FLAG = re.compile(r"(?:^|\s)--([a-z]{1,12})(?:\s+([^\s-][^\s]{0,40}))?")
_MJ_KEEP = {
    "ar",
    "aspect",
    "v",
    "version",
    "niji",
    "style",
    "stylize",
    "s",
    "chaos",
    "c",
    "q",
    "quality",
    "seed",
    "tile",
    "weird",
    "w",
    "raw",
    "p",
    "personalize",
}


def _midjourney(bag: dict[str, str], source: str, out: Out) -> Finding | None:
    desc = bag.get("Description", "")
    job = _MJ_JOB.search(desc[: 1024 * 1024])
    body = desc[: job.start()] if job else desc
    flags: dict[str, str] = {}
    for m in _MJ_FLAG.finditer(body[: 64 * 1024]):
        if m.group(1) in _MJ_KEEP and len(flags) < 30:
            flags[m.group(1)] = value(m.group(2)) or "on"
    if not job and not ({"v", "niji", "ar"} & set(flags)):
        return None
    facts: dict[str, Any] = {"parameters": flags}
    if job:
        facts["job_id"] = job.group(1)
    if "v" in flags or "version" in flags:
        facts["version"] = flags.get("v") or flags.get("version")
    if bag.get("Creation Time"):
        facts["created"] = value(bag["Creation Time"])
    cut = re.search(r"(?:^|\s)--[a-z]", body)
    text = {"prompt": (body[: cut.start()] if cut else body).strip(), "author": bag.get("Author")}
    return out.add("Midjourney", facts, text, STRONG if job else 0.7, source)


_ED_KEYS = {
    "model": ("use_stable_diffusion_model", "Stable Diffusion model"),
    "seed": ("seed", "Seed"),
    "sampler": ("sampler_name", "Sampler"),
    "steps": ("num_inference_steps", "Steps"),
    "cfg": ("guidance_scale", "Guidance Scale"),
    "vae": ("use_vae_model", "VAE model"),
    "width": ("width", "Width"),
    "height": ("height", "Height"),
}


def _easy_diffusion(bag: dict[str, str], source: str, out: Out) -> Finding:
    facts: dict[str, Any] = {}
    for name, keys in _ED_KEYS.items():
        for k in keys:
            if bag.get(k):
                facts[name] = number(bag[k]) if name in _NUMERIC else value(bag[k])
                break
    if facts.get("width") and facts.get("height"):
        facts["size"] = f"{value(facts.pop('width'))}x{value(facts.pop('height'))}"
    lora = bag.get("use_lora_model") or bag.get("LoRA model")
    if lora:
        facts["loras"] = [{"name": value(x)} for x in lora.split(",")[:50] if value(x)]
    text = {
        "prompt": bag.get("prompt") or bag.get("Prompt"),
        "negative_prompt": bag.get("negative_prompt") or bag.get("Negative Prompt"),
    }
    return out.add("Easy Diffusion", facts, text, MARKER if "model" in facts else 0.7, source)


def _invoke_v3(bag: dict[str, str], source: str, out: Out) -> Finding | None:
    facts: dict[str, Any] = {}
    text: dict[str, Any] = {}
    parsed = False
    meta_s = bag.get("invokeai_metadata")
    if meta_s is not None:
        try:
            meta = load_json(meta_s, "invokeai_metadata")
            if not isinstance(meta, dict):
                raise ParseError("invokeai_metadata: not a JSON object")
            facts, text = json_facts(meta)
            for k in ("generation_mode", "rand_device"):
                if meta.get(k):
                    facts[k] = value(meta[k])
            parsed = True
        except ParseError as err:
            out.error(str(err), "InvokeAI", source + " invokeai_metadata")
    for key in ("invokeai_graph", "invokeai_workflow"):
        if key in bag:
            try:
                graph = load_json(bag[key], key)
                models = _invoke_models(graph)
                if models:
                    facts.setdefault("graph_models", models)
                parsed = True
            except ParseError as err:
                out.error(str(err), "InvokeAI", f"{source} {key}")
    if not parsed:
        return None
    return out.add("InvokeAI", facts, text, STRONG, source)


def _invoke_models(obj: Any) -> list[dict[str, Any]]:
    """Model identifiers anywhere in an InvokeAI graph/workflow (bounded walk)."""
    found: list[dict[str, Any]] = []
    stack: list[tuple[Any, int]] = [(obj, 0)]
    visited = 0
    while stack and visited < 20_000 and len(found) < 100:
        node, depth = stack.pop()
        visited += 1
        if isinstance(node, dict):
            name = node.get("model_name") or (node.get("name") if "base" in node else None)
            if isinstance(name, str) and (node.get("base") or node.get("base_model")):
                entry = {
                    "name": value(name),
                    "base": value(node.get("base") or node.get("base_model")),
                    "type": value(node.get("type") or node.get("model_type")),
                    "hash": value(node.get("hash")),
                }
                entry = {k: v for k, v in entry.items() if v}
                if entry not in found:
                    found.append(entry)
            if depth < 32:
                stack.extend((v, depth + 1) for v in list(node.values())[:500])
        elif isinstance(node, list) and depth < 32:
            stack.extend((v, depth + 1) for v in node[:2000])
    return found


def _invoke_v2(s: str, source: str, out: Out) -> Finding | None:
    try:
        meta = load_json(s, "sd-metadata")
    except ParseError as err:
        out.error(str(err), "InvokeAI", source)
        return None
    if not isinstance(meta, dict):
        out.error("sd-metadata: not a JSON object", "InvokeAI", source)
        return None
    img = meta.get("image")
    image: dict[str, Any] = img if isinstance(img, dict) else {}
    facts, _ = json_facts(image)
    top, _ = json_facts(meta)
    for k, v in top.items():
        facts.setdefault(k, v)
    if meta.get("model_weights"):
        facts["model"] = value(meta["model_weights"])
    prompt = image.get("prompt")
    if isinstance(prompt, list):
        prompt = " ".join(p.get("prompt", "") for p in prompt[:50] if isinstance(p, dict))
    text: dict[str, Any] = {}
    if isinstance(prompt, str):
        negs = re.findall(r"\[([^\]]{0,10000})\]", prompt[: 1024 * 1024])
        text["prompt"] = re.sub(r"\[[^\]]{0,10000}\]", "", prompt[: 1024 * 1024]).strip()
        if negs:
            text["negative_prompt"] = ", ".join(n.strip() for n in negs)
    return out.add("InvokeAI", facts, text, STRONG, source)


_DREAM_FLAGS = {
    "-s": "steps",
    "--steps": "steps",
    "-S": "seed",
    "--seed": "seed",
    "-W": "width",
    "--width": "width",
    "-H": "height",
    "--height": "height",
    "-C": "cfg",
    "--cfg_scale": "cfg",
    "-A": "sampler",
    "--sampler": "sampler",
    "-m": "model",
    "--model": "model",
}


def _dream(s: str, source: str, out: Out) -> Finding | None:
    import shlex

    try:
        tokens = shlex.split(s[: 64 * 1024])
    except ValueError as err:
        out.error(f"Dream: unparseable command line ({err})", "InvokeAI", source)
        return None
    if not tokens:
        return None
    facts: dict[str, Any] = {}
    i = 1
    while i < len(tokens) and i < 200:
        tok, val = tokens[i], None
        if "=" in tok and tok.startswith("--"):
            tok, val = tok.split("=", 1)
        elif i + 1 < len(tokens):
            val = tokens[i + 1]
            i += 1
        name = _DREAM_FLAGS.get(tok)
        if name and val is not None:
            facts[name] = number(val) if name in _NUMERIC else value(val)
        i += 1
    if facts.get("width") and facts.get("height"):
        facts["size"] = f"{value(facts.pop('width'))}x{value(facts.pop('height'))}"
    facts["format"] = "legacy Dream"
    return out.add(
        "InvokeAI", facts, {"prompt": tokens[0]}, STRONG if len(facts) > 1 else WEAK, source
    )


# --- ComfyUI -----------------------------------------------------------------------------------


def parse_comfy(
    prompt_s: str | None, workflow_s: str | None, source: str, out: Out
) -> Finding | None:
    facts = comfy.GraphFacts()
    parsed: list[str] = []
    for label, s, walk in (
        ("prompt", prompt_s, comfy.walk_api),
        ("workflow", workflow_s, comfy.walk_ui),
    ):
        if s is None:
            continue
        try:
            walk(load_json(s, f"ComfyUI {label}"), facts)
            parsed.append(label)
        except ParseError as err:
            out.error(str(err), "ComfyUI", f"{source} {label}")
        except ValueError as err:
            out.error(f"ComfyUI {label}: {err}", "ComfyUI", f"{source} {label}")
    if not parsed:
        return None
    ev: dict[str, Any] = {
        "graphs": parsed,
        "model": facts.checkpoints[0] if facts.checkpoints else None,
        "checkpoints": facts.checkpoints,
        "loras": _merge_loras(facts.loras),
        "vae": facts.vaes[0] if facts.vaes else None,
        "text_encoders": facts.text_encoders,
        "controlnets": facts.controlnets,
        "upscalers": facts.upscalers,
        "seed": facts.seeds[0] if len(facts.seeds) == 1 else None,
        "seeds": facts.seeds if len(facts.seeds) > 1 else None,
        "steps": facts.steps[0] if facts.steps else None,
        "cfg": facts.cfg[0] if facts.cfg else None,
        "sampler": facts.samplers[0] if facts.samplers else None,
        "scheduler": facts.schedulers[0] if facts.schedulers else None,
        "size": facts.sizes[0] if facts.sizes else None,
        "version": facts.version,
        "node_count": facts.node_count,
        "node_types": facts.class_types[:100],
    }
    if facts.truncated:
        ev["truncated"] = True
    text = {
        "prompt": "\n".join(facts.positive),
        "negative_prompt": "\n".join(facts.negative),
        "texts": facts.texts,
        "notes": facts.notes,
    }
    return out.add("ComfyUI", ev, text, STRONG if facts.recognised else 0.7, source)


# --- the key/value bag of PNG text chunks (and JSON dicts shaped like it) ----------------------


def parse_bag(
    bag: dict[str, str], source: Callable[[str], str], out: Out, scheme: str | None = None
) -> None:
    """Every tool whose keys appear in ``bag`` (PNG text keywords -> values)."""
    scheme = scheme or bag.get("fooocus_scheme")
    prompt = bag.get("prompt")
    comfy_json = prompt is not None and prompt.lstrip()[:1] == "{"
    if comfy_json or "workflow" in bag:
        parse_comfy(prompt if comfy_json else None, bag.get("workflow"), source("prompt"), out)
    if "parameters" in bag:
        p = bag["parameters"]
        where = source("parameters")
        if p.lstrip()[:1] == "{":
            try:
                obj = load_json(p, "parameters")
            except ParseError as err:
                out.error(str(err), None, where)
            else:
                if classify_json(obj, where, out, scheme=scheme) is None:
                    out.error("parameters: JSON of no known generator", None, where)
        else:
            parse_a1111(p, where, out, require_structure=False, scheme=scheme)
    elif "postprocessing" in bag:
        out.add(
            A1111,
            {"note": "extras (upscaling/post-processing) only"},
            {"postprocessing": bag["postprocessing"]},
            WEAK,
            source("postprocessing"),
            verdict="ai_edited",
        )
    if any(k in bag for k in ("invokeai_metadata", "invokeai_graph", "invokeai_workflow")):
        _invoke_v3(bag, source("invokeai_metadata"), out)
    if "sd-metadata" in bag:
        _invoke_v2(bag["sd-metadata"], source("sd-metadata"), out)
    if "Dream" in bag:
        _dream(bag["Dream"], source("Dream"), out)
    comment_obj: Any = None
    if "Comment" in bag and bag["Comment"].lstrip()[:1] == "{":
        try:
            comment_obj = load_json(bag["Comment"], "Comment")
        except ParseError as err:
            out.error(str(err), None, source("Comment"))
    software = bag.get("Software", "")
    if "novelai" in software.lower() or (
        isinstance(comment_obj, dict)
        and _novelai_shape({_norm_key(k): v for k, v in comment_obj.items()})
    ):
        _novelai(
            bag, comment_obj if isinstance(comment_obj, dict) else None, source("Comment"), out
        )
    elif isinstance(comment_obj, dict):
        classify_json(comment_obj, source("Comment"), out)
    if "Description" in bag and "NovelAI" not in out.generators():
        _midjourney(bag, source("Description"), out)
    if ("negative_prompt" in bag or "Negative Prompt" in bag) and not comfy_json:
        key = "negative_prompt" if "negative_prompt" in bag else "Negative Prompt"
        _easy_diffusion(bag, source(key), out)


def parse_free_text(
    text: str, source: str, out: Out, scheme: str | None = None, hint: str | None = None
) -> None:
    """A value that may hold infotext or JSON (EXIF UserComment, JPEG/GIF comments)."""
    s = text.strip()
    if not s:
        return
    if s[:1] == "{":
        try:
            obj = load_json(s, source)
        except ParseError as err:
            if looks_like_infotext(s):
                parse_a1111(s, source, out, scheme=scheme)
            else:
                out.error(str(err), hint, source)
            return
        if isinstance(obj, dict) and _looks_like_bag(obj):
            parse_bag(
                {k: _as_text(v) for k, v in obj.items()}, lambda k: f"{source} {k}", out, scheme
            )
        elif classify_json(obj, source, out, hint=hint, scheme=scheme) is None and hint:
            out.add(hint, {"note": "unrecognised JSON"}, {}, WEAK, source)
        return
    if parse_a1111(s, source, out, scheme=scheme) is None and hint:
        out.add(hint, {}, {"comment": s}, MARKER, source)


_BAG_KEYS = {
    "Software",
    "Source",
    "Comment",
    "Description",
    "Title",
    "parameters",
    "workflow",
    "invokeai_metadata",
    "sd-metadata",
}


def _looks_like_bag(obj: dict[str, Any]) -> bool:
    return len(_BAG_KEYS & set(obj)) >= 2 or "parameters" in obj or "workflow" in obj


def _as_text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)[:MAX_JSON_CHARS]


# --- software markers --------------------------------------------------------------------------

SOFTWARE_MARKERS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p, re.IGNORECASE), g)
    for p, g in (
        (r"^NovelAI", "NovelAI"),
        (r"RuinedFooocus", "RuinedFooocus"),
        (r"Fooocus", "Fooocus"),
        (r"Draw Things", "Draw Things"),
        (r"Midjourney", "Midjourney"),
        (r"ComfyUI", "ComfyUI"),
        (r"Invoke ?AI", "InvokeAI"),
        (r"AUTOMATIC1111|stable-diffusion-webui", A1111),
        (r"SD\.Next", "SD.Next"),
        (r"Stable ?Swarm|SwarmUI", "SwarmUI"),
        (r"Easy Diffusion", "Easy Diffusion"),
        (r"Stable Diffusion", "Stable Diffusion"),
        (r"DALL[·\-\s]?E|ChatGPT", "DALL-E/ChatGPT"),
        (r"Adobe Firefly", "Adobe Firefly"),
    )
)


def software_generator(s: str) -> str | None:
    for pattern, generator in SOFTWARE_MARKERS:
        if pattern.search(s[:512]):
            return generator
    return None


def _markers(values: list[tuple[str, str]], out: Out) -> None:
    """EXIF Software, PNG Software, XMP CreatorTool naming a generator."""
    for source, s in values:
        generator = software_generator(s)
        if generator is None:
            continue
        same = [f for f in out.findings if f.verdict not in ("error",) and f.generator == generator]
        if same:
            same[0].evidence.setdefault("software", value(s))
            continue
        out.add(generator, {"software": value(s)}, {}, MARKER, source)


# --- readers -----------------------------------------------------------------------------------


def xmp_facts(ctx: ReadContext) -> list[XmpFacts]:
    cached = ctx.cache.get("xmp")
    if cached is None:
        cached = [parse_xmp(p) for p in ctx.container.xmp]
        ctx.cache["xmp"] = cached
    facts: list[XmpFacts] = cached
    return facts


def _png_source(entries: dict[str, TextEntry]) -> Callable[[str], str]:
    def source(key: str) -> str:
        e = entries.get(key)
        if e is None:
            return f"PNG {key}"
        where = f"PNG {e.source.split(':')[-1]} {key!r}"
        if e.after_idat:
            where += " (after IDAT)"
        if not e.crc_ok:
            where += " (bad CRC)"
        return where

    return source


def read_metadata(ctx: ReadContext) -> list[Finding]:
    info = ctx.container
    out = Out("generator_metadata")
    for problem in info.errors:
        out.error(problem, None, f"{info.format} container")
    entries: dict[str, TextEntry] = {}
    for t in info.texts:
        if t.source.startswith("png:"):
            entries.setdefault(t.key, t)
    if entries:
        parse_bag({k: e.value for k, e in entries.items()}, _png_source(entries), out)
    exif = info.exif
    scheme = exif.get("MakerNote")
    scheme = scheme.lower() if scheme and scheme.lower() in ("fooocus", "a1111") else None
    hint = software_generator(exif.get("Software", "")) if exif.get("Software") else None
    if exif.get("UserComment"):
        parse_free_text(exif["UserComment"], "EXIF UserComment", out, scheme=scheme, hint=hint)
    # ComfyUI WebP: 0x0110 Model = "prompt:{json}", then 0x010F Make = "workflow:{json}", ...
    comfy_bag: dict[str, str] = {}
    for tag in ("Model", "Make", "ImageDescription", "DocumentName"):
        m = re.match(r"^(\w{1,32}):\s*(?=[\[{])", exif.get(tag, ""))
        if m:
            comfy_bag[m.group(1)] = exif[tag][m.end() :]
    if "prompt" in comfy_bag or "workflow" in comfy_bag:
        parse_comfy(comfy_bag.get("prompt"), comfy_bag.get("workflow"), "EXIF (ComfyUI)", out)
    for t in info.texts:
        if not t.source.startswith("png:"):
            where = "JPEG COM" if t.source == "jpeg:COM" else "GIF comment"
            parse_free_text(t.value, where, out, scheme=scheme)
    creator_tools: list[str] = []
    for facts in xmp_facts(ctx):
        creator_tools.extend(facts.creator_tools)
        dt_hint = (
            "Draw Things" if any("draw things" in c.lower() for c in facts.creator_tools) else None
        )
        for uc in facts.user_comments:
            parse_free_text(uc, "XMP exif:UserComment", out, hint=dt_hint)
    markers = [("EXIF Software", exif["Software"])] if exif.get("Software") else []
    if "Software" in entries:
        markers.append(("PNG Software", entries["Software"].value))
    markers.extend(("XMP CreatorTool", c) for c in creator_tools)
    markers.extend(("XMP softwareAgent", a) for f in xmp_facts(ctx) for a in f.software_agents)
    _markers(markers, out)
    return out.findings


_AI_TERMS: dict[str, Verdict] = {
    "trainedAlgorithmicMedia": "ai_generated",
    "algorithmicMedia": "ai_generated",
    "dataDrivenMedia": "ai_generated",
    "compositeWithTrainedAlgorithmicMedia": "ai_edited",
    "compositeSynthetic": "ai_edited",
}
_NOT_AI_TERMS = {
    "digitalCapture", "computationalCapture", "negativeFilm", "positiveFilm", "print",
    "humanEdits", "algorithmicallyEnhanced", "softwareImage", "digitalArt", "digitalCreation",
    "screenCapture", "virtualRecording", "composite", "compositeCapture", "minorHumanEdits",
}  # fmt: skip


def read_iptc(ctx: ReadContext) -> list[Finding]:
    out = Out("iptc")
    for facts in xmp_facts(ctx):
        if facts.error:
            out.error(facts.error, None, "XMP")
        common: dict[str, Any] = {
            "ai_system": facts.ai_systems[0] if facts.ai_systems else None,
            "ai_system_version": facts.ai_system_versions[0] if facts.ai_system_versions else None,
            "creator_tool": value(facts.creator_tools[0]) if facts.creator_tools else None,
        }
        text: dict[str, Any] = {
            "ai_prompt": "\n".join(facts.ai_prompts),
            "ai_prompt_writer": "\n".join(facts.ai_prompt_writers),
            "description": "\n".join(facts.descriptions),
            "creator": "\n".join(facts.creators),
        }
        for raw in facts.digital_source_types:
            term = source_type_term(raw)
            facts_ev = {"digital_source_type": term, "uri": value(raw), **common}
            generator = value(facts.ai_systems[0]) if facts.ai_systems else None
            if term in _AI_TERMS:
                out.add(
                    generator, facts_ev, text, STRONG, "XMP Iptc4xmpExt", verdict=_AI_TERMS[term]
                )
            elif term in _NOT_AI_TERMS:
                out.add(generator, facts_ev, text, MARKER, "XMP Iptc4xmpExt", verdict="not_ai")
            else:
                out.add(generator, facts_ev, text, WEAK, "XMP Iptc4xmpExt", verdict="unknown")
        if not facts.digital_source_types and facts.ai_systems:
            out.add(
                value(facts.ai_systems[0]) or "unknown",
                common,
                text,
                MARKER,
                "XMP Iptc4xmpExt:AISystemUsed",
            )
    return out.findings


def read_stealth(ctx: ReadContext) -> list[Finding]:
    from tipline.provenance.stealth import read_stealth_payload

    out = Out("stealth_metadata")
    result = read_stealth_payload(ctx)
    if result is None:
        return []
    if result.error:
        out.error(result.error, "NovelAI" if result.magic else None, "pixel LSBs")
        return out.findings
    inner = Out("stealth_metadata")
    where = f"pixel LSBs ({result.mode}, {result.magic})"
    parse_free_text(result.payload, where, inner)
    facts: dict[str, Any] = {
        "mode": result.mode,
        "magic": result.magic,
        "payload_bytes": result.payload_bytes,
    }
    found = [f for f in inner.findings if f.verdict != "error"]
    for f in inner.findings:
        f.evidence.update(facts)
        if f.verdict != "error":
            f.confidence = max(f.confidence, STRONG)
    if not found:
        out.add("stealth pnginfo", facts, {"payload": result.payload}, STRONG, where)
    return out.findings + inner.findings
