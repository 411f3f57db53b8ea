"""Exposure limits: how long each analyst has had media on screen, a daily cap and breaks.

Exposure is the time spent on pages that show media. The page sends a heartbeat while it is
visible (and every media request counts as one); a beat within ``JOIN_SECONDS`` of the previous
one extends the current interval, a later beat starts a new one. Defaults follow IWF practice:
at most 5 hours a day, and a break (10 minutes) after each hour of exposure. The limits are
enforced by the server: while an analyst is over the cap or due a break, every media route
refuses them (:func:`check`), whatever the browser does.

A "continuous stretch" is exposure with no gap of at least ``break_minutes``; taking a break is
simply a gap that long. Days are UTC days.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from tipline.store.tables import ExposureInterval

#: A heartbeat later than this after the previous one starts a new interval.
JOIN_SECONDS = 90
#: What one beat counts for when it starts an interval (a page open with JS off, a single view).
BEAT_SECONDS = 30


@dataclass(frozen=True, slots=True)
class ExposureLimits:
    daily_cap_minutes: int = 300
    break_after_minutes: int = 60
    break_minutes: int = 10


@dataclass(frozen=True, slots=True)
class ExposureStatus:
    today_minutes: float
    stretch_minutes: float
    cap_minutes: int
    break_after_minutes: int
    break_minutes: int
    #: "ok", "break" (a break is due: media refused until it is over) or "cap" (done for today)
    state: str
    #: When media may be shown again (None while state is "ok").
    resume_at: datetime | None
    message: str

    @property
    def blocked(self) -> bool:
        return self.state != "ok"

    def to_json(self) -> dict[str, object]:
        return {
            "today_minutes": round(self.today_minutes, 1),
            "stretch_minutes": round(self.stretch_minutes, 1),
            "cap_minutes": self.cap_minutes,
            "break_after_minutes": self.break_after_minutes,
            "break_minutes": self.break_minutes,
            "state": self.state,
            "resume_at": self.resume_at.isoformat() if self.resume_at else None,
            "message": self.message,
        }


def day_start(now: datetime) -> datetime:
    n = now.astimezone(UTC)
    return datetime(n.year, n.month, n.day, tzinfo=UTC)


def beat(session: Session, user_id: int, now: datetime, cluster_id: int | None = None) -> None:
    """Record that ``user_id`` has media on screen at ``now``."""
    last = session.scalar(
        select(ExposureInterval)
        .where(ExposureInterval.user_id == user_id)
        .order_by(ExposureInterval.ended_at.desc())
        .limit(1)
        .with_for_update()
    )
    if last is not None and (now - last.ended_at).total_seconds() <= JOIN_SECONDS:
        if now > last.ended_at:
            last.ended_at = now
        return
    session.add(
        ExposureInterval(
            user_id=user_id,
            started_at=now,
            ended_at=now + timedelta(seconds=BEAT_SECONDS),
            cluster_id=cluster_id,
        )
    )


def _overlap(a0: datetime, a1: datetime, b0: datetime, b1: datetime) -> float:
    return max(0.0, (min(a1, b1) - max(a0, b0)).total_seconds())


def status(session: Session, user_id: int, now: datetime, limits: ExposureLimits) -> ExposureStatus:
    """Where the analyst stands against the limits at ``now``."""
    start = day_start(now)
    look_back = min(start, now - timedelta(minutes=limits.break_after_minutes * 2 + 60))
    rows = session.scalars(
        select(ExposureInterval)
        .where(ExposureInterval.user_id == user_id, ExposureInterval.ended_at > look_back)
        .order_by(ExposureInterval.started_at)
    ).all()
    clipped = [(r.started_at, min(r.ended_at, now)) for r in rows if r.started_at < now]
    today = sum(_overlap(a, b, start, now) for a, b in clipped) / 60.0
    # the current stretch: walk back from the newest interval while gaps are shorter than a break
    gap = timedelta(minutes=limits.break_minutes)
    stretch = 0.0
    stretch_end: datetime | None = None
    if clipped and now - clipped[-1][1] < gap:
        stretch_end = clipped[-1][1]
        prev_start = None
        for a, b in reversed(clipped):
            if prev_start is not None and prev_start - b >= gap:
                break
            stretch += (b - a).total_seconds()
            prev_start = a
    stretch /= 60.0
    cap = limits.daily_cap_minutes

    def result(state: str, resume: datetime | None, message: str) -> ExposureStatus:
        return ExposureStatus(
            today,
            stretch,
            cap,
            limits.break_after_minutes,
            limits.break_minutes,
            state,
            resume,
            message,
        )

    if cap and today >= cap:
        resume = start + timedelta(days=1)
        return result(
            "cap",
            resume,
            f"You have reached today's exposure limit ({cap} minutes). Media is hidden until "
            f"{resume:%Y-%m-%d %H:%M} UTC.",
        )
    if limits.break_after_minutes and stretch >= limits.break_after_minutes:
        assert stretch_end is not None
        resume = stretch_end + gap
        return result(
            "break",
            resume,
            f"Time for a break: {stretch:.0f} minutes of exposure without one. Media is hidden "
            f"until {resume:%H:%M} UTC ({limits.break_minutes} minutes away from the screen).",
        )
    return result("ok", None, f"{today:.0f} of {cap} minutes today")


def minutes_by_user(session: Session, since: datetime, until: datetime) -> dict[int, float]:
    """Exposure minutes per user id within [since, until)."""
    out: dict[int, float] = {}
    rows = session.scalars(
        select(ExposureInterval).where(
            ExposureInterval.ended_at > since, ExposureInterval.started_at < until
        )
    )
    for r in rows:
        out[r.user_id] = out.get(r.user_id, 0.0) + _overlap(r.started_at, r.ended_at, since, until)
    return {k: v / 60.0 for k, v in out.items()}


__all__ = [
    "BEAT_SECONDS",
    "JOIN_SECONDS",
    "ExposureLimits",
    "ExposureStatus",
    "beat",
    "day_start",
    "minutes_by_user",
    "status",
]
