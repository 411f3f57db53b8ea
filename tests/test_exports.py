"""Exports of final-graded items (hash lists, URL list) and NCMEC CyberTipline XML.

Every hash here is a digest of a benign placeholder string made by this file
(``benign-stand-in-<n>``); no fixture is, or stands for, real material.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from tipline.actions import exports, ncmec
from tipline.audit import log as audit
from tipline.banks.formats import parse_hash_list
from tipline.service import auth
from tipline.store.tables import AuditEvent, Item, Job, Report, ReportItem, Webhook

GRADED_AT = datetime(2026, 3, 2, 10, 30, tzinfo=UTC)
FIRST_SEEN = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
VALUES_A = {
    "uk_category": "A",
    "ncmec_category": "A1",
    "age_band": "7-10",
    "ai_generated": "no",
    "interpol_baseline": True,
}


def _hashes(n: int) -> dict[str, str]:
    seed = f"benign-stand-in-{n}".encode()
    return {
        "md5": hashlib.md5(seed).hexdigest(),
        "sha1": hashlib.sha1(seed).hexdigest(),
        "sha256": hashlib.sha256(seed).hexdigest(),
        "pdq": hashlib.sha256(b"pdq-" + seed).hexdigest(),
    }


def _grade(values: dict[str, Any], actionable: bool = True) -> dict[str, Any]:
    label = " ".join(f"{k}:{v}" for k, v in values.items())
    return {
        "values": values,
        "label": label,
        "actionable": actionable,
        "how": "consensus",
        "graders": ["alice", "bob"],
        "taxonomy": "tipline-default",
    }


def make_item(
    s: Session,
    n: int,
    values: dict[str, Any] | None = None,
    *,
    actionable: bool = True,
    graded_at: datetime | None = GRADED_AT,
    pdq_quality: int | None = 100,
    media_ref: str | None = None,
    ai_evidence: str | None = None,
    provenance: Any = None,
    status: str | None = None,
) -> Item:
    h = _hashes(n)
    item = Item(
        sha256=h["sha256"],
        md5=h["md5"],
        sha1=h["sha1"],
        pdq=h["pdq"] if pdq_quality is not None else None,
        pdq_quality=pdq_quality,
        media_type="image/png",
        size=100,
        first_seen=FIRST_SEEN,
        media_ref=media_ref,
        ai_evidence=ai_evidence,
        provenance=provenance,
        grade=_grade(values if values is not None else VALUES_A, actionable)
        if graded_at is not None or values is not None
        else None,
        graded_at=graded_at,
        status=status or ("confirmed" if actionable and graded_at else "dismissed"),
    )
    s.add(item)
    s.flush()
    return item


def link(s: Session, item: Item, urls: list[str], source_url: str | None = None) -> Report:
    report = Report(
        reference=f"TL-TEST-{item.id}-{len(urls)}-{source_url is not None}",
        source="cli",
        urls=urls,
    )
    s.add(report)
    s.flush()
    s.add(ReportItem(report_id=report.id, item_id=item.id, source_url=source_url))
    s.flush()
    return report


@pytest.fixture
def items(session_factory: sessionmaker[Session]) -> dict[str, int]:
    """a: actionable; b: actionable, low-quality PDQ and partial values; c: dismissed;
    d: not yet graded; e: actionable, graded later."""
    with session_factory() as s, s.begin():
        a = make_item(s, 1)
        b = make_item(s, 2, {"uk_category": "C", "ai_generated": "yes"}, pdq_quality=12)
        c = make_item(s, 3, {"uk_category": "not_illegal"}, actionable=False)
        d = make_item(s, 4, graded_at=None, status="in_review")
        e = make_item(s, 5, {"uk_category": "B"}, graded_at=GRADED_AT + timedelta(days=3))
        link(s, a, ["https://example.test/page-a", "https://example.test/shared"])
        link(s, a, [], source_url="https://cdn.example.test/a.png")
        link(s, b, ["https://example.test/shared", "https://example.test/page-b"])
        link(s, c, ["https://example.test/dismissed-only"], "https://cdn.example.test/c.png")
        link(s, d, ["https://example.test/ungraded-only"])
        return {"a": a.id, "b": b.id, "c": c.id, "d": d.id, "e": e.id}


def _write(sf: sessionmaker[Session], fmt: str, since: datetime | None = None) -> str:
    buf = io.StringIO(newline="")
    with sf() as s:
        exports.write_hashes(s, fmt, buf, since)
    return buf.getvalue()


def test_te_csv_is_threatexchange_dataset_csv(
    session_factory: sessionmaker[Session], items: dict[str, int]
) -> None:
    text = _write(session_factory, "te-csv")
    assert text.splitlines()[0] == "signal_type,signal_str,collab,category,tags"
    parsed = parse_hash_list(text, "te-csv")
    assert not parsed.errors
    got = [(e.signal_type, e.signal) for e in parsed.entries]
    a, b, e = _hashes(1), _hashes(2), _hashes(5)
    # one row per signal; b's PDQ (quality 12) is not usable and is left out
    assert got == [
        ("md5", a["md5"]),
        ("pdq", a["pdq"]),
        ("md5", b["md5"]),
        ("md5", e["md5"]),
        ("pdq", e["pdq"]),
    ]
    first = parsed.entries[0]
    assert first.source == "tipline"
    assert first.label == _grade(VALUES_A)["label"]
    assert "uk_category:A" in first.tags and "interpol_baseline:true" in first.tags


def test_jsonl_one_object_per_item(
    session_factory: sessionmaker[Session], items: dict[str, int]
) -> None:
    rows = [json.loads(line) for line in _write(session_factory, "jsonl").splitlines()]
    assert [r["item_id"] for r in rows] == [items["a"], items["b"], items["e"]]
    a = rows[0]
    assert {k: a[k] for k in ("md5", "sha1", "sha256", "pdq")} == _hashes(1)
    assert a["pdq_quality"] == 100
    assert a["values"] == VALUES_A
    assert a["label"] == _grade(VALUES_A)["label"]
    assert a["graded_at"] == "2026-03-02T10:30:00Z"
    assert a["taxonomy"] == "tipline-default"


def test_iwf_csv_columns_and_missing_values(
    session_factory: sessionmaker[Session], items: dict[str, int]
) -> None:
    text = _write(session_factory, "iwf-csv")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    assert tuple(reader.fieldnames or ()) == exports.IWF_CSV_HEADER
    rows = list(reader)
    assert len(rows) == 3
    a, b = rows[0], rows[1]
    assert {k: a[k] for k in ("md5", "sha1", "sha256", "pdq")} == _hashes(1)
    assert (a["category"], a["ncmec_category"], a["age_band"]) == ("A", "A1", "7-10")
    assert (a["ai_generated"], a["interpol_baseline"]) == ("no", "true")
    assert a["graded_at"] == "2026-03-02T10:30:00Z"
    # values the taxonomy did not fill are empty cells, not errors
    assert (b["category"], b["ai_generated"]) == ("C", "yes")
    assert b["ncmec_category"] == b["age_band"] == b["interpol_baseline"] == ""


def test_since_keeps_later_grades(
    session_factory: sessionmaker[Session], items: dict[str, int]
) -> None:
    text = _write(session_factory, "jsonl", since=GRADED_AT + timedelta(days=1))
    assert [json.loads(line)["item_id"] for line in text.splitlines()] == [items["e"]]


def test_items_are_read_in_batches(
    session_factory: sessionmaker[Session], items: dict[str, int]
) -> None:
    with session_factory() as s, s.begin():
        for n in range(10, 17):
            make_item(s, n)
    with session_factory() as s:
        small = [i.id for i in exports.iter_final_items(s, batch=2)]
        whole = [i.id for i in exports.iter_final_items(s, batch=1000)]
    assert small == whole
    assert len(whole) == 3 + 7 and whole == sorted(whole)


def test_url_list_distinct_sorted_from_actionable_items_only(
    session_factory: sessionmaker[Session], items: dict[str, int]
) -> None:
    buf = io.StringIO()
    with session_factory() as s:
        count = exports.write_urls(s, buf)
    assert buf.getvalue().splitlines() == [
        "https://cdn.example.test/a.png",
        "https://example.test/page-a",
        "https://example.test/page-b",
        "https://example.test/shared",
    ]
    assert count.items == 4


def test_export_is_audited_and_emits_a_webhook_event(
    session_factory: sessionmaker[Session], items: dict[str, int]
) -> None:
    from tipline.actions import webhooks

    with session_factory() as s, s.begin():
        exp, _ = webhooks.create_webhook(s, "https://hooks.example.test/x", ["export"])
        webhooks.create_webhook(s, "https://hooks.example.test/y", ["match", "grade"])
        exp_id = exp.id
    buf = io.StringIO(newline="")
    with session_factory() as s, s.begin():
        count = exports.export(s, "iwf-csv", buf, actor="user:alice", ip="192.0.2.7")
    assert count.items == 3
    with session_factory() as s:
        [event] = s.scalars(select(AuditEvent).where(AuditEvent.action == "export.iwf-csv"))
        assert event.actor == "user:alice" and event.details["count"] == 3
        [job] = s.scalars(select(Job).where(Job.kind == "webhook.deliver"))
        assert job.payload["webhook_id"] == exp_id
        assert job.payload["event"] == "export"
        assert job.payload["data"]["kind"] == "iwf-csv" and job.payload["data"]["count"] == 3
        assert audit.verify(s).ok
    with pytest.raises(exports.ExportError), session_factory() as s:
        exports.export(s, "xml", io.StringIO(), actor="x")


# -- NCMEC CyberTipline XML --------------------------------------------------------------------


def _view(s: Session, ref: str, item_id: int | None, mode: str | None) -> None:
    details: dict[str, Any] = {}
    if item_id is not None:
        details["item_id"] = item_id
    if mode is not None:
        details["mode"] = mode
    audit.record(s, "user:alice", "media.view", "media", ref, None, details)


def _xml(sf: sessionmaker[Session], item_id: int) -> ET.Element:
    with sf() as s:
        text = ncmec.cybertip_xml(s, item_id, ncmec.Reporter("Example Hotline", "tips@x.test"))
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    return ET.fromstring(text.split("\n", 1)[1])


def test_cybertip_xml_every_field(session_factory: sessionmaker[Session]) -> None:
    provenance = [
        {"signal": "generator_metadata", "verdict": "ai_generated", "generator": "ComfyUI"},
        {"signal": "detector", "verdict": "error", "generator": "ignored"},
    ]
    with session_factory() as s, s.begin():
        item = make_item(
            s,
            21,
            {**VALUES_A, "ncmec_category": "B2"},
            media_ref="ref21",
            ai_evidence="strong",
            provenance=provenance,
        )
        link(s, item, ["https://example.test/p?a=1&b=<2>"], "https://cdn.example.test/21.png")
        _view(s, "ref21", item.id, "reveal")
        item_id = item.id
    root = _xml(session_factory, item_id)
    h = _hashes(21)
    assert root.tag == "report"
    assert root.findtext("incidentSummary/incidentType") == ncmec.INCIDENT_TYPE
    assert root.findtext("incidentSummary/incidentDateTime") == FIRST_SEEN.isoformat()
    urls = [u.text for u in root.findall("internetDetails/webPageIncident/url")]
    assert urls == ["https://cdn.example.test/21.png", "https://example.test/p?a=1&b=<2>"]
    assert root.findtext("reporter/reportingPerson/firstName") == "Example Hotline"
    assert root.findtext("reporter/reportingPerson/email") == "tips@x.test"
    f = root.find("fileDetails")
    assert f is not None
    assert f.findtext("fileName") == h["sha256"]
    assert f.findtext("fileViewedByEsp") == "true"
    assert f.findtext("exifViewedByEsp") == "false"
    assert f.findtext("publiclyAvailable") == "true"
    assert f.find("fileAnnotations/generativeAi") is not None
    assert f.findtext("industryClassification") == "B2"
    hashes = {e.get("hashType"): e.text for e in f.findall("originalFileHash")}
    assert hashes == {"MD5": h["md5"], "SHA1": h["sha1"]}
    pairs = [(p.findtext("name"), p.findtext("value")) for p in f.findall("details/nameValuePair")]
    assert pairs == [
        ("SHA256", h["sha256"]),
        ("PDQ", h["pdq"]),
        ("PDQ quality", "100"),
        ("Generator", "ComfyUI"),
    ]


def test_cybertip_xml_without_urls_ai_or_classification(
    session_factory: sessionmaker[Session],
) -> None:
    with session_factory() as s, s.begin():
        item_id = make_item(s, 22, {"uk_category": "non_photographic", "ncmec_category": "none"}).id
    root = _xml(session_factory, item_id)
    assert root.find("internetDetails") is None
    assert root.findtext("fileDetails/publiclyAvailable") == "false"
    assert root.find("fileDetails/fileAnnotations") is None
    assert root.find("fileDetails/industryClassification") is None
    # the defaults of the reporter placeholder
    with session_factory() as s:
        default = ET.fromstring(ncmec.cybertip_xml(s, item_id).split("\n", 1)[1])
    assert default.findtext("reporter/reportingPerson/email") == ncmec.Reporter().email


def test_ai_annotation_from_the_grade(session_factory: sessionmaker[Session]) -> None:
    with session_factory() as s, s.begin():
        item_id = make_item(s, 23, {**VALUES_A, "ai_generated": "yes"}, ai_evidence="weak").id
    assert (
        _xml(session_factory, item_id).find("fileDetails/fileAnnotations/generativeAi") is not None
    )


@pytest.mark.parametrize(
    ("views", "expected"),
    [
        ([], "false"),  # never revealed
        ([("preview", True)], "false"),  # a blurred preview is not a view
        ([("preview", True), ("reveal", True)], "true"),
        ([("video", False)], "true"),  # found by details.item_id
        ([(None, True)], "true"),  # raw media download (no mode)
        ([("reveal", "other")], "false"),  # someone else's media
    ],
)
def test_file_viewed_by_esp_follows_the_audit_trail(
    session_factory: sessionmaker[Session], views: list[tuple[str | None, Any]], expected: str
) -> None:
    with session_factory() as s, s.begin():
        item = make_item(s, 24, media_ref="ref24")
        other = make_item(s, 25, media_ref="ref25")
        for mode, how in views:
            if how == "other":
                _view(s, "ref25", other.id, mode)
            elif how is True:
                _view(s, "ref24", None, mode)
            else:
                _view(s, "gone-ref", item.id, mode)
        item_id = item.id
    assert _xml(session_factory, item_id).findtext("fileDetails/fileViewedByEsp") == expected


def test_cybertip_refused_without_a_final_actionable_grade(
    session_factory: sessionmaker[Session], items: dict[str, int]
) -> None:
    with session_factory() as s:
        for key in ("c", "d"):
            with pytest.raises(ncmec.NotActionableError, match="no final actionable grade"):
                ncmec.cybertip_xml(s, items[key])
        with pytest.raises(ncmec.ItemNotFoundError):
            ncmec.cybertip_xml(s, 999_999)


# -- HTTP API and CLI ---------------------------------------------------------------------------

PASSWORD = "correct horse battery"


@pytest.fixture
def client(
    db_url: str, engine: Engine, session_factory: sessionmaker[Session], tmp_path: Path
) -> Iterator[TestClient]:
    from tipline.service.app import create_app
    from tipline.service.settings import ServiceSettings

    settings = ServiceSettings(
        data_dir=tmp_path, database_url=db_url, media_mode="hash-only", inprocess_workers=0
    )
    app = create_app(settings, load_index="none")
    with TestClient(app) as c:
        yield c


def _token(sf: sessionmaker[Session], role: str) -> dict[str, str]:
    with sf() as s, s.begin():
        user = auth.create_user(s, f"x_{role}", role, PASSWORD)
        raw = auth.create_token(s, user, "t", sorted(auth.ROLE_PERMISSIONS[role]))
    return {"Authorization": f"Bearer {raw}"}


def test_api_exports(
    client: TestClient, session_factory: sessionmaker[Session], items: dict[str, int]
) -> None:
    analyst = _token(session_factory, "analyst")
    res = client.get("/api/v1/exports/hashes?format=iwf-csv", headers=analyst)
    assert res.status_code == 200, res.text
    assert res.headers["content-type"].startswith("text/csv")
    assert "attachment" in res.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(res.text, newline="")))
    assert [r["sha256"] for r in rows] == [_hashes(n)["sha256"] for n in (1, 2, 5)]
    res = client.get(
        "/api/v1/exports/hashes", params={"format": "jsonl", "since": "2026-03-04"}, headers=analyst
    )
    assert [json.loads(x)["item_id"] for x in res.text.splitlines()] == [items["e"]]
    res = client.get("/api/v1/exports/urls", headers=analyst)
    assert res.status_code == 200 and len(res.text.splitlines()) == 4
    assert client.get("/api/v1/exports/hashes?format=xml", headers=analyst).status_code == 400
    assert client.get("/api/v1/exports/urls?since=soon", headers=analyst).status_code == 400
    res = client.get(f"/api/v1/items/{items['a']}/ncmec.xml", headers=analyst)
    assert res.status_code == 200 and res.headers["content-type"].startswith("application/xml")
    assert ET.fromstring(res.content).findtext("fileDetails/fileName") == _hashes(1)["sha256"]
    assert client.get(f"/api/v1/items/{items['c']}/ncmec.xml", headers=analyst).status_code == 409
    assert client.get("/api/v1/items/999999/ncmec.xml", headers=analyst).status_code == 404
    auditor = _token(session_factory, "auditor")
    res = client.get("/api/v1/exports/hashes", headers=auditor)
    assert res.status_code == 403
    with session_factory() as s:
        actions = [
            e.action
            for e in s.scalars(select(AuditEvent).where(AuditEvent.action.like("export.%")))
        ]
        assert actions == ["export.iwf-csv", "export.jsonl", "export.urls", "export.ncmec"]


def test_cli_exports(
    db_url: str, session_factory: sessionmaker[Session], items: dict[str, int], tmp_path: Path
) -> None:
    from tipline.cli.app import _register, app

    _register()
    runner = CliRunner()
    env = {"TIPLINE_DATABASE_URL": db_url, "TIPLINE_DATA_DIR": str(tmp_path)}
    out = tmp_path / "hashes.csv"
    res = runner.invoke(app, ["export", "hashes", "--format", "te-csv", "-o", str(out)], env=env)
    assert res.exit_code == 0, res.output
    assert len(parse_hash_list(out.read_text(), "te-csv").entries) == 5
    assert not list(tmp_path.glob(".tipline-export-*"))  # the temporary file is gone
    res = runner.invoke(app, ["export", "urls", "--since", "2026-03-04"], env=env)
    assert res.exit_code == 0 and res.stdout == ""  # e came in no report
    res = runner.invoke(app, ["export", "ncmec", str(items["a"])], env=env)
    assert res.exit_code == 0, res.output
    assert ET.fromstring(res.stdout.split("\n", 1)[1]).tag == "report"
    res = runner.invoke(app, ["export", "ncmec", str(items["d"])], env=env)
    assert res.exit_code == 2 and "no final actionable grade" in res.output
    with session_factory() as s:
        assert s.scalar(select(Webhook.id)) is None
        n = len(list(s.scalars(select(AuditEvent).where(AuditEvent.action.like("export.%")))))
        assert n == 3
