"""Typing promises as tests: mypy accepts the files in ``ok/`` and rejects ``bad/`` as marked.

Each line of a ``bad/`` file that must fail carries ``# E: <text>``: mypy must report an
error on that line containing the text, and no error on any unmarked line. This is what
lets a user trust that a wrong payload model or a wrong handler never reaches a worker.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mypy import api

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
CONFIG = ROOT / "mypy.ini"
EXPECT = re.compile(r"#\s*E:\s*(?P<text>.+?)\s*$")
ERROR = re.compile(r"^(?P<path>[^:]+):(?P<line>\d+): error: (?P<message>.*)$")


def run_mypy(path: Path) -> tuple[str, int]:
    stdout, stderr, status = api.run(
        ["--config-file", str(CONFIG), "--no-incremental", "--cache-dir=/dev/null", str(path)]
    )
    return stdout + stderr, status


def errors_by_line(output: str) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {}
    for line in output.splitlines():
        match = ERROR.match(line)
        if match:
            found.setdefault(int(match["line"]), []).append(match["message"])
    return found


def expectations(path: Path) -> dict[int, str]:
    wanted: dict[int, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = EXPECT.search(line)
        if match:
            wanted[number] = match["text"]
    return wanted


@pytest.mark.parametrize("path", sorted((HERE / "ok").glob("*.py")), ids=lambda p: p.name)
def test_ok_files_type_check(path: Path) -> None:
    output, status = run_mypy(path)
    assert status == 0, output


@pytest.mark.parametrize("path", sorted((HERE / "bad").glob("*.py")), ids=lambda p: p.name)
def test_bad_files_fail_exactly_where_marked(path: Path) -> None:
    wanted = expectations(path)
    assert wanted, f"{path.name} marks no expected error"
    output, status = run_mypy(path)
    assert status == 1, output
    found = errors_by_line(output)
    for line, text in wanted.items():
        messages = found.get(line, [])
        assert any(text in m for m in messages), (
            f"{path.name}:{line}: expected an error containing {text!r}, got {messages or 'none'}"
        )
    unexpected = {line: m for line, m in found.items() if line not in wanted}
    assert not unexpected, f"{path.name}: errors on unmarked lines: {unexpected}"
