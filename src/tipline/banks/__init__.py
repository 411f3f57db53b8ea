"""Banks: named hash lists (alert or ignore), the store interface, hash list import/export, and
the reader that adopts old ``banks.sqlite3`` files. The store itself is
:class:`tipline.store.banks.SqlBankStore` (the service database)."""

from __future__ import annotations

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
from tipline.banks.sqlite_store import LEGACY_DB_NAME, AdoptReport, LegacyBankFile, adopt_banks

__all__ = [
    "FORMATS",
    "LEGACY_DB_NAME",
    "ROLES",
    "AdoptReport",
    "Bank",
    "BankStore",
    "Entry",
    "ImportReport",
    "LegacyBankFile",
    "ParseResult",
    "adopt_banks",
    "detect_format",
    "import_file",
    "iter_hash_list",
    "parse_hash_list",
    "validate_bank_name",
    "write_hash_list",
]
