"""Permission declarations for routes: a re-export of :mod:`tipline.service.auth`.

Every route declares the permission it needs with ``Depends(require("match:read"))``.
"""

from __future__ import annotations

from tipline.accounts import Principal
from tipline.service.auth import DECLARED, PERMISSIONS, ROLE_PERMISSIONS, require

__all__ = ["DECLARED", "PERMISSIONS", "ROLE_PERMISSIONS", "Principal", "require"]
