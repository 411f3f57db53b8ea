"""The application context: the ONE thing a request reads from the app (``app.state.ctx``).

:func:`tipline.service.app.create_app` builds an :class:`AppContext` at start-up, every part of
it from the settings (a bad setting stops the start instead of failing a request); nothing is
built on a first request. :class:`RouteContexts` is the part routes read through their
accessors (``auth.context``, ``intake``'s and the desk's): an app embedding single routers
(``auth.install_auth``, ``intake.install_intake``) carries only that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from tipline.pipeline import PipelineConfig
    from tipline.service.auth import AuthContext
    from tipline.service.desk_core import DeskConfig
    from tipline.service.intake import IntakeContext
    from tipline.service.matching import MatchService
    from tipline.service.ops import Metrics
    from tipline.service.settings import ServiceSettings


@dataclass(slots=True)
class RouteContexts:
    """What routes need at request time besides the database: authentication, intake, the
    review desk. None where an app does not mount those routes."""

    auth: AuthContext | None = None
    intake: IntakeContext | None = None
    desk: DeskConfig | None = None


@dataclass(slots=True, kw_only=True)
class AppContext(RouteContexts):
    """Everything the service holds: settings, database, the bank index, metrics, the route
    contexts and the in-process workers' pipeline configuration."""

    settings: ServiceSettings
    engine: Engine
    session_factory: sessionmaker[Session]
    matcher: MatchService
    metrics: Metrics
    pipeline: PipelineConfig | None = None


def route_contexts(app: Any) -> RouteContexts:
    """The app's context, made (empty) for an app assembled from single routers."""
    ctx = getattr(app.state, "ctx", None)
    if ctx is None:
        ctx = RouteContexts()
        app.state.ctx = ctx
    if not isinstance(ctx, RouteContexts):
        raise TypeError(f"app.state.ctx is a {type(ctx).__name__}, not an application context")
    return ctx
