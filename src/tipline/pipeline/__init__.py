"""The report pipeline: ingest -> fetch -> analyse -> cluster -> triage, as durable jobs.

No HTTP here: the service's intake enqueues the first job, and ``tipline serve``'s in-process
workers or ``tipline worker`` processes run the stages. Each process is configured once with a
:class:`PipelineConfig` (built from the deployment's settings by
:func:`tipline.service.wiring.pipeline_config`). Importing this package registers the stage
handlers with the job queue.
"""

from tipline.pipeline.stages import (
    SERVICE_ARCHIVE_LIMITS,
    STAGE_FUNCTIONS,
    STAGES,
    FollowUp,
    MatchFn,
    PipelineConfig,
    configure,
    configure_lazily,
    fetch_url_bytes,
    get_config,
    register,
    run_stage,
    start_workers,
)

__all__ = [
    "SERVICE_ARCHIVE_LIMITS",
    "STAGES",
    "STAGE_FUNCTIONS",
    "FollowUp",
    "MatchFn",
    "PipelineConfig",
    "configure",
    "configure_lazily",
    "fetch_url_bytes",
    "get_config",
    "register",
    "run_stage",
    "start_workers",
]
