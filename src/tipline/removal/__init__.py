"""The removal loop (docs/removal.md): from a confirmed URL to content gone, and kept gone.

Locations and hosting attribution (:mod:`.locations`, :mod:`.hosting`, :mod:`.providers`),
cases and their state machine (:mod:`.cases`), evidence (:mod:`.evidence`), notices
(:mod:`.notices`), re-checks and escalation (:mod:`.recheck`) and time-to-removal statistics
(:mod:`.stats`).
"""
