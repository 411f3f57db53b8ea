"""``tipline worker``: run queued jobs (see :mod:`tipline.store.jobs`) in worker processes.

The command starts ``--concurrency`` processes (``spawn``: each imports the handler modules and
opens its own engine) and supervises them: a process that dies (killed, crashed) is started
again, and its job comes back to the queue when its lease expires. SIGTERM or Ctrl-C stops
gracefully: each process finishes the job it is running, then exits.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from tipline.cli import state
from tipline.cli.app import app
from tipline.cli.database import ensure_schema
from tipline.errors import TiplineError
from tipline.store.base import make_engine, session_factory
from tipline.store.jobs import (
    DEFAULT_LEASE_SECONDS,
    JobQueue,
    handlers,
    load_handler_modules,
)

if TYPE_CHECKING:
    from tipline.pipeline import PipelineConfig
    from tipline.service.settings import ServiceSettings

log = logging.getLogger("tipline.worker")


@dataclass(frozen=True)
class WorkerConfig:
    url: str
    kinds: tuple[str, ...] | None = None
    modules: tuple[str, ...] = ()
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    poll_interval: float = 1.0
    #: Exit once no job is due (for scripts and tests) instead of polling forever.
    drain: bool = False
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    #: The settings ``tipline worker`` resolved (``--config``, ``TIPLINE_*``, flags); each
    #: process builds its pipeline configuration from them (:func:`pipeline_config`).
    settings: ServiceSettings | None = None


def pipeline_config(settings: ServiceSettings) -> PipelineConfig:
    """A worker process's pipeline configuration: :func:`tipline.service.wiring.pipeline_config`,
    the function ``tipline serve``'s in-process workers use too (with their own live index)."""
    from tipline.service.wiring import pipeline_config as build

    return build(settings)


def check_schema(url: str) -> None:
    """Refuse to run against a named database that is not at this Tipline's schema (workers
    never change the schema of a database shared with others: `tipline db upgrade` does)."""
    ensure_schema(url, embedded=False, create_empty=False)


def worker_loop(cfg: WorkerConfig, stop: EventType, index: int = 0) -> int:
    """One worker: lease and run jobs until ``stop`` is set. Returns how many jobs it ran."""
    load_handler_modules(cfg.modules)
    from tipline import pipeline
    from tipline.service.settings import ServiceSettings
    from tipline.service.wiring import configure_process

    settings = cfg.settings if cfg.settings is not None else ServiceSettings.from_environment()
    configure_process(settings)
    pipeline.configure_lazily(lambda: pipeline_config(settings))  # built on the first job
    engine = make_engine(cfg.url)
    queue = JobQueue(engine, lease_seconds=cfg.lease_seconds)
    factory = session_factory(engine)
    worker_id = f"{cfg.name}/{index}:{os.getpid()}"
    kinds = list(cfg.kinds) if cfg.kinds is not None else None
    ran = 0
    try:
        while not stop.is_set():
            job = queue.run_one(worker_id, kinds, session_factory=factory)
            if job is not None:
                ran += 1
                continue
            if cfg.drain:
                break
            stop.wait(cfg.poll_interval)
    finally:
        engine.dispose()
    return ran


def _child(cfg: WorkerConfig, stop: EventType, index: int) -> None:
    # The parent relays SIGTERM/SIGINT through `stop`; the child finishes its job, then exits.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda _s, _f: stop.set())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    worker_loop(cfg, stop, index)


def run_workers(cfg: WorkerConfig, concurrency: int) -> None:
    """Start ``concurrency`` worker processes and supervise them until SIGTERM/SIGINT (or, with
    ``drain``, until every process found the queue empty)."""
    ctx = mp.get_context("spawn")
    stop = ctx.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: finishing running jobs, then stopping", signum)
        stop.set()

    old_term = signal.signal(signal.SIGTERM, _on_signal)
    old_int = signal.signal(signal.SIGINT, _on_signal)
    procs: dict[int, mp.process.BaseProcess] = {}

    def _start(i: int) -> None:
        p = ctx.Process(target=_child, args=(cfg, stop, i), name=f"tipline-worker-{i}")
        p.start()
        procs[i] = p

    try:
        for i in range(concurrency):
            _start(i)
        while procs:
            for i, p in list(procs.items()):
                p.join(timeout=0.2)
                if p.is_alive():
                    continue
                del procs[i]
                if p.exitcode != 0 and not stop.is_set():
                    log.warning("worker %s exited with %s; starting another", i, p.exitcode)
                    time.sleep(0.5)
                    _start(i)
    finally:
        stop.set()
        for p in procs.values():
            p.join()
        signal.signal(signal.SIGTERM, old_term)
        signal.signal(signal.SIGINT, old_int)


def start_removal_chain(settings: ServiceSettings, url: str, kinds: list[str] | None) -> int | None:
    """Start the removal scheduler's tick chain unless it runs already (docs/removal.md): once
    per ``tipline worker`` start, in the supervisor, when its processes run ``removal.tick``.
    ``--drain`` runs never start it (they only empty the queue)."""
    from tipline.removal import scheduler
    from tipline.service.wiring import removal_config

    if kinds and scheduler.TICK_KIND not in kinds:
        return None
    engine = make_engine(url)
    try:
        job_id = scheduler.ensure_started(JobQueue(engine), removal_config(settings))
    finally:
        engine.dispose()
    return job_id


@app.command("worker")
def worker_cmd(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            envvar="TIPLINE_CONFIG",
            help="TOML or JSON settings file (docs/deployment.md), the one `tipline serve` uses.",
            show_default=False,
        ),
    ] = None,
    database_url_opt: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            help="SQLAlchemy URL of the service database. Default: $TIPLINE_DATABASE_URL, "
            "else the SQLite file in the data directory.",
            show_default=False,
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, max=256, help="Worker processes.")
    ] = 2,
    kinds: Annotated[
        list[str] | None,
        typer.Option("--kind", help="Only run jobs of this kind (repeatable). Default: all."),
    ] = None,
    modules: Annotated[
        list[str] | None,
        typer.Option("--import", help="Also import this module to register handlers (repeatable)."),
    ] = None,
    lease_seconds: Annotated[
        float,
        typer.Option(
            "--lease-seconds",
            min=0.5,
            help="How long a job stays leased without a heartbeat before another worker "
            "may take it (the worker renews it every third of this while the job runs).",
        ),
    ] = DEFAULT_LEASE_SECONDS,
    poll_interval: Annotated[
        float, typer.Option("--poll-interval", min=0.01, help="Seconds between empty polls.")
    ] = 1.0,
    drain: Annotated[
        bool, typer.Option("--drain", help="Exit when no job is due instead of waiting.")
    ] = False,
    dead: Annotated[
        bool,
        typer.Option("--dead", help="List dead-lettered jobs and exit (no jobs are run)."),
    ] = False,
) -> None:
    """Run queued jobs (report processing stages) in worker processes until SIGTERM/Ctrl-C."""
    settings = state.service_settings(config, database_url=database_url_opt)
    url = settings.db_url
    if not settings.database_url:  # the data directory's SQLite file: created or upgraded
        ensure_schema(url, embedded=True)
    else:
        check_schema(url)
    if dead:
        from tipline.cli.db import print_jobs

        print_jobs(url, status="dead", kind=None, limit=100, as_json=False)
        return
    mods = tuple(modules or ())
    if mods:
        sys.path.insert(0, os.getcwd())
    load_handler_modules(mods)  # a module that cannot be imported stops the start
    known = handlers()
    if kinds:
        unknown = sorted(set(kinds) - set(known))
        if unknown:
            raise TiplineError(
                f"no handler for job kind(s) {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known)) or 'none'})"
            )
    elif not known:
        raise TiplineError("no job handlers are registered (use --import MODULE)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if not drain and settings.removal.autostart:
        # Said on stderr like the start-up line below (the root logger may be anyone's).
        started = start_removal_chain(settings, url, kinds)
        if started is not None:
            typer.echo(f"removal scheduler: tick chain started (job {started})", err=True)
    cfg = WorkerConfig(
        url=url,
        kinds=tuple(kinds) if kinds else None,
        modules=mods,
        lease_seconds=lease_seconds,
        poll_interval=poll_interval,
        drain=drain,
        settings=settings,
    )
    shown = ", ".join(cfg.kinds or sorted(known))
    typer.echo(f"tipline worker: {concurrency} process(es), kinds: {shown}", err=True)
    run_workers(cfg, concurrency)
