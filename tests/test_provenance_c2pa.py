"""C2PA reading: fixtures signed here with c2pa-python's Builder and a throwaway test CA.

The certificates and keys are generated per test session (cryptography, ES256) and never
written to the repository. The images are procedural gradients. The remote-manifest tests use a
listening socket on 127.0.0.1 to prove that nothing is fetched unless the settings ask for it.
"""

from __future__ import annotations

import datetime as dt
import io
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

c2pa = pytest.importorskip("c2pa")

from tipline.findings import ai_evidence  # noqa: E402
from tipline.media.sniff import JPEG, PNG, WEBP, MediaType  # noqa: E402
from tipline.provenance import c2pa as reader  # noqa: E402

DST = "http://cv.iptc.org/newscodes/digitalsourcetype/"
FORMATS = [("JPEG", JPEG), ("PNG", PNG), ("WEBP", WEBP)]


@dataclass
class CertChain:
    chain_pem: bytes  # signer certificate, then the CA
    key_pem: bytes
    ca_pem: bytes


@pytest.fixture(scope="module")
def test_ca() -> CertChain:
    """An ES256 CA and signer shaped as C2PA requires: v3, not self-signed, digitalSignature
    key usage and an accepted extended key usage (emailProtection), AKI/SKI present."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COMMON_NAME, cn),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tipline TEST-ONLY"),
            ]
        )

    def usage(sign: bool, ca: bool) -> x509.KeyUsage:
        return x509.KeyUsage(
            digital_signature=sign,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=ca,
            crl_sign=ca,
            encipher_only=False,
            decipher_only=False,
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(name("Tipline TEST-ONLY root"))
        .issuer_name(name("Tipline TEST-ONLY root"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(usage(sign=False, ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("Tipline TEST-ONLY signer"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage(sign=True, ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return CertChain(
        chain_pem=cert.public_bytes(pem) + ca_cert.public_bytes(pem),
        key_pem=key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        ca_pem=ca_cert.public_bytes(pem),
    )


def gradient(fmt: str, seed: int = 0, size: tuple[int, int] = (192, 128)) -> bytes:
    w, h = size
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = (x / w)[..., None]
    arr = np.clip(c0 + t * (c1 - c0) + 0 * y[..., None], 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt)
    return buf.getvalue()


def manifest(actions: list[dict[str, Any]], generator: str = "TestGen") -> dict[str, Any]:
    return {
        "claim_generator_info": [{"name": generator, "version": "1.0"}],
        "title": "benign-gradient",
        "assertions": [{"label": "c2pa.actions.v2", "data": {"actions": actions}}],
    }


def sign(
    ca: CertChain,
    asset: bytes,
    mt: MediaType,
    definition: dict[str, Any],
    ingredient: bytes | None = None,
    remote_url: str | None = None,
) -> bytes:
    signer = c2pa.Signer.from_info(
        c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, ca.chain_pem, ca.key_pem, None)
    )
    ctx = c2pa.Context.from_dict(
        {
            "verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
            "builder": {"thumbnail": {"enabled": False}},
        }
    )
    builder = c2pa.Builder(definition, context=ctx)
    if ingredient is not None:
        builder.add_ingredient(
            {"title": "part.jpg", "relationship": "componentOf", "label": "ai-part"},
            "image/jpeg",
            io.BytesIO(ingredient),
        )
    if remote_url is not None:
        builder.set_no_embed()
        builder.set_remote_url(remote_url)
    out = io.BytesIO()
    builder.sign(signer, mt.mime, io.BytesIO(asset), out)
    return out.getvalue()


AI_CREATED = [
    {
        "action": "c2pa.created",
        "digitalSourceType": DST + "trainedAlgorithmicMedia",
        "softwareAgent": {"name": "TestDiffusion", "version": "2"},
    }
]


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "mt"), FORMATS)
def test_ai_generated_manifest_in_each_container(
    test_ca: CertChain, fmt: str, mt: MediaType
) -> None:
    data = sign(test_ca, gradient(fmt), mt, manifest(AI_CREATED))
    assert reader.presence(data, mt) == "embedded"
    [f] = reader.read_c2pa(data, mt)
    assert f.signal == "c2pa"
    assert f.verdict == "ai_generated"
    assert f.generator == "TestDiffusion 2"
    ev = f.evidence
    assert ev["digital_source_types"] == ["trainedAlgorithmicMedia"]
    assert ev["actions"][0]["action"] == "c2pa.created"
    assert ev["claim_generator"] == "TestGen 1.0"
    assert ev["signature"]["issuer"] == "Tipline TEST-ONLY"
    assert ev["signature"]["alg"]
    # No trust anchors configured: intact and signed, but by nobody we trust.
    assert ev["validation_state"] == "Valid"
    assert ev["trusted"] is False
    assert "signingCredential.untrusted" in ev["validation_failures"]
    assert ev["manifest"] == "embedded"
    assert ev["ingredients"] == 0
    assert f.confidence == pytest.approx(0.9)
    assert ai_evidence([f]) == "strong"
    # The signer's name and the title are free text: only with --include-text.
    assert "text" not in f.to_json()["evidence"]
    assert f.to_json(include_text=True)["evidence"]["text"]["signer_common_name"]


def test_configured_trust_anchor_makes_it_trusted(test_ca: CertChain, tmp_path: Path) -> None:
    data = sign(test_ca, gradient("JPEG"), JPEG, manifest(AI_CREATED))
    anchors = tmp_path / "anchors.pem"
    anchors.write_bytes(test_ca.ca_pem)
    [f] = reader.read_c2pa(data, JPEG, reader.C2paSettings(trust_anchors=anchors))
    assert f.evidence["validation_state"] == "Trusted"
    assert f.evidence["trusted"] is True
    assert f.confidence == pytest.approx(0.99)


@pytest.mark.parametrize(("fmt", "mt"), FORMATS[:2])
def test_digital_capture_is_not_ai(test_ca: CertChain, fmt: str, mt: MediaType) -> None:
    actions = [{"action": "c2pa.created", "digitalSourceType": DST + "digitalCapture"}]
    data = sign(test_ca, gradient(fmt, 1), mt, manifest(actions, generator="TestCamera"))
    [f] = reader.read_c2pa(data, mt)
    assert f.verdict == "not_ai"
    assert f.generator == "TestCamera 1.0"
    assert ai_evidence([f]) == "none"


def test_composite_with_ai_ingredient_is_ai_edited(test_ca: CertChain) -> None:
    part = sign(test_ca, gradient("JPEG", 2), JPEG, manifest(AI_CREATED))
    actions = [
        {
            "action": "c2pa.created",
            "digitalSourceType": DST + "compositeWithTrainedAlgorithmicMedia",
        },
        {"action": "c2pa.placed", "parameters": {"ingredientIds": ["ai-part"]}},
    ]
    data = sign(test_ca, gradient("PNG", 3), PNG, manifest(actions, generator="TestEditor"), part)
    [f] = reader.read_c2pa(data, PNG)
    assert f.verdict == "ai_edited"
    assert f.evidence["ingredients"] == 1
    assert f.evidence["manifests"] == 2
    assert len(f.evidence["ai_ingredient_manifests"]) == 1
    assert f.generator == "TestEditor 1.0"


def test_ai_ingredient_alone_makes_an_ai_edit(test_ca: CertChain) -> None:
    part = sign(test_ca, gradient("JPEG", 4), JPEG, manifest(AI_CREATED))
    actions = [
        {"action": "c2pa.created", "digitalSourceType": DST + "digitalArt"},
        {"action": "c2pa.placed", "parameters": {"ingredientIds": ["ai-part"]}},
    ]
    data = sign(test_ca, gradient("JPEG", 5), JPEG, manifest(actions), part)
    [f] = reader.read_c2pa(data, JPEG)
    assert f.verdict == "ai_edited"


def test_content_changed_after_signing_is_invalid_and_weak(test_ca: CertChain) -> None:
    data = bytearray(sign(test_ca, gradient("JPEG", 6), JPEG, manifest(AI_CREATED)))
    data[-64] ^= 0xFF  # inside the entropy-coded pixels, covered by the data hash
    [f] = reader.read_c2pa(bytes(data), JPEG)
    assert f.verdict == "ai_generated"
    assert f.evidence["validation_state"] == "Invalid"
    assert "assertion.dataHash.mismatch" in f.evidence["validation_failures"]
    assert f.confidence == pytest.approx(0.5)
    assert ai_evidence([f]) == "weak"


@pytest.mark.parametrize(("fmt", "mt"), FORMATS)
def test_files_without_c2pa_never_reach_the_library(
    monkeypatch: pytest.MonkeyPatch, fmt: str, mt: MediaType
) -> None:
    def boom(*a: object, **k: object) -> None:
        raise AssertionError("the c2pa library was called for a file without C2PA")

    monkeypatch.setattr(c2pa.Reader, "try_create", boom)
    data = gradient(fmt, 7)
    assert reader.presence(data, mt) is None
    assert reader.read_c2pa(data, mt) == []


def test_broken_manifest_is_an_error_finding_not_an_exception(test_ca: CertChain) -> None:
    data = bytearray(sign(test_ca, gradient("PNG", 8), PNG, manifest(AI_CREATED)))
    i = data.index(b"caBX") + 4
    data[i + 40 : i + 400] = bytes(360)  # zero the middle of the JUMBF superbox
    [f] = reader.read_c2pa(bytes(data), PNG)
    assert f.verdict == "error"
    assert f.error
    assert f.confidence == 0.0


def test_truncated_headers_do_not_raise() -> None:
    for data, mt in [
        (b"\xff\xd8\xff\xeb\x00", JPEG),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x10caBX", PNG),
        (b"RIFF\x10\x00\x00\x00WEBPC2PA", WEBP),
    ]:
        out = reader.read_c2pa(data, mt)
        assert all(f.verdict in ("error", "unknown", "ai_generated") for f in out)


# ---------------------------------------------------------------------------------------------
# Privacy: nothing is fetched unless the user turned it on


def test_default_settings_turn_fetching_off() -> None:
    cfg = reader.C2paSettings().context_config()
    assert cfg["verify"] == {"remote_manifest_fetch": False, "ocsp_fetch": False}


def test_reader_is_built_with_fetching_off(
    monkeypatch: pytest.MonkeyPatch, test_ca: CertChain
) -> None:
    seen: list[dict[str, Any]] = []
    real = c2pa.Context.from_dict

    def spy(config: dict[str, Any], *a: Any, **k: Any) -> Any:
        seen.append(config)
        return real(config, *a, **k)

    reader._context.cache_clear()
    monkeypatch.setattr(c2pa.Context, "from_dict", spy)
    data = sign(test_ca, gradient("JPEG", 9), JPEG, manifest(AI_CREATED))
    seen.clear()
    reader.read_c2pa(data, JPEG)
    reader._context.cache_clear()
    assert seen and seen[-1]["verify"]["remote_manifest_fetch"] is False
    assert seen[-1]["verify"]["ocsp_fetch"] is False


@pytest.fixture
def listener() -> Iterator[tuple[str, list[bytes]]]:
    """A local HTTP 'manifest server' that records every connection it gets."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    srv.settimeout(0.2)
    hits: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    hits.append(conn.recv(4096))
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.getsockname()[1]}/manifest.c2pa", hits
    finally:
        stop.set()
        t.join(2)
        srv.close()


@pytest.mark.parametrize(("fmt", "mt"), FORMATS)
def test_remote_manifest_is_reported_not_fetched(
    monkeypatch: pytest.MonkeyPatch,
    test_ca: CertChain,
    listener: tuple[str, list[bytes]],
    fmt: str,
    mt: MediaType,
) -> None:
    url, hits = listener
    data = sign(test_ca, gradient(fmt, 10), mt, manifest(AI_CREATED), remote_url=url)
    assert reader.presence(data, mt) == "remote"

    def no_network(*a: object, **k: object) -> None:
        raise AssertionError("reading C2PA opened a Python socket")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)
    [f] = reader.read_c2pa(data, mt)
    assert f.verdict == "unknown"
    assert f.evidence["manifest"] == "remote"
    assert f.evidence["remote_manifest_url"] == url
    assert f.evidence["fetched"] is False
    # The library itself (native code, not Python sockets) was not asked either: even handed
    # the file with the same settings it refuses instead of fetching.
    with pytest.raises(c2pa.C2paError):
        c2pa.Reader.try_create(
            mt.mime, io.BytesIO(data), None, reader._context(reader.C2paSettings())
        )
    assert hits == []


def test_the_listener_would_see_a_fetch(
    test_ca: CertChain, listener: tuple[str, list[bytes]]
) -> None:
    """Control: with fetching on, the library does contact the URL, so the test above would
    catch a fetch; and the user's explicit opt-in is honoured."""
    url, hits = listener
    data = sign(test_ca, gradient("JPEG", 11), JPEG, manifest(AI_CREATED), remote_url=url)
    opted_in = reader.C2paSettings(remote_manifest_fetch=True)
    [f] = reader.read_c2pa(data, JPEG, opted_in)
    assert f.verdict == "error"  # the local server answers 404
    assert len(hits) == 1 and hits[0].startswith(b"GET /manifest.c2pa")


# ---------------------------------------------------------------------------------------------
# Interpretation rules


@pytest.mark.parametrize(
    ("action", "term", "verdict"),
    [
        ("c2pa.created", "trainedAlgorithmicMedia", "ai_generated"),
        ("c2pa.created", "algorithmicMedia", "ai_generated"),
        ("c2pa.created", "compositeWithTrainedAlgorithmicMedia", "ai_edited"),
        ("c2pa.created", "compositeSynthetic", "ai_edited"),
        ("c2pa.edited", "trainedAlgorithmicMedia", "ai_edited"),
        ("c2pa.created", "digitalCapture", "not_ai"),
        ("c2pa.created", "computationalCapture", "not_ai"),
        ("c2pa.created", "compositeCapture", "not_ai"),
        ("c2pa.created", "digitalArt", "unknown"),
        ("c2pa.created", "composite", "unknown"),
        ("c2pa.edited", None, "unknown"),
    ],
)
def test_digital_source_type_mapping(action: str, term: str | None, verdict: str) -> None:
    a: dict[str, Any] = {"action": action}
    if term:
        a["digitalSourceType"] = DST + term
    store = {
        "active_manifest": "m",
        "manifests": {"m": {"assertions": [{"label": "c2pa.actions", "data": {"actions": [a]}}]}},
        "validation_state": "Valid",
    }
    assert reader.finding_from_store(store).verdict == verdict


def test_iptc_assertion_and_string_agents() -> None:
    store = {
        "active_manifest": "m",
        "manifests": {
            "m": {
                "claim_generator": "OldTool/1.0",
                "assertions": [
                    {
                        "label": "stds.iptc.photo-metadata",
                        "data": {"Iptc4xmpExt:DigitalSourceType": DST + "trainedAlgorithmicMedia"},
                    }
                ],
            }
        },
    }
    f = reader.finding_from_store(store)
    assert f.verdict == "ai_generated"
    assert f.generator == "OldTool/1.0"
    assert f.evidence["validation_state"] == "Valid"


def test_xmp_link_forms() -> None:
    assert reader.remote_manifest_url(b'<x dcterms:provenance="https://a.example/m.c2pa"/>') == (
        "https://a.example/m.c2pa"
    )
    assert reader.remote_manifest_url(
        b"<dcterms:provenance>https://a.example/n</dcterms:provenance>"
    ) == ("https://a.example/n")
    assert reader.remote_manifest_url(b"nothing here") is None
