"""tipline.crawl.models: model links found on pages are streamed from a local server on
127.0.0.1 through the SSRF-safe fetcher into the hashers and header readers, never unpickled,
capped in size, and matched against model banks; Civitai-style pages yield the hashes they
print. Model files are built by the tests (tiny safetensors, GGUF, PyTorch zips)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import pickle
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from test_model_files import (
    FLUX_GGUF_KV,
    FLUX_TENSORS,
    KOHYA_META,
    Evil,
    _never_unpickle,  # noqa: F401  (autouse here too: any unpickling fails the test)
    gguf,
    safetensors,
    torch_like_pickle,
    torch_zip,
)
from tipline.banks.bank import Bank, Entry
from tipline.crawl.models import (
    DEFAULT_SIZE_CAP,
    analyse_model_stream,
    hash_model_stream,
    is_model_link,
    model_hashes_from_page,
    page_record,
)
from tipline.index.bank_index import BankIndex
from tipline.net.fetch import FetchSettings
from tipline.provenance.model_files import hash_model_stream as reference_hashes
from tipline.provenance.model_files import inspect_model

LORA = safetensors(
    {"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 320)}, KOHYA_META
)
#: over 2 MiB (AutoV1 is defined from there), with a small header at the start
BIG = safetensors({"model.diffusion_model.input_blocks.0.0.weight": (1200, 1000)}, seed=3)
GGUF_FILE = gguf(FLUX_GGUF_KV, FLUX_TENSORS)


class Site:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.chunked: set[str] = set()
        self.redirects: dict[str, str] = {}
        self.served: list[str] = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                site.served.append(path)
                if path in site.redirects:
                    self.send_response(302)
                    self.send_header("Location", site.redirects[path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = site.files.get(path)
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if path in site.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    try:
                        for i in range(0, len(body), 65536):
                            part = body[i : i + 65536]
                            self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                        self.wfile.write(b"0\r\n\r\n")
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # the client stopped reading at its cap
                    return
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    yield s
    s.server.shutdown()
    s.server.server_close()


LOCAL = FetchSettings.build(allow_networks=["127.0.0.1/32"])


# --------------------------------------------------------------------------- links


def test_model_links_are_told_by_their_path() -> None:
    for url in (
        "https://files.example/loras/landscape_v1.safetensors",
        "https://files.example/x/Model.SAFETENSORS?download=true#frag",
        "http://files.example/ckpt/model.ckpt",
        "https://files.example/llm/q4.gguf",
        "https://files.example/pytorch_model.bin",
        "https://files.example/a/b.pt",
        "https://files.example/a/b%2Esafetensors",
        "https://civitai.example/api/download/models/12345",
    ):
        assert is_model_link(url), url
    for url in (
        "https://files.example/guide.pdf",
        "https://files.example/model.safetensors.html",
        "https://files.example/page?file=model.safetensors",
        "javascript:alert('model.ckpt')",
        "file:///tmp/model.ckpt",
        "data:application/octet-stream,model.gguf",
        "model.ckpt",
        "https://files.example/api/download/models/",
        "http://[::1",
    ):
        assert not is_model_link(url), url


# --------------------------------------------------------------------------- streaming


def _reference(data: bytes) -> dict[str, object]:
    from tipline.provenance.model_files import read_safetensors_header

    start = read_safetensors_header(io.BytesIO(data), len(data)).tensor_start
    return reference_hashes(io.BytesIO(data), len(data), start).to_json()


@pytest.mark.parametrize("chunked", [False, True])
def test_a_lora_link_is_hashed_as_it_streams_like_a_scanned_file(site: Site, chunked: bool) -> None:
    site.files["/m/lora.safetensors"] = LORA
    if chunked:
        site.chunked.add("/m/lora.safetensors")
    found = hash_model_stream(site.url("/m/lora.safetensors"), LOCAL)
    assert found.error is None, found.error
    assert found.format == "safetensors" and found.size == len(LORA)
    assert found.hashes is not None and found.hashes.to_json() == _reference(LORA)
    assert found.hashes.sha256 == hashlib.sha256(LORA).hexdigest() == found.sha256
    assert (found.autov2, found.autov3) == (found.hashes.autov2, found.hashes.autov3)
    # the header readers say what a scan says about the same bytes
    scanned = inspect_model(io.BytesIO(LORA), len(LORA)).finding
    assert found.finding is not None
    assert found.finding.verdict == scanned.verdict == "model"
    assert found.finding.evidence["architecture"] == scanned.evidence["architecture"]
    assert found.finding.evidence["metadata"] == scanned.evidence["metadata"]
    assert found.warnings == []


def test_only_head_and_tail_are_kept_and_the_hashes_still_cover_every_byte() -> None:
    chunks = [BIG[i : i + 7777] for i in range(0, len(BIG), 7777)]
    found = analyse_model_stream(chunks, "x", head_bytes=64 << 10, tail_bytes=16 << 10)
    assert len(BIG) > 2 << 20 and found.hashes is not None
    assert found.hashes.to_json() == _reference(BIG)
    assert found.hashes.autov1 is not None  # the 1 MiB window was hashed in passing
    assert found.finding is not None and found.finding.verdict == "model"
    # a 1-byte first chunk: the safetensors length arrives in pieces
    found = analyse_model_stream([BIG[:1], BIG[1:5], BIG[5:]], "x")
    assert found.hashes is not None and found.hashes.to_json() == _reference(BIG)


def test_a_gguf_link(site: Site) -> None:
    site.files["/llm/model.gguf"] = GGUF_FILE
    found = hash_model_stream(site.url("/llm/model.gguf"), LOCAL)
    assert found.error is None and found.format == "gguf"
    assert found.finding is not None and found.finding.evidence["architecture"]["family"] == "Flux"
    assert found.hashes is not None and found.hashes.autov3 is None


def test_a_ckpt_with_a_code_running_pickle_is_never_unpickled(site: Site, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    site.files["/m/evil.ckpt"] = torch_zip(pickle.dumps(Evil(marker), protocol=2))
    site.files["/m/evil.pkl"] = pickle.dumps(Evil(marker), protocol=2)
    for path in ("/m/evil.ckpt", "/m/evil.pkl"):
        found = hash_model_stream(site.url(path), LOCAL)
        assert found.error is None and found.hashes is not None
        assert found.finding is not None
        assert any("system" in g for g in found.finding.evidence["dangerous_globals"]), path
    assert not marker.exists()


def test_a_big_ckpt_read_from_head_and_tail_says_what_it_could_not_see() -> None:
    names = [f"model.diffusion_model.input_blocks.{i}.0.weight" for i in range(3)]
    storage = np.zeros(600_000, np.float32).tobytes()  # 2.4 MB between head and tail
    data = torch_zip(torch_like_pickle(names), {"archive/data/1": storage})
    found = analyse_model_stream([data], "x", head_bytes=256 << 10, tail_bytes=64 << 10)
    assert found.hashes is not None and found.hashes.sha256 == hashlib.sha256(data).hexdigest()
    assert found.finding is not None and found.finding.verdict == "model"
    assert "torch._utils._rebuild_tensor_v2" in found.finding.evidence["globals"]
    assert any("not kept" in w for w in found.warnings)


def test_not_a_model_and_empty_answers(site: Site) -> None:
    site.files["/m/fake.safetensors"] = b"<html><body>not a model at all</body></html>"
    site.files["/m/empty.safetensors"] = b""
    found = hash_model_stream(site.url("/m/fake.safetensors"), LOCAL)
    assert found.format == "unknown" and any("not a model file" in w for w in found.warnings)
    assert found.finding is not None and found.finding.verdict == "error"
    found = hash_model_stream(site.url("/m/empty.safetensors"), LOCAL)
    assert found.error and found.error.startswith("empty_file")


# --------------------------------------------------------------------------- faults


def test_the_size_cap_refuses_before_reading_or_stops_reading(site: Site) -> None:
    assert DEFAULT_SIZE_CAP == 16 << 30
    site.files["/m/big.safetensors"] = BIG
    site.files["/m/big-chunked.safetensors"] = BIG
    site.chunked.add("/m/big-chunked.safetensors")
    found = hash_model_stream(site.url("/m/big.safetensors"), LOCAL, size_cap=1 << 20)
    assert found.error and found.error.startswith("too_large") and "declares" in found.error
    assert found.hashes is None and found.size == 0  # refused on Content-Length, unread
    found = hash_model_stream(site.url("/m/big-chunked.safetensors"), LOCAL, size_cap=1 << 20)
    assert found.error and found.error.startswith("too_large") and found.hashes is None
    assert found.size <= 1 << 20
    ok = hash_model_stream(site.url("/m/big.safetensors"), LOCAL, size_cap=len(BIG))
    assert ok.error is None


def test_refused_and_failed_fetches_are_item_errors(site: Site) -> None:
    site.redirects["/m/moved.safetensors"] = "http://10.0.0.1/m/x.safetensors"
    found = hash_model_stream(site.url("/m/moved.safetensors"), LOCAL)
    assert found.error and found.error.startswith("blocked_address"), found.error
    found = hash_model_stream(site.url("/m/missing.safetensors"), LOCAL)
    assert found.error and "404" in found.error
    # without the test allow-list, 127.0.0.1 itself is refused
    found = hash_model_stream(site.url("/m/missing.safetensors"))
    assert found.error and found.error.startswith("blocked_address")
    assert "/m/missing.safetensors" in site.served  # only the allowed fetch reached us


# --------------------------------------------------------------------------- banks


def test_a_streamed_model_matches_the_model_banks(site: Site) -> None:
    site.files["/m/lora.safetensors"] = LORA
    found = hash_model_stream(site.url("/m/lora.safetensors"), LOCAL)
    assert found.hashes is not None and found.hashes.autov3 is not None
    idx = BankIndex.build(
        [Bank("MODELS")],
        [
            Entry("MODELS", "autov3", found.hashes.autov3[:12], label="DEMO-lora", id=1),
            Entry("MODELS", "sha256", hashlib.sha256(BIG).hexdigest(), label="other", id=2),
        ],
    )
    [m] = idx.match(found.record())
    assert (m.entry_id, m.signal_type, m.label) == (1, "autov3", "DEMO-lora")
    assert idx.match(analyse_model_stream([GGUF_FILE]).record()) == []


CIVITAI_PAGE = """<!DOCTYPE html><html><head><title>Landscape LoRA v1</title></head><body>
<h1>Landscape LoRA</h1>
<table class="file-details">
<tr><td>AutoV2</td><td><code>{autov2}</code></td></tr>
<tr><td>SHA256</td><td><button title="copy">{sha256}</button></td></tr>
<tr><td>AutoV3</td><td>{autov3}</td></tr>
<tr><td>CRC32</td><td>1A2B3C4D</td></tr>
<tr><td>AutoV2</td><td>not-a-hash</td></tr>
</table>
<script id="__NEXT_DATA__" type="application/json">
{{"files": [{{"name": "second.safetensors", "hashes": {{"AutoV1": "{autov1}",
 "SHA256": "{other}", "AutoV2": "0123"}}}}]}}
</script></body></html>"""


def test_a_model_page_yields_the_hashes_it_prints_and_they_match() -> None:
    sha = hashlib.sha256(LORA).hexdigest()
    other = hashlib.sha256(BIG).hexdigest()
    page = CIVITAI_PAGE.format(
        autov2=sha[:10].upper(), sha256=sha.upper(), autov3="ab" * 6, autov1="cd" * 4, other=other
    )
    got = [(h.algorithm, h.value) for h in model_hashes_from_page(page.encode())]
    assert got == [
        ("autov2", sha[:10]),
        ("sha256", sha),
        ("autov3", "ab" * 6),
        ("autov1", "cd" * 4),
        ("sha256", other),
    ]
    # a bank holding only the full SHA-256 is found from the page's AutoV2 prefix too
    idx = BankIndex.build(
        [Bank("MODELS")],
        [
            Entry("MODELS", "sha256", sha, label="DEMO-lora", id=1),
            Entry("MODELS", "autov1", "cd" * 4, label="DEMO-ckpt", id=2),
            Entry("MODELS", "sha256", "ee" * 32, label="unrelated", id=3),
        ],
    )
    rec = page_record("http://127.0.0.1/models/1", model_hashes_from_page(page))
    matches = {m.entry_id: m.via for m in idx.match(rec)}
    assert matches == {1: "cited_resource", 2: "cited_resource"}
    assert model_hashes_from_page("<p>SHA256: nothing here</p>") == []
    assert model_hashes_from_page(b"\xff\xfe garbage <<<") == []


@settings(max_examples=40, deadline=None)
@given(
    hst.lists(hst.integers(1, 400_000), min_size=1, max_size=30),
    hst.sampled_from([0, 1]),
)
def test_any_chunking_gives_the_hashes_of_the_whole_file(cuts: list[int], which: int) -> None:
    data = (BIG, LORA)[which]
    chunks, pos = [], 0
    for n in cuts:
        chunks.append(data[pos : pos + n])
        pos += n
    chunks.append(data[pos:])
    found = analyse_model_stream(chunks, "x", head_bytes=1 << 20, tail_bytes=1 << 16)
    assert found.hashes is not None and found.hashes.to_json() == _reference(data)


@settings(max_examples=100, deadline=None)
@given(hst.binary(max_size=3000))
def test_random_bytes_as_a_model_never_raise(data: bytes) -> None:
    found = analyse_model_stream([data[:7], data[7:]], "x")
    assert (found.hashes is None) == (not data)
    assert found.error is None or found.error.startswith("empty_file")
