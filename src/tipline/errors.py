"""Typed errors. Each carries a one-line message meant for the person running Tipline.

Item errors are recorded against the item (file, archive member) that caused them and never stop
a run; other errors stop the command that raised them with exit status 2.
"""

from __future__ import annotations


class TiplineError(Exception):
    """Base class; ``str(err)`` is a complete one-line message."""


class ItemError(TiplineError):
    """Something about one item prevented it from being (fully) scanned."""

    code = "item_error"

    def __str__(self) -> str:
        return f"{self.code}: {super().__str__()}"


class EmptyFileError(ItemError):
    code = "empty_file"


class UnreadableError(ItemError):
    code = "unreadable"


class NotRegularFileError(ItemError):
    code = "not_a_regular_file"


class SymlinkLoopError(ItemError):
    code = "symlink_loop"


class FileTooLargeError(ItemError):
    code = "file_too_large"


class UnsupportedMediaError(ItemError):
    code = "unsupported_media"


class CorruptMediaError(ItemError):
    code = "corrupt_media"


class TooManyPixelsError(ItemError):
    code = "too_many_pixels"


class DecodeTimeoutError(ItemError):
    code = "decode_timeout"


class VideoLimitError(ItemError):
    """A video over a duration/frame limit: refused, or hashed only up to the limit."""

    code = "video_limit"


class ArchiveLimitError(ItemError):
    code = "archive_limit"


class CorruptArchiveError(ItemError):
    code = "corrupt_archive"


class BankError(TiplineError):
    """A bank operation failed (unknown bank, invalid name, bad import file...)."""


class BankNotFoundError(BankError):
    pass


class InvalidSignalError(BankError):
    pass


class MalformedLineError(BankError):
    """A line of an imported hash list could not be parsed."""

    def __init__(self, line_no: int, reason: str, source: str = "") -> None:
        self.line_no = line_no
        self.reason = reason
        self.source = source
        where = f"{source}:{line_no}" if source else f"line {line_no}"
        super().__init__(f"{where}: {reason}")
