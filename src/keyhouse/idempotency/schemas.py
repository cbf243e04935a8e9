"""The ``Idempotency-Key`` header: what it may hold, and how long an answer is kept."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Final

__all__ = ["HEADER", "HEADER_DESCRIPTION", "MAX_LENGTH", "REPLAYED_HEADER", "RETENTION", "VALID"]

HEADER: Final = "Idempotency-Key"
# On a stored answer sent again, as Stripe marks its replays.
REPLAYED_HEADER: Final = "Idempotent-Replayed"
# Stripe's bound; a UUID (36) or any client's request id fits.
MAX_LENGTH: Final = 255
# Printable ASCII: what every HTTP stack carries unchanged (RFC 9110 section 5.5).
VALID: Final = re.compile(rf"[\x20-\x7e]{{1,{MAX_LENGTH}}}")
# How long a retry gets the first answer (Stripe: 24 hours).
RETENTION: Final = timedelta(hours=24)

HEADER_DESCRIPTION: Final = (
    "Makes the write safe to retry: a request repeated with the same key (same "
    "method, path, query and JSON body, same key or admin token) within 24 hours "
    "gets the first successful answer again, with `Idempotent-Replayed: true`, and "
    "changes nothing; with another request, `409 idempotency_key_reused`. A request "
    "sent while the first one runs waits for it. Errors are not stored: they changed "
    f"nothing, so a retry runs again. 1 to {MAX_LENGTH} printable ASCII characters "
    "(a UUID, say)."
)
