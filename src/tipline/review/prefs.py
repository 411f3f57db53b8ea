"""Per-user viewing preferences: filter strengths, remembered across sessions.

Media is always shown filtered first (blurred and greyscale); the analyst chooses how strong
the filters are, never whether they are on: a blur of 0 is refused, the weakest blur still
hides detail. Revealing an image is a deliberate action per image, audited.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.orm import Session

from tipline.errors import TiplineError
from tipline.store.base import conflict_insert
from tipline.store.tables import UserPreference, utcnow

BLUR_RANGE = (4, 60)
GREY_RANGE = (0, 100)
SPEEDS = (0.25, 0.5, 1.0, 1.5, 2.0)


class PreferenceError(TiplineError):
    pass


@dataclass(frozen=True, slots=True)
class ViewPrefs:
    #: Gaussian blur radius (pixels, on a 512 px preview) before a reveal.
    blur: int = 24
    #: Greyscale strength in percent before a reveal.
    greyscale: int = 100
    #: Keep the greyscale filter on after a reveal.
    greyscale_after_reveal: bool = True
    #: Default video playback speed.
    video_speed: float = 1.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _int(v: Any, name: str, lo: int, hi: int) -> int:
    try:
        n = int(v)
    except (TypeError, ValueError, OverflowError):  # OverflowError: inf from a JSON 1e999
        raise PreferenceError(f"{name}: want a whole number from {lo} to {hi}") from None
    if not lo <= n <= hi:
        raise PreferenceError(f"{name}: want a whole number from {lo} to {hi}")
    return n


def parse(values: Mapping[str, Any], base: ViewPrefs | None = None) -> ViewPrefs:
    """Checked preferences from a form or JSON body (fields left out keep ``base``)."""
    b = base or ViewPrefs()
    unknown = set(values) - {"blur", "greyscale", "greyscale_after_reveal", "video_speed"}
    if unknown:
        raise PreferenceError(f"unknown preference(s): {', '.join(sorted(unknown))}")
    blur = _int(values.get("blur", b.blur), "blur", *BLUR_RANGE)
    grey = _int(values.get("greyscale", b.greyscale), "greyscale", *GREY_RANGE)
    keep = values.get("greyscale_after_reveal", b.greyscale_after_reveal)
    if isinstance(keep, str):
        keep = keep.lower() in ("1", "true", "on", "yes")
    try:
        speed = float(values.get("video_speed", b.video_speed))
    except (TypeError, ValueError):
        raise PreferenceError("video_speed: want a number") from None
    if speed not in SPEEDS:
        raise PreferenceError(f"video_speed: want one of {', '.join(map(str, SPEEDS))}")
    return ViewPrefs(blur, grey, bool(keep), speed)


def load(session: Session, user_id: int) -> ViewPrefs:
    row = session.get(UserPreference, user_id)
    if row is None or not isinstance(row.prefs, dict):
        return ViewPrefs()
    try:
        return parse(row.prefs)
    except PreferenceError:
        return ViewPrefs()  # a stored value from an older version: fall back to defaults


def save(session: Session, user_id: int, prefs: ViewPrefs) -> None:
    # one statement: two first saves at once (two tabs) both land instead of one failing on
    # the user's key
    stmt = conflict_insert(session, UserPreference).values(
        user_id=user_id, prefs=prefs.to_json(), updated_at=utcnow()
    )
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["user_id"],
            set_={"prefs": stmt.excluded.prefs, "updated_at": stmt.excluded.updated_at},
        )
    )


__all__ = ["PreferenceError", "ViewPrefs", "load", "parse", "save"]
