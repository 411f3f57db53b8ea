"""Banks: named hash lists (alert or ignore), their store, and hash list import/export."""

from __future__ import annotations

from pathlib import Path

from tipline.banks.bank import ROLES, Bank, BankStore, Entry, validate_bank_name
from tipline.banks.formats import (
    FORMATS,
    ImportReport,
    ParseResult,
    detect_format,
    import_file,
    iter_hash_list,
    parse_hash_list,
    write_hash_list,
)
from tipline.banks.sqlite_store import SqliteBankStore

#: File name of the bank database inside the data directory.
DB_NAME = "banks.sqlite3"


def open_store(data_dir: Path) -> SqliteBankStore:
    """Open (creating if needed) the bank database in ``data_dir``."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return SqliteBankStore(data_dir / DB_NAME)


__all__ = [
    "FORMATS",
    "ROLES",
    "Bank",
    "BankStore",
    "Entry",
    "ImportReport",
    "ParseResult",
    "SqliteBankStore",
    "detect_format",
    "import_file",
    "iter_hash_list",
    "open_store",
    "parse_hash_list",
    "validate_bank_name",
    "write_hash_list",
]
