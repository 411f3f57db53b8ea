"""A deployment's settings, handed to the library: the one road settings take.

:func:`pipeline_config` builds THE pipeline configuration and :func:`configure_process` sets the
process-wide reader and delivery settings (C2PA trust, the detector card, the webhook address
policy), for ``tipline serve``'s in-process workers and ``tipline worker`` processes alike, so a
setting cannot reach one and miss the other (tests/test_config_path.py checks both roads give
the same configuration). The library below never reads the settings or the environment itself.
"""

from __future__ import annotations

import os
from pathlib import Path

from tipline.actions import webhooks
from tipline.crawl import engine as crawl_engine
from tipline.exchange import store as exchange_store
from tipline.pipeline import MatchFn, PipelineConfig
from tipline.provenance import c2pa, detector
from tipline.provenance.keywords import KeywordList, KeywordMatcher
from tipline.record import ItemRecord, Match
from tipline.removal import notices as removal_notices
from tipline.removal import scheduler as removal_scheduler
from tipline.removal.hosting import RdapClient
from tipline.scan.hashing import HashOptions
from tipline.service.matching import MatchService
from tipline.service.settings import ServiceSettings
from tipline.store.media import KEY_ENV, Keyring, ensure_key_file, from_settings


def pipeline_config(settings: ServiceSettings, match: MatchFn | None = None) -> PipelineConfig:
    """The pipeline configuration ``settings`` describe.

    ``match``: the caller's live index (the service's ``MatchService.match_record``); None
    opens one on the settings' database, loaded on first use."""
    if match is None:
        svc = MatchService.for_data_dir(
            settings.data_dir, settings.db_url, settings.index_path, settings.index_refresh_seconds
        )

        def match(record: ItemRecord) -> list[Match]:
            if not svc.loaded:
                svc.load()
            return svc.match_record(record)

    keywords = None
    if settings.keywords_file:
        keywords = KeywordMatcher(KeywordList.load(Path(settings.keywords_file)))
    return PipelineConfig(
        match=match,
        media_store=from_settings(settings) if settings.media_mode != "hash-only" else None,
        fetch_settings=settings.fetch_settings(),
        # stored PDQ is shared (exports, bank adds from items): the reference pipeline; its
        # matching also looks up rotations and the extra query hashes (never stored)
        hash_options=HashOptions(
            pdq_mode="reference",
            watermarks=settings.watermarks,
            dihedral=True,
            trim_borders=True,
            crop_queries=True,
        ),
        weights=settings.triage,
        keywords=keywords,
        fetch_urls=settings.fetch_urls,
    )


def configure_process(settings: ServiceSettings) -> None:
    """Process-wide settings of the library's readers and deliveries, from ``settings``."""
    c2pa.configure(
        c2pa.C2paSettings(
            trust_anchors=Path(settings.c2pa_trust_anchors)
            if settings.c2pa_trust_anchors
            else None,
            allowed_list=Path(settings.c2pa_allowed_list) if settings.c2pa_allowed_list else None,
        )
    )
    detector.configure(settings.detector_card or None)
    webhooks.configure(settings.fetch_settings())
    exchange_store.configure(
        settings.fetch_settings(),
        lambda: credentials_keyring(settings),
        index_dir=settings.index_path,  # the fetcher journals its batches for live indexes
    )
    removal_scheduler.configure(removal_config(settings))
    crawl_engine.configure_lazily(lambda: crawl_config(settings))


def crawl_config(
    settings: ServiceSettings, pipeline: PipelineConfig | None = None
) -> crawl_engine.CrawlConfig:
    """The crawler's configuration (``[crawl]`` settings; docs/crawl.md): the pipeline's
    analysis for media, the Tor proxy, evidence of matched pages."""
    c = settings.crawl
    r = settings.removal
    evidence_dir = Path(r.evidence_dir) if r.evidence_dir else settings.data_dir / "evidence"
    return crawl_engine.CrawlConfig(
        pipeline=pipeline or pipeline_config(settings),
        workers=c.workers,
        tor_proxy=c.tor_proxy,
        evidence_dir=evidence_dir if c.evidence else None,
        keyring=credentials_keyring(settings) if c.evidence else None,
        model_size_cap=c.model_size_cap,
        stale_seconds=c.stale_seconds,
        journal_dir=settings.data_dir / "crawl-journal",
    )


def crawl_defaults(settings: ServiceSettings) -> tuple[crawl_engine.Budgets, crawl_engine.Policy]:
    """A new crawl's budgets and policy from ``[crawl]``."""
    c = settings.crawl
    return (
        crawl_engine.Budgets(
            max_pages=c.max_pages,
            max_bytes=c.max_bytes,
            max_depth=c.max_depth,
            max_seconds=c.max_seconds,
            max_media=c.max_media,
        ),
        crawl_engine.Policy(
            barren_pages=c.barren_pages,
            per_host_concurrency=c.per_host_concurrency,
            per_host_delay=c.per_host_delay,
        ),
    )


def removal_config(settings: ServiceSettings) -> removal_scheduler.RemovalConfig:
    """The removal scheduler's configuration (``[removal]`` settings; docs/removal.md)."""
    r = settings.removal
    notice_defaults = removal_notices.NoticeSettings()
    return removal_scheduler.RemovalConfig(
        evidence_dir=Path(r.evidence_dir) if r.evidence_dir else settings.data_dir / "evidence",
        keyring=lambda: credentials_keyring(settings),
        hotline_country=r.hotline_country.strip().upper(),
        notify_host_abroad=r.notify_host_abroad,
        recheck_hours=r.recheck_hours,
        misses_to_remove=r.misses_to_remove,
        watch_days=r.watch_days,
        ladder=removal_scheduler.load_ladder(Path(r.ladder_file))
        if r.ladder_file
        else removal_scheduler.DEFAULT_LADDER,
        notices=removal_notices.NoticeSettings(
            sender=removal_notices.Sender(
                organisation=r.sender_organisation,
                name=r.sender_name,
                email=r.sender_email,
                website=r.sender_website,
                address=r.sender_address,
                country=r.hotline_country.strip().upper(),
            ),
            smtp=removal_notices.SmtpSettings(
                host=r.smtp_host,
                port=r.smtp_port,
                starttls=r.smtp_starttls,
                username=r.smtp_user,
                password=r.smtp_password,
                from_address=r.smtp_from,
                ca_file=r.smtp_ca_file or None,
            ),
            legal_basis=r.legal_basis or notice_defaults.legal_basis,
            template_dir=Path(r.notice_templates) if r.notice_templates else None,
            recheck_hours=r.recheck_hours,
        ),
        fetch_settings=settings.fetch_settings(),
        tick_seconds=r.tick_seconds,
        rdap=RdapClient(r.rdap_url, settings.fetch_settings()) if r.rdap else None,
    )


def credentials_keyring(settings: ServiceSettings) -> Keyring:
    """The key exchange credentials are sealed with: the media store's (``media.key`` in the
    data directory, created on first use like the media store's, or ``TIPLINE_MEDIA_KEY``),
    whatever the media mode."""
    env = dict(os.environ)
    if settings.media_key:
        env[KEY_ENV] = ",".join(k for k in (env.get(KEY_ENV), settings.media_key) if k)
    if not settings.key_file and not env.get(KEY_ENV):
        ensure_key_file(settings.key_path)
    return Keyring.load(settings.key_path, env)
