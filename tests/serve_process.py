"""A real ``tipline serve`` in a subprocess on 127.0.0.1, for the tests that talk to one over
HTTP (the HMA replay, exchanges between instances, the browser tests)."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tipline_exe() -> str:
    return shutil.which("tipline", path=str(Path(sys.executable).parent)) or "tipline"


def start_serve(
    env: Mapping[str, str],
    log_path: Path,
    *,
    ready_path: str = "/status",
    timeout: float = 60.0,
) -> tuple[str, subprocess.Popen[bytes]]:
    """Start ``tipline serve`` on a free port, its output to ``log_path``; returns its base URL
    and process once ``ready_path`` answers 200 (``/readyz`` also waits for the index)."""
    port = free_port()
    with open(log_path, "wb") as log_file:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [tipline_exe(), "serve", "--port", str(port)],
            env=dict(env),
            stdout=log_file,
            stderr=log_file,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + ready_path, timeout=2).status_code == 200:
                return url, proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_serve(proc)
            what = "exited" if proc.returncode is not None else "did not become ready"
            raise RuntimeError(f"tipline serve {what}: " + log_path.read_text()[-2000:])
        time.sleep(0.1)


def stop_serve(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(15)


@contextlib.contextmanager
def running_serve(
    env: Mapping[str, str], log_path: Path, *, ready_path: str = "/status", timeout: float = 60.0
) -> Iterator[str]:
    """``start_serve`` for a ``with`` block: the base URL, the process stopped on the way out."""
    url, proc = start_serve(env, log_path, ready_path=ready_path, timeout=timeout)
    try:
        yield url
    finally:
        stop_serve(proc)
