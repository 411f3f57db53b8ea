"""XMP packets: the few properties provenance needs, parsed without resolving anything.

``defusedxml`` refuses DTDs, entity declarations and external references, so a packet cannot
expand into a bomb or make the parser fetch a URL. A packet that is not well-formed falls back
to a bounded regex for the IPTC digital source type alone, and the problem is reported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from xml.etree.ElementTree import Element, ParseError

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

IPTC_EXT_NS = "http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
DST_PREFIX = "http://cv.iptc.org/newscodes/digitalsourcetype/"
_RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
_MAX_VALUES = 64
_FALLBACK_SCAN = 1024 * 1024
_DST_RE = re.compile(r"digitalsourcetype/([A-Za-z]{1,64})")


@dataclass(slots=True)
class XmpFacts:
    digital_source_types: list[str] = field(default_factory=list)
    creator_tools: list[str] = field(default_factory=list)
    software_agents: list[str] = field(default_factory=list)
    ai_systems: list[str] = field(default_factory=list)
    ai_system_versions: list[str] = field(default_factory=list)
    #: exif:UserComment inside XMP (Draw Things writes its JSON there)
    user_comments: list[str] = field(default_factory=list)
    #: free text: dc:description, dc:title, dc:creator, IPTC AI prompt and prompt writer
    descriptions: list[str] = field(default_factory=list)
    creators: list[str] = field(default_factory=list)
    ai_prompts: list[str] = field(default_factory=list)
    ai_prompt_writers: list[str] = field(default_factory=list)
    error: str | None = None


# local name -> XmpFacts attribute
_PROPS = {
    "DigitalSourceType": "digital_source_types",
    "CreatorTool": "creator_tools",
    "softwareAgent": "software_agents",
    "AISystemUsed": "ai_systems",
    "AISystemVersionUsed": "ai_system_versions",
    "UserComment": "user_comments",
    "description": "descriptions",
    "creator": "creators",
    "AIPromptInformation": "ai_prompts",
    "AIPromptWriterName": "ai_prompt_writers",
}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1].rsplit(":", 1)[-1]


def _add(facts: XmpFacts, attr: str, value: str | None) -> None:
    if value is None:
        return
    v = value.strip()
    bucket: list[str] = getattr(facts, attr)
    if v and v not in bucket and len(bucket) < _MAX_VALUES:
        bucket.append(v)


def _element_value(el: Element) -> str | None:
    resource = el.get(_RDF + "resource")
    if resource:
        return resource
    items = [li for li in el.iter(_RDF + "li")]
    if items:
        return "\n".join("".join(li.itertext()) for li in items)
    return "".join(el.itertext())


def parse_xmp(packet: str) -> XmpFacts:
    facts = XmpFacts()
    start = packet.find("<")
    text = packet[start:] if start >= 0 else packet
    try:
        root = fromstring(text, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except (ParseError, DefusedXmlException, ValueError) as err:
        facts.error = f"XMP is not well-formed or uses forbidden constructs ({type(err).__name__})"
        for m in _DST_RE.finditer(packet[:_FALLBACK_SCAN]):
            _add(facts, "digital_source_types", m.group(1))
        return facts
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        attr = _PROPS.get(_local(el.tag))
        if attr is not None:
            _add(facts, attr, _element_value(el))
        for key, value in el.attrib.items():
            a = _PROPS.get(_local(key))
            if a is not None:
                _add(facts, a, value)
    return facts


def source_type_term(value: str) -> str:
    """The vocabulary term of a DigitalSourceType value (a URI or a bare term)."""
    v = value.strip().rstrip("/")
    return v.rsplit("/", 1)[-1]
