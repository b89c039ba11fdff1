"""The public surface and the import layers, locked by tests.

``typedq.__all__`` is sorted and complete; the specification's names are there. Each
module under src/typedq imports only from its own layer or the layers below it (STYLE.md
§1): to place a new module, add it to ``LAYERS``. No modules import one another in a
circle, and each serializers module imports alone in a fresh interpreter.
"""

from __future__ import annotations

import ast
import fnmatch
import types
from pathlib import Path

import pytest

import typedq

SPEC_NAMES = ["Job", "JobStatus", "JobQueue", "Worker", "EventHandler", "JobQueueManager"]

#: The whole public surface of ``typedq``: adding or removing a name is a decision, made
#: here on purpose.
EXPORTED = [
    "AsyncJobQueueManager",
    "AsyncJobRef",
    "AsyncWorker",
    "BackendConfigError",
    "BackendDataError",
    "BackendError",
    "BackendUnavailableError",
    "BackendWriteError",
    "BackendWritesRefusedError",
    "Claim",
    "ClaimPolicy",
    "Clock",
    "ConfigError",
    "DependencyCycleError",
    "DeserializationError",
    "DuplicateJobError",
    "EventHandler",
    "FakeClock",
    "FieldProblem",
    "InvalidJobError",
    "InvalidTransitionError",
    "Job",
    "JobCancelledError",
    "JobContext",
    "JobFailedError",
    "JobLogLine",
    "JobNotFoundError",
    "JobProgress",
    "JobQueue",
    "JobQueueManager",
    "JobRef",
    "JobStatus",
    "JobTimeoutError",
    "JobType",
    "LeaseKeeper",
    "Limit",
    "NoHandlerError",
    "PayloadTooLargeError",
    "PayloadValidationError",
    "PayloadVersionError",
    "PermanentError",
    "Priority",
    "Queue",
    "QueueClosedError",
    "QueueNotFoundError",
    "Rate",
    "Reaper",
    "ResultSerializationError",
    "Retry",
    "RetryPolicy",
    "ScheduleNotFoundError",
    "SerializationError",
    "SignatureError",
    "StaleLeaseError",
    "SystemClock",
    "TypedJob",
    "TypedqError",
    "UnknownCodecError",
    "UnknownDependencyError",
    "UnsafeSerializerError",
    "WaitTimeoutError",
    "Worker",
    "__version__",
    "get_serializer",
    "open_queue",
]


def test_the_exported_names_are_exactly_these() -> None:
    assert typedq.__all__ == EXPORTED


def test_every_public_class_of_errors_is_exported_from_the_package() -> None:
    import typedq.errors

    public_classes = {
        name
        for name, value in vars(typedq.errors).items()
        if isinstance(value, type)
        and value.__module__ == "typedq.errors"
        and not name.startswith("_")
    }
    assert public_classes <= set(typedq.errors.__all__)
    assert "StaleLeaseError" in public_classes
    for name in public_classes:
        assert getattr(typedq, name) is getattr(typedq.errors, name)


def test_the_headline_types_are_importable_from_the_package() -> None:
    from typedq import JobRef, JobType, TypedJob, get_serializer
    from typedq._typed_api import JobRef as api_ref
    from typedq.serializers import get_serializer as by_name
    from typedq.typed import JobType as job_type
    from typedq.typed import TypedJob as typed_job

    assert (JobRef, JobType, TypedJob, get_serializer) == (api_ref, job_type, typed_job, by_name)


def test_all_is_sorted() -> None:
    assert typedq.__all__ == sorted(typedq.__all__)
    assert len(set(typedq.__all__)) == len(typedq.__all__)


def test_every_public_name_is_exported_and_every_export_exists() -> None:
    public = {
        name
        for name, value in vars(typedq).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"  # from __future__ import annotations
    }
    assert public | {"__version__"} == set(typedq.__all__)
    for name in typedq.__all__:
        assert getattr(typedq, name) is not None


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from typedq import *", namespace)
    namespace.pop("__builtins__")
    assert sorted(namespace) == typedq.__all__


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_the_specification_names_are_exported(name: str) -> None:
    assert name in typedq.__all__
    assert isinstance(getattr(typedq, name), type)


def test_the_spec_worker_is_a_thread() -> None:
    import threading

    assert issubclass(typedq.Worker, threading.Thread)


@pytest.mark.parametrize("name", [n for n in typedq.__all__ if not n.startswith("_")])
def test_every_export_is_documented(name: str) -> None:
    value = getattr(typedq, name)
    if isinstance(value, type | types.FunctionType):
        assert (value.__doc__ or "").strip(), f"typedq.{name} has no docstring"


# -- import layers -------------------------------------------------------------------------

#: Bottom to top. A module may import its own layer and the layers below it. Patterns
#: are fnmatch patterns over dotted module names; a package matches its own name.
LAYERS: list[tuple[str, ...]] = [
    ("typedq.errors",),
    ("typedq._validate", "typedq._identity"),
    ("typedq.clock",),
    ("typedq.job", "typedq.policy"),
    ("typedq.serializers", "typedq.serializers.*"),
    ("typedq.backends", "typedq.backends.*"),
    ("typedq.retry", "typedq.events"),
    ("typedq.leases",),
    ("typedq.typed",),
    ("typedq.worker", "typedq.aworker", "typedq.scheduler", "typedq._queue_group"),
    ("typedq._config",),
    ("typedq.manager", "typedq.aio"),
    ("typedq.cli", "typedq.api", "typedq.api.*", "typedq.metrics", "typedq.__main__"),
    ("typedq",),  # the package facade re-exports everything
]

SRC = Path(typedq.__file__).parent


def layer_of(module: str) -> int | None:
    """The layer index of a dotted module name, or None when no pattern places it."""
    for index, patterns in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(module, pattern) for pattern in patterns):
            return index
    return None


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str, known: set[str]) -> set[str]:
    """The typedq modules that ``module`` (at ``path``) imports, as dotted names."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                # ``from typedq.backends import memory`` imports the submodule.
                sub = f"{source}.{alias.name}"
                found.add(sub if sub in known else source)
    return {name for name in found if name == "typedq" or name.startswith("typedq.")}


def import_graph() -> dict[str, set[str]]:
    """``{module: typedq modules it imports}`` for every module under src/typedq."""
    paths = {_module_name(p): p for p in sorted(SRC.rglob("*.py"))}
    known = set(paths)
    return {module: _imports(path, module, known) - {module} for module, path in paths.items()}


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import of a higher layer, as readable lines.

    A module that no pattern places is put just as high as the highest layer it imports;
    it is only a violation when a module of a lower layer imports it.
    """
    layers = {module: layer_of(module) for module in graph}
    # Place unplaced modules as low as their imports allow (iterate: they may chain).
    inferred = {m: -1 for m, layer in layers.items() if layer is None}

    def level(module: str) -> int | None:
        placed = layer_of(module)
        return inferred.get(module) if placed is None else placed

    changed = True
    while changed:
        changed = False
        for module, placed in inferred.items():
            lowest = max((lvl for dep in graph[module] if (lvl := level(dep)) is not None), default=-1)
            if lowest > placed:
                inferred[module] = lowest
                changed = True
    problems = []
    for module, deps in sorted(graph.items()):
        own = layers[module]
        if own is None:
            continue  # an unplaced module sits above what it imports, by construction
        for dep in sorted(deps):
            dep_layer = level(dep)
            if dep_layer is not None and dep_layer > own:
                problems.append(f"{module} (layer {own}) imports {dep} (layer {dep_layer})")
    return problems


def test_no_module_imports_a_layer_above_it() -> None:
    assert layering_violations(import_graph()) == []


def test_the_import_graph_sees_the_imports() -> None:
    graph = import_graph()
    assert "typedq.errors" in graph["typedq.job"]
    assert "typedq.backends.memory" in graph["typedq.backends"]
    assert graph["typedq.errors"] == set()


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        pytest.param({"typedq.job": {"typedq.errors"}, "typedq.errors": set()}, [], id="downward-ok"),
        pytest.param(
            {"typedq.retry": {"typedq.events"}, "typedq.events": {"typedq.retry"}}, [], id="same-layer-ok"
        ),
        pytest.param(
            {"typedq.errors": {"typedq.job"}, "typedq.job": set()},
            ["typedq.errors (layer 0) imports typedq.job (layer 3)"],
            id="upward",
        ),
        pytest.param(
            {"typedq.backends.sqlite": {"typedq.serializers.json"}, "typedq.serializers.json": set()},
            [],
            id="subpackages",
        ),
        pytest.param(
            {"typedq.job": {"typedq._util"}, "typedq._util": {"typedq.manager"}, "typedq.manager": set()},
            ["typedq.job (layer 3) imports typedq._util (layer 11)"],
            id="unknown-module-pulls-upward",
        ),
        pytest.param(
            {"typedq.manager": {"typedq._util"}, "typedq._util": {"typedq.job"}, "typedq.job": set()},
            [],
            id="unknown-module-below-ok",
        ),
        pytest.param(
            {"typedq.errors": {"typedq._a"}, "typedq._a": {"typedq._b"}, "typedq._b": {"typedq.clock"}},
            ["typedq.errors (layer 0) imports typedq._a (layer 2)"],
            id="unknown-modules-chain",
        ),
        pytest.param(
            {"typedq.clock": {"typedq._c"}, "typedq._c": {"typedq.errors"}, "typedq.errors": set()},
            [],
            id="unknown-module-on-layer-0",
        ),
        pytest.param(
            {"typedq.job": {"typedq"}, "typedq": {"typedq.job"}},
            ["typedq.job (layer 3) imports typedq (layer 13)"],
            id="facade-is-top",
        ),
    ],
)
def test_the_layering_check_itself(graph: dict[str, set[str]], expected: list[str]) -> None:
    assert layering_violations(graph) == expected


# -- import cycles -------------------------------------------------------------------------


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every group of modules that import one another in a circle (Tarjan's strongly
    connected components of more than one module), each sorted, sorted by first name.

    Imports under ``if TYPE_CHECKING:`` count: a circle there is a circle for readers,
    type checkers and the next refactoring that moves the import out.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for dep in sorted(graph.get(module, ())):
            if dep not in graph:
                continue
            if dep not in index:
                visit(dep)
                low[module] = min(low[module], low[dep])
            elif dep in on_stack:
                low[module] = min(low[module], index[dep])
        if low[module] == index[module]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == module:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return sorted(cycles)


#: Imports that would close a cycle, allowed because they are made only when called (in
#: a function) or for the type checker (under ``if TYPE_CHECKING``), never when the module
#: is imported: ``JobQueueManager.aio`` builds an ``AsyncJobQueueManager``.
DEFERRED_IMPORTS = [("typedq.manager", "typedq.aio")]


def _run_time_imports(module: str) -> set[str]:
    """The typedq modules ``module`` imports when it is imported (module-level statements
    but those under ``if TYPE_CHECKING``)."""
    path = SRC.parent / (module.replace(".", "/") + ".py")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_no_modules_import_one_another_in_a_circle() -> None:
    graph = import_graph()
    for module, target in DEFERRED_IMPORTS:
        assert target in graph[module], f"{module} no longer imports {target}: drop the entry"
        assert target not in _run_time_imports(module), f"{module} imports {target} at import time"
        graph[module] = graph[module] - {target}
    assert import_cycles(graph) == []


@pytest.mark.parametrize(
    ("graph", "expected"),
    [
        pytest.param({"a": {"b"}, "b": {"c"}, "c": set()}, [], id="chain"),
        pytest.param({"a": {"b"}, "b": {"a"}}, [["a", "b"]], id="pair"),
        pytest.param(
            {"base": {"_registry"}, "_registry": {"compress"}, "compress": {"base"}, "json": set()},
            [["_registry", "base", "compress"]],
            id="three",
        ),
        pytest.param(
            {"a": {"b", "x"}, "b": {"a"}, "c": {"d"}, "d": {"c"}}, [["a", "b"], ["c", "d"]], id="two"
        ),
    ],
)
def test_the_cycle_check_itself(graph: dict[str, set[str]], expected: list[list[str]]) -> None:
    assert import_cycles(graph) == expected


SERIALIZER_MODULES = sorted(m for m in import_graph() if m.startswith("typedq.serializers"))


@pytest.mark.parametrize("module", SERIALIZER_MODULES)
def test_each_serializers_module_imports_alone_in_a_fresh_interpreter(module: str) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
