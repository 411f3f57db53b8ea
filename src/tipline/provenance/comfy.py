"""ComfyUI graphs: the API ``prompt`` graph and the UI ``workflow`` graph, walked with caps.

API graph: ``{node_id: {"class_type": str, "inputs": {name: value or [node_id, slot]}}}``.
UI graph: ``{"nodes": [{"id", "type", "widgets_values": [...]}], "links": [...]}``, newer
versions nest subgraphs under ``definitions.subgraphs[].nodes``.

Model file names, seeds and sampler settings are structured facts; text inputs (prompts) and
Note nodes are free text and go to ``texts`` / ``notes``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

#: Nodes read per graph (both graphs together count separately).
MAX_NODES = 10_000
#: Subgraph nesting followed in UI workflows.
MAX_DEPTH = 8
#: Nodes visited when tracing a sampler's positive/negative input back to its text.
MAX_TRACE = 200
MAX_ITEMS = 200

#: node type names kept as facts: identifier-like only, so no free text rides along
_NODE_TYPE = re.compile(r"[\w .|+\-()]{1,100}")
MODEL_EXTS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft", ".onnx")
_CKPT_INPUTS = {"ckpt_name", "unet_name", "checkpoint", "base_ckpt_name", "model_path"}
_LORA_INPUTS = {"lora_name", "lora"}
_VAE_INPUTS = {"vae_name"}
_CLIP_INPUTS = {"clip_name", "clip_name1", "clip_name2", "clip_name3"}
_CN_INPUTS = {"control_net_name"}
_TEXT_INPUTS = {"text", "text_g", "text_l", "clip_l", "t5xxl", "prompt", "positive", "negative"}
_UI_CONTROL_WORDS = {"fixed", "increment", "decrement", "randomize", "enable", "disable"}


@dataclass(slots=True)
class GraphFacts:
    checkpoints: list[str] = field(default_factory=list)
    loras: list[dict[str, Any]] = field(default_factory=list)
    vaes: list[str] = field(default_factory=list)
    text_encoders: list[str] = field(default_factory=list)
    controlnets: list[str] = field(default_factory=list)
    upscalers: list[str] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    cfg: list[float] = field(default_factory=list)
    samplers: list[str] = field(default_factory=list)
    schedulers: list[str] = field(default_factory=list)
    sizes: list[str] = field(default_factory=list)
    class_types: list[str] = field(default_factory=list)
    node_count: int = 0
    truncated: bool = False
    version: str | None = None
    #: free text
    positive: list[str] = field(default_factory=list)
    negative: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def recognised(self) -> bool:
        return bool(self.checkpoints or self.loras or self.samplers or self.seeds or self.texts)


def _add(bucket: list[Any], value: Any) -> None:
    if value not in bucket and len(bucket) < MAX_ITEMS:
        bucket.append(value)


def _short(s: str) -> str:
    return s.strip()[:256]


def _is_link(v: Any) -> bool:
    return (
        isinstance(v, list)
        and len(v) == 2
        and isinstance(v[0], (str, int))
        and isinstance(v[1], int)
        and not isinstance(v[1], bool)
    )


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def walk_api(graph: Any, facts: GraphFacts | None = None) -> GraphFacts:
    """Facts from an API graph; raises ValueError if it is not one."""
    facts = facts or GraphFacts()
    if not isinstance(graph, dict) or not graph:
        raise ValueError("not a node graph (expected an object of nodes)")
    nodes = [(str(k), v) for k, v in graph.items() if isinstance(v, dict)]
    if not any("class_type" in v for _, v in nodes):
        raise ValueError("no node has a class_type")
    if len(nodes) > MAX_NODES:
        facts.truncated = True
        nodes = nodes[:MAX_NODES]
    by_id = dict(nodes)
    facts.node_count += len(nodes)
    for _nid, node in nodes:
        ct = node.get("class_type")
        ct = ct if isinstance(ct, str) else ""
        if _NODE_TYPE.fullmatch(ct):
            _add(facts.class_types, ct)
        inputs = node.get("inputs")
        if not isinstance(inputs, dict):
            continue
        lora_strength = _num(inputs.get("strength_model"))
        for key, v in inputs.items():
            k = str(key).lower()
            if isinstance(v, str):
                if k in _CKPT_INPUTS:
                    _add(facts.checkpoints, _short(v))
                elif k in _LORA_INPUTS:
                    entry: dict[str, Any] = {"name": _short(v)}
                    if lora_strength is not None:
                        entry["weight"] = lora_strength
                    _add(facts.loras, entry)
                elif k in _VAE_INPUTS:
                    _add(facts.vaes, _short(v))
                elif k in _CLIP_INPUTS:
                    _add(facts.text_encoders, _short(v))
                elif k in _CN_INPUTS:
                    _add(facts.controlnets, _short(v))
                elif k == "model_name" and "upscale" in ct.lower():
                    _add(facts.upscalers, _short(v))
                elif k == "sampler_name":
                    _add(facts.samplers, _short(v))
                elif k == "scheduler":
                    _add(facts.schedulers, _short(v))
                elif k in _TEXT_INPUTS and v.strip():
                    _add(facts.texts, v)
            else:
                num = _num(v)
                if num is None:
                    continue
                if k in ("seed", "noise_seed"):
                    _add(facts.seeds, int(num))
                elif k == "steps":
                    _add(facts.steps, int(num))
                elif k == "cfg":
                    _add(facts.cfg, num)
        if "latent" in ct.lower():
            w, h = _num(inputs.get("width")), _num(inputs.get("height"))
            if w and h:
                _add(facts.sizes, f"{int(w)}x{int(h)}")
        for role in ("positive", "negative"):
            link = inputs.get(role)
            if isinstance(link, list) and _is_link(link):
                for text in _trace_text(by_id, link):
                    _add(facts.positive if role == "positive" else facts.negative, text)
    return facts


def _trace_text(by_id: dict[str, dict[str, Any]], link: list[Any]) -> list[str]:
    """Texts feeding a sampler input, following conditioning nodes back a bounded distance."""
    found: list[str] = []
    queue = [str(link[0])]
    seen: set[str] = set()
    while queue and len(seen) < MAX_TRACE:
        nid = queue.pop(0)
        if nid in seen:
            continue
        seen.add(nid)
        node = by_id.get(nid)
        if node is None:
            continue
        inputs = node.get("inputs")
        if not isinstance(inputs, dict):
            continue
        texts = [
            v for k, v in inputs.items() if str(k).lower() in _TEXT_INPUTS and isinstance(v, str)
        ]
        if texts:
            found.extend(t for t in texts if t.strip())
            continue
        for k, v in inputs.items():
            if _is_link(v) and str(k).lower() not in ("model", "clip", "vae", "latent_image"):
                queue.append(str(v[0]))
    return found


def walk_ui(workflow: Any, facts: GraphFacts | None = None) -> GraphFacts:
    """Facts from a UI workflow; raises ValueError if it is not one."""
    facts = facts or GraphFacts()
    if not isinstance(workflow, dict) or not isinstance(workflow.get("nodes"), list):
        raise ValueError("not a workflow (expected an object with a nodes list)")
    v = workflow.get("version")
    if isinstance(v, (str, int, float)) and not isinstance(v, bool):
        facts.version = str(v)[:32]
    budget = [MAX_NODES]
    _walk_ui_nodes(workflow, facts, 0, budget)
    if budget[0] <= 0:
        facts.truncated = True
    return facts


def _walk_ui_nodes(graph: dict[str, Any], facts: GraphFacts, depth: int, budget: list[int]) -> None:
    nodes = graph.get("nodes")
    if isinstance(nodes, list):
        for node in nodes:
            if budget[0] <= 0:
                return
            budget[0] -= 1
            if isinstance(node, dict):
                facts.node_count += 1
                _ui_node(node, facts)
    if depth >= MAX_DEPTH:
        return
    defs = graph.get("definitions")
    subs = defs.get("subgraphs") if isinstance(defs, dict) else None
    if isinstance(subs, list):
        for sub in subs[:MAX_ITEMS]:
            if isinstance(sub, dict):
                _walk_ui_nodes(sub, facts, depth + 1, budget)


def _ui_node(node: dict[str, Any], facts: GraphFacts) -> None:
    t = node.get("type")
    ntype = t[:100] if isinstance(t, str) else ""
    low = ntype.lower()
    if _NODE_TYPE.fullmatch(ntype):
        _add(facts.class_types, ntype)
    wv = node.get("widgets_values")
    values: list[Any] = (
        list(wv.values())[:64] if isinstance(wv, dict) else wv[:64] if isinstance(wv, list) else []
    )
    strings = [x for x in values if isinstance(x, str)]
    if low in ("note", "markdownnote"):
        facts.notes.extend(s for s in strings[:4] if s.strip())
        return
    for s in strings:
        if s.lower().endswith(MODEL_EXTS):
            name = _short(s)
            if "lora" in low or "lycoris" in low:
                _add(facts.loras, {"name": name})
            elif "vae" in low:
                _add(facts.vaes, name)
            elif "clip" in low:
                _add(facts.text_encoders, name)
            elif "controlnet" in low:
                _add(facts.controlnets, name)
            elif "upscale" in low:
                _add(facts.upscalers, name)
            else:
                _add(facts.checkpoints, name)
    if "textencode" in low or low.endswith("prompt"):
        for s in strings:
            if s.strip() and not s.lower().endswith(MODEL_EXTS):
                _add(facts.texts, s)
    if "ksampler" in low and values:
        seed = _num(values[0])
        if seed is not None:
            _add(facts.seeds, int(seed))
        for x in values[1:]:
            if isinstance(x, str) and x not in _UI_CONTROL_WORDS:
                if x in ("normal", "karras", "exponential", "simple", "sgm_uniform", "beta"):
                    _add(facts.schedulers, x)
                elif len(x) <= 40 and x.replace("_", "").isalnum():
                    _add(facts.samplers, x)
