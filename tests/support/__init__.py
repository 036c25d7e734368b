"""Helpers for tests and scripts that are not part of the joulebench product."""
