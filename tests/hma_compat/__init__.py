"""HMA's own API tests, replayed black-box over HTTP against a real ``tipline serve``."""
