"""Locations, IP-to-ASN data sets, the provider directory and hosting attribution
(docs/hosting.md). Every address here is looked up in local data sets only; names resolve
through an injected resolver; the one HTTP test (RDAP) talks to a server on 127.0.0.1."""

from __future__ import annotations

import gzip
import ipaddress
import json
import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from tipline.cli import app as cli_app
from tipline.net.fetch import FetchSettings
from tipline.removal import hosting
from tipline.removal.hosting import (
    DatasetError,
    attribute,
    datasets,
    import_dataset,
    import_ip2asn,
    import_mmdb,
    ip_key,
    lookup_ip,
    rdap_abuse_contact,
)
from tipline.removal.locations import InvalidLocationError, parse_location
from tipline.removal.providers import (
    DirectoryError,
    ProviderContact,
    directory,
    in_send_window,
    next_send_time,
    parse_directory,
    parse_send_window,
    replace_directory,
)

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)

# -- locations ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "canonical", "domain"),
    [
        (
            "HTTP://User:pw@WWW.Example.COM:80/a/./b/../c%7e%2f?b=2&a=1#frag",
            "http://www.example.com/a/c~%2F?b=2&a=1",
            "example.com",
        ),
        ("example.com", "http://example.com/", "example.com"),
        ("https://example.com:443", "https://example.com/", "example.com"),
        ("https://example.com:8443/x", "https://example.com:8443/x", "example.com"),
        ("http://shop.example.co.uk./p%20q", "http://shop.example.co.uk/p%20q", "example.co.uk"),
        (
            "https://Bücher.DE/ä ö?q=ü",
            "https://xn--bcher-kva.de/%C3%A4%20%C3%B6?q=%C3%BC",
            "xn--bcher-kva.de",
        ),
        ("https://alice.github.io/x", "https://alice.github.io/x", "alice.github.io"),
        ("https://bob.github.io/x", "https://bob.github.io/x", "bob.github.io"),
        ("https://foo.blogspot.com/", "https://foo.blogspot.com/", "foo.blogspot.com"),
        ("http://[2001:DB8:0::1]:80/", "http://[2001:db8::1]/", "2001:db8::1"),
        ("http://[2001:db8::1]:8080", "http://[2001:db8::1]:8080/", "2001:db8::1"),
        ("http://2130706433/", "http://127.0.0.1/", "127.0.0.1"),
        ("http://0x7f.1/", "http://127.0.0.1/", "127.0.0.1"),
        ("http://a.b/%41%2a", "http://a.b/A%2A", "a.b"),
        ("http://example.org/?a=2&a=1&b", "http://example.org/?a=2&a=1&b", "example.org"),
        ("http://example.org/a/..", "http://example.org/", "example.org"),
        ("http:\\\\example.org\\a", "http://example.org/a", "example.org"),
    ],
)
def test_canonical_form_and_registrable_domain(url: str, canonical: str, domain: str) -> None:
    loc = parse_location(url)
    assert loc.canonical_url == canonical
    assert loc.registrable_domain == domain
    assert loc.url == url
    assert parse_location(loc.canonical_url).canonical_url == canonical  # idempotent


def test_location_fields() -> None:
    loc = parse_location("https://[2a00:1450::1]:8443/p")
    assert (loc.scheme, loc.host, loc.port, loc.is_ip, loc.is_onion) == (
        "https",
        "2a00:1450::1",
        8443,
        True,
        False,
    )
    onion = parse_location("http://abcdefghijklmnop.onion/forum?t=1")
    assert onion.is_onion and onion.registrable_domain == "abcdefghijklmnop.onion"
    assert parse_location("http://deep.sub.abcdefghijklmnop.onion/").registrable_domain == (
        "abcdefghijklmnop.onion"
    )
    assert not parse_location("http://onion.example.com/").is_onion
    assert parse_location("localhost:8000/p").canonical_url == "http://localhost:8000/p"


@pytest.mark.parametrize(
    "url",
    [
        "",
        "   ",
        "mailto:someone@example.org",
        "javascript:alert(1)",
        "http://",
        "http:///path",
        "http://exa mple.com/",
        "http://[::1/",
        "http://[not-ipv6]/",
        "http://example.com:99999/",
        "http://example.com:0/",
        "http://256.256.256.256/",
        "http://a\x00b.com/",
        "http://" + "a" * 70 + ".com/",
        "http://%zz/",
        "http://x/" + "a" * 9000,
    ],
)
def test_bad_urls_raise_invalid_location(url: str) -> None:
    with pytest.raises(InvalidLocationError):
        parse_location(url)


@example("²")  # UTS 46 maps it to "2": an IPv4 address (0.0.0.2), not a name
@given(st.text(max_size=200))
def test_parser_raises_nothing_but_invalid_location(text: str) -> None:
    try:
        loc = parse_location(text)
    except InvalidLocationError:
        return
    assert parse_location(loc.canonical_url).canonical_url == loc.canonical_url


@given(
    st.builds(
        lambda scheme, host, path, query: f"{scheme}://{host}/{path}?{query}",
        st.sampled_from(["http", "HTTPS", "ftp", "gopher", ""]),
        st.from_regex(r"[A-Za-z0-9.\-\[\]:%@ü]{0,40}", fullmatch=True),
        st.text(max_size=40),
        st.text(max_size=40),
    )
)
def test_parser_on_url_shaped_text(url: str) -> None:
    try:
        loc = parse_location(url)
    except InvalidLocationError:
        return
    again = parse_location(loc.canonical_url)
    assert again.canonical_url == loc.canonical_url
    assert again.registrable_domain == loc.registrable_domain


# -- ip2asn data sets ---------------------------------------------------------------------------

V4 = (
    "1.0.0.0\t1.0.0.255\t13335\tUS\tCLOUDFLARENET\n"
    "1.0.1.0\t1.0.3.255\t0\tNone\tNot routed\n"
    "1.0.4.0\t1.0.7.255\t38803\tAU\tGTELECOM-AUSTRALIA\n"
    # gap 1.0.8.0 - 8.8.7.255
    "8.8.8.0\t8.8.8.255\t15169\tUS\tGOOGLE\n"
    "9.0.0.0\t9.0.0.255\t64500\tDE\tEXAMPLE-HOSTING\n"
    "9.0.1.0\t9.0.1.255\t64501\tFR\tOTHER-HOSTING\n"
    "9.0.2.0\t9.0.2.255\t64502\tNL\tNO-CONTACT-HOSTING\n"
)
V6 = (
    "2a00:1450::\t2a00:1450:ffff:ffff:ffff:ffff:ffff:ffff\t15169\tUS\tGOOGLE\n"
    "2a01:4f8::\t2a01:4f8:ffff:ffff:ffff:ffff:ffff:ffff\t24940\tDE\tHETZNER-AS\n"
)


@pytest.fixture
def db(session_factory: sessionmaker[Session]) -> sessionmaker[Session]:
    return session_factory


def _import(db: sessionmaker[Session], path: Path, **kw: Any) -> hosting.DatasetInfo:
    with db() as s, s.begin():
        return import_ip2asn(s, path, **kw)


def _lookup(db: sessionmaker[Session], ip: str) -> list[hosting.DatasetAnswer]:
    with db() as s:
        return lookup_ip(s, ip)


@pytest.fixture
def ranges(db: sessionmaker[Session], tmp_path: Path) -> sessionmaker[Session]:
    v4 = tmp_path / "ip2asn-v4.tsv"
    v4.write_text(V4)
    v6 = tmp_path / "ip2asn-v6.tsv.gz"
    v6.write_bytes(gzip.compress(V6.encode()))
    _import(db, v4, version="2026-12-01")
    _import(db, v6, version="2026-12-02")
    return db


def test_ip_keys_sort_as_addresses() -> None:
    addrs = ["0.0.0.0", "1.2.3.4", "255.255.255.255", "::", "::1", "2a00::", "ffff::1"]
    keys = [ip_key(a) for a in addrs]
    assert all(len(k) == 32 for k in keys)
    v6_order = sorted(
        addrs,
        key=lambda a: int(
            ipaddress.IPv6Address(f"::ffff:{a}") if "." in a else int(ipaddress.ip_address(a))
        ),
    )
    assert sorted(addrs, key=ip_key) == v6_order
    assert ip_key("::ffff:1.2.3.4") == ip_key("1.2.3.4")


def test_import_v4_v6_gz_and_lookup_boundaries(ranges: sessionmaker[Session]) -> None:
    with ranges() as s:
        sets = {d.name: d for d in datasets(s)}
    assert set(sets) == {"ip2asn-v4", "ip2asn-v6"}
    assert (sets["ip2asn-v4"].row_count, sets["ip2asn-v4"].version) == (7, "2026-12-01")
    assert (sets["ip2asn-v6"].row_count, sets["ip2asn-v6"].version) == (2, "2026-12-02")
    for ip, asn in [
        ("1.0.0.0", 13335),  # first address of a range
        ("1.0.0.255", 13335),  # last
        ("1.0.4.0", 38803),
        ("1.0.7.255", 38803),
        ("8.8.8.8", 15169),
        ("2a00:1450::", 15169),
        ("2a00:1450:ffff:ffff:ffff:ffff:ffff:ffff", 15169),
        ("2a01:4f8:1:2::3", 24940),
        ("::ffff:8.8.8.8", 15169),
    ]:
        answers = _lookup(ranges, ip)
        assert [a.asn for a in answers] == [asn], ip
    answer = _lookup(ranges, "1.0.4.1")[0]
    assert (answer.name, answer.version, answer.country, answer.as_name) == (
        "ip2asn-v4",
        "2026-12-01",
        "AU",
        "GTELECOM-AUSTRALIA",
    )
    for gap in ("0.255.255.255", "1.0.8.0", "8.8.7.255", "8.8.9.0", "2a00:144f::1", "2a02::1"):
        assert _lookup(ranges, gap) == [], gap
    unrouted = _lookup(ranges, "1.0.2.3")
    assert [(a.asn, a.routed, a.country) for a in unrouted] == [(None, False, None)]


def test_malformed_line_refuses_the_file_and_keeps_the_previous_version(
    ranges: sessionmaker[Session], tmp_path: Path
) -> None:
    for body, where in [
        (V4 + "9.0.3.0\t9.0.3.255\tAS-X\tDE\tBAD\n", "line 8: bad AS number"),
        ("1.0.0.0\t1.0.0.255\t1\tUS\tok\n1.0.1.0 1.0.1.255 2 US spaces\n", "line 2: expected 5"),
        ("1.0.0.0\t1.0.0.255\t1\tUS\tok\n\n1.0.1.9\t1.0.1.0\t2\tUS\tx\n", "line 3: range end"),
        ("1.0.0.0\t2a00::\t1\tUS\tx\n", "line 1: range start and end are of different"),
        ("1.0.0.0\t1.0.0.255\t1\tUSA\tx\n", "line 1: bad country code"),
        ("1.0.0.0\t1.0.0.255\t1\tUS\tx\n1.0.0.0\t1.0.0.9\t2\tUS\ty\n", "line 2: a range"),
        ("1.0.0.0\t1.0.0.256\t1\tUS\tx\n", "line 1: "),
        ("1.0.0.0\t1.0.0.255\t1\tUS\t\xff\n", None),
        ("", "no address ranges"),
    ]:
        bad = tmp_path / "ip2asn-v4.tsv"
        bad.write_bytes(body.encode("latin-1") if "\xff" in body else body.encode())
        with pytest.raises(DatasetError) as err, ranges() as s, s.begin():
            import_ip2asn(s, bad, version="2026-12-09")
        if where is not None:
            assert where in str(err.value), str(err.value)
        else:
            assert "line 1: not UTF-8" in str(err.value)
        with ranges() as s:
            info = {d.name: d for d in datasets(s)}["ip2asn-v4"]
        assert (info.version, info.row_count) == ("2026-12-01", 7)
        assert [a.asn for a in _lookup(ranges, "9.0.0.1")] == [64500]
    # a truncated gzip file is refused in one line as well
    broken = tmp_path / "ip2asn-v6.tsv.gz"
    broken.write_bytes(gzip.compress(V6.encode())[:-12])
    with pytest.raises(DatasetError, match="cannot read"), ranges() as s, s.begin():
        import_ip2asn(s, broken)


def test_reimport_replaces_the_version(ranges: sessionmaker[Session], tmp_path: Path) -> None:
    new = tmp_path / "ip2asn-v4.tsv"
    new.write_text("9.0.0.0\t9.0.0.255\t64999\tSE\tMOVED-HOSTING\n")
    info = _import(ranges, new, version="2026-12-09")
    assert info.row_count == 1
    assert [a.asn for a in _lookup(ranges, "9.0.0.1")] == [64999]
    assert _lookup(ranges, "1.0.0.1") == []  # the old version's ranges are gone


# -- MMDB -------------------------------------------------------------------------------------


def _ctrl(kind: int, size: int) -> bytes:
    if size < 29:
        low, extra = size, b""
    elif size < 285:
        low, extra = 29, bytes([size - 29])
    elif size < 65821:
        low, extra = 30, (size - 285).to_bytes(2, "big")
    else:
        low, extra = 31, (size - 65821).to_bytes(3, "big")
    if kind <= 7:
        return bytes([(kind << 5) | low]) + extra
    return bytes([low, kind - 7]) + extra


class _U:
    """An unsigned integer of an explicit MMDB type (5: uint16, 6: uint32, 9: uint64)."""

    def __init__(self, kind: int, value: int) -> None:
        self.kind, self.value = kind, value


def _encode(value: Any) -> bytes:
    """MMDB data section encoding (https://maxmind.github.io/MaxMind-DB/) of a few types."""
    if isinstance(value, dict):
        return _ctrl(7, len(value)) + b"".join(_encode(k) + _encode(v) for k, v in value.items())
    if isinstance(value, list):
        return _ctrl(11, len(value)) + b"".join(_encode(v) for v in value)
    if isinstance(value, str):
        raw = value.encode()
        return _ctrl(2, len(raw)) + raw
    if isinstance(value, int):
        value = _U(6 if value < 2**32 else 9, value)
    if isinstance(value, _U):
        raw = value.value.to_bytes((value.value.bit_length() + 7) // 8, "big")
        return _ctrl(value.kind, len(raw)) + raw
    raise TypeError(type(value))


def write_mmdb(path: Path, networks: dict[str, dict[str, Any]], db_type: str) -> None:
    """A minimal IPv6 MMDB (24-bit records, IPv4 under ::/96 as MaxMind lays it out)."""
    data = b""
    offsets: dict[str, int] = {}
    for net, record in networks.items():
        offsets[net] = len(data)
        data += _encode(record)
    tree: list[list[Any]] = [[None, None]]
    for net, offset in offsets.items():
        network = ipaddress.ip_network(net)
        if network.version == 4:
            base, bits = int(network.network_address), 96 + network.prefixlen
        else:
            base, bits = int(network.network_address), network.prefixlen
        node = 0
        for i in range(bits):
            bit = (base >> (127 - i)) & 1
            if i == bits - 1:
                tree[node][bit] = ("data", offset)
            else:
                if tree[node][bit] is None:
                    tree.append([None, None])
                    tree[node][bit] = ("node", len(tree) - 1)
                node = tree[node][bit][1]
    count = len(tree)

    def record(value: Any) -> int:
        if value is None:
            return count
        return value[1] if value[0] == "node" else count + 16 + value[1]

    body = b"".join(
        record(left).to_bytes(3, "big") + record(right).to_bytes(3, "big") for left, right in tree
    )
    meta = {
        "node_count": _U(6, count),
        "record_size": _U(5, 24),
        "ip_version": _U(5, 6),
        "database_type": db_type,
        "languages": ["en"],
        "binary_format_major_version": _U(5, 2),
        "binary_format_minor_version": _U(5, 0),
        "build_epoch": _U(9, int(datetime(2026, 11, 30, tzinfo=UTC).timestamp())),
        "description": {"en": "test data set"},
    }
    path.write_bytes(body + bytes(16) + data + b"\xab\xcd\xefMaxMind.com" + _encode(meta))


def test_mmdb_asn_and_country_layouts(db: sessionmaker[Session], tmp_path: Path) -> None:
    asn_file = tmp_path / "GeoLite2-ASN.mmdb"
    write_mmdb(
        asn_file,
        {
            "9.0.0.0/24": {
                "autonomous_system_number": 64500,
                "autonomous_system_organization": "Example Hosting",
            },
            "2a01:4f8::/32": {"asn": "AS24940", "as_name": "Hetzner"},  # ipinfo layout
        },
        "GeoLite2-ASN",
    )
    country_file = tmp_path / "dbip-country.mmdb"
    write_mmdb(
        country_file,
        {
            "9.0.0.0/23": {"country": {"iso_code": "DE", "names": {"en": "Germany"}}},
            "2a01:4f8::/29": {"country_code": "de"},  # ip-location-db layout
        },
        "DBIP-Country-Lite",
    )
    data_dir = tmp_path / "data"
    with db() as s, s.begin():
        info = import_dataset(s, asn_file, data_dir)
        import_mmdb(s, country_file, data_dir, name="country", version="2026-11")
    assert (info.name, info.kind, info.version) == ("GeoLite2-ASN", "mmdb", "2026-11-30")
    assert info.path is not None and Path(info.path).parent == data_dir / "hosting"
    answers = _lookup(db, "9.0.0.7")
    assert [(a.name, a.version, a.asn, a.as_name, a.country) for a in answers] == [
        ("GeoLite2-ASN", "2026-11-30", 64500, "Example Hosting", None),
        ("country", "2026-11", None, None, "DE"),
    ]
    assert [(a.asn, a.country) for a in _lookup(db, "9.0.1.1")] == [(None, "DE")]
    assert [(a.asn, a.country) for a in _lookup(db, "2a01:4f8::1")] == [
        (24940, None),
        (None, "DE"),
    ]
    assert _lookup(db, "9.0.2.1") == []
    with db() as s:
        result = attribute(s, "http://9.0.0.7/x", now=NOW)
    assert (result.asn, result.as_name, result.country) == (64500, "Example Hosting", "DE")
    assert result.datasets == (
        {"name": "GeoLite2-ASN", "version": "2026-11-30"},
        {"name": "country", "version": "2026-11"},
    )
    garbage = tmp_path / "broken.mmdb"
    garbage.write_bytes(b"\x00" * 64 + b"\xab\xcd\xefMaxMind.com" + b"\xff\xff")
    with pytest.raises(DatasetError, match="not a readable MMDB"), db() as s, s.begin():
        import_dataset(s, garbage, data_dir)


# -- the provider directory -------------------------------------------------------------------

TOML_DIRECTORY = """
[[provider]]
asn = 64500
organisation = "Example Hosting GmbH"
abuse_email = "abuse@hosting.example"
send_window = "Mon-Fri 09:00-17:00 Europe/Berlin"
language = "de"
recheck_hours = 12

[[provider]]
key = "asn:64501"
organisation = "Other Hosting SAS"
channel = "webhook"
webhook = "other-hosting"

[[provider]]
key = "asn:64500"
role = "upstream"
organisation = "Transit Carrier"
abuse_email = "noc@transit.example"

[[provider]]
domain = "github.io"
role = "site_owner"
organisation = "GitHub Pages"
channel = "manual"

[[provider]]
domain = "alice.github.io"
role = "site_owner"
organisation = "Alice's own abuse desk"
abuse_email = "alice@mail.example"

[[provider]]
key = "domain:de"
role = "registrar"
organisation = "DENIC"
channel = "manual"

[[provider]]
key = "country:DE"
role = "hotline"
organisation = "Partner hotline DE"
abuse_email = "reports@hotline-de.example"

[[provider]]
key = "country:FR"
role = "hotline"
organisation = "Partner hotline FR"
abuse_email = "reports@hotline-fr.example"

[[provider]]
key = "country:DE"
role = "police"
organisation = "Landeskriminalamt"
channel = "manual"

[[provider]]
asn = "AS16509"
organisation = "Amazon CloudFront"
abuse_email = "abuse@amazon.example"
cdn = true
"""

CSV_DIRECTORY = (
    "key,role,organisation,abuse_email,channel,webhook,send_window,language,recheck_hours,cdn\n"
    "asn:64500,host,Example Hosting GmbH,abuse@hosting.example,,,"
    "Mon-Fri 09:00-17:00 Europe/Berlin,de,12,\n"
    "\n"
    'country:FR,hotline,"Partner hotline FR, Paris",reports@hotline-fr.example,email,,,fr,,no\n'
)


def test_directory_toml_and_csv() -> None:
    contacts = parse_directory(TOML_DIRECTORY.encode(), "providers.toml")
    assert len(contacts) == 10
    host = contacts[0]
    assert host == ProviderContact(
        key="asn:64500",
        role="host",
        organisation="Example Hosting GmbH",
        abuse_email="abuse@hosting.example",
        channel="email",
        webhook=None,
        send_window="Mon-Fri 09:00-17:00 Europe/Berlin",
        language="de",
        recheck_hours=12.0,
        cdn=False,
        source="providers.toml entry 1",
    )
    assert contacts[1].channel == "webhook" and contacts[1].webhook == "other-hosting"
    assert contacts[-1].key == "asn:16509" and contacts[-1].cdn
    from_csv = parse_directory(CSV_DIRECTORY.encode(), "providers.csv")
    assert [(c.key, c.role, c.organisation, c.language, c.source) for c in from_csv] == [
        ("asn:64500", "host", "Example Hosting GmbH", "de", "providers.csv line 2"),
        ("country:FR", "hotline", "Partner hotline FR, Paris", "fr", "providers.csv line 4"),
    ]
    assert from_csv[0].recheck_hours == 12.0 and from_csv[0].channel == "email"


@pytest.mark.parametrize(
    ("body", "name", "problems"),
    [
        (
            "key,role,organisation,abuse_email\n"
            "asn:64500,host,Fine,abuse@fine.example\n"
            "asn:notanumber,host,X,abuse@x.example\n"
            "country:DEU,hotline,Y,\n"
            "domain:ok.example,janitor,Z,\n"
            "asn:64501,host,,abuse@x.example\n"
            "asn:64502,host,W,not-an-address\n"
            "asn:64500,host,Again,abuse@again.example\n",
            "p.csv",
            [
                "p.csv line 3: bad AS number",
                "p.csv line 4: bad country code",
                "p.csv line 5: role 'janitor'",
                "p.csv line 6: organisation is missing",
                "p.csv line 7: abuse_email 'not-an-address'",
                "p.csv line 8: asn:64500 role host repeats p.csv line 2",
            ],
        ),
        (
            "key,organisation,channel,send_window,language,recheck_hours,cdn,colour\n"
            "asn:1,A,email,,,,,\n"
            "asn:2,B,webhook,,,,,\n"
            "asn:3,C,manual,Mon-Fri 09:00-17:00 Mars/Olympus,,,,\n"
            "asn:4,D,manual,Someday 09:00-17:00,,,,\n"
            "asn:5,E,manual,,english!,,,\n"
            "asn:6,F,manual,,,-1,,\n"
            "asn:7,G,manual,,,,maybe,\n"
            "asn:8,H,manual,,,,,blue\n",
            "q.csv",
            [
                "q.csv line 2: channel email needs an abuse_email",
                "q.csv line 3: channel webhook needs a webhook name",
                "q.csv line 4: unknown time zone 'Mars/Olympus'",
                "q.csv line 5: unknown day 'Someday'",
                "q.csv line 6: language 'english!'",
                "q.csv line 7: recheck_hours must be between",
                "q.csv line 8: cdn must be true or false",
                "q.csv line 1: unknown column(s) colour",
            ],
        ),
        (
            '[[provider]]\nasn = 1\norganisation = "A"\nchannel = "pigeon"\n'
            '[[provider]]\nasn = 2\ndomain = "x.example"\norganisation = "B"\nchannel = "manual"\n'
            '[[provider]]\norganisation = "C"\n',
            "d.toml",
            [
                "d.toml entry 1: channel 'pigeon'",
                "d.toml entry 2: exactly one of key, asn, domain or country",
                "d.toml entry 3: exactly one of key, asn, domain or country",
            ],
        ),
        ("[[provider]\nasn = 1", "e.toml", ["e.toml: not valid TOML"]),
        ("provider = 3\n", "f.toml", ["f.toml: 'provider' must be an array"]),
        ("\xff\xfe", "g.csv", ["g.csv: not UTF-8"]),
    ],
)
def test_directory_bad_entries_are_all_named(body: str, name: str, problems: list[str]) -> None:
    data = body.encode("latin-1") if name == "g.csv" else body.encode()
    with pytest.raises(DirectoryError) as err:
        parse_directory(data, name)
    got = err.value.problems
    for expected in problems:
        assert any(p.startswith(expected) for p in got), (expected, got)
    assert len(got) == len(problems), got


def test_directory_is_replaced_in_one_transaction(db: sessionmaker[Session]) -> None:
    with db() as s, s.begin():
        replace_directory(s, parse_directory(TOML_DIRECTORY.encode(), "providers.toml"))
    with db() as s:
        assert len(directory(s)) == 10
    with db() as s, s.begin():
        assert replace_directory(s, parse_directory(CSV_DIRECTORY.encode(), "p.csv")) == 2
    with db() as s:
        assert [c.key for c in directory(s)] == ["asn:64500", "country:FR"]


# -- send windows ---------------------------------------------------------------------------------


def _contact(window: str | None) -> ProviderContact:
    return ProviderContact("asn:1", "host", "X", None, "manual", None, window)


BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(
    ("window", "at", "inside", "next_at"),
    [
        # winter (CET, UTC+1): Monday 08:59 local is closed, opens 09:00 local = 08:00 UTC
        ("Mon-Fri 09:00-17:00 Europe/Berlin", "2026-01-05T07:59Z", False, "2026-01-05T08:00Z"),
        ("Mon-Fri 09:00-17:00 Europe/Berlin", "2026-01-05T08:00Z", True, "2026-01-05T08:00Z"),
        ("Mon-Fri 09:00-17:00 Europe/Berlin", "2026-01-05T15:59Z", True, "2026-01-05T15:59Z"),
        ("Mon-Fri 09:00-17:00 Europe/Berlin", "2026-01-05T16:00Z", False, "2026-01-06T08:00Z"),
        # Friday evening before the spring change (29 March 2026): next is Monday 09:00 CEST
        ("Mon-Fri 09:00-17:00 Europe/Berlin", "2026-03-27T16:30Z", False, "2026-03-30T07:00Z"),
        ("Mon-Fri 09:00-17:00 Europe/Berlin", "2026-03-30T06:59Z", False, "2026-03-30T07:00Z"),
        # summer (CEST, UTC+2) and back to winter after 25 October 2026
        ("Mon-Fri 09:00-17:00 Europe/Berlin", "2026-07-01T14:59Z", True, "2026-07-01T14:59Z"),
        ("Mon-Fri 09:00-17:00 Europe/Berlin", "2026-07-01T15:00Z", False, "2026-07-02T07:00Z"),
        ("Mon-Fri 09:00-17:00 Europe/Berlin", "2026-10-23T15:30Z", False, "2026-10-26T08:00Z"),
        # a window opening inside the spring-forward gap opens when the clock allows
        ("Sun 02:30-04:00 Europe/Berlin", "2026-03-29T00:00Z", False, "2026-03-29T01:30Z"),
        # overnight windows run past midnight (and from Friday into Saturday)
        ("Mon-Fri 22:00-06:00 UTC", "2026-01-10T05:59Z", True, "2026-01-10T05:59Z"),
        ("Mon-Fri 22:00-06:00 UTC", "2026-01-10T06:00Z", False, "2026-01-12T22:00Z"),
        ("Fri-Mon 00:00-24:00 America/New_York", "2026-01-08T04:59Z", False, "2026-01-09T05:00Z"),
        ("daily 10:00-11:00", "2026-01-08T11:00Z", False, "2026-01-09T10:00Z"),
        ("Mon,Wed 10:00-11:00 Asia/Kolkata", "2026-01-06T04:30Z", False, "2026-01-07T04:30Z"),
    ],
)
def test_send_windows(window: str, at: str, inside: bool, next_at: str) -> None:
    contact = _contact(window)
    when = datetime.fromisoformat(at)
    assert in_send_window(contact, when) is inside
    nxt = next_send_time(contact, when)
    assert nxt == datetime.fromisoformat(next_at)
    assert in_send_window(contact, nxt)
    assert not in_send_window(contact, nxt - timedelta(minutes=1)) or nxt == when


def test_send_window_edge_cases() -> None:
    assert in_send_window(_contact(None), NOW) and next_send_time(_contact(None), NOW) == NOW
    local = datetime(2026, 1, 5, 7, 0, tzinfo=BERLIN)  # Monday 07:00 CET
    nxt = next_send_time(_contact("Mon-Fri 09:00-17:00 Europe/Berlin"), local)
    assert nxt.tzinfo is BERLIN and nxt.hour == 9  # answered in the caller's zone
    naive = datetime(2026, 1, 5, 8, 30)  # naive: UTC
    assert in_send_window(_contact("Mon-Fri 09:00-17:00 Europe/Berlin"), naive)
    for bad in ("Mon-Fri", "Mon-Fri 9-17", "Mon-Fri 09:00-09:00", "Mon-Fri 25:00-26:00 UTC"):
        with pytest.raises(ValueError):
            parse_send_window(bad)


# -- attribution ----------------------------------------------------------------------------------


@pytest.fixture
def attributed(ranges: sessionmaker[Session]) -> sessionmaker[Session]:
    with ranges() as s, s.begin():
        replace_directory(s, parse_directory(TOML_DIRECTORY.encode(), "providers.toml"))
    return ranges


def _resolver(table: dict[str, list[str]]) -> Callable[[str], list[str]]:
    def resolve(host: str) -> list[str]:
        if host not in table:
            raise OSError(f"[Errno -2] Name or service not known: {host}")
        return table[host]

    return resolve


def _attr(db: sessionmaker[Session], url: str, **kw: Any) -> hosting.Attribution:
    with db() as s:
        return attribute(s, url, now=NOW, **kw)


def test_attribute_host_contacts_and_provenance(attributed: sessionmaker[Session]) -> None:
    dns = _resolver({"shop.example.de": ["9.0.0.10", "9.0.0.11"]})
    result = _attr(attributed, "https://shop.example.de/gallery?id=7", resolver=dns)
    assert result.error is None
    assert result.addresses == ("9.0.0.10", "9.0.0.11") and result.address == "9.0.0.10"
    assert (result.asn, result.as_name, result.country) == (64500, "EXAMPLE-HOSTING", "DE")
    assert not result.is_cdn
    assert result.datasets == ({"name": "ip2asn-v4", "version": "2026-12-01"},)
    by_role = {role: c.organisation for role, c in result.contacts.items()}
    assert by_role == {
        "host": "Example Hosting GmbH",
        "upstream": "Transit Carrier",
        "registrar": "DENIC",
        "hotline": "Partner hotline DE",
        "police": "Landeskriminalamt",
    }
    assert result.contacts["host"].send_window == "Mon-Fri 09:00-17:00 Europe/Berlin"
    doc = result.to_json()
    assert json.loads(json.dumps(doc)) == doc
    assert doc["contacts"]["host"]["abuse_email"] == "abuse@hosting.example"
    assert doc["at"] == NOW.isoformat() and doc["canonical_url"].endswith("/gallery?id=7")


def test_attribute_site_owner_on_shared_platforms(attributed: sessionmaker[Session]) -> None:
    dns = _resolver({"alice.github.io": ["2a00:1450::5"], "bob.github.io": ["2a00:1450::6"]})
    alice = _attr(attributed, "https://alice.github.io/p", resolver=dns)
    bob = _attr(attributed, "https://bob.github.io/p", resolver=dns)
    assert alice.contacts["site_owner"].organisation == "Alice's own abuse desk"
    assert bob.contacts["site_owner"].organisation == "GitHub Pages"
    assert alice.datasets == ({"name": "ip2asn-v6", "version": "2026-12-02"},)
    assert "host" not in bob.contacts  # AS15169 has no directory entry: manual action


def test_attribute_bad_hosts_never_raise(attributed: sessionmaker[Session]) -> None:
    dns = _resolver(
        {
            "internal.example.com": ["10.1.2.3"],
            "mixed.example.com": ["9.0.0.1", "127.0.0.1"],
            "metadata.example.com": ["169.254.169.254"],
            "empty.example.com": [],
            "junk.example.com": ["not-an-ip"],
        }
    )
    for url, error in [
        ("http://gone.example.com/", "unresolvable"),
        ("http://empty.example.com/", "unresolvable"),
        ("http://junk.example.com/", "unresolvable"),
        ("http://internal.example.com/", "private address 10.1.2.3 refused (a private address)"),
        ("http://mixed.example.com/", "private address 127.0.0.1 refused (a loopback address)"),
        ("http://metadata.example.com/", "private address 169.254.169.254 refused"),
        ("http://[::1]:8080/", "private address ::1 refused"),
        ("http://192.168.0.1/", "private address 192.168.0.1 refused"),
    ]:
        result = _attr(attributed, url, resolver=dns)
        assert result.error is not None and result.error.startswith(error), (url, result.error)
        assert result.contacts == {} and result.asn is None and result.datasets == ()

    def broken(host: str) -> list[str]:
        raise TimeoutError("resolver timed out")

    assert _attr(attributed, "http://slow.example.com/", resolver=broken).error == "unresolvable"
    # without an injected resolver a name outside the public suffix list is never asked about
    assert _attr(attributed, "http://intranet-box/").error == "unresolvable"
    onion = _attr(attributed, "http://abcdefghijklmnop.onion/")
    assert onion.error is not None and onion.error.startswith("onion service")
    assert onion.addresses == ()


def test_attribute_loopback_when_fetch_settings_allow_it(attributed: sessionmaker[Session]) -> None:
    allow = FetchSettings.build(allow_networks=["127.0.0.0/8"])
    result = _attr(attributed, "http://127.0.0.1:8123/page", fetch_settings=allow)
    assert result.addresses == ("127.0.0.1",)
    assert result.error == "no data set knows this address" and result.contacts == {}
    # the fetch settings' own resolver is the default resolver
    via_settings = FetchSettings.build(
        allow_hosts=["test.local"], resolver=lambda host, port: ["127.0.0.1"]
    )
    result = _attr(attributed, "http://test.local:8123/", fetch_settings=via_settings)
    assert result.addresses == ("127.0.0.1",) and result.error == "no data set knows this address"


def test_attribute_cdn_unrouted_and_no_host_contact(attributed: sessionmaker[Session]) -> None:
    cloudflare = _attr(attributed, "http://1.0.0.1/")
    assert cloudflare.is_cdn and cloudflare.cdn_name == "Cloudflare" and cloudflare.asn == 13335
    unrouted = _attr(attributed, "http://1.0.2.2/")
    assert unrouted.error == "address not routed" and unrouted.asn is None
    assert unrouted.datasets == ({"name": "ip2asn-v4", "version": "2026-12-01"},)
    nobody = _attr(attributed, "http://9.0.2.9/x")
    assert nobody.asn == 64502 and nobody.error is None and nobody.contacts == {}


def test_attribute_cdn_by_directory(attributed: sessionmaker[Session], tmp_path: Path) -> None:
    more = tmp_path / "aws.tsv"
    more.write_text("3.160.0.0\t3.175.255.255\t16509\tUS\tAMAZON-02\n")
    _import(attributed, more, name="aws", version="1")
    result = _attr(attributed, "http://3.160.1.1/")
    assert result.asn == 16509 and result.is_cdn and result.cdn_name is None
    assert result.contacts["host"].organisation == "Amazon CloudFront"


def test_attribute_sees_a_move_between_two_calls(attributed: sessionmaker[Session]) -> None:
    answers = iter([["9.0.0.20"], ["9.0.1.20"]])

    def moving(host: str) -> list[str]:
        return next(answers)

    before = _attr(attributed, "https://mirror.example.net/f", resolver=moving)
    after = _attr(attributed, "https://mirror.example.net/f", resolver=moving)
    assert (before.asn, before.country) == (64500, "DE")
    assert (after.asn, after.country) == (64501, "FR")
    assert before.contacts["hotline"].organisation == "Partner hotline DE"
    assert after.contacts["hotline"].organisation == "Partner hotline FR"
    assert after.contacts["host"].channel == "webhook"


def test_attribute_rejects_only_non_urls(attributed: sessionmaker[Session]) -> None:
    with pytest.raises(InvalidLocationError), attributed() as s:
        attribute(s, "mailto:x@example.org")
    loc = parse_location("http://9.0.0.1/")
    with attributed() as s:
        assert attribute(s, loc, now=NOW).location is loc


# -- RDAP (a local server only) -------------------------------------------------------------------

RDAP_DOC = {
    "objectClassName": "ip network",
    "handle": "TEST-NET",
    "entities": [
        {
            "roles": ["registrant"],
            "vcardArray": ["vcard", [["version", {}, "text", "4.0"], ["fn", {}, "text", "Org"]]],
            "entities": [
                {
                    "roles": ["technical", "abuse"],
                    "vcardArray": [
                        "vcard",
                        [
                            ["version", {}, "text", "4.0"],
                            ["fn", {}, "text", "Abuse desk"],
                            ["email", {"type": "work"}, "text", "abuse@rdap.example"],
                        ],
                    ],
                }
            ],
        }
    ],
}


#: the paths the local RDAP server was asked (to prove nothing asks it when RDAP is off)
RDAP_HITS: list[str] = []


@pytest.fixture
def rdap_server() -> Iterator[str]:
    RDAP_HITS.clear()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            RDAP_HITS.append(self.path)
            if self.path in ("/ip/9.0.0.1", "/ip/9.0.2.10"):
                body, status = json.dumps(RDAP_DOC).encode(), 200
            elif self.path == "/ip/9.0.0.2":
                body, status = json.dumps({"entities": []}).encode(), 200
            elif self.path == "/ip/9.0.0.3":
                body, status = b"<html>not json</html>", 200
            else:
                body, status = b'{"errorCode": 404}', 404
            self.send_response(status)
            self.send_header("Content-Type", "application/rdap+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_rdap_abuse_contact(rdap_server: str) -> None:
    allow = FetchSettings.build(allow_networks=["127.0.0.0/8"])
    assert rdap_abuse_contact("9.0.0.1", base_url=rdap_server, fetch_settings=allow) == (
        "abuse@rdap.example"
    )
    assert rdap_abuse_contact("9.0.0.2", base_url=rdap_server, fetch_settings=allow) is None
    with pytest.raises(DatasetError, match="did not answer JSON"):
        rdap_abuse_contact("9.0.0.3", base_url=rdap_server, fetch_settings=allow)
    with pytest.raises(DatasetError, match="RDAP query failed"):
        rdap_abuse_contact("9.0.0.4", base_url=rdap_server, fetch_settings=allow)
    with pytest.raises(DatasetError, match=r"RDAP query failed.*loopback"):
        rdap_abuse_contact("9.0.0.1", base_url=rdap_server)  # default settings refuse it
    with pytest.raises(DatasetError, match="not an IP address"):
        rdap_abuse_contact("nope", base_url=rdap_server, fetch_settings=allow)


def test_rdap_fills_a_missing_host_contact(
    attributed: sessionmaker[Session], rdap_server: str
) -> None:
    allow = FetchSettings.build(allow_networks=["127.0.0.0/8"])
    client = hosting.RdapClient(rdap_server, allow)
    dns = _resolver({"nocontact.example.nl": ["9.0.2.10"], "shop.example.de": ["9.0.0.10"]})
    # AS64502 has no directory entry: RDAP's abuse address becomes the host contact
    result = _attr(attributed, "http://nocontact.example.nl/x", resolver=dns, rdap=client)
    host = result.contacts["host"]
    assert (host.abuse_email, host.key, host.organisation) == (
        "abuse@rdap.example",
        "rdap:asn:64502",
        "NO-CONTACT-HOSTING",
    )
    assert host.channel == "email" and host.source == f"RDAP {rdap_server}"
    assert {"name": "rdap", "version": rdap_server} in result.datasets
    assert result.to_json()["contacts"]["host"]["abuse_email"] == "abuse@rdap.example"
    # answered from the cache the second time
    _attr(attributed, "http://nocontact.example.nl/y", resolver=dns, rdap=client)
    assert RDAP_HITS == ["/ip/9.0.2.10"] and client.queries == 1
    # the directory knows AS64500's host: RDAP is not asked
    de = _attr(attributed, "https://shop.example.de/", resolver=dns, rdap=client)
    assert de.contacts["host"].abuse_email == "abuse@hosting.example"
    assert RDAP_HITS == ["/ip/9.0.2.10"]
    assert all(d["name"] != "rdap" for d in de.datasets)


def test_rdap_failure_changes_nothing_else(
    attributed: sessionmaker[Session], rdap_server: str
) -> None:
    allow = FetchSettings.build(allow_networks=["127.0.0.0/8"])
    dns = _resolver({"nocontact.example.nl": ["9.0.2.11"]})  # the server answers 404
    bad = hosting.RdapClient(rdap_server, allow)
    result = _attr(attributed, "http://nocontact.example.nl/x", resolver=dns, rdap=bad)
    assert result.error is None and result.asn == 64502 and "host" not in result.contacts
    assert bad.queries == 1
    # the default fetch policy refuses the loopback server: refused, not contacted
    strict = hosting.RdapClient(rdap_server)
    result = _attr(attributed, "http://nocontact.example.nl/x", resolver=dns, rdap=strict)
    assert "host" not in result.contacts and RDAP_HITS == ["/ip/9.0.2.11"]


def test_rdap_is_off_by_default_and_asks_nothing(
    attributed: sessionmaker[Session], rdap_server: str, tmp_path: Path
) -> None:
    from tipline.removal import scheduler
    from tipline.service.settings import RemovalSettings, ServiceSettings
    from tipline.service.wiring import removal_config

    dns = _resolver({"nocontact.example.nl": ["9.0.2.10"]})
    base = {"data_dir": tmp_path, "fetch_allow_networks": "127.0.0.0/8"}
    off = removal_config(
        ServiceSettings(**base, removal=RemovalSettings(rdap_url=rdap_server))  # type: ignore[arg-type]
    )
    assert RemovalSettings().rdap is False and off.rdap is None
    off = scheduler.with_overrides(off, resolver=dns)
    result = scheduler._attribute(off, attributed, "http://nocontact.example.nl/x", NOW)
    assert "host" not in result.contacts and RDAP_HITS == []
    on = removal_config(
        ServiceSettings(**base, removal=RemovalSettings(rdap=True, rdap_url=rdap_server))  # type: ignore[arg-type]
    )
    assert on.rdap is not None and on.rdap.base_url == rdap_server
    on = scheduler.with_overrides(on, resolver=dns)
    result = scheduler._attribute(on, attributed, "http://nocontact.example.nl/x", NOW)
    assert result.contacts["host"].abuse_email == "abuse@rdap.example"
    assert RDAP_HITS == ["/ip/9.0.2.10"]


# -- CLI -------------------------------------------------------------------------------------------

cli_app._register()
runner = CliRunner()


def _cli(data: Path, *args: str) -> Any:
    env = {k: v for k, v in os.environ.items() if k != "TIPLINE_DATABASE_URL"}
    return runner.invoke(cli_app.app, ["--data-dir", str(data), *args], env=env)


def test_cli_import_lookup_and_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    v4 = tmp_path / "ip2asn-v4.tsv.gz"
    v4.write_bytes(gzip.compress(V4.encode()))
    res = _cli(data, "hosting", "import", str(v4), "--version", "2026-12-01")
    assert res.exit_code == 0, res.output
    assert "imported data set ip2asn-v4 (ip2asn) version 2026-12-01: 7 ranges" in res.output
    directory_file = tmp_path / "providers.toml"
    directory_file.write_text(TOML_DIRECTORY)
    res = _cli(data, "provider", "import", str(directory_file))
    assert res.exit_code == 0 and "10 entries" in res.output, res.output
    res = _cli(data, "provider", "list", "--json")
    assert res.exit_code == 0 and len(json.loads(res.output)) == 10
    res = _cli(data, "hosting", "lookup", "http://9.0.0.5/a", "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert (doc["asn"], doc["country"], doc["contacts"]["host"]["organisation"]) == (
        64500,
        "DE",
        "Example Hosting GmbH",
    )
    res = _cli(data, "hosting", "lookup", "http://9.0.0.5/a")
    assert res.exit_code == 0 and "AS64500 EXAMPLE-HOSTING" in res.output, res.output
    res = _cli(data, "hosting", "datasets")
    assert res.exit_code == 0 and "ip2asn-v4" in res.output

    # bad input: one error line each, nothing replaced
    bad = tmp_path / "bad.tsv"
    bad.write_text("1.0.0.0\t1.0.0.255\t1\tUS\tok\n1.0.0.x\t1.0.1.0\t1\tUS\tbad\n")
    res = _cli(data, "hosting", "import", str(bad), "--name", "ip2asn-v4")
    assert res.exit_code == 2 and "error: bad.tsv line 2:" in res.output, res.output
    assert "Traceback" not in res.output
    bad_dir = tmp_path / "bad.csv"
    bad_dir.write_text("key,organisation\nasn:x,A\ncountry:DE,\n")
    res = _cli(data, "provider", "import", str(bad_dir))
    assert res.exit_code == 2, res.output
    assert "bad.csv line 2: bad AS number" in res.output
    assert "bad.csv line 3: organisation is missing" in res.output
    res = _cli(data, "hosting", "lookup", "mailto:x@example.org")
    assert res.exit_code == 2 and "error: unsupported scheme" in res.output, res.output
    res = _cli(data, "hosting", "lookup", "http://9.0.0.5/a", "--json")
    assert json.loads(res.output)["datasets"] == [{"name": "ip2asn-v4", "version": "2026-12-01"}]
    res = _cli(data, "provider", "list")
    assert res.exit_code == 0 and res.output.count("\n") == 10
