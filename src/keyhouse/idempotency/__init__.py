"""Idempotent writes: a retry with the same ``Idempotency-Key`` gets the first answer."""
