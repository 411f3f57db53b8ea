"""Object-storage inputs for ``tipline scan``: ``s3://``, ``gs://`` and ``az://`` URIs.

fsspec (and s3fs, gcsfs or adlfs) are imported only when a URI is scanned.
"""

from __future__ import annotations

#: URI schemes scanned as object storage, and the fsspec package each needs.
SCHEMES = {"s3": "s3fs", "gs": "gcsfs", "az": "adlfs"}


def is_uri(path: str) -> bool:
    """Whether ``path`` names object storage (``s3://bucket/prefix``...) rather than a file."""
    scheme, sep, _ = path.partition("://")
    return bool(sep) and scheme.lower() in SCHEMES
