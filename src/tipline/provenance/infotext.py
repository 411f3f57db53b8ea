"""The AUTOMATIC1111 "infotext" format (also Forge, SD.Next, Fooocus a1111 scheme, Civitai).

::

    <prompt, possibly several lines>
    Negative prompt: <negative prompt, possibly several lines>
    Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: 0123abcd, ...

The last line is the settings line only if it holds at least three ``key: value`` pairs.
Values containing ``,`` ``:`` or a newline are JSON-quoted. Written from the format description
(docs/provenance.md); the scanner below is linear in the input length whatever it contains.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

#: Longest settings line parsed (Civitai resource lists run to a few KiB).
MAX_SETTINGS_LINE = 256 * 1024
#: Pairs read from one settings line.
MAX_PAIRS = 512

_KEY = re.compile(r"[A-Za-z][\w \-/]{0,63}")
_LORA_TAG = re.compile(r"<(lora|lyco|hypernet):([^:>\n]{1,200})(?::([-0-9.]{1,12}))?[^>\n]{0,200}>")
_HASH = re.compile(r"^[0-9A-Fa-f]{8,64}$")

#: settings keys that only a diffusion UI writes; two of them make a settings line believable
KNOWN_KEYS = frozenset(
    {
        "Steps", "Sampler", "Schedule type", "CFG scale", "Seed", "Size", "Model hash", "Model",
        "VAE hash", "VAE", "Denoising strength", "Clip skip", "ENSD", "Lora hashes", "TI hashes",
        "Hires upscale", "Hires upscaler", "Hires steps", "Version", "RNG", "Variation seed",
    }
)  # fmt: skip


@dataclass(slots=True)
class Infotext:
    prompt: str = ""
    negative_prompt: str = ""
    #: every settings pair, values unquoted (free text from extensions may hide here)
    settings: dict[str, str] = field(default_factory=dict)
    has_settings_line: bool = False
    #: problems met while parsing (bad JSON in Hashes...), reported as error findings
    problems: list[str] = field(default_factory=list)

    @property
    def known_keys(self) -> int:
        return sum(1 for k in self.settings if k in KNOWN_KEYS)


def split_pairs(line: str) -> list[tuple[str, str]]:
    """``key: value`` pairs of a settings line, JSON-quoted values unquoted. Linear time."""
    pairs: list[tuple[str, str]] = []
    pos, n = 0, len(line)
    while pos < n and len(pairs) < MAX_PAIRS:
        comma = line.find(",", pos)
        seg_end = n if comma < 0 else comma
        colon = line.find(":", pos, seg_end)
        if colon < 0:
            pos = seg_end + 1
            continue
        key = line[pos:colon].strip()
        vpos = colon + 1
        while vpos < n and line[vpos] == " ":
            vpos += 1
        if vpos < n and line[vpos] == '"':
            end = _quote_end(line, vpos)
            if end > 0:
                raw = line[vpos : end + 1]
                try:
                    value = json.loads(raw)
                    if not isinstance(value, str):
                        value = raw
                except ValueError:
                    value = raw[1:-1]
                after = line.find(",", end + 1)
                pos = n if after < 0 else after + 1
                if _KEY.fullmatch(key):
                    pairs.append((key, value))
                continue
        if vpos < n and line[vpos] in "{[":  # Civitai writes Hashes/resources as bare JSON
            end = _bracket_end(line, vpos)
            if end > 0:
                after = line.find(",", end + 1)
                if _KEY.fullmatch(key):
                    pairs.append((key, line[vpos : end + 1]))
                pos = n if after < 0 else after + 1
                continue
        value = line[vpos:seg_end].strip()
        if _KEY.fullmatch(key):
            pairs.append((key, value))
        pos = seg_end + 1
    return pairs


def _quote_end(s: str, start: int) -> int:
    """Index of the quote closing the JSON string that opens at ``start``, or -1."""
    i = start + 1
    while True:
        q = s.find('"', i)
        if q < 0:
            return -1
        back = 0
        while s[q - 1 - back] == "\\":
            back += 1
        if back % 2 == 0:
            return q
        i = q + 1


def _bracket_end(s: str, start: int) -> int:
    """Index of the bracket closing the JSON value that opens at ``start``, or -1. Linear."""
    depth = 0
    i, n = start, len(s)
    while i < n:
        ch = s[i]
        if ch == '"':
            q = _quote_end(s, i)
            if q < 0:
                return -1
            i = q
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def parse_infotext(text: str) -> Infotext:
    info = Infotext()
    lines = text.strip().split("\n")
    if not lines:
        return info
    last = lines[-1].strip()
    if len(last) <= MAX_SETTINGS_LINE:
        pairs = split_pairs(last)
        if len(pairs) >= 3:
            info.has_settings_line = True
            info.settings = dict(pairs)
            lines = lines[:-1]
    elif last.count(":") >= 3:
        info.problems.append(f"settings line of {len(last):,} characters not parsed")
    prompt: list[str] = []
    negative: list[str] = []
    in_negative = False
    for line in lines:
        if not in_negative and line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:") :].lstrip()
        (negative if in_negative else prompt).append(line)
    info.prompt = "\n".join(prompt).strip()
    info.negative_prompt = "\n".join(negative).strip()
    return info


def looks_like_infotext(text: str) -> bool:
    """A settings line with two well-known keys, or a "Negative prompt:" line."""
    info = parse_infotext(text[: 4 * 1024 * 1024])
    return info.known_keys >= 2 or "\nNegative prompt:" in "\n" + text


def lora_tags(prompt: str) -> list[dict[str, Any]]:
    """``<lora:name:weight>`` references in a prompt (model names, not free text)."""
    out: list[dict[str, Any]] = []
    for m in _LORA_TAG.finditer(prompt[: 1024 * 1024]):
        d: dict[str, Any] = {"name": m.group(2).strip(), "kind": m.group(1)}
        if m.group(3):
            with contextlib.suppress(ValueError):
                d["weight"] = float(m.group(3))
        out.append(d)
        if len(out) >= 200:
            break
    return out


def name_hash_list(value: str) -> list[dict[str, str]]:
    """``"name: 0123abcd, other: 4567ef01"`` (Lora hashes, TI hashes) -> [{name, hash}]."""
    out: list[dict[str, str]] = []
    for part in value.split(",")[:200]:
        name, sep, h = part.rpartition(":")
        if sep and name.strip():
            h = h.strip()
            out.append(
                {"name": name.strip(), "hash": h} if _HASH.match(h) else {"name": name.strip()}
            )
    return out
