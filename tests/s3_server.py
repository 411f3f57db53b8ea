"""A real S3-compatible server for the object-storage tests: moto's, on 127.0.0.1.

``s3_bucket`` (module scope) starts ``moto.server.ThreadedMotoServer`` on a free loopback
port, creates an IAM user and key on it, then turns on moto's request authentication, so a
wrong key is refused by the server as AWS would. It fills bucket ``tipline-test`` under
``reports/`` with benign generated files (the same bytes are also written to a local folder,
for comparison): PNG/JPEG photographs from scikit-image and noise images, a zip of two, the
demo's generated shapes clip (a video), a truncated JPEG and an object over the tests'
--max-file-bytes.

Only the environment of the commands the tests run points at the server
(:attr:`S3Bucket.env`): dummy region, the generated key, ``AWS_ENDPOINT_URL`` on 127.0.0.1,
``AWS_EC2_METADATA_DISABLED`` and no config files, so botocore never looks anywhere else.
"""

from __future__ import annotations

import json
import os
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from conftest import encode, noise_image, photo
from serve_process import free_port

BUCKET = "tipline-test"
PREFIX = "reports"
#: --max-file-bytes the tests scan with: OVERSIZE is over it, everything else under.
MAX_FILE_BYTES = 1_000_000
OVERSIZE = "big.bin"
TRUNCATED = "broken/truncated.jpg"
ZIP = "pack.zip"
VIDEO = "clips/shapes.mp4"


@dataclass
class S3Bucket:
    endpoint: str
    local: Path  # the same files as the bucket's prefix
    env: dict[str, str]
    keys: list[str] = field(default_factory=list)  # relative to PREFIX

    @property
    def uri(self) -> str:
        return f"s3://{BUCKET}/{PREFIX}"


def benign_files() -> dict[str, bytes]:
    """Relative name -> bytes: the bucket's content (all generated, all benign)."""
    files = {
        "coffee.png": encode(photo("coffee", (320, 213)), "PNG"),
        "rocket.jpg": encode(photo("rocket", (300, 200)), "JPEG", quality=85),
        "sub/noise-1.jpg": encode(noise_image(1), "JPEG", quality=90),
        "sub/deeper/noise-2.png": encode(noise_image(2), "PNG"),
    }
    buf = _zip(
        {
            "inner/chelsea.jpg": encode(photo("chelsea", (240, 160)), "JPEG"),
            "noise-3.png": encode(noise_image(3), "PNG"),
        }
    )
    files[ZIP] = buf
    whole = encode(photo("astronaut", (256, 256)), "JPEG", quality=90)
    files[TRUNCATED] = whole[: len(whole) // 3]
    import tempfile

    from tipline.demo.clips import build_clips

    with tempfile.TemporaryDirectory() as d:  # the demo's own generated shapes clip
        build_clips(Path(d), size=(160, 120), seconds=3.0, kinds=("shapes",))
        files[VIDEO] = (Path(d) / "shapes.mp4").read_bytes()
    rng = np.random.default_rng(7)
    files[OVERSIZE] = rng.integers(0, 256, MAX_FILE_BYTES + 4096, dtype=np.uint8).tobytes()
    return files


def _zip(members: dict[str, bytes]) -> bytes:
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _aws_env(endpoint: str, key: str, secret: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=key,
        AWS_SECRET_ACCESS_KEY=secret,
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL=endpoint,
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=str(home / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(home / "no-aws-credentials"),
    )
    return env


@pytest.fixture(scope="module")
def s3_bucket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Bucket]:
    import boto3
    from moto.server import ThreadedMotoServer

    home = tmp_path_factory.mktemp("s3")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    try:
        boot = _aws_env(endpoint, "bootstrap", "bootstrap", home)
        with pytest.MonkeyPatch.context() as mp:
            for k in [k for k in os.environ if k.startswith("AWS_")]:
                mp.delenv(k)
            for k, v in boot.items():
                if k.startswith("AWS_"):
                    mp.setenv(k, v)
            iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1")
            iam.create_user(UserName="scanner")
            iam.put_user_policy(
                UserName="scanner",
                PolicyName="all",
                PolicyDocument=json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}],
                    }
                ),
            )
            made = iam.create_access_key(UserName="scanner")["AccessKey"]
            key, secret = made["AccessKeyId"], made["SecretAccessKey"]
            s3 = boto3.client(
                "s3",
                endpoint_url=endpoint,
                region_name="us-east-1",
                aws_access_key_id=key,
                aws_secret_access_key=secret,
            )
            s3.create_bucket(Bucket=BUCKET)
            local = home / PREFIX
            files = benign_files()
            for name, data in files.items():
                s3.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{name}", Body=data)
                (local / name).parent.mkdir(parents=True, exist_ok=True)
                (local / name).write_bytes(data)
            # from here on moto checks every request's key and signature
            req = urllib.request.Request(
                f"{endpoint}/moto-api/reset-auth",
                b"0",
                headers={"Content-Type": "text/plain"},
                method="POST",
            )
            with urllib.request.urlopen(req, timeout=10) as resp:  # loopback only
                assert resp.status == 200
        yield S3Bucket(endpoint, local, _aws_env(endpoint, key, secret, home), sorted(files))
    finally:
        server.stop()
        from moto import settings

        settings.INITIAL_NO_AUTH_ACTION_COUNT = float("inf")  # process-wide: back to moto's default
