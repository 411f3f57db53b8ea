"""NCMEC CyberTipline-style XML for one final-graded, actionable item.

The document follows the element names of the CyberTipline reporting API (``report`` with
``incidentSummary``, ``internetDetails``, ``reporter``; ``fileDetails`` with ``fileViewedByEsp``,
``exifViewedByEsp``, ``publiclyAvailable``, ``fileAnnotations``, ``industryClassification``,
``originalFileHash`` and ``details``). In the live API ``fileDetails`` is sent to ``/fileinfo``
after the upload; here it sits inside ``report`` so one file holds the whole package for the
hotline to review and submit. Built with :mod:`xml.etree.ElementTree`, so every value is
escaped.

``fileViewedByEsp`` is true only when the audit trail shows a person saw the file: a
``media.view`` event on the item's media (or naming the item) whose ``mode`` is not
``preview`` (a blurred preview is not a view; an event without a mode, the raw media download,
is). Claiming a view that did not happen would mislead law enforcement downstream.
Documented in docs/actions.md.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tipline.actions.exports import is_final_actionable
from tipline.errors import TiplineError
from tipline.store.tables import AuditEvent, Item, Report, ReportItem

INCIDENT_TYPE = "Child Pornography (possession, manufacture, and distribution)"
INDUSTRY_CLASSIFICATIONS = frozenset({"A1", "A2", "B1", "B2"})
#: ``media.view`` modes that are not a view of the file (blurred previews).
NON_VIEW_MODES = frozenset({"preview"})


class NcmecError(TiplineError):
    """A CyberTipline report that cannot be made for this item."""


class ItemNotFoundError(NcmecError):
    pass


class NotActionableError(NcmecError):
    pass


@dataclass(frozen=True, slots=True)
class Reporter:
    """The reporting organisation's placeholder contact (completed before submission)."""

    org_name: str = "Tipline hotline"
    email: str = "hotline@example.org"

    @classmethod
    def from_settings(cls, settings: Any) -> Reporter:
        """From ``ncmec_org_name`` / ``ncmec_org_email`` settings when present, else defaults."""
        default = cls()
        name = getattr(settings, "ncmec_org_name", "") or default.org_name
        email = getattr(settings, "ncmec_org_email", "") or default.email
        return cls(str(name), str(email))


def is_view(event: AuditEvent) -> bool:
    """Does this ``media.view`` event mean a person saw the file?"""
    details = event.details if isinstance(event.details, dict) else {}
    mode = details.get("mode")
    return mode is None or str(mode) not in NON_VIEW_MODES


def _names_item(event: AuditEvent, item: Item) -> bool:
    if item.media_ref is not None and event.target_id == item.media_ref:
        return True
    details = event.details if isinstance(event.details, dict) else {}
    got = details.get("item_id")
    return got is not None and str(got) == str(item.id)


def viewed_by_esp(session: Session, item: Item) -> bool:
    """True when the audit trail holds a real view (not a blurred preview) of ``item``'s file.
    Views are looked up by the media ref, then by ``details.item_id`` among the media views
    since the item was first seen (a purged item keeps its history)."""
    base = select(AuditEvent).where(
        AuditEvent.action == "media.view", AuditEvent.target_type == "media"
    )
    if item.media_ref is not None:
        for event in session.scalars(base.where(AuditEvent.target_id == item.media_ref)):
            if is_view(event):
                return True
    since = base.where(AuditEvent.at >= item.first_seen).order_by(AuditEvent.id)
    for event in session.scalars(since.execution_options(yield_per=1000)):
        if _names_item(event, item) and is_view(event):
            return True
    return False


def item_urls(session: Session, item_id: int) -> list[str]:
    """URLs the item was fetched from and the URLs of the reports that brought it, sorted."""
    urls: set[str] = set()
    rows = session.execute(
        select(ReportItem.source_url, Report.urls)
        .join(Report, Report.id == ReportItem.report_id)
        .where(ReportItem.item_id == item_id)
    ).all()
    for source_url, report_urls in rows:
        if source_url and source_url.strip():
            urls.add(source_url.strip())
        for u in report_urls or []:
            if isinstance(u, str) and u.strip():
                urls.add(u.strip())
    return sorted(urls)


def _generators(provenance: Any) -> list[str]:
    """Generator names the pipeline's provenance findings (a list of finding dicts, or one
    dict) give."""
    findings: Iterable[Any]
    if isinstance(provenance, dict):
        findings = provenance.get("findings") or [provenance]
    elif isinstance(provenance, list):
        findings = provenance
    else:
        return []
    out: list[str] = []
    for f in findings:
        if not isinstance(f, dict) or f.get("verdict") == "error":
            continue
        gen = f.get("generator")
        if isinstance(gen, str) and gen.strip() and gen.strip() not in out:
            out.append(gen.strip())
    return out


#: partner fields named in a report's "Partner match" line, in this order
_PARTNER_FIELDS = (
    ("member", "partner"),  # NCMEC: the member (ESP) that shared the entry
    ("partner", "partner"),  # a Tipline peer: the instance it came from
    ("member_id", "member id"),
    ("list", "list"),
    ("entry_id", "entry"),
    ("classification", "classification"),
)


def _partner_matches(matches: Any) -> list[str]:
    """One line per match against a partner's list (exchange banks): which exchange, which
    partner and list, the partner's entry and classification (``Match.partner``)."""
    lines: list[str] = []
    for m in matches or []:
        partner = m.get("partner") if isinstance(m, dict) else None
        if not isinstance(partner, dict) or not partner.get("exchange"):
            continue
        parts = [f"exchange {partner['exchange']}"]
        seen: set[str] = set()
        for key, name in _PARTNER_FIELDS:
            value = partner.get(key)
            if value not in (None, "") and name not in seen:
                parts.append(f"{name} {value}")
                seen.add(name)
        if partner.get("record") and "entry" not in seen:
            parts.append(f"record {partner['record']}")
        parts.append(f"bank {m.get('bank', '')}")
        line = ", ".join(str(p) for p in parts)
        if line not in lines:
            lines.append(line)
    return lines


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def _bool(value: bool) -> str:
    return "true" if value else "false"


def load_actionable_item(session: Session, item_id: int) -> Item:
    item = session.get(Item, item_id)
    if item is None:
        raise ItemNotFoundError(f"no item {item_id}")
    if not is_final_actionable(item):
        raise NotActionableError(
            f"item {item_id} has no final actionable grade: CyberTipline reports are made only "
            "for material analysts confirmed"
        )
    return item


def cybertip_xml(session: Session, item_id: int, reporter: Reporter | None = None) -> str:
    """The CyberTipline-style XML report for ``item_id`` (UTF-8 text with an XML declaration).
    Raises :class:`ItemNotFoundError` or :class:`NotActionableError`."""
    item = load_actionable_item(session, item_id)
    who = reporter or Reporter()
    grade = item.grade if isinstance(item.grade, dict) else {}
    values = grade.get("values") if isinstance(grade.get("values"), dict) else {}
    assert isinstance(values, dict)
    urls = item_urls(session, item.id)

    root = ET.Element("report")
    summary = _sub(root, "incidentSummary")
    _sub(summary, "incidentType", INCIDENT_TYPE)
    _sub(summary, "incidentDateTime", item.first_seen.isoformat())
    if urls:
        internet = _sub(root, "internetDetails")
        page = _sub(internet, "webPageIncident")
        for url in urls:
            _sub(page, "url", url)
    rep = _sub(root, "reporter")
    person = _sub(rep, "reportingPerson")
    _sub(person, "firstName", who.org_name)
    _sub(person, "email", who.email)

    files = _sub(root, "fileDetails")
    _sub(files, "fileName", item.sha256)
    _sub(files, "fileViewedByEsp", _bool(viewed_by_esp(session, item)))
    _sub(files, "exifViewedByEsp", "false")
    _sub(files, "publiclyAvailable", _bool(bool(urls)))
    ai = values.get("ai_generated") == "yes" or item.ai_evidence == "strong"
    if ai:
        notes = _sub(files, "fileAnnotations")
        _sub(notes, "generativeAi")
    ncmec_category = values.get("ncmec_category")
    if isinstance(ncmec_category, str) and ncmec_category in INDUSTRY_CLASSIFICATIONS:
        _sub(files, "industryClassification", ncmec_category)
    if item.md5:
        _sub(files, "originalFileHash", item.md5, hashType="MD5")
    if item.sha1:
        _sub(files, "originalFileHash", item.sha1, hashType="SHA1")
    details = _sub(files, "details", type="HASH")
    pairs: list[tuple[str, str]] = [("SHA256", item.sha256)]
    if item.pdq:
        pairs.append(("PDQ", item.pdq))
        if item.pdq_quality is not None:
            pairs.append(("PDQ quality", str(item.pdq_quality)))
    for gen in _generators(item.provenance):
        pairs.append(("Generator", gen))
    for partner in _partner_matches(item.matches):
        pairs.append(("Partner match", partner))
    for name, value in pairs:
        pair = _sub(details, "nameValuePair")
        _sub(pair, "name", name)
        _sub(pair, "value", value)
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"


__all__ = [
    "INCIDENT_TYPE",
    "ItemNotFoundError",
    "NcmecError",
    "NotActionableError",
    "Reporter",
    "cybertip_xml",
    "is_view",
    "item_urls",
    "load_actionable_item",
    "viewed_by_esp",
]
