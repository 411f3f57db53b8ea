"""Banks: named hash lists, and the store interface they live behind."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from tipline.errors import BankError

BankRole = Literal["alert", "ignore"]
ROLES: tuple[BankRole, ...] = ("alert", "ignore")

#: HMA's rule for bank names, kept so banks move between HMA and Tipline unchanged.
BANK_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
DEFAULT_PDQ_THRESHOLD = 31


def validate_bank_name(name: str) -> str:
    if not BANK_NAME_RE.fullmatch(name):
        example = re.sub(r"[^A-Z0-9_]", "_", name[:64].upper()) or "MY_BANK"
        if example[0].isdigit():
            example = "BANK_" + example
        raise BankError(
            f"invalid bank name {name[:80]!r}: use capital letters, digits and underscores, "
            f"not starting with a digit (HMA's rule), e.g. {example}"
        )
    return name


@dataclass(slots=True)
class Bank:
    name: str
    role: BankRole = "alert"
    pdq_threshold: int = DEFAULT_PDQ_THRESHOLD
    enabled: bool = True
    description: str = ""
    created_at: float = 0.0
    #: HMA's ``matching_enabled_ratio`` while enabled: the share of HMA lookups that see this
    #: bank (a coin flip per lookup); 1.0, the default, is every lookup (and every scan).
    enabled_ratio: float = 1.0


@dataclass(slots=True)
class Entry:
    """One hash in a bank. ``id`` is assigned by the store and unique across banks."""

    bank: str
    signal_type: str
    signal: str
    label: str = ""
    source: str = ""
    note: str = ""
    added_at: float = 0.0
    enabled: bool = True
    id: int | None = None
    tags: list[str] = field(default_factory=list)
    #: Disabled until this epoch time, then enabled by itself (HMA's future
    #: ``disable_until_ts``); None: ``enabled`` alone decides.
    disabled_until: float | None = None
    #: HMA's user metadata of the content (``content_id``, ``content_uri``, ``json``).
    metadata: dict[str, Any] | None = None

    def active(self, now: float) -> bool:
        """Matchable at ``now``: enabled, and past any ``disabled_until``."""
        return self.enabled and (self.disabled_until is None or self.disabled_until <= now)


class BankStore(Protocol):
    """Where banks and their entries are kept. SQLite now; PostgreSQL with the service."""

    def create_bank(self, bank: Bank) -> Bank: ...
    def get_bank(self, name: str) -> Bank: ...
    def list_banks(self) -> list[Bank]: ...
    def update_bank(self, bank: Bank) -> Bank: ...
    def delete_bank(self, name: str) -> int: ...
    def add_entries(self, entries: Iterable[Entry], *, dedupe: bool = True) -> list[int]: ...
    def rename_bank(self, old: str, new: str) -> Bank: ...
    def update_entry(
        self,
        bank: str,
        entry_id: int,
        *,
        enabled: bool | None = None,
        disabled_until: float | Literal["keep"] | None = "keep",
        note: str | None = None,
    ) -> Entry: ...
    def get_entry(self, entry_id: int) -> Entry: ...
    def signal_type_ratios(self) -> dict[str, float]: ...
    def set_signal_type_ratio(self, name: str, ratio: float) -> None: ...
    def signal_type_stats(self) -> dict[str, tuple[int, float]]: ...
    def remove_entries(self, bank: str, entry_ids: Iterable[int]) -> int: ...
    def set_entries_enabled(self, bank: str, entry_ids: Iterable[int], enabled: bool) -> int: ...
    def iter_entries(
        self, bank: str | None = None, *, enabled_only: bool = False
    ) -> Iterator[Entry]: ...
    def count_entries(self, bank: str) -> int: ...
    def close(self) -> None: ...
