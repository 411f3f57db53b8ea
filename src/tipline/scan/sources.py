"""Expand the paths given on the command line into the files to scan."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from tipline.errors import SymlinkLoopError, UnreadableError
from tipline.record import ItemRecord
from tipline.scan.items import error_record


def iter_inputs(paths: Iterable[str], follow_symlinks: bool = False) -> Iterator[str | ItemRecord]:
    """File paths to scan, in a stable order, or error records for what cannot be walked.

    Directories are walked recursively. Symbolic links to files are scanned; links to directories
    are followed only with ``follow_symlinks``, and then a link back into a directory being
    walked is reported as a loop instead of being walked forever.
    """
    for p in paths:
        if os.path.isdir(p):
            yield from _walk(p, follow_symlinks, ancestors=set())
        else:
            yield p  # scan_file reports missing files, loops and special files itself


def _walk(
    directory: str, follow: bool, ancestors: set[tuple[int, int]]
) -> Iterator[str | ItemRecord]:
    try:
        st = os.stat(directory)
    except OSError as err:
        yield error_record(directory, UnreadableError(err.strerror or str(err)))
        return
    key = (st.st_dev, st.st_ino)
    if key in ancestors:
        yield error_record(directory, SymlinkLoopError("link leads back into a parent directory"))
        return
    try:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as err:
        yield error_record(
            directory, UnreadableError(f"cannot list directory: {err.strerror or err}")
        )
        return
    ancestors = ancestors | {key}
    for entry in entries:
        try:
            is_link = entry.is_symlink()
            is_dir = entry.is_dir(follow_symlinks=follow)
        except OSError:
            is_link, is_dir = True, False
        if is_dir:
            if is_link and not follow:
                continue
            yield from _walk(entry.path, follow, ancestors)
        elif is_link and not follow:
            try:
                os.stat(entry.path)
            except OSError:
                yield entry.path  # dangling or looping link: scan_file says which
                continue
            if os.path.isdir(entry.path):
                continue
            yield entry.path
        else:
            yield entry.path
