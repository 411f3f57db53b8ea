"""``scan --keywords FILE``: the user's keyword list applied to every record before it is written.

Fields checked: the file name (and archive member paths), and the text the provenance readers
found (prompts, negative prompts, kohya training tags and dataset folders, model and LoRA names).
A hit becomes a ``keyword`` finding in ``record.provenance`` whose evidence has the category, the
field and the count; the matched terms are under ``evidence["text"]`` only, so they are written
only with ``--include-text``. Free text the readers kept for this pass is dropped afterwards
unless ``--include-text`` was given.
"""

from __future__ import annotations

from collections.abc import Callable

from tipline.findings import ai_evidence
from tipline.provenance.keywords import KeywordMatcher, item_fields
from tipline.record import ItemRecord


def apply_keywords(rec: ItemRecord, matcher: KeywordMatcher, include_text: bool) -> None:
    findings = matcher.findings(item_fields(rec.path, rec.provenance or ()))
    if findings:
        rec.provenance = [*(rec.provenance or []), *findings]
    if rec.provenance is not None:
        if not include_text:
            for f in rec.provenance:
                f.evidence.pop("text", None)
        rec.ai_evidence = ai_evidence(rec.provenance)


def keyword_emit(
    emit: Callable[[ItemRecord], None], matcher: KeywordMatcher, include_text: bool
) -> Callable[[ItemRecord], None]:
    def wrapped(rec: ItemRecord) -> None:
        apply_keywords(rec, matcher, include_text)
        emit(rec)

    return wrapped
