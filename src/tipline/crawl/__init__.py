"""Fetching what reports point at, safely."""
