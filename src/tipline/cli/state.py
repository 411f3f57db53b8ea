"""Process-wide CLI state set by the top-level options."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tipline.config import data_dir as _resolve

if TYPE_CHECKING:
    from tipline.service.settings import ServiceSettings

_data_dir: Path | None = None
#: ``--debug`` / ``TIPLINE_DEBUG=1``: errors show their traceback
debug = False
#: ``--data-dir`` as given (flag or ``$TIPLINE_DATA_DIR``), None when not given
_given: Path | None = None


def set_data_dir(path: Path | None) -> None:
    global _data_dir, _given
    _data_dir = _resolve(path)
    _given = path


def data_dir() -> Path:
    return _data_dir if _data_dir is not None else _resolve(None)


def service_settings(config: Path | None = None, **overrides: Any) -> ServiceSettings:
    """The service settings a command resolves: defaults < ``config`` (``--config`` /
    ``$TIPLINE_CONFIG``) < ``TIPLINE_*`` variables < flags (``overrides``; None = not given)."""
    return service_settings_with_sources(config, **overrides)[0]


def service_settings_with_sources(
    config: Path | None = None, **overrides: Any
) -> tuple[ServiceSettings, dict[str, str]]:
    """:func:`service_settings` and where each value came from (``config show``)."""
    import os

    from tipline.service.settings import CONFIG_ENV, ServiceSettings, SettingsError, _read_file

    if config is None and os.environ.get(CONFIG_ENV):
        config = Path(os.environ[CONFIG_ENV])
    try:
        file_values = _read_file(config) if config else {}
    except UnicodeDecodeError as err:
        raise SettingsError(
            f"config file {config} is not valid: not UTF-8 text (byte {err.start})"
        ) from None
    # --data-dir (when given as a flag, not through $TIPLINE_DATA_DIR) counts unless the file
    # names a data_dir (as `tipline serve` always did)
    from_env = os.environ.get("TIPLINE_DATA_DIR")
    flag = _given is not None and (not from_env or Path(from_env) != _given)
    if flag and _data_dir is not None and "data_dir" not in file_values:
        overrides.setdefault("data_dir", _data_dir)
    return ServiceSettings.load_with_sources(config, **overrides)
