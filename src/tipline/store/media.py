"""Media at rest: keep no bytes (``hash-only``) or keep them encrypted (``encrypted``).

Encrypted blobs live under ``<data_dir>/media/<ab>/<ref>.blob``; ``ref`` is a random 128-bit
hex id (never the content hash, so file names reveal nothing). Each blob is::

    b"TLM1" | created (u64 big-endian Unix seconds) | key id (8 bytes) | nonce (12 bytes) |
    AES-256-GCM ciphertext + tag

The 32-byte header and the ref are authenticated as associated data, so a blob cannot be moved
to another ref or have its date changed without failing to decrypt. The key id (the first 8
bytes of SHA-256 of the key) says which key encrypted the blob, so keys can rotate: the key
file holds one base64 key per line, the last line is the active key and earlier lines still
decrypt older blobs; ``TIPLINE_MEDIA_KEY`` (base64, several separated by commas, the last
active) overrides the file's active key. ``tipline media rotate-key`` adds a new key and
re-encrypts every blob to it; old keys can then be dropped (``--drop-old``).

Retention: blobs older than ``retention_days`` are deleted by
:func:`tipline.actions.retention.purge` (``tipline media purge``); every purge is an audit event
(``media.purge``) and clears the items' ``media_ref``. Bytes leave the store only through
:func:`tipline.service.media.view_media`, which needs the ``media:view`` permission and writes a
``media.view`` audit event first.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import secrets
import struct
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tipline.errors import TiplineError

log = logging.getLogger("tipline.media")

MAGIC = b"TLM1"
_HEADER = struct.Struct(">4sQ8s12s")
HEADER_SIZE = _HEADER.size  # 32
KEY_ENV = "TIPLINE_MEDIA_KEY"
_REF_RE = re.compile(r"^[0-9a-f]{32}$")


class MediaError(TiplineError):
    """A media store problem: missing or bad key, unreadable or tampered blob."""


class MediaNotFound(MediaError):
    """No bytes for this ref (never stored, hash-only mode, or purged)."""


# --------------------------------------------------------------------------------------------
# Keys


def key_id(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()[:8]


def _decode_key(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise MediaError(f"{where}: not valid base64") from None
    if len(key) != 32:
        raise MediaError(f"{where}: a media key must be 32 bytes (AES-256), got {len(key)}")
    return key


@dataclass
class Keyring:
    """Keys by id; ``active`` encrypts, every key decrypts."""

    keys: dict[bytes, bytes] = field(default_factory=dict)
    active: bytes | None = None

    def add(self, key: bytes, *, make_active: bool = True) -> bytes:
        kid = key_id(key)
        self.keys[kid] = key
        if make_active:
            self.active = kid
        return kid

    def active_key(self) -> tuple[bytes, bytes]:
        if self.active is None:
            raise MediaError(
                "no media key: run `tipline media keygen` or set TIPLINE_MEDIA_KEY "
                "(or use media_mode = hash-only)"
            )
        return self.active, self.keys[self.active]

    @classmethod
    def load(cls, key_file: Path | None, env: Mapping[str, str] | None = None) -> Keyring:
        env = os.environ if env is None else env
        ring = cls()
        if key_file is not None and key_file.exists():
            for n, line in enumerate(read_key_lines(key_file), 1):
                ring.add(_decode_key(line, f"{key_file} line {n}"))
        env_value = env.get(KEY_ENV, "")
        for n, part in enumerate(p for p in env_value.split(",") if p.strip()):
            ring.add(_decode_key(part, f"{KEY_ENV} key {n + 1}"))
        return ring


def read_key_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as err:
        raise MediaError(f"cannot read media key file {path}: {err}") from None
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def add_key_to_file(path: Path, *, create_only: bool = False) -> bytes:
    """Append a fresh key to ``path`` (created with mode 0600) and make it active; returns its
    id. With ``create_only`` an existing file is an error."""
    if create_only and path.exists():
        raise MediaError(f"{path} already exists (use `tipline media rotate-key` to add a key)")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = new_key()
    lines = read_key_lines(path) if path.exists() else []
    lines.append(base64.b64encode(key).decode("ascii"))
    body = (
        "# Tipline media keys: one base64 AES-256 key per line; the last line is active.\n"
        + "\n".join(lines)
        + "\n"
    )
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(body)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return key_id(key)


def keep_only_active(path: Path) -> int:
    """Drop every key but the active (last) one from ``path``; returns how many were dropped."""
    lines = read_key_lines(path)
    if len(lines) <= 1:
        return 0
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write("# Tipline media keys: one base64 AES-256 key per line; the last is active.\n")
        fh.write(lines[-1] + "\n")
    os.replace(tmp, path)
    return len(lines) - 1


# --------------------------------------------------------------------------------------------
# Stores


class MediaStore(Protocol):
    mode: str

    def put(self, data: bytes, created: datetime | None = None) -> str | None: ...

    def get(self, ref: str) -> bytes: ...

    def delete(self, ref: str) -> bool: ...

    def refs(self) -> Iterator[str]: ...

    def created_at(self, ref: str) -> datetime: ...


class HashOnlyStore:
    """Keeps no media bytes at all: ``put`` stores nothing and returns None."""

    mode = "hash-only"

    def put(self, data: bytes, created: datetime | None = None) -> str | None:
        return None

    def get(self, ref: str) -> bytes:
        raise MediaNotFound("this server runs in hash-only mode and keeps no media")

    def delete(self, ref: str) -> bool:
        return False

    def refs(self) -> Iterator[str]:
        return iter(())

    def created_at(self, ref: str) -> datetime:
        raise MediaNotFound("this server runs in hash-only mode and keeps no media")


def valid_ref(ref: str) -> bool:
    return bool(_REF_RE.match(ref))


class EncryptedStore:
    """AES-256-GCM blobs under ``root``; see the module docstring for the format."""

    mode = "encrypted"

    def __init__(self, root: Path, keyring: Keyring):
        self.root = root
        self.keyring = keyring

    def _path(self, ref: str) -> Path:
        if not valid_ref(ref):
            raise MediaNotFound(f"invalid media ref {ref[:80]!r}")
        return self.root / ref[:2] / f"{ref}.blob"

    def _seal(self, ref: str, data: bytes, created: int) -> bytes:
        kid, key = self.keyring.active_key()
        nonce = secrets.token_bytes(12)
        header = _HEADER.pack(MAGIC, created, kid, nonce)
        return header + AESGCM(key).encrypt(nonce, data, header + ref.encode("ascii"))

    def _write(self, ref: str, blob: bytes) -> None:
        path = self._path(ref)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(blob)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def put(self, data: bytes, created: datetime | None = None) -> str:
        """Encrypt and store ``data``; returns its new ref. ``created`` (default now) is the
        date retention counts from (e.g. when importing media received earlier)."""
        ref = secrets.token_hex(16)
        when = int(created.timestamp()) if created is not None else int(time.time())
        self._write(ref, self._seal(ref, data, when))
        return ref

    def _read(self, ref: str) -> bytes:
        try:
            return self._path(ref).read_bytes()
        except FileNotFoundError:
            raise MediaNotFound(f"no media {ref} (never stored or purged)") from None
        except OSError as err:
            raise MediaError(f"cannot read media {ref}: {err.strerror or err}") from None

    def _header(self, ref: str, blob: bytes) -> tuple[int, bytes, bytes]:
        if len(blob) < HEADER_SIZE + 16:
            raise MediaError(f"media {ref} is truncated")
        magic, created, kid, nonce = _HEADER.unpack_from(blob)
        if magic != MAGIC:
            raise MediaError(f"media {ref} is not a Tipline blob")
        return created, kid, nonce

    def _open(self, ref: str, blob: bytes) -> bytes:
        _created, kid, nonce = self._header(ref, blob)
        key = self.keyring.keys.get(kid)
        if key is None:
            raise MediaError(f"media {ref} was encrypted with key {kid.hex()}, which is not loaded")
        try:
            return AESGCM(key).decrypt(
                nonce, blob[HEADER_SIZE:], blob[:HEADER_SIZE] + ref.encode("ascii")
            )
        except InvalidTag:
            raise MediaError(f"media {ref} failed authentication (tampered or corrupt)") from None

    def get(self, ref: str) -> bytes:
        return self._open(ref, self._read(ref))

    def key_of(self, ref: str) -> bytes:
        return self._header(ref, self._read(ref))[1]

    def created_at(self, ref: str) -> datetime:
        path = self._path(ref)
        try:
            with path.open("rb") as fh:
                head = fh.read(HEADER_SIZE + 16)
        except FileNotFoundError:
            raise MediaNotFound(f"no media {ref}") from None
        return datetime.fromtimestamp(self._header(ref, head)[0], UTC)

    def delete(self, ref: str) -> bool:
        try:
            self._path(ref).unlink()
        except FileNotFoundError:
            return False
        return True

    def refs(self) -> Iterator[str]:
        if not self.root.is_dir():
            return
        for sub in sorted(self.root.iterdir()):
            if not sub.is_dir() or len(sub.name) != 2:
                continue
            for f in sorted(sub.glob("*.blob")):
                if valid_ref(f.stem):
                    yield f.stem

    def reencrypt(self, ref: str) -> bool:
        """Re-encrypt one blob to the active key (keeping its date); False if already there."""
        blob = self._read(ref)
        created, kid, _nonce = self._header(ref, blob)
        active, _key = self.keyring.active_key()
        if kid == active:
            return False
        self._write(ref, self._seal(ref, self._open(ref, blob), created))
        return True


def open_media_store(
    mode: str,
    data_dir: Path,
    key_file: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> HashOnlyStore | EncryptedStore:
    """The store for ``mode`` (``hash-only`` or ``encrypted``)."""
    if mode == "hash-only":
        return HashOnlyStore()
    if mode != "encrypted":
        raise MediaError(f"unknown media mode {mode!r} (hash-only or encrypted)")
    ring = Keyring.load(key_file if key_file is not None else data_dir / "media.key", env)
    return EncryptedStore(data_dir / "media", ring)


def ensure_key_file(path: Path) -> bool:
    """Create ``path`` with a fresh key unless it exists; True if this call created it.

    Safe when several processes start at once: the file appears complete or not at all
    (hard link of a finished temporary file), and only one process's key wins.
    """
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    body = (
        "# Tipline media keys: one base64 AES-256 key per line; the last line is active.\n"
        + base64.b64encode(new_key()).decode("ascii")
        + "\n"
    )
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


def from_settings(
    settings: Any, env: Mapping[str, str] | None = None
) -> HashOnlyStore | EncryptedStore:
    """The store a :class:`~tipline.service.settings.ServiceSettings` describes.

    In ``encrypted`` mode with the default key file (``<data_dir>/media.key``) and no
    ``TIPLINE_MEDIA_KEY``, a missing key file is created on first use, so a fresh install
    works out of the box (back the file up). An explicitly configured key file is never
    created: a missing one is an error when media is stored.
    """
    env = os.environ if env is None else env
    media_key = getattr(settings, "media_key", "")  # the media_key setting (TIPLINE_MEDIA_KEY)
    if media_key and env.get(KEY_ENV) != media_key:
        env = {**env, KEY_ENV: ",".join(k for k in (env.get(KEY_ENV), media_key) if k)}
    if (
        settings.media_mode == "encrypted"
        and not getattr(settings, "key_file", "")
        and not env.get(KEY_ENV)
        and ensure_key_file(settings.key_path)
    ):
        log.warning(
            "created a new media encryption key at %s: back it up, media cannot be read without it",
            settings.key_path,
        )
    return open_media_store(settings.media_mode, settings.data_dir, settings.key_path, env)


# --------------------------------------------------------------------------------------------
# Rotation, retention and viewing


@dataclass(frozen=True, slots=True)
class RotateResult:
    active_key: str
    reencrypted: int
    unchanged: int
    failed: list[tuple[str, str]]


def rotate(store: EncryptedStore) -> RotateResult:
    """Re-encrypt every blob not under the active key. Safe to re-run after an interruption."""
    active, _ = store.keyring.active_key()
    done = same = 0
    failed: list[tuple[str, str]] = []
    for ref in store.refs():
        try:
            if store.reencrypt(ref):
                done += 1
            else:
                same += 1
        except MediaError as err:
            failed.append((ref, str(err)))
    return RotateResult(active.hex(), done, same, failed)
