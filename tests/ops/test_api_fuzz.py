"""Fuzz the REST API with schemathesis against its own OpenAPI schema: no 5xx answers.

Cases are generated from the schema served by a live server (real HTTP), every
operation with an admin token. The fast variant runs a few examples per operation; the
slow one many more.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from tests.ops.conftest import ADMIN, LiveServer, make_manager

from typedq import JobQueueManager
from typedq.api import Tokens, create_app


@pytest.fixture
def fuzz_manager(tmp_path: Any) -> Iterator[JobQueueManager]:
    manager = make_manager(f"sqlite:///{tmp_path / 'fuzz.db'}")
    yield manager
    manager.close(graceful=False)


@pytest.fixture
def api_schema(fuzz_manager: JobQueueManager, serve: Callable[[Any], LiveServer]) -> Any:
    server = serve(create_app(fuzz_manager, tokens=Tokens.of([ADMIN]), max_body_bytes=4096))
    return schemathesis.openapi.from_url(
        f"{server.url}/openapi.json", headers={"Authorization": f"Bearer {ADMIN}"}
    )


_HEADERS = {"Authorization": f"Bearer {ADMIN}"}
_QUIET = [HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture]


def fuzz(api_schema: Any, examples: int) -> int:
    """Run ``examples`` generated cases of every operation; return how many operations."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=examples, deadline=None, suppress_health_check=_QUIET, database=None)
        def run(case: Any) -> None:
            case.call_and_validate(headers=_HEADERS, checks=[not_a_server_error])

        run()
    return len(operations)


@pytest.mark.timeout(120)
def test_api_answers_without_server_errors(api_schema: Any) -> None:
    assert fuzz(api_schema, examples=6) >= 15


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_api_answers_without_server_errors_many(api_schema: Any) -> None:
    assert fuzz(api_schema, examples=200) >= 15
