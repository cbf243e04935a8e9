"""Log lines: one JSON object a line, whole, however many processes share stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from keyhouse.logs import configure_logging, get_logger

# Each process writes LINES lines of ~PAD bytes: long lines and many writers
# make a split line likely (the old two writes a line: ~18% of lines glued).
PROCESSES = 6
LINES = 4000
PAD = 300
LOGGER = f"""
from keyhouse.logs import configure_logging, get_logger
configure_logging("info")
log = get_logger("keyhouse.access")
for i in range({LINES}):
    log.info("request", path="/keys", status=200, n=i, pad="x" * {PAD})
"""


@pytest.mark.parametrize("unbuffered", ["", "1"], ids=["buffered", "unbuffered"])
def test_lines_of_processes_sharing_one_pipe_are_never_glued(unbuffered: str) -> None:
    read_end, write_end = os.pipe()
    env = {**os.environ, "PYTHONUNBUFFERED": unbuffered}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LOGGER], stderr=write_end, stdout=subprocess.DEVNULL, env=env
        )
        for _ in range(PROCESSES)
    ]
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    assert [proc.wait(timeout=60) for proc in procs] == [0] * PROCESSES

    lines = data.decode("utf-8").splitlines()
    unparsed = 0
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            unparsed += 1
    assert (len(lines), unparsed) == (PROCESSES * LINES, 0)


def test_a_line_goes_to_the_stderr_descriptor_in_one_write(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[bytes] = []
    real_write = os.write

    def counted(fd: int, data: bytes) -> int:
        writes.append(bytes(data))
        return real_write(fd, data)

    configure_logging("info")
    monkeypatch.setattr(os, "write", counted)
    get_logger("keyhouse").info("event", detail="é")
    monkeypatch.undo()
    err = capfd.readouterr().err
    assert len(writes) == 1
    assert writes[0].decode("utf-8") == err
    assert err.endswith("\n")
    assert json.loads(err)["detail"] == "é"


def test_an_in_memory_stderr_gets_whole_lines(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info")
    get_logger("keyhouse").warning("first")
    get_logger("keyhouse").warning("second")
    lines = capsys.readouterr().err.splitlines()
    assert [json.loads(line)["event"] for line in lines] == ["first", "second"]
