"""Typed jobs: ``JobType[P, R]``, payload versions and migrations, ``TypedJob[P]``.

A :class:`JobType` names a kind of job and fixes its types: the payload is a Pydantic
model ``P``, the result a type ``R``. mypy then checks that a handler takes a ``P`` and
returns an ``R``, and that a submission passes a ``P``::

    class Resize(BaseModel):
        url: str
        width: int

    resize = JobType("resize", Resize, result=str, version=2)

    @resize.migration(from_version=1)
    def _(old: dict[str, Any]) -> dict[str, Any]:
        return {**old, "width": old.pop("size")}

Stored jobs stay plain: the payload is the model's JSON-mode dump and its version sits in
``job.metadata["typedq.payload_version"]``, so ``export_jobs()`` stays JSON-safe and the
untyped API keeps working beside the typed one. When a worker loads a payload, it runs the
migrations from the stored version up to the current one, then validates. A payload from a
*newer* version than the code knows raises :class:`~typedq.errors.PayloadVersionError`,
one that does not validate raises :class:`~typedq.errors.PayloadValidationError`: the job
is never dropped; it waits in the dead-letter queue for a replay after a deploy.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any, Final, Generic, TypeVar, overload

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from typedq._validate import require_number
from typedq.backends._unique import unique_metadata
from typedq.errors import (
    ConfigError,
    FieldProblem,
    InvalidJobError,
    PayloadValidationError,
    PayloadVersionError,
    ResultSerializationError,
)
from typedq.job import Job, JobStatus, parse_priority
from typedq.retry import FailureCallback, FailureRules, RetryPolicy

__all__ = [
    "VERSION_KEY",
    "JobType",
    "Migration",
    "TypedJob",
    "validation_error",
]

P = TypeVar("P", bound=BaseModel)
R = TypeVar("R")

#: Where a typed job's payload version is stored in ``Job.metadata``.
VERSION_KEY: Final = "typedq.payload_version"

#: A migration upgrades a payload dict by one version.
Migration = Callable[[dict[str, Any]], dict[str, Any]]


def validation_error(exc: ValidationError, *, where: str, value: object = None) -> PayloadValidationError:
    """Turn a Pydantic ``ValidationError`` into a typed error naming every bad field.

    The error's ``field``/``value``/``allowed`` are the first bad field's; its ``errors``
    hold every bad field (dotted path, what is wrong, the input), and its message lists
    up to ten of them, then "and N more".

    Args:
        exc: what Pydantic raised.
        where: what was validated ("payload of 'resize'"), for the message.
        value: the offending input when the error has none.
    """
    problems = [
        FieldProblem(
            ".".join(str(part) for part in err["loc"]) or "(root)",
            err["msg"],
            err.get("input", value),
        )
        for err in exc.errors(include_url=False)
    ]
    if not problems:
        problems = [FieldProblem("(root)", str(exc), value)]
    return PayloadValidationError.from_problems(where, problems)


class JobType(Generic[P, R]):
    """A kind of job with a typed payload ``P`` and result ``R``.

    Args:
        name: the job type (the key handlers are registered under).
        payload: the Pydantic model of the payload.
        result: the type of the handler's return value (default: ``None``).
        version: the payload model's current version (>= 1).
        queue: the default queue of its jobs.
        priority: their default priority (1-10, or a level name such as ``"high"``).
        max_retries: their default retry budget.
        timeout_s: their default handler timeout (None: none).
        unique: derives each job's unique key from its payload (``lambda p: p.url``);
            the key is ``"<name>:<what it returns>"`` (see "Unique jobs" in the README).
        unique_fields: or: the payload fields whose values make the key (JSON of them).
        unique_for: seconds (or a timedelta) after which a job's key is released anyway.
        unique_states: the statuses in which a job holds its key (default PENDING,
            RUNNING).
        retry: the type's ``RetryPolicy`` (None: the queue's).
        on_failure: called once per job of the type that dies, with the job and the
            error, in the worker (a raising callback is logged and changes nothing).

    Raises:
        ConfigError: a setting is out of range or ``payload`` is not a model class.
    """

    @overload
    def __init__(
        self: JobType[P, None],
        name: str,
        payload: type[P],
        *,
        version: int = ...,
        queue: str = ...,
        priority: int | str = ...,
        max_retries: int = ...,
        timeout_s: float | None = ...,
        unique: Callable[[P], object] | None = ...,
        unique_fields: Sequence[str] | None = ...,
        unique_for: float | timedelta | None = ...,
        unique_states: Sequence[JobStatus | str] | None = ...,
        retry: RetryPolicy | None = ...,
        on_failure: FailureCallback | None = ...,
    ) -> None: ...

    @overload
    def __init__(
        self,
        name: str,
        payload: type[P],
        result: type[R],
        *,
        version: int = ...,
        queue: str = ...,
        priority: int | str = ...,
        max_retries: int = ...,
        timeout_s: float | None = ...,
        unique: Callable[[P], object] | None = ...,
        unique_fields: Sequence[str] | None = ...,
        unique_for: float | timedelta | None = ...,
        unique_states: Sequence[JobStatus | str] | None = ...,
        retry: RetryPolicy | None = ...,
        on_failure: FailureCallback | None = ...,
    ) -> None: ...

    def __init__(
        self,
        name: str,
        payload: type[P],
        result: Any = None,
        *,
        version: int = 1,
        queue: str = "default",
        priority: int | str = 5,
        max_retries: int = 3,
        timeout_s: float | None = None,
        unique: Callable[[P], object] | None = None,
        unique_fields: Sequence[str] | None = None,
        unique_for: float | timedelta | None = None,
        unique_states: Sequence[JobStatus | str] | None = None,
        retry: RetryPolicy | None = None,
        on_failure: FailureCallback | None = None,
    ) -> None:
        given_name: object = name
        if not isinstance(given_name, str) or not given_name.strip():
            raise ConfigError("name", name, "a non-blank job type name")
        given_model: object = payload
        if not (isinstance(given_model, type) and issubclass(given_model, BaseModel)):
            raise ConfigError("payload", payload, "a pydantic BaseModel subclass")
        require_number("version", version, minimum=1, integer=True)
        try:
            level = parse_priority(priority)
        except InvalidJobError as exc:
            raise ConfigError("priority", priority, exc.allowed) from None
        require_number("max_retries", max_retries, minimum=0, integer=True)
        require_number("timeout_s", timeout_s, minimum=0, strict=True, allow_none=True)
        self.name = name
        self.payload_model: type[P] = payload
        self.result_type: Any = type(None) if result is None else result
        self.version = version
        self.queue = queue
        self.priority = level
        self.max_retries = max_retries
        self.timeout_s = timeout_s
        if unique is not None and unique_fields is not None:
            raise ConfigError(
                "unique_fields", unique_fields, "None when unique is given (one way to make the key)"
            )
        if unique is not None and not callable(unique):
            raise ConfigError("unique", unique, "a callable taking the payload, returning the key")
        fields_given: object = unique_fields
        if fields_given is not None:
            if isinstance(fields_given, str) or not isinstance(fields_given, Sequence) or not fields_given:
                raise ConfigError("unique_fields", unique_fields, "a non-empty list of payload field names")
            missing = [f for f in fields_given if f not in payload.model_fields]
            if missing:
                raise ConfigError(
                    "unique_fields", unique_fields, f"fields of {payload.__name__}; it has no {missing[0]!r}"
                )
        self.unique = unique
        self.unique_fields: tuple[str, ...] | None = None if unique_fields is None else tuple(unique_fields)
        self.unique_for = unique_for
        self.unique_states = None if unique_states is None else tuple(unique_states)
        if unique is not None or unique_fields is not None:
            try:  # the options are checked once, here, with a key standing in
                unique_metadata("check", unique_for=unique_for, states=unique_states)
            except InvalidJobError as exc:
                raise ConfigError(exc.field, exc.value, exc.allowed) from None
        self.rules = FailureRules(retry, on_failure)
        self._migrations: dict[int, Migration] = {}
        self._result_adapter: TypeAdapter[Any] = TypeAdapter(self.result_type)

    def __repr__(self) -> str:
        result = getattr(self.result_type, "__name__", repr(self.result_type))
        return (
            f"JobType({self.name!r}, {self.payload_model.__name__}, result={result}, "
            f"version={self.version})"
        )

    # -- migrations ---------------------------------------------------------------------

    def migration(self, from_version: int) -> Callable[[Migration], Migration]:
        """Register a function upgrading a payload dict from ``from_version`` by one.

        Raises:
            ConfigError: ``from_version`` is not below the current version, or already
                has a migration.
        """
        given: object = from_version
        if isinstance(given, bool) or not isinstance(given, int) or not 1 <= given < self.version:
            raise ConfigError(
                "from_version", from_version, f"an int from 1 to {self.version - 1} (below version)"
            )
        if from_version in self._migrations:
            raise ConfigError("from_version", from_version, "a version with no migration yet")

        def register(fn: Migration) -> Migration:
            self._migrations[from_version] = fn
            return fn

        return register

    def upgrade(self, data: dict[str, Any], from_version: int) -> dict[str, Any]:
        """Run the migrations from ``from_version`` up to the current version.

        Raises:
            PayloadVersionError: the version is newer than this job type's, or a step
                has no migration.
        """
        if from_version > self.version:
            raise PayloadVersionError(
                "payload_version",
                from_version,
                f"at most {self.version}, the newest version of {self.name!r} this code knows",
                message=(
                    f"payload of {self.name!r} has version {from_version}, newer than the "
                    f"version {self.version} this worker knows; deploy the new code, then "
                    "replay the job from the dead-letter queue"
                ),
            )
        for step in range(from_version, self.version):
            migrate = self._migrations.get(step)
            if migrate is None:
                raise PayloadVersionError(
                    "payload_version",
                    from_version,
                    f"a version with migrations up to {self.version}",
                    message=f"no migration of {self.name!r} payloads from version {step} to {step + 1}",
                )
            data = migrate(dict(data))
        return data

    # -- payloads and results -----------------------------------------------------------

    def dump(self, payload: P) -> dict[str, Any]:
        """The stored form of a payload: its JSON-mode dump.

        A dict is validated against the model first (for untyped callers).

        Raises:
            PayloadValidationError: ``payload`` is neither a ``P`` nor a valid dict for one.
        """
        model = self.payload_model
        if not isinstance(payload, model):
            given: object = payload
            if not isinstance(given, dict):
                raise PayloadValidationError(
                    "payload", payload, f"a {model.__name__} instance (or a dict valid for it)",
                    message=f"payload of {self.name!r} must be a {model.__name__}, "
                    f"not {type(payload).__name__}",
                )
            try:
                payload = model.model_validate(given)
            except ValidationError as exc:
                raise validation_error(exc, where=f"payload of {self.name!r}", value=given) from None
        return payload.model_dump(mode="json")

    def load(self, data: dict[str, Any], version: int | None = None) -> P:
        """Migrate a stored payload from ``version`` (current when None) and validate it.

        Raises:
            PayloadVersionError: too new, or no migration path.
            PayloadValidationError: the migrated payload does not fit the model.
        """
        if version is not None and version != self.version:
            data = self.upgrade(data, version)
        try:
            return self.payload_model.model_validate(data)
        except ValidationError as exc:
            raise validation_error(exc, where=f"payload of {self.name!r}", value=data) from None

    def unique_key(self, payload: P, data: dict[str, Any]) -> str | None:
        """The unique key of a job with this payload (``data``, its dump), or None when the
        type makes none: ``"<name>:"`` and what ``unique`` returns, or the JSON of the
        ``unique_fields`` (a SHA-256 digest of it when longer than 200 characters)."""
        if self.unique is not None:
            return f"{self.name}:{self.unique(payload)}"
        if self.unique_fields is None:
            return None
        text = json.dumps({f: data.get(f) for f in self.unique_fields}, sort_keys=True, separators=(",", ":"))
        if len(text) > 200:
            text = hashlib.sha256(text.encode()).hexdigest()
        return f"{self.name}:{text}"

    def dump_result(self, value: R) -> Any:
        """The stored form of a result: JSON-safe data.

        Raises:
            ResultSerializationError: the value does not fit the result type.
        """
        try:
            return self._result_adapter.dump_python(value, mode="json")
        except Exception as exc:
            raise ResultSerializationError(
                f"result of {self.name!r} cannot be stored as {self.result_type!r}: {exc}"
            ) from None

    def load_result(self, data: Any) -> R:
        """Rebuild a typed result from its stored form.

        Raises:
            PayloadValidationError: the stored result does not fit the result type.
        """
        try:
            value: R = self._result_adapter.validate_python(data)
        except ValidationError as exc:
            raise validation_error(exc, where=f"result of {self.name!r}", value=data) from None
        return value

    @staticmethod
    def version_of(job: Job) -> int | None:
        """The payload version stored with ``job`` (None for untyped jobs)."""
        value = job.metadata.get(VERSION_KEY)
        return value if isinstance(value, int) and not isinstance(value, bool) else None


class TypedJob(BaseModel, Generic[P]):
    """The typed, read-only view of a stored :class:`~typedq.job.Job` whose payload is a ``P``.

    ``TypedJob.of(job_type, job).to_job() == job``: nothing is lost either way.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    job_id: str
    job_type: str
    payload: P
    payload_version: int
    priority: int
    scheduled_at: float | None
    created_at: float
    max_retries: int
    retry_count: int
    timeout_seconds: float | None
    status: JobStatus
    result: Any
    error: str | None
    metadata: dict[str, Any]
    depends_on: list[str]
    queue: str
    attempt: int
    worker_id: str | None
    lease_until: float | None
    started_at: float | None
    finished_at: float | None
    lost_count: int
    cancel_requested: bool
    run_alone: bool = False
    traceback: str | None = None

    @classmethod
    def of(cls, job_type: JobType[P, Any], job: Job) -> TypedJob[P]:
        """View ``job`` through ``job_type`` (migrating and validating its payload).

        Raises:
            PayloadVersionError, PayloadValidationError: as :meth:`JobType.load`.
        """
        data = job.to_dict()
        version = JobType.version_of(job) or job_type.version
        data["payload"] = job_type.load(data["payload"], version)
        data["payload_version"] = job_type.version
        return TypedJob[job_type.payload_model].model_validate(data)  # type: ignore[name-defined]  # parametrised at run time

    def to_job(self) -> Job:
        """The stored form: a plain ``Job`` with the payload's JSON-mode dump."""
        data = {name: getattr(self, name) for name in self.__class__.model_fields}
        data["payload"] = self.payload.model_dump(mode="json")
        data["metadata"] = {**self.metadata, VERSION_KEY: data.pop("payload_version")}
        return Job(**data)

