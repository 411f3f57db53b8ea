"""Job handlers used by tests/test_jobs.py (imported by test worker processes via --import).

The effect of ``test.effect`` is an idempotent insert keyed by the job id into the test-only
table ``job_effects``, so a re-run after a crash has no second effect; every run (attempt) is
also appended to a log file, so tests can see how many times it really ran.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from sqlalchemy import text

from tipline.store.jobs import JobContext, PermanentJobError, register_handler

EFFECTS_DDL = "CREATE TABLE job_effects (job_id INTEGER PRIMARY KEY, attempt INTEGER NOT NULL)"


@register_handler("test.effect")
def effect(ctx: JobContext) -> None:
    log = ctx.payload.get("log")
    if log:
        with open(log, "a") as f:
            f.write(f"{ctx.job_id} {ctx.attempt} {os.getpid()}\n")
    with ctx.session_factory() as s, s.begin():
        s.execute(
            text(
                "INSERT INTO job_effects (job_id, attempt) VALUES (:j, :a) "
                "ON CONFLICT (job_id) DO NOTHING"
            ),
            {"j": ctx.job_id, "a": ctx.attempt},
        )
    if ctx.payload.get("hang_on_first") and ctx.attempt == 1:
        # The effect is committed; now "crash" before completing: the test SIGKILLs us.
        Path(ctx.payload["ready"]).write_text(str(os.getpid()))
        time.sleep(3600)


@register_handler("test.flaky")
def flaky(ctx: JobContext) -> None:
    if ctx.attempt < int(ctx.payload.get("succeed_on", 10**6)):
        raise RuntimeError(f"transient failure on attempt {ctx.attempt}")


@register_handler("test.permanent")
def permanent(ctx: JobContext) -> None:
    raise PermanentJobError("invalid input: nothing to retry")
