"""Run a Ray test module inside a loopback-only network namespace.

Ray 2.60 binds its servers to every interface and picks a non-loopback address whatever it is
told, so no test may start Ray in the machine's own network namespace. A Ray test module has:

- one *outer* test (``run_inner_tests``), which re-executes the module's inner tests with
  ``unshare -rn --pid --fork --mount-proc sh -c 'ip link set lo up && python -m pytest ...'``:
  a new user, network, PID and mount namespace. Its only interface is ``lo``, and when the
  inner pytest exits every process it started (raylets, workers, the GCS) dies with the
  namespace's PID 1. ``HOME`` and ``RAY_TMPDIR`` point at a short temporary directory (a unix
  socket path must stay under ~107 bytes), so nothing lands in ``~/.ray`` (where an
  ``auth_token`` would turn on Ray's token auth) or ``/tmp/ray``; it is removed afterwards.
- *inner* tests decorated with ``@inner``: skipped outside the namespace (the outer test runs
  them and fails unless every one of them passed), and ``assert_loopback_only()`` runs before
  Ray starts.

Where ``unshare`` (or Ray) is missing the outer test is skipped, unless
``TIPLINE_REQUIRE_RAY=1`` (CI), when it fails.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

#: set in the inner pytest's environment (the namespace)
INNER_ENV = "TIPLINE_RAY_NETNS_INNER"
REQUIRE_ENV = "TIPLINE_REQUIRE_RAY"
ROOT = Path(__file__).resolve().parents[1]

F = TypeVar("F", bound=Callable[..., Any])


def in_namespace() -> bool:
    return os.environ.get(INNER_ENV) == "1"


def inner(fn: F) -> F:
    """Mark an inner test: it runs only inside the namespace (see the module docstring)."""
    fn.__tipline_inner__ = True  # type: ignore[attr-defined]
    marked = pytest.mark.skipif(
        not in_namespace(), reason="runs inside the loopback-only namespace (the outer test)"
    )(fn)
    return marked  # type: ignore[no-any-return]


def interfaces() -> list[str]:
    """Network interfaces of this namespace, by two independent sources."""
    by_socket = sorted(name for _, name in socket.if_nameindex())
    with open("/proc/net/dev", encoding="ascii") as f:
        by_proc = sorted(line.split(":")[0].strip() for line in f.readlines()[2:])
    assert by_socket == by_proc, (by_socket, by_proc)
    return by_socket


def assert_loopback_only() -> None:
    """Fail unless this process sees only ``lo`` (and ``lo`` is up): call it before Ray."""
    assert in_namespace(), "Ray tests start Ray only inside the loopback-only namespace"
    assert interfaces() == ["lo"], f"network interfaces besides lo: {interfaces()}"
    assert os.environ.get("HOME", "").startswith(tempfile.gettempdir()), "HOME is not temporary"
    assert os.environ.get("RAY_TMPDIR"), "RAY_TMPDIR is not set"


def _unavailable() -> str | None:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return "unshare or ip (util-linux, iproute2) not found"
    try:
        import ray  # noqa: F401
    except ImportError:
        return "Ray is not installed (the tipline[ray] extra)"
    probe = subprocess.run(
        ["unshare", "-rn", "--pid", "--fork", "--mount-proc", "sh", "-c", "ip link set lo up"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if probe.returncode != 0:
        return f"cannot create a network namespace: {probe.stderr.strip()[:200]}"
    return None


def inner_tests(module: Any) -> list[str]:
    return sorted(
        name
        for name, fn in vars(module).items()
        if name.startswith("test_") and getattr(fn, "__tipline_inner__", False)
    )


def run_inner_tests(module: Any, timeout: float = 240) -> None:
    """The outer test's body: run ``module``'s inner tests in the namespace; every one must
    pass (none skipped, none missing)."""
    if in_namespace():
        pytest.skip("already inside the namespace")
    why = _unavailable()
    if why is not None:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but the Ray tests cannot run: {why}")
        pytest.skip(why)
    names = inner_tests(module)
    assert names, "no inner tests"
    path = Path(module.__file__)
    token = Path.home() / ".ray" / "auth_token"
    had_token = token.exists()
    home = Path(tempfile.mkdtemp(prefix="tr", dir=tempfile.gettempdir()))
    try:
        (home / "ray").mkdir()
        env = {
            **os.environ,
            INNER_ENV: "1",
            "HOME": str(home),
            "RAY_TMPDIR": str(home / "ray"),
            "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        selection = " or ".join(names)
        pytest_cmd = [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-rA",
            str(path),
            "-k",
            selection,
        ]
        script = "ip link set lo up && exec " + shlex.join(pytest_cmd)
        res = subprocess.run(
            ["unshare", "-rn", "--pid", "--fork", "--mount-proc", "sh", "-c", script],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        out = res.stdout + res.stderr
        passed = set(re.findall(r"^PASSED \S+::(\w+)", out, re.M))
        assert res.returncode == 0 and passed == set(names), (
            f"inner Ray tests (rc {res.returncode}; passed {sorted(passed)} of {names}):\n"
            + out[-8000:]
        )
        assert token.exists() == had_token, "the Ray tests touched ~/.ray/auth_token"
    finally:
        shutil.rmtree(home, ignore_errors=True)
