"""Configured exchanges in the service database, and their credentials sealed with the media
store's key (AES-256-GCM; the exchange's name is the associated data, so a sealed blob copied
to another exchange does not open). Credentials are never returned by anything here except
:func:`open_credentials`, which only the fetcher calls; nothing logs them.
"""

from __future__ import annotations

import json
import secrets
import struct
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select
from sqlalchemy.orm import Session

from tipline.banks.bank import DEFAULT_PDQ_THRESHOLD, ROLES, validate_bank_name
from tipline.errors import BankError
from tipline.exchange.api import ExchangeConfigError, ExchangeError, exchange_type
from tipline.net.fetch import FetchSettings
from tipline.store.media import Keyring
from tipline.store.tables import (
    BankRow,
    ExchangeApiConfigRow,
    ExchangeFetchStatusRow,
    ExchangeRow,
)

#: Key in a status row's ``stats``: committed batches whose journal lines may not all have
#: been written (set in the batch's transaction, cleared when the run's lines are all out).
JOURNAL_PENDING = "journal_pending"

_MAGIC = b"TLX1"
_HEAD = struct.Struct(">4s8s12s")
DEFAULT_INTERVAL = 3600

# -- process-wide runtime: set from above (service.wiring.configure_process) -----------------

_fetch_settings: FetchSettings | None = None
_keyring: Callable[[], Keyring] | None = None
_index_dir: Path | None = None


def configure(
    fetch_settings: FetchSettings | None = None,
    keyring: Callable[[], Keyring] | None = None,
    index_dir: Path | None = None,
) -> None:
    """The address policy ``http_list`` fetches under, where the credential key comes
    from (called lazily: only exchanges with credentials need it), and the index directory
    whose bank-change journal the serving processes follow (the fetcher journals its
    committed batches there; None: it journals nothing)."""
    global _fetch_settings, _keyring, _index_dir
    _fetch_settings = fetch_settings
    _keyring = keyring
    _index_dir = index_dir


def index_dir() -> Path | None:
    """The index directory set by :func:`configure` (None when none was)."""
    return _index_dir


def fetch_settings() -> FetchSettings:
    return _fetch_settings or FetchSettings()


def keyring() -> Keyring:
    if _keyring is None:
        raise ExchangeError("no credential key configured (the media key): run via tipline")
    return _keyring()


# -- credentials -----------------------------------------------------------------------------


def seal(ring: Keyring, owner: str, data: Mapping[str, Any]) -> bytes:
    kid, key = ring.active_key()
    nonce = secrets.token_bytes(12)
    head = _HEAD.pack(_MAGIC, kid, nonce)
    body = json.dumps(dict(data), sort_keys=True).encode()
    return head + AESGCM(key).encrypt(nonce, body, head + owner.encode())


def unseal(ring: Keyring, owner: str, blob: bytes) -> dict[str, Any]:
    if len(blob) < _HEAD.size:
        raise ExchangeError(f"credentials of {owner} are damaged")
    magic, kid, nonce = _HEAD.unpack(blob[: _HEAD.size])
    key = ring.keys.get(kid)
    if magic != _MAGIC or key is None:
        raise ExchangeError(f"credentials of {owner}: sealed with a key this keyring lacks")
    try:
        out = json.loads(
            AESGCM(key).decrypt(nonce, blob[_HEAD.size :], blob[: _HEAD.size] + owner.encode())
        )
    except (InvalidTag, ValueError):
        raise ExchangeError(f"credentials of {owner} do not open (wrong key or tampered)") from None
    return out if isinstance(out, dict) else {}


def _exchange_owner(name: str) -> str:
    return f"exchange:{name}"


def _api_owner(api: str) -> str:
    return f"exchange-api:{api}"


def open_credentials(s: Session, ex: ExchangeRow) -> dict[str, Any] | None:
    """The exchange's credentials, else its type's; None if neither is set."""
    if ex.credentials:
        return unseal(keyring(), _exchange_owner(ex.name), ex.credentials)
    row = s.get(ExchangeApiConfigRow, ex.api)
    if row is not None and row.credentials:
        return unseal(keyring(), _api_owner(ex.api), row.credentials)
    return None


def set_api_credentials(s: Session, api: str, credentials: Mapping[str, Any] | None) -> None:
    """Set (None or empty: clear) the credentials of an exchange type as a whole."""
    checked = exchange_type(api).validate_credentials(credentials) if credentials else None
    row = s.get(ExchangeApiConfigRow, api)
    if row is None:
        row = ExchangeApiConfigRow(api=api)
        s.add(row)
    row.credentials = seal(keyring(), _api_owner(api), checked) if checked else None


def api_has_credentials(s: Session, api: str) -> bool:
    row = s.get(ExchangeApiConfigRow, api)
    return bool(row is not None and row.credentials)


# -- exchanges -------------------------------------------------------------------------------


def create_exchange(
    s: Session,
    name: str,
    api: str,
    config: Mapping[str, Any],
    *,
    bank: str | None = None,
    role: str = "alert",
    pdq_threshold: int = DEFAULT_PDQ_THRESHOLD,
    interval_seconds: int = DEFAULT_INTERVAL,
    credentials: Mapping[str, Any] | None = None,
    enabled: bool = True,
) -> ExchangeRow:
    """Add an exchange and its status row; its bank (``bank``, default ``name``) is created
    with ``role`` / ``pdq_threshold`` unless it exists (and belongs to no other exchange)."""
    try:
        validate_bank_name(name)
    except BankError as err:
        raise ExchangeConfigError(str(err).replace("bank name", "exchange name")) from None
    typ = exchange_type(api)
    checked = typ.validate_config(config)
    creds = typ.validate_credentials(credentials) if credentials else None
    if not 60 <= interval_seconds <= 30 * 86400:
        raise ExchangeConfigError("interval must be 60 seconds to 30 days")
    if s.scalar(select(ExchangeRow.id).where(ExchangeRow.name == name)) is not None:
        raise ExchangeError(f"exchange {name} already exists")
    bank_name = validate_bank_name(bank or name)
    bank_row = s.scalar(select(BankRow).where(BankRow.name == bank_name))
    if bank_row is None:
        if role not in ROLES:
            raise ExchangeConfigError(f"invalid role {role!r}: use alert or ignore")
        if not 0 <= pdq_threshold <= 255:
            raise ExchangeConfigError("PDQ threshold must be 0 to 255")
        bank_row = BankRow(
            name=bank_name,
            role=role,
            pdq_threshold=pdq_threshold,
            enabled=True,
            description=f"fetched from exchange {name} ({api})",
            created_at=time.time(),
            enabled_ratio=1.0,
        )
        s.add(bank_row)
        s.flush()
    elif s.scalar(select(ExchangeRow.name).where(ExchangeRow.bank_id == bank_row.id)):
        raise ExchangeError(f"bank {bank_name} already belongs to another exchange")
    ex = ExchangeRow(
        name=name,
        api=api,
        bank_id=bank_row.id,
        config=checked,
        credentials=seal(keyring(), _exchange_owner(name), creds) if creds else None,
        fetching_enabled=enabled,
        interval_seconds=interval_seconds,
        created_at=time.time(),
    )
    s.add(ex)
    s.flush()
    s.add(ExchangeFetchStatusRow(exchange_id=ex.id, stats={}))
    s.flush()
    return ex


def get_exchange(s: Session, name: str) -> ExchangeRow:
    ex = s.scalar(select(ExchangeRow).where(ExchangeRow.name == name))
    if ex is None:
        raise ExchangeNotFound(f"no exchange named {name[:80]!r} (see `tipline exchange list`)")
    return ex


class ExchangeNotFound(ExchangeError):
    pass


def list_exchanges(s: Session) -> list[ExchangeRow]:
    return list(s.scalars(select(ExchangeRow).order_by(ExchangeRow.name)))


def delete_exchange(s: Session, name: str) -> bool:
    """Remove an exchange, its status and its records' keys. Its bank and the entries in it
    stay (remove them with `tipline bank delete`). False if there was none."""
    ex = s.scalar(select(ExchangeRow).where(ExchangeRow.name == name))
    if ex is None:
        return False
    from sqlalchemy import delete

    from tipline.store.tables import ExchangeRecordRow

    s.execute(delete(ExchangeRecordRow).where(ExchangeRecordRow.exchange_id == ex.id))
    s.execute(delete(ExchangeFetchStatusRow).where(ExchangeFetchStatusRow.exchange_id == ex.id))
    s.delete(ex)
    return True


def bank_name(s: Session, ex: ExchangeRow) -> str:
    return str(s.scalar(select(BankRow.name).where(BankRow.id == ex.bank_id)) or "")


def exchange_json(s: Session, ex: ExchangeRow) -> dict[str, Any]:
    """HMA's ``GET /c/exchange/<name>`` shape (name, api, enabled, the type's fields) plus
    Tipline's bank, interval and whether credentials are set (never what they are)."""
    out: dict[str, Any] = {"name": ex.name, "api": ex.api, "enabled": bool(ex.fetching_enabled)}
    out.update(ex.config or {})
    out["bank"] = bank_name(s, ex)
    out["interval_seconds"] = ex.interval_seconds
    out["has_credentials"] = bool(ex.credentials) or api_has_credentials(s, ex.api)
    return out


def status_json(s: Session, ex: ExchangeRow) -> dict[str, Any]:
    """HMA's ``FetchStatus`` (``/c/exchange/<name>/status``) plus Tipline's error, counters and
    latest problems."""
    st = s.get(ExchangeFetchStatusRow, ex.id)
    if st is None:
        st = ExchangeFetchStatusRow(exchange_id=ex.id, stats={}, fetched_items=0, up_to_date=False)

    def ts(v: float | None) -> int | None:
        return None if v is None else int(v)

    stats = dict(st.stats or {})
    return {
        "checkpoint_ts": st.checkpoint_ts,
        "running_fetch_start_ts": ts(st.running_fetch_start_ts),
        "last_fetch_complete_ts": ts(st.last_fetch_complete_ts),
        "last_fetch_succeeded": st.last_fetch_succeeded,
        "up_to_date": bool(st.up_to_date),
        "fetched_items": int(st.fetched_items or 0),
        "last_error": st.last_error,
        "consecutive_failures": int(st.consecutive_failures or 0),
        "counts": {k: v for k, v in stats.items() if k not in ("problems", JOURNAL_PENDING)},
        "problems": list(stats.get("problems") or []),
    }


__all__ = [
    "JOURNAL_PENDING",
    "ExchangeNotFound",
    "api_has_credentials",
    "configure",
    "create_exchange",
    "delete_exchange",
    "exchange_json",
    "get_exchange",
    "index_dir",
    "list_exchanges",
    "open_credentials",
    "seal",
    "set_api_credentials",
    "status_json",
    "unseal",
]


def named_bank(s: Session, name: str, error: type[Exception]) -> BankRow:
    """The bank called ``name``; an invalid or unknown name raises ``error`` saying so."""
    try:
        clean = validate_bank_name(name)
    except BankError as err:
        raise error(str(err)) from None
    row = s.scalar(select(BankRow).where(BankRow.name == clean))
    if row is None:
        raise error(f"no bank named {clean!r} (see `tipline bank list`)")
    return row
