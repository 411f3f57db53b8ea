"""``tipline scan az://container/prefix`` against Azurite, Microsoft's Azure Storage emulator
(from the npm registry; ``make test`` installs it under ``.tools/``), on 127.0.0.1: the same
benign files as the S3 tests (tests/s3_server.py), the same records as the local scan.

Where Azurite is missing the test is skipped, unless ``TIPLINE_REQUIRE_AZURITE=1`` (CI)."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from s3_server import MAX_FILE_BYTES, OVERSIZE, TRUNCATED, ZIP, benign_files
from serve_process import free_port
from test_scan_s3 import data_dir, records, relative, scan

pytestmark = pytest.mark.slow

__all__ = ["data_dir"]  # the fixture, imported for pytest

ROOT = Path(__file__).resolve().parents[1]
AZURITE = ROOT / ".tools" / "node_modules" / ".bin" / "azurite-blob"
CONTAINER, PREFIX = "tipline-test", "reports"
#: Azurite's documented development account (a public, well-known emulator key)
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


@dataclass
class AzContainer:
    local: Path
    env: dict[str, str]
    keys: list[str]

    @property
    def uri(self) -> str:
        return f"az://{CONTAINER}/{PREFIX}"


@pytest.fixture(scope="module")
def az_container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzContainer]:
    if not AZURITE.exists():
        if os.environ.get("TIPLINE_REQUIRE_AZURITE") == "1":
            pytest.fail(f"{AZURITE} is missing (make test installs it)")
        pytest.skip("Azurite is not installed (make test installs it under .tools/)")
    pytest.importorskip("adlfs")
    home = tmp_path_factory.mktemp("az")
    port = free_port()
    proc = subprocess.Popen(
        [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location",
         str(home / "store"), "--silent", "--skipApiVersionCheck", "--loose"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}/{ACCOUNT}"
    conn = (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint={endpoint};"
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}?comp=list", timeout=2)  # loopback only
                break
            except urllib.error.HTTPError:
                break  # it answers (403 without a signature): up
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "no Azurite"
                time.sleep(0.2)
        from azure.storage.blob import BlobServiceClient

        container = BlobServiceClient.from_connection_string(conn).create_container(CONTAINER)
        local = home / PREFIX
        files = benign_files()
        for name, data in files.items():
            container.upload_blob(f"{PREFIX}/{name}", data)
            (local / name).parent.mkdir(parents=True, exist_ok=True)
            (local / name).write_bytes(data)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "AWS_"))}
        env["AZURE_STORAGE_CONNECTION_STRING"] = conn
        yield AzContainer(local, env, sorted(files))
    finally:
        proc.terminate()
        proc.wait(10)


def test_container_scan_equals_local_scan(
    az_container: AzContainer, data_dir: Path, tmp_path: Path
) -> None:
    limit = ["--max-file-bytes", str(MAX_FILE_BYTES), "--no-progress"]
    local_out, az_out = tmp_path / "local.jsonl", tmp_path / "az.jsonl"
    done_local = scan(data_dir, az_container.env, str(az_container.local), "-o", str(local_out),
                      *limit)  # fmt: skip
    done_az = scan(data_dir, az_container.env, az_container.uri, "-o", str(az_out), "-j", "2",
                   *limit)  # fmt: skip
    assert done_local.returncode == 2, done_local.stderr  # the truncated and oversize objects
    assert done_az.returncode == 2, done_az.stderr
    remote = relative(records(az_out), az_container.uri)
    assert remote == relative(records(local_out), str(az_container.local))
    raw = records(az_out)
    assert raw[f"{az_container.uri}/coffee.png"]["matches"][0]["label"] == "DEMO-benign-stand-in"
    assert f"{az_container.uri}/{ZIP}!noise-3.png" in raw  # the zip opened in place
    assert raw[f"{az_container.uri}/{TRUNCATED}"]["errors"]
    assert raw[f"{az_container.uri}/{OVERSIZE}"]["errors"]
    # a container that does not exist: its own error record saying so, exit 2, no traceback
    gone = f"az://no-such-container/{PREFIX}"
    missing = scan(data_dir, az_container.env, gone, "-o", str(tmp_path / "gone.jsonl"), *limit)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    (rec,) = records(tmp_path / "gone.jsonl").values()
    assert rec["path"] == gone and "no objects under it" in " ".join(rec["errors"])
