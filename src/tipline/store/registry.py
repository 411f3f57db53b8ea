"""Which modules define job handlers: registered from above, so the queue names no service.

The job queue (:mod:`tipline.store.jobs`) runs handlers registered by kind; a handler exists in
a process once the module that registers it is imported. Worker processes start bare
(``spawn``), so they import every module named here first. The layers above register their own:
``tipline.cli.app`` (imported by every ``tipline worker`` process) names the pipeline's and the
webhooks' handler modules.

This module imports nothing, so registering costs a command nothing at start-up.
"""

from __future__ import annotations

_MODULES: list[str] = []


def register_handler_modules(*names: str) -> None:
    """Have every worker process import ``names`` (in order; a name given again is kept once)."""
    for name in names:
        if name not in _MODULES:
            _MODULES.append(name)


def handler_modules() -> tuple[str, ...]:
    """The registered handler modules, in registration order."""
    return tuple(_MODULES)


__all__ = ["handler_modules", "register_handler_modules"]
