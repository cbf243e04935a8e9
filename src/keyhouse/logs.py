"""Structured JSON logs on stderr, each line carrying the request's tracking id.

stdout stays free for the CLI's ``--json`` output. Log lines name keys by
their id only; nothing here ever receives a key string.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog
from pydantic_core import to_json

__all__ = ["configure_logging", "get_logger", "route_stdlib_logging"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LEVELS["error"] = logging.ERROR


class _Stderr:
    """Looks ``sys.stderr`` up on every write, so redirections (pytest's too) apply."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _dumps(event: dict[str, Any], **_: Any) -> str:
    # pydantic-core's serializer: ~3 us less than json.dumps per access log
    # line, of a 72 us POST /verify (timeit of one access log line). Anything
    # it cannot serialize is written as its str().
    return to_json(event, fallback=str).decode("utf-8")


def configure_logging(level: str = "info") -> None:
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(serializer=_dumps),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


class _StructlogHandler(logging.Handler):
    """A stdlib record as one of keyhouse's JSON lines (``logger``: where it came from)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            event = record.getMessage()
        except Exception:  # a record whose arguments do not fit its format
            event = str(record.msg)
        fields: dict[str, Any] = {"logger": record.name}
        if record.exc_info:
            fields["exc_info"] = record.exc_info
        structlog.get_logger(record.name).log(record.levelno, event, **fields)


def route_stdlib_logging(level: str = "info") -> None:
    """Every stdlib logger's records (uvicorn's start and stop, asyncio's, Python's
    warnings) written as keyhouse's JSON lines, through the same structlog pipeline.

    For ``keyhouse serve``: uvicorn runs with ``log_config=None`` and its
    loggers propagate here. Its own formatter wrote plain text ("INFO:
    Started server process [123]") among the JSON lines (issue 13). Call
    ``configure_logging`` first; calling this again replaces the handler.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _StructlogHandler):
            root.removeHandler(handler)
    root.addHandler(_StructlogHandler())
    root.setLevel(_LEVELS.get(level, logging.INFO))
    logging.captureWarnings(True)
