"""Tipline: hash matching, AI provenance, triage and review for child-safety hotlines."""

__version__ = "0.1.0"
