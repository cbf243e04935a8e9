"""Structured JSON logs on stderr, each line carrying the request's tracking id.

stdout stays free for the CLI's ``--json`` output. Log lines name keys by
their id only; nothing here ever receives a key string.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog
from pydantic_core import to_json

__all__ = ["LineWriter", "configure_logging", "get_logger", "route_stdlib_logging"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
_LEVELS["error"] = logging.ERROR


class LineWriter:
    """structlog's logger: each line goes out in one ``write(2)``, text and newline together.

    structlog's ``PrintLogger`` prints the text, then the newline: two
    writes when stderr is unbuffered (``PYTHONUNBUFFERED=1``, common in
    container images). The workers of ``serve --workers N`` share one
    stderr, and another worker's line landed between the two: 0.1-0.8% of
    lines held ``}{`` (issue 12), 16% of the lines of 6 processes logging to
    one pipe (``tests/test_logs.py``, before this class). One ``os.write`` a
    line is atomic on a pipe up to ``PIPE_BUF`` (4,096 bytes on Linux,
    https://man7.org/linux/man-pages/man7/pipe.7.html) and on a file opened
    with ``O_APPEND``; a longer line (a stack trace) can still be split by
    another writer's. ``sys.stderr`` is looked up on every line, so
    redirections (pytest's too) apply; a stream without a file descriptor
    (pytest's ``capsys``) gets the whole line in one ``write`` call.
    """

    def msg(self, message: str) -> None:
        line = message + "\n"
        stream = sys.stderr
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):  # no descriptor: an in-memory stream
            stream.write(line)
            stream.flush()
            return
        data = line.encode("utf-8", "backslashreplace")
        # A write(2) may take less than all of it (a signal, a full pipe of a
        # non-blocking reader): the rest follows, never a second copy.
        while data:
            data = data[os.write(fd, data) :]

    log = debug = info = warning = warn = error = critical = exception = fatal = msg


def _line_writer(*_args: Any) -> LineWriter:
    return LineWriter()


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
        logger_factory=_line_writer,
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
