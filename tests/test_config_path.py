"""One configuration path: `tipline worker` and `tipline serve`'s in-process workers build the
same pipeline configuration from the same settings; `tipline config show`; settings docs."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import tipline.cli.app as cli_app
from tipline.config import env_names
from tipline.pipeline import PipelineConfig
from tipline.service import app as service_app
from tipline.service.settings import ENV_PREFIX, ServiceSettings, SettingsError

cli_app._register()  # before importing single command modules: keeps the commands' order
app = cli_app.app
from tipline.cli import serve as serve_cmd  # noqa: E402
from tipline.cli import worker as worker_cmd  # noqa: E402

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent

#: Every pipeline-relevant setting, with a non-default value (file syntax).
FILE_TEXT = """
media_mode = "encrypted"
fetch_allow_hosts = "media.internal,cdn.internal"
fetch_allow_networks = "10.20.0.0/16"
fetch_max_bytes = 12345
fetch_ca_file = "{ca}"
fetch_urls = false
keywords_file = "{kw}"
watermarks = true
c2pa_trust_anchors = "{ca}"
c2pa_allowed_list = "{kw}"
detector_card = "{kw}"

[triage]
alert_match = 7
cluster_size = 2.5
"""

ENV = {
    "TIPLINE_MEDIA_MODE": "encrypted",
    "TIPLINE_FETCH_ALLOW_HOSTS": "media.internal,cdn.internal",
    "TIPLINE_FETCH_ALLOW_NETWORKS": "10.20.0.0/16",
    "TIPLINE_FETCH_MAX_BYTES": "12345",
    "TIPLINE_FETCH_URLS": "0",
    "TIPLINE_WATERMARKS": "1",
    "TIPLINE_TRIAGE_ALERT_MATCH": "7",
    "TIPLINE_TRIAGE_CLUSTER_SIZE": "2.5",
}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No TIPLINE_* variable from the outside; serve's hand-over variable undone after."""
    import os

    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.setenv(serve_cmd.SETTINGS_ENV, "")
    monkeypatch.delenv(serve_cmd.SETTINGS_ENV)
    return monkeypatch


def _files(tmp_path: Path) -> tuple[Path, Path]:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    kw = tmp_path / "keywords.txt"
    kw.write_text("alpha\nbeta\n")
    return ca, kw


def _worker_config(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> PipelineConfig:
    """What `tipline worker` hands its processes, and the pipeline config they build."""
    seen: list[worker_cmd.WorkerConfig] = []
    monkeypatch.setattr(worker_cmd, "check_schema", lambda url: None)
    monkeypatch.setattr(worker_cmd, "run_workers", lambda cfg, n: seen.append(cfg))
    res = runner.invoke(app, [*args[:2], "worker", "--drain", *args[2:]])
    assert res.exit_code == 0, res.output
    assert seen and seen[0].settings is not None
    return worker_cmd.pipeline_config(seen[0].settings)


def _inprocess_config(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> PipelineConfig:
    """What `tipline serve` hands its uvicorn processes, and their in-process workers' config."""
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: None)
    res = runner.invoke(app, [*args[:2], "serve", "--no-migrate", *args[2:]])
    assert res.exit_code == 0, res.output
    built = serve_cmd.app_from_env()
    ctx = built.state.ctx  # type: ignore[attr-defined]
    try:
        assert ctx.pipeline is not None  # built by create_app for the in-process workers
        return ctx.pipeline
    finally:
        ctx.engine.dispose()


def _described(cfg: PipelineConfig) -> dict[str, Any]:
    """Every field of a pipeline config, comparable across processes (not the match function,
    which is each process's own index; the media store by what it stores where)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name == "match":
            assert callable(value)
            continue
        if f.name == "media_store":
            value = None if value is None else (type(value).__name__, vars_of(value))
        elif f.name == "keywords":
            value = None if value is None else [(k.term, k.category) for k in value.keywords]
        out[f.name] = value
    return out


def vars_of(store: Any) -> dict[str, str]:
    return {
        k: str(v)
        for k, v in getattr(store, "__dict__", {}).items()
        if isinstance(v, str | Path | int | bool)
    }


def _check_values(cfg: PipelineConfig, ca: Path | None) -> None:
    assert cfg.fetch_settings.allow_hosts == frozenset({"media.internal", "cdn.internal"})
    assert [str(n) for n in cfg.fetch_settings.allow_networks] == ["10.20.0.0/16"]
    assert cfg.fetch_settings.max_bytes == 12345
    assert cfg.fetch_settings.ca_file == (str(ca) if ca else None)
    assert cfg.fetch_urls is False
    assert cfg.hash_options.watermarks is True
    assert cfg.weights.alert_match == 7.0 and cfg.weights.cluster_size == 2.5
    assert cfg.media_store is not None


def test_worker_and_inprocess_configs_are_equal_from_file(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    ca, kw = _files(tmp_path)
    cfg_file = tmp_path / "tipline.toml"
    cfg_file.write_text(FILE_TEXT.format(ca=ca, kw=kw))
    args = ["--data-dir", str(tmp_path / "data"), "--config", str(cfg_file)]
    worker = _worker_config(clean_env, args)
    inproc = _inprocess_config(clean_env, args)
    _check_values(worker, ca)
    assert worker.keywords is not None and len(worker.keywords.keywords) == 2
    assert _described(worker) == _described(inproc)
    # every setting the pipeline reads was compared
    assert set(_described(worker)) == {f.name for f in dataclasses.fields(PipelineConfig)} - {
        "match"
    }


def test_worker_and_inprocess_configs_are_equal_from_env(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    ca, kw = _files(tmp_path)
    for name, value in ENV.items():
        clean_env.setenv(name, value)
    clean_env.setenv("TIPLINE_FETCH_CA_FILE", str(ca))
    clean_env.setenv("TIPLINE_KEYWORDS_FILE", str(kw))
    args = ["--data-dir", str(tmp_path / "data")]
    worker = _worker_config(clean_env, args)
    inproc = _inprocess_config(clean_env, args)
    _check_values(worker, ca)  # the CA file reaches the in-process workers too
    assert inproc.fetch_settings.ca_file == str(ca)
    assert inproc.keywords is not None
    assert _described(worker) == _described(inproc)


def _process_state() -> dict[str, Any]:
    """The process-wide settings of the library (readers, webhook deliveries)."""
    from tipline.actions import webhooks
    from tipline.provenance import c2pa, detector

    return {
        "c2pa": c2pa.current_settings(),
        "detector_card": detector._configured_card,
        "webhook_policy": webhooks.delivery_settings(),
    }


def _reset_process_state() -> None:
    from tipline.actions import webhooks
    from tipline.provenance import c2pa, detector

    c2pa.configure(None)
    detector.configure(None)
    webhooks.configure(None)


def test_worker_and_serve_set_the_same_process_wide_settings(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    """C2PA trust, the detector card and the webhook address policy reach a `tipline worker`
    process (its real worker loop) and `tipline serve` alike, from the settings file."""
    import threading

    ca, kw = _files(tmp_path)
    cfg_file = tmp_path / "tipline.toml"
    cfg_file.write_text(FILE_TEXT.format(ca=ca, kw=kw))
    args = ["--data-dir", str(tmp_path / "data"), "--config", str(cfg_file)]
    seen: list[worker_cmd.WorkerConfig] = []
    clean_env.setattr(worker_cmd, "check_schema", lambda url: None)
    clean_env.setattr(worker_cmd, "run_workers", lambda cfg, n: seen.append(cfg))
    res = runner.invoke(app, [*args[:2], "worker", "--drain", *args[2:]])
    assert res.exit_code == 0, res.output
    try:
        _reset_process_state()
        stop = threading.Event()
        stop.set()  # the loop configures its process, then stops at once
        worker_cmd.worker_loop(seen[0], stop)
        in_worker = _process_state()
        _reset_process_state()
        _inprocess_config(clean_env, args)
        in_serve = _process_state()
    finally:
        _reset_process_state()
    assert in_worker == in_serve
    assert in_worker["c2pa"].trust_anchors == ca and in_worker["c2pa"].allowed_list == kw
    assert in_worker["detector_card"] == kw
    assert in_worker["webhook_policy"].allow_hosts == frozenset({"media.internal", "cdn.internal"})
    assert _process_state()["detector_card"] is None  # reset: nothing leaks into later tests


def test_settings_file_env_flag_precedence_and_triage_table(tmp_path: Path) -> None:
    cfg = tmp_path / "t.toml"
    cfg.write_text("[service]\nport = 9001\n[triage]\nalert_match = 1\nage_max = 2\n")
    s, src = ServiceSettings.load_with_sources(
        cfg, env={"TIPLINE_TRIAGE_AGE_MAX": "3", "TIPLINE_WORKERS": "2"}, host="0.0.0.0"
    )
    assert (s.port, s.workers, s.host) == (9001, 2, "0.0.0.0")
    assert (s.triage.alert_match, s.triage.age_max) == (1.0, 3.0)
    assert src["port"] == "file" and src["workers"] == "env" and src["host"] == "flag"
    assert src["triage.alert_match"] == "file" and src["triage.age_max"] == "env"
    assert src["media_mode"] == "default" and src["triage.ai_weak"] == "default"
    assert ServiceSettings.load(env={}, **s.to_json()) == s
    for bad in ("[triage]\nnope = 1\n", "[triage]\nalert_match = 'x'\n", "fetch_urls = 'maybe'\n"):
        cfg.write_text(bad)
        with pytest.raises(SettingsError):
            ServiceSettings.load(cfg, env={})
    with pytest.raises(SettingsError):
        ServiceSettings.load(env={"TIPLINE_FETCH_MAX_BYTES": "0"})


def test_bad_anonymous_permission_stops_the_start(tmp_path: Path) -> None:
    s = ServiceSettings.load(env={}, data_dir=tmp_path, anonymous_permissions="match:read,nope")
    with pytest.raises(service_app.StartupError, match="nope"):
        service_app.create_app(s, load_index="none")


def test_config_show_sources_and_masking(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "tipline.toml"
    cfg.write_text(
        'port = 9001\ndatabase_url = "postgresql+psycopg://tipline:hunter2@db/tipline"\n'
        'secret_key = "form-secret"\n'
    )
    clean_env.setenv("TIPLINE_WORKERS", "3")
    clean_env.setenv("TIPLINE_MEDIA_KEY", "c2VjcmV0LW1lZGlhLWtleQ==")
    args = ["--data-dir", str(tmp_path), "config", "show", "--config", str(cfg)]
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["port"] == {"value": 9001, "source": "file", "env": "TIPLINE_PORT"}
    assert out["workers"]["value"] == 3 and out["workers"]["source"] == "env"
    assert out["data_dir"] == {"value": str(tmp_path), "source": "flag", "env": "TIPLINE_DATA_DIR"}
    assert out["host"]["source"] == "default"
    assert out["media_key"]["value"] == "********" and out["media_key"]["source"] == "env"
    assert out["secret_key"]["value"] == "********" and out["secret_key"]["source"] == "file"
    assert out["database_url"]["value"] == "postgresql+psycopg://tipline:********@db/tipline"
    assert out["triage.alert_match"]["env"] == "TIPLINE_TRIAGE_ALERT_MATCH"
    assert set(out) == set(env_names(ServiceSettings, ENV_PREFIX))
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert re.search(r"^port\s+9001\s+\(file\)$", res.output, re.M)
    assert re.search(r"^workers\s+3\s+\(env\)$", res.output, re.M)
    for secret in ("hunter2", "form-secret", "c2VjcmV0"):
        assert secret not in res.output
    bad = runner.invoke(app, ["config", "show", "--config", str(tmp_path / "missing.toml")])
    assert bad.exit_code == 2 and "cannot read config file" in bad.output


def test_every_setting_and_tipline_variable_is_documented() -> None:
    docs = "".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "docs").glob("*.md")))
    deployment = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    missing = [
        name
        for name in env_names(ServiceSettings, ENV_PREFIX)
        if f"`{name.rsplit('.', 1)[-1]}`" not in deployment
    ]
    assert not missing, f"settings not in docs/deployment.md: {missing}"
    names = set()
    for path in (ROOT / "src").rglob("*.py"):
        names |= set(re.findall(r"TIPLINE_[A-Z0-9_]*[A-Z0-9]", path.read_text(encoding="utf-8")))
    # a setting's variable is documented by its name and the TIPLINE_<NAME> rule
    assert "`TIPLINE_<NAME>`" in deployment and "`TIPLINE_TRIAGE_<WEIGHT>`" in deployment
    undocumented = sorted(n for n in names if n not in docs)
    assert not undocumented, f"TIPLINE_* names not in docs/*.md: {undocumented}"
