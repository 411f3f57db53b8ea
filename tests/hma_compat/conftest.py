"""One ``tipline serve`` per session, on 127.0.0.1, for the HMA replay.

HMA's tests (``hasher-matcher-actioner/src/OpenMediaMatch/tests``, HMA 1.1.7) run against a
Flask test client with every role on and the tables reset before each test. Here the same
scenarios go over HTTP to a real ``tipline serve`` subprocess with HMA's unauthenticated calls
allowed (``anonymous_permissions``) and the test image server allow-listed for URL fetches;
``reset`` empties the banks before each test in place of HMA's ``reset_tables``. Content ids
therefore do not restart at 1: tests compare ids with each other, not with HMA's literals.

The images are HMA's (``tests/utils.py``: 128x128 checkerboards with 8 and 16 pixel cells,
saved as JPEG), drawn here by our own code; their expected PDQ is the reference hash
(``pdqhash`` on the decoded RGB pixels, which is what python-threatexchange's
``PdqSignal.hash_from_file`` computes).
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import numpy as np
import pdqhash
import pytest
from PIL import Image

from serve_process import running_serve

ALL_PERMS = "match:read,hash:read,index:read,bank:read,bank:write"
#: The server's URL fetch limit (HMA's MAX_REMOTE_FILE_SIZE, smaller).
FETCH_MAX_BYTES = 4_000_000


def make_checkerboard(cell: int, size: int = 128) -> Image.Image:
    """A black-and-white checkerboard (HMA's test image): white where the cell indexes sum
    to an odd number."""
    y, x = np.mgrid[0:size, 0:size]
    white = ((x // cell + y // cell) % 2).astype(bool)
    pixels = np.where(white[..., None], 255, 0).astype(np.uint8).repeat(3, axis=2)
    return Image.fromarray(pixels, "RGB")


def jpeg(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="JPEG")  # Pillow's defaults, as HMA's tests
    return out.getvalue()


def reference_pdq(data: bytes) -> str:
    """The reference PDQ of an image file, as hex (python-threatexchange's rule)."""
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    bits, _quality = pdqhash.compute(rgb)
    return f"{int(''.join(str(int(b)) for b in bits), 2):064x}"


@dataclass
class Images:
    """The image server: ``url(name)``; ``pdq[name]``: the reference hash of each image."""

    base: str
    files: dict[str, tuple[str, bytes]]
    pdq: dict[str, str] = field(default_factory=dict)

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"


class _Handler(BaseHTTPRequestHandler):
    files: ClassVar[dict[str, tuple[str, bytes]]] = {}

    def do_GET(self) -> None:
        name = self.path.split("?", 1)[0].split("#", 1)[0].lstrip("/")
        if name == "huge.jpg":  # declares more than any fetch limit allows
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(200 * 1024 * 1024))
            self.end_headers()
            self.wfile.write(b"\xff\xd8" * 16)
            return
        found = self.files.get(name)
        if found is None:
            self.send_error(404)
            return
        ctype, body = found
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def images() -> Iterator[Images]:
    files = {
        "image1.jpg": ("image/jpeg", jpeg(make_checkerboard(8))),
        "image2.jpg": ("image/jpeg", jpeg(make_checkerboard(16))),
        "note.txt": ("text/plain", b"a neutral note: bluebird, teapot-42\n"),
    }
    _Handler.files = files
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        imgs = Images(f"http://127.0.0.1:{srv.server_address[1]}", files)
        for name, (ctype, body) in files.items():
            if ctype.startswith("image/"):
                imgs.pdq[name] = reference_pdq(body)
        yield imgs
    finally:
        srv.shutdown()
        srv.server_close()


def serve_env(data: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIPLINE_")}
    env.update(
        TIPLINE_DATA_DIR=str(data),
        TIPLINE_ANONYMOUS_PERMISSIONS=ALL_PERMS,
        TIPLINE_FETCH_ALLOW_NETWORKS="127.0.0.1/32",
        TIPLINE_FETCH_MAX_BYTES=str(FETCH_MAX_BYTES),
        TIPLINE_INPROCESS_WORKERS="0",
        TIPLINE_MEDIA_MODE="hash-only",
        TIPLINE_JSON_LOGS="false",
        TIPLINE_LOG_LEVEL="warning",
    )
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a ``tipline serve`` started for this session."""
    data = tmp_path_factory.mktemp("hma-serve")
    with running_serve(serve_env(data), data / "serve.log") as url:
        yield url


@pytest.fixture(scope="session")
def http(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=30) as c:
        yield c


@pytest.fixture
def client(http: httpx.Client) -> httpx.Client:
    """The HTTP client, every bank deleted first (HMA's tests start from empty tables)."""
    for bank in http.get("/c/banks").json():
        assert http.delete(f"/c/bank/{bank['name']}").status_code == 200
    return http


def create_bank(client: httpx.Client, name: str) -> None:
    """HMA's ``tests/utils.py create_bank``."""
    r = client.post("/c/banks", json={"name": name})
    assert r.status_code == 201, r.text
    assert r.json() == {"matching_enabled_ratio": 1.0, "name": name}


def add_hash_to_bank(client: httpx.Client, bank: str, images: Images, name: str) -> int:
    """HMA's ``tests/utils.py add_hash_to_bank``: add an image by URL, the answer is the new
    content id and the image's reference PDQ. Returns the id."""
    r = client.post(
        f"/c/bank/{bank}/content", params={"url": images.url(name), "content_type": "photo"}
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body == {"id": body["id"], "signals": {"pdq": images.pdq[name]}}
    return int(body["id"])
