"""Fixtures for the security tests: the real Redis of the limits tests (db 13)."""

from __future__ import annotations

from tests.limits.conftest import redis_url

__all__ = ["redis_url"]
