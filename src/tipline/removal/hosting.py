"""Hosting attribution: where a location is served from and whom to tell (docs/hosting.md).

:func:`attribute` resolves a location's host, refuses private addresses the way the fetcher
does, looks the address up in every imported IP-to-ASN data set (iptoasn TSV ranges in the
database, MMDB files through ``maxminddb``), flags known CDNs and picks a contact per ladder
role from the provider directory. It records which data set and version answered, and it
never raises for a bad host: ``Attribution.error`` says what went wrong ("unresolvable",
"private address 10.0.0.1 refused ...") and the case code flags the location for manual work.

Data sets are imported by the operator (:func:`import_ip2asn`, :func:`import_mmdb`); nothing
here contacts the internet except :func:`rdap_abuse_contact`, an opt-in RDAP query: with
``[removal] rdap = true`` the scheduler passes an :class:`RdapClient` to :func:`attribute`,
which asks it for the abuse address of a hosting address the provider directory has no
``host`` contact for (never otherwise, and never when the setting is off).
"""

from __future__ import annotations

import gzip
import hashlib
import ipaddress
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import IO, Any, cast

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from tipline.errors import TiplineError
from tipline.net.fetch import (
    BlockedAddressError,
    FetchError,
    FetchSettings,
    blocked_reason,
    check_address,
    fetch,
    resolve,
)
from tipline.removal.locations import (
    InvalidLocationError,
    Location,
    parse_location,
    registrable_domain_known,
)
from tipline.removal.providers import ROLES, ProviderContact, contacts_for_keys
from tipline.store.hosting_tables import HostingDataset, HostingRange

__all__ = [
    "KNOWN_CDN_ASNS",
    "Attribution",
    "DatasetAnswer",
    "DatasetError",
    "DatasetInfo",
    "InvalidLocationError",
    "RdapClient",
    "Resolver",
    "attribute",
    "datasets",
    "import_dataset",
    "import_ip2asn",
    "import_mmdb",
    "ip_key",
    "lookup_ip",
    "rdap_abuse_contact",
]

log = logging.getLogger(__name__)

#: ``host -> addresses``; tests inject one, the default is the fetcher's resolver.
Resolver = Callable[[str], list[str]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Autonomous systems that are content delivery networks only: an address there fronts some
#: other origin, so the host's own contact is the CDN's abuse desk (which forwards to the
#: origin) and the origin must be found another way. Shared cloud ASes (Amazon 16509, which
#: carries CloudFront and plain hosting, Google 15169, Microsoft 8075) are not listed: mark
#: them with ``cdn = true`` in the provider directory if that is right for you.
KNOWN_CDN_ASNS: dict[int, str] = {
    13335: "Cloudflare",
    209242: "Cloudflare (Spectrum, WARP)",
    20940: "Akamai",
    16625: "Akamai",
    54113: "Fastly",
    15133: "Edgecast (Edgio)",
    22822: "Limelight (Edgio)",
    60068: "CDN77",
    200325: "Bunny CDN",
    199524: "Gcore",
    33438: "StackPath",
}

#: rows per INSERT batch when importing ranges
BATCH_ROWS = 5000
_MAPPED_V4 = 0xFFFF << 32


class DatasetError(TiplineError):
    """A data set file that cannot be imported (``line N: reason`` for a bad line)."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    kind: str  #: "ip2asn" | "mmdb"
    version: str
    row_count: int
    imported_at: datetime
    path: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "version": self.version,
            "row_count": self.row_count,
            "imported_at": self.imported_at.isoformat(),
            "path": self.path,
        }


@dataclass(frozen=True)
class DatasetAnswer:
    """What one data set says about one address."""

    name: str
    version: str
    asn: int | None
    as_name: str | None
    country: str | None
    routed: bool = True  #: False: the range is listed as "not routed" (AS 0)


@dataclass(frozen=True)
class Attribution:
    location: Location
    addresses: tuple[str, ...]
    asn: int | None
    as_name: str | None
    country: str | None  #: ISO 3166 alpha-2 of the hosting address
    is_cdn: bool
    contacts: dict[str, ProviderContact]  #: by ladder role (providers.ROLES)
    datasets: tuple[dict[str, str], ...]  #: {"name", "version"} of each data set that answered
    error: str | None
    at: datetime
    #: the address the ASN/country belong to (the first one a data set knew)
    address: str | None = None
    #: known CDN name, when the ASN is in KNOWN_CDN_ASNS
    cdn_name: str | None = None
    answers: tuple[DatasetAnswer, ...] = field(default=(), compare=False)

    def to_json(self) -> dict[str, Any]:
        loc = self.location
        return {
            "url": loc.url,
            "canonical_url": loc.canonical_url,
            "host": loc.host,
            "registrable_domain": loc.registrable_domain,
            "is_onion": loc.is_onion,
            "addresses": list(self.addresses),
            "address": self.address,
            "asn": self.asn,
            "as_name": self.as_name,
            "country": self.country,
            "is_cdn": self.is_cdn,
            "cdn_name": self.cdn_name,
            "contacts": {role: c.to_json() for role, c in self.contacts.items()},
            "datasets": [dict(d) for d in self.datasets],
            "error": self.error,
            "at": self.at.isoformat(),
        }


# -- address keys -------------------------------------------------------------------------------


def ip_key(ip: IPAddress | str) -> str:
    """32 lower-case hex digits: the address in IPv6 space (IPv4 as ``::ffff:a.b.c.d``).
    Text order of keys is address order, on every database."""
    addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    value = int(addr) | _MAPPED_V4 if addr.version == 4 else int(addr)
    return f"{value:032x}"


# -- importing data sets ------------------------------------------------------------------------


def _open_text(path: Path) -> IO[bytes]:
    with path.open("rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return cast(IO[bytes], gzip.open(path, "rb"))
    return path.open("rb")


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _default_name(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".tsv", ".mmdb"):
        name = name.removesuffix(suffix)
    return name or path.name


def _file_date(path: Path) -> str:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).date().isoformat()


def _parse_ip2asn_line(line: str) -> tuple[str, str, int, str | None, str | None]:
    fields = line.split("\t")
    if len(fields) not in (4, 5):
        raise ValueError(f"expected 5 tab-separated fields, found {len(fields)}")
    try:
        first = ipaddress.ip_address(fields[0].strip())
        last = ipaddress.ip_address(fields[1].strip())
    except ValueError as err:
        raise ValueError(str(err)) from None
    if first.version != last.version:
        raise ValueError("range start and end are of different IP versions")
    if int(last) < int(first):
        raise ValueError(f"range end {last} is before its start {first}")
    asn_text = fields[2].strip().upper().removeprefix("AS")
    if not asn_text.isdigit() or int(asn_text) >= 2**32:
        raise ValueError(f"bad AS number {fields[2].strip()[:20]!r}")
    asn = int(asn_text)
    country_text = fields[3].strip()
    country: str | None
    if country_text in ("", "None", "-", "ZZ", "XX"):
        country = None
    elif len(country_text) == 2 and country_text.isalpha() and country_text.isascii():
        country = country_text.upper()
    else:
        raise ValueError(f"bad country code {country_text[:20]!r}")
    description = fields[4].strip() if len(fields) == 5 else ""
    if len(description) > 1000:
        raise ValueError("AS description longer than 1000 characters")
    return ip_key(first), ip_key(last), asn, country, description or None


def _replace_dataset(session: Session, name: str) -> None:
    old = session.scalar(select(HostingDataset).where(HostingDataset.name == name))
    if old is not None:
        session.execute(delete(HostingRange).where(HostingRange.dataset_id == old.id))
        session.delete(old)
        session.flush()


def import_ip2asn(
    session: Session,
    path: Path,
    *,
    name: str | None = None,
    version: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    now: datetime | None = None,
) -> DatasetInfo:
    """Import an iptoasn ``ip2asn-v4/v6/combined.tsv`` (optionally gzip-compressed) as data set
    ``name`` (default: the file name), replacing that data set's previous version.

    Runs in the caller's transaction: commit to make it active. A malformed line raises
    :class:`DatasetError` (``path line N: reason``) before anything is committed, so the
    previous version stays active. ``progress(bytes_read, total_bytes)`` is called as it goes.
    AS 0 rows ("Not routed") are kept: they say the address is unrouted."""
    name = name or _default_name(path)
    try:
        total = path.stat().st_size
        version = version or _file_date(path)
        sha = _file_sha256(path)
    except OSError as err:
        raise DatasetError(f"{path}: cannot read ({err.strerror or err})") from None
    _replace_dataset(session, name)
    dataset = HostingDataset(
        name=name,
        kind="ip2asn",
        version=version,
        row_count=0,
        path=None,
        source_sha256=sha,
        imported_at=now or datetime.now(UTC),
    )
    session.add(dataset)
    session.flush()
    seen: set[str] = set()
    batch: list[dict[str, Any]] = []
    rows = 0
    try:
        with _open_text(path) as raw:
            for number, data in enumerate(raw, 1):
                try:
                    line = data.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError:
                    raise DatasetError(f"{path.name} line {number}: not UTF-8 text") from None
                if not line.strip() or line.startswith("#"):
                    continue
                try:
                    start, end, asn, country, description = _parse_ip2asn_line(line)
                except ValueError as err:
                    raise DatasetError(f"{path.name} line {number}: {err}") from None
                if start in seen:
                    raise DatasetError(
                        f"{path.name} line {number}: a range starting at this address is "
                        "already listed"
                    )
                seen.add(start)
                batch.append(
                    {
                        "dataset_id": dataset.id,
                        "range_start": start,
                        "range_end": end,
                        "asn": asn,
                        "country": country,
                        "as_name": description,
                    }
                )
                if len(batch) >= BATCH_ROWS:
                    session.execute(insert(HostingRange), batch)
                    rows += len(batch)
                    batch = []
                    if progress is not None:
                        progress(_position(raw, total), total)
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DatasetError(f"{path.name}: cannot read ({err})") from None
    if batch:
        session.execute(insert(HostingRange), batch)
        rows += len(batch)
    if rows == 0:
        raise DatasetError(f"{path.name}: no address ranges in the file")
    if progress is not None:
        progress(total, total)
    dataset.row_count = rows
    session.flush()
    return _info(dataset)


def _position(raw: IO[bytes], total: int) -> int:
    """Bytes of the (compressed) file read so far."""
    inner = getattr(raw, "fileobj", None)  # gzip: the compressed stream's position
    try:
        return int((inner or raw).tell())
    except (OSError, ValueError):
        return total


def _mmdb_reader(path: str) -> Any:
    import maxminddb

    return maxminddb.open_database(path)


@lru_cache(maxsize=16)
def _cached_reader(path: str, mtime_ns: int) -> Any:
    return _mmdb_reader(path)


def import_mmdb(
    session: Session,
    path: Path,
    data_dir: Path,
    *,
    name: str | None = None,
    version: str | None = None,
    now: datetime | None = None,
) -> DatasetInfo:
    """Import an MMDB file (GeoLite2-ASN/-Country, DB-IP, ip-location-db, ipinfo layouts): it
    is checked, copied to ``data_dir/hosting/`` and registered as data set ``name`` (default:
    the file's database type), replacing that data set's previous version. The version is the
    file's build date unless given."""
    import maxminddb

    try:
        reader = maxminddb.open_database(str(path))
    except (OSError, ValueError, maxminddb.InvalidDatabaseError) as err:
        raise DatasetError(f"{path.name}: not a readable MMDB file ({err})") from None
    try:
        meta = reader.metadata()
        db_type = str(meta.database_type or "") or _default_name(path)
        built = datetime.fromtimestamp(int(meta.build_epoch), UTC).date().isoformat()
        nodes = int(meta.node_count)
    finally:
        reader.close()
    name = name or db_type
    sha = _file_sha256(path)
    target_dir = data_dir / "hosting"
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / f"{sha[:16]}-{path.name}"
    if not target.exists():
        tmp = target.with_suffix(".part")
        shutil.copyfile(path, tmp)
        tmp.replace(target)
    _replace_dataset(session, name)
    dataset = HostingDataset(
        name=name,
        kind="mmdb",
        version=version or built,
        row_count=nodes,
        path=str(target.resolve()),
        source_sha256=sha,
        imported_at=now or datetime.now(UTC),
    )
    session.add(dataset)
    session.flush()
    return _info(dataset)


def import_dataset(
    session: Session,
    path: Path,
    data_dir: Path,
    *,
    name: str | None = None,
    version: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DatasetInfo:
    """:func:`import_mmdb` for MMDB files (by content), else :func:`import_ip2asn`."""
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, path.stat().st_size - 128 * 1024))
            tail = fh.read()
    except OSError as err:
        raise DatasetError(f"{path}: cannot read ({err.strerror or err})") from None
    if b"\xab\xcd\xefMaxMind.com" in tail:
        return import_mmdb(session, path, data_dir, name=name, version=version)
    return import_ip2asn(session, path, name=name, version=version, progress=progress)


def _info(row: HostingDataset) -> DatasetInfo:
    return DatasetInfo(
        name=row.name,
        kind=row.kind,
        version=row.version,
        row_count=row.row_count,
        imported_at=row.imported_at,
        path=row.path,
    )


def datasets(session: Session) -> list[DatasetInfo]:
    """Every imported data set, by name."""
    return [_info(r) for r in session.scalars(select(HostingDataset).order_by(HostingDataset.name))]


# -- lookups ------------------------------------------------------------------------------------


def _range_answer(session: Session, dataset: HostingDataset, key: str) -> DatasetAnswer | None:
    row = session.execute(
        select(HostingRange.range_end, HostingRange.asn, HostingRange.country, HostingRange.as_name)
        .where(HostingRange.dataset_id == dataset.id, HostingRange.range_start <= key)
        .order_by(HostingRange.range_start.desc())
        .limit(1)
    ).first()
    if row is None or row.range_end < key:
        return None
    routed = row.asn != 0
    return DatasetAnswer(
        name=dataset.name,
        version=dataset.version,
        asn=row.asn if routed else None,
        as_name=row.as_name if routed else None,
        country=row.country if routed else None,
        routed=routed,
    )


def _mmdb_fields(record: Any) -> tuple[int | None, str | None, str | None]:
    """(asn, organisation, country) from the common MMDB layouts."""
    if not isinstance(record, dict):
        return None, None, None
    asn: int | None = None
    raw_asn = record.get("autonomous_system_number", record.get("asn"))
    if isinstance(raw_asn, int) and not isinstance(raw_asn, bool):
        asn = raw_asn
    elif isinstance(raw_asn, str) and raw_asn.upper().removeprefix("AS").isdigit():
        asn = int(raw_asn.upper().removeprefix("AS"))
    org = record.get("autonomous_system_organization", record.get("as_name"))
    if not isinstance(org, str):
        org = record.get("organization") if isinstance(record.get("organization"), str) else None
    country: Any = None
    for key in ("country", "registered_country"):
        block = record.get(key)
        if isinstance(block, dict) and isinstance(block.get("iso_code"), str):
            country = block["iso_code"]
            break
        if isinstance(block, str) and len(block) == 2:
            country = block
            break
    if country is None and isinstance(record.get("country_code"), str):
        country = record["country_code"]
    if not (isinstance(country, str) and len(country) == 2 and country.isalpha()):
        country = None
    return asn, org if isinstance(org, str) else None, country.upper() if country else None


def _mmdb_answer(dataset: HostingDataset, ip: IPAddress) -> DatasetAnswer | None:
    if not dataset.path:
        return None
    try:
        reader = _cached_reader(dataset.path, Path(dataset.path).stat().st_mtime_ns)
        record = reader.get(str(ip))
    except (OSError, ValueError, RuntimeError):
        return None  # a missing or damaged file answers nothing (docs/hosting.md)
    asn, org, country = _mmdb_fields(record)
    if asn is None and country is None:
        return None
    return DatasetAnswer(dataset.name, dataset.version, asn or None, org, country)


def lookup_ip(session: Session, ip: IPAddress | str) -> list[DatasetAnswer]:
    """What every imported data set says about ``ip`` (data sets that know nothing are left
    out): ip2asn data sets first, then MMDB files, each group by name."""
    addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    key = ip_key(addr)
    rows = session.scalars(select(HostingDataset).order_by(HostingDataset.name)).all()
    answers: list[DatasetAnswer] = []
    for kind in ("ip2asn", "mmdb"):
        for dataset in rows:
            if dataset.kind != kind:
                continue
            answer = _range_answer(session, dataset, key) if kind == "ip2asn" else None
            if kind == "mmdb":
                answer = _mmdb_answer(dataset, addr)
            if answer is not None:
                answers.append(answer)
    return answers


# -- attribution --------------------------------------------------------------------------------


def _candidate_keys(location: Location, asn: int | None, country: str | None) -> list[str]:
    """Directory keys that may hold a contact for this location, most specific first."""
    keys: list[str] = []
    if not location.is_ip:
        labels = location.host.split(".")
        keys += [f"domain:{'.'.join(labels[i:])}" for i in range(len(labels))]
    if asn is not None:
        keys.append(f"asn:{asn}")
    if country is not None:
        keys.append(f"country:{country}")
    return keys


def _contacts(
    session: Session, location: Location, asn: int | None, country: str | None
) -> tuple[dict[str, ProviderContact], bool]:
    keys = _candidate_keys(location, asn, country)
    found = contacts_for_keys(session, keys)
    chosen: dict[str, ProviderContact] = {}
    for role in ROLES:
        for key in keys:
            match = next((c for c in found.get(key, []) if c.role == role), None)
            if match is not None:
                chosen[role] = match
                break
    cdn = asn is not None and any(c.cdn for c in found.get(f"asn:{asn}", []))
    return chosen, cdn


def _default_resolver(settings: FetchSettings, port: int) -> Resolver:
    def _resolve(host: str) -> list[str]:
        return [str(a) for a in resolve(host, port, settings, timeout=10.0)]

    return _resolve


def _addresses(location: Location, resolver: Resolver) -> list[IPAddress]:
    raw = [location.host] if location.is_ip else resolver(location.host)
    out: list[IPAddress] = []
    for text in raw:
        try:
            addr = ipaddress.ip_address(str(text).split("%", 1)[0])
        except ValueError:
            continue
        if addr not in out:
            out.append(addr)
    return out


def attribute(
    session: Session,
    url_or_location: str | Location,
    *,
    resolver: Resolver | None = None,
    fetch_settings: FetchSettings | None = None,
    now: datetime | None = None,
    rdap: RdapClient | None = None,
) -> Attribution:
    """Attribute a location (see the module docstring). Raises only
    :class:`~tipline.removal.locations.InvalidLocationError` for a string that is no URL;
    a bad host gives an :class:`Attribution` with ``error`` set.

    ``rdap`` (opt-in, online): when the directory has no ``host`` contact for the address,
    the RDAP server's abuse address becomes the host contact (``rdap`` in ``datasets``); an
    RDAP failure is logged and changes nothing else."""
    location = (
        url_or_location
        if isinstance(url_or_location, Location)
        else parse_location(url_or_location)
    )
    at = now or datetime.now(UTC)
    settings = fetch_settings or FetchSettings()

    def failed(error: str, addresses: tuple[str, ...] = ()) -> Attribution:
        contacts: dict[str, ProviderContact] = {}
        if location.is_onion:  # no address, but a directory may know the site
            contacts, _ = _contacts(session, location, None, None)
        return Attribution(location, addresses, None, None, None, False, contacts, (), error, at)

    if location.is_onion:
        return failed("onion service: no public address to attribute")
    port = location.port or {"https": 443, "ftp": 21}.get(location.scheme, 80)
    public_name = location.is_ip or registrable_domain_known(location.host)
    if resolver is None and not public_name and location.host not in settings.allow_hosts:
        # A name outside the public suffix list (``intranet``, ``x``) is no hosting target;
        # asking the system resolver about it would only leak it to the local network.
        return failed("unresolvable")
    try:
        addrs = _addresses(location, resolver or _default_resolver(settings, port))
    except (OSError, UnicodeError, ValueError, FetchError, TimeoutError):
        addrs = []
    if not addrs:
        return failed("unresolvable")
    shown = tuple(str(a) for a in addrs)
    for addr in addrs:
        try:
            check_address(addr, location.host, settings)
        except BlockedAddressError:
            why = blocked_reason(addr) or "not public"
            return failed(f"private address {addr} refused ({why})", shown)
    answers: list[DatasetAnswer] = []
    address: IPAddress | None = None
    for addr in addrs:
        answers = lookup_ip(session, addr)
        if answers:
            address = addr
            break
    asn = next((a.asn for a in answers if a.asn is not None), None)
    as_name = next((a.as_name for a in answers if a.asn == asn and a.as_name), None)
    country = next((a.country for a in answers if a.country), None)
    contacts, directory_cdn = _contacts(session, location, asn, country)
    used = [{"name": a.name, "version": a.version} for a in answers]
    if rdap is not None and "host" not in contacts and address is not None:
        found = rdap.host_contact(address, asn, as_name)
        if found is not None:
            contacts["host"] = found
            used.append({"name": "rdap", "version": rdap.base_url})
    cdn_name = KNOWN_CDN_ASNS.get(asn) if asn is not None else None
    error = None
    if not answers:
        error = "no data set knows this address"
    elif asn is None:
        error = "address not routed" if all(not a.routed for a in answers) else None
    return Attribution(
        location=location,
        addresses=shown,
        asn=asn,
        as_name=as_name,
        country=country,
        is_cdn=cdn_name is not None or directory_cdn,
        contacts=contacts,
        datasets=tuple(used),
        error=error,
        at=at,
        address=str(address) if address is not None else None,
        cdn_name=cdn_name,
        answers=tuple(answers),
    )


# -- RDAP (opt-in, online) ----------------------------------------------------------------------


def _entities(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        for entity in node.get("entities", []) or []:
            if isinstance(entity, dict):
                yield entity
                yield from _entities(entity)


def _vcard_email(entity: dict[str, Any]) -> str | None:
    card = entity.get("vcardArray")
    if not (isinstance(card, list) and len(card) == 2 and isinstance(card[1], list)):
        return None
    for prop in card[1]:
        if isinstance(prop, list) and len(prop) >= 4 and prop[0] == "email":
            value = prop[3]
            if isinstance(value, str) and "@" in value:
                return value.strip()
    return None


def rdap_abuse_contact(
    ip: str, *, base_url: str, fetch_settings: FetchSettings | None = None
) -> str | None:
    """The abuse e-mail address an RDAP server (RFC 9083) gives for ``ip``: the first entity,
    at any depth, whose roles include "abuse" and whose vCard has an e-mail; None when there
    is none. Fetched through the SSRF-safe fetcher; raises :class:`DatasetError` when the
    server cannot be asked or answers something that is not RDAP JSON. Opt-in: Tipline never
    calls this unless the operator turned online mode on."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        raise DatasetError(f"not an IP address: {ip[:60]!r}") from None
    url = f"{base_url.rstrip('/')}/ip/{addr}"
    try:
        result = fetch(url, fetch_settings, headers={"Accept": "application/rdap+json"})
        doc = json.loads(result.content)
    except FetchError as err:
        raise DatasetError(f"RDAP query failed: {err}") from None
    except (ValueError, UnicodeDecodeError):
        raise DatasetError(f"RDAP server at {base_url} did not answer JSON") from None
    if not isinstance(doc, dict):
        raise DatasetError(f"RDAP server at {base_url} did not answer an object")
    for entity in _entities(doc):
        roles = entity.get("roles")
        if isinstance(roles, list) and "abuse" in roles:
            email = _vcard_email(entity)
            if email:
                return email
    return None


class RdapClient:
    """The opt-in online abuse-contact lookup (``[removal] rdap``): one RDAP query per
    address, its answer (an address or none) kept for ``cache_hours`` so the daily
    re-attribution of many cases on one host asks once; failures are not kept."""

    def __init__(
        self,
        base_url: str,
        fetch_settings: FetchSettings | None = None,
        *,
        cache_hours: float = 24.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.fetch_settings = fetch_settings
        self.cache_seconds = max(0.0, cache_hours * 3600.0)
        self._clock = clock
        self._cache: dict[str, tuple[float, str | None]] = {}
        self._lock = threading.Lock()
        #: queries sent (tests and the operator's log)
        self.queries = 0

    def abuse_email(self, ip: str) -> str | None:
        """As :func:`rdap_abuse_contact` (raises :class:`DatasetError`), cached."""
        now = self._clock()
        with self._lock:
            hit = self._cache.get(ip)
            if hit is not None and now - hit[0] < self.cache_seconds:
                return hit[1]
            self.queries += 1
        email = rdap_abuse_contact(ip, base_url=self.base_url, fetch_settings=self.fetch_settings)
        with self._lock:
            if len(self._cache) >= 100_000:
                self._cache.clear()
            self._cache[ip] = (now, email)
        return email

    def host_contact(
        self, address: IPAddress, asn: int | None, as_name: str | None
    ) -> ProviderContact | None:
        """The host contact RDAP gives for ``address`` (None: none, or the query failed)."""
        try:
            email = self.abuse_email(str(address))
        except DatasetError as err:
            log.warning("RDAP abuse contact for %s: %s", address, err)
            return None
        if not email:
            return None
        return ProviderContact(
            key=f"rdap:asn:{asn}" if asn is not None else f"rdap:{address}",
            role="host",
            organisation=as_name or f"abuse contact of {address} (RDAP)",
            abuse_email=email,
            channel="email",
            webhook=None,
            send_window=None,
            source=f"RDAP {self.base_url}",
        )
