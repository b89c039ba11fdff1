"""The error hierarchy: the tree drawn in ``typedq.errors``'s docstring is the truth."""

from __future__ import annotations

import builtins
import re

import pytest

from typedq import errors
from typedq.errors import (
    ConfigError,
    DependencyCycleError,
    DuplicateJobError,
    InvalidJobError,
    JobNotFoundError,
    JobTimeoutError,
    QueueNotFoundError,
    StaleLeaseError,
    TypedqError,
    UnknownDependencyError,
)

_NODE = re.compile(r"(?P<name>[A-Z]\w+Error)(?: \((?P<builtin>\w+)\))?")


def _tree() -> dict[str, tuple[str | None, str | None]]:
    """Parse the docstring tree: ``{class name: (parent name, builtin name)}``."""
    doc = errors.__doc__
    assert doc is not None
    nodes: dict[str, tuple[str | None, str | None]] = {}
    stack: list[tuple[int, str]] = []  # (column, name) of the open ancestors
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped == "TypedqError":
            column = line.index("TypedqError")
        elif "── " in line:
            column = line.index("── ") + 3
        else:
            continue
        match = _NODE.match(line, column)
        assert match is not None, f"unreadable tree line: {line!r}"
        while stack and stack[-1][0] >= column:
            stack.pop()
        parent = stack[-1][1] if stack else None
        nodes[match["name"]] = (parent, match["builtin"])
        stack.append((column, match["name"]))
    return nodes


TREE = _tree()


def test_the_tree_is_drawn_and_rooted() -> None:
    assert TREE["TypedqError"] == (None, None)
    assert len(TREE) > 20
    assert TREE["DuplicateJobError"] == ("InvalidJobError", None)
    assert TREE["BackendUnavailableError"] == ("BackendError", "ConnectionError")


def test_every_exported_error_is_in_the_tree_and_back() -> None:
    exported_errors = {
        name
        for name in errors.__all__
        if isinstance(cls := getattr(errors, name), type) and issubclass(cls, BaseException)
    }
    assert exported_errors == set(TREE)
    # Besides the errors: the record of one bad payload field and the message's limit.
    assert set(errors.__all__) - exported_errors == {"FieldProblem", "MAX_LISTED_ERRORS"}


@pytest.mark.parametrize("name", sorted(TREE))
def test_each_error_has_the_bases_the_tree_says(name: str) -> None:
    cls = getattr(errors, name)
    assert issubclass(cls, TypedqError)
    parent, builtin = TREE[name]
    if parent is not None:
        assert issubclass(cls, getattr(errors, parent))
    if builtin is not None:
        assert issubclass(cls, getattr(builtins, builtin))


@pytest.mark.parametrize(
    ("cls", "builtin"),
    [
        (InvalidJobError, ValueError),
        (DuplicateJobError, ValueError),
        (UnknownDependencyError, ValueError),
        (DependencyCycleError, ValueError),
        (ConfigError, ValueError),
        (JobNotFoundError, KeyError),
        (QueueNotFoundError, KeyError),
        (JobTimeoutError, TimeoutError),
        (StaleLeaseError, RuntimeError),
    ],
)
def test_the_builtins_callers_catch(cls: type[Exception], builtin: type[Exception]) -> None:
    assert issubclass(cls, builtin)
    assert issubclass(cls, TypedqError)


def test_job_not_found_reads_unquoted_and_is_caught_as_key_error() -> None:
    exc = JobNotFoundError("abc-1", queue="emails")
    text = str(exc)
    assert not text.startswith(("'", '"'))
    assert "abc-1" in text
    assert "emails" in text
    assert exc.job_id == "abc-1"
    with pytest.raises(KeyError):
        raise exc


def test_queue_not_found_reads_unquoted_and_lists_the_queues() -> None:
    text = str(QueueNotFoundError("nope", ["b", "a"]))
    assert not text.startswith(("'", '"'))
    assert "nope" in text
    assert "a, b" in text


def test_field_errors_name_field_value_and_what_is_allowed() -> None:
    exc = InvalidJobError("priority", 11, "an int from 1 to 10")
    assert (exc.field, exc.value, exc.allowed) == ("priority", 11, "an int from 1 to 10")
    text = str(exc)
    assert "priority" in text
    assert "11" in text
    assert "an int from 1 to 10" in text
    config = ConfigError("max_workers", -2, "an int >= 1")
    assert "max_workers" in str(config)
    assert "-2" in str(config)


def test_a_huge_value_does_not_flood_the_message() -> None:
    huge = "x" * 100_000
    assert len(str(InvalidJobError("job_id", huge, "short ids"))) < 300
    assert len(str(DuplicateJobError(huge))) < 300
    assert len(str(JobNotFoundError(huge))) < 300
    assert len(str(UnknownDependencyError(huge, huge))) < 600


def test_specific_messages_name_what_went_wrong() -> None:
    assert "job-9" in str(DuplicateJobError("job-9", queue="q"))
    dep = UnknownDependencyError("child", "parent-x")
    assert "child" in str(dep)
    assert "parent-x" in str(dep)
    assert dep.field == "depends_on"
    assert "a -> b -> a" in str(DependencyCycleError(["a", "b", "a"]))
    stale = StaleLeaseError("j1", 3, reason="attempt 4 holds the lease now")
    assert "j1" in str(stale)
    assert "3" in str(stale)
    assert "attempt 4" in str(stale)
    timeout = JobTimeoutError("j2", 1.5)
    assert "j2" in str(timeout)
    assert "1.5" in str(timeout)
