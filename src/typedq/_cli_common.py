"""What the ``typedq`` commands share: exit codes, errors, settings, opening the backend.

Settings resolution: ``--backend`` (on the command or before it), else ``TYPEDQ_BACKEND``,
else :data:`DEFAULT_BACKEND`. The persisted settings file (``typedq config``) is
``--config`` / ``TYPEDQ_CONFIG``, else ``typedq.json`` next to a SQLite database, else
``./typedq.json``. It holds manager config keys (``{"max_retries": 5}``), validated by the
manager's own validation whenever it is read or written.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

import click

from typedq._timefmt import DURATION_FORMS, parse_duration
from typedq.backends import backend_for
from typedq.errors import (
    BackendError,
    ConfigError,
    InvalidJobError,
    InvalidTransitionError,
    JobNotFoundError,
    NoHandlerError,
    QueueNotFoundError,
    ScheduleNotFoundError,
    SerializationError,
    TypedqError,
)
from typedq.manager import DEAD_LETTER_QUEUE, JobQueueManager

__all__ = [
    "CONFIG_KEYS",
    "DEFAULT_BACKEND",
    "DURATION",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "CLIError",
    "Env",
    "common_options",
    "config_key",
    "env_of",
    "exit_code_for",
    "load_settings",
    "parse_value",
    "save_settings",
]

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_BACKEND: Final = "sqlite:///./typedq.db"
CONFIG_FILE: Final = "typedq.json"

#: Success.
EXIT_OK: Final = 0
#: The operation failed: a job ended FAILED/DEAD/CANCELLED, the backend failed, ...
EXIT_FAILED: Final = 1
#: Bad usage or bad input: malformed JSON, unknown job id, invalid value, missing --yes.
EXIT_USAGE: Final = 2
#: ``wait`` gave up before the jobs ended (as timeout(1)).
EXIT_TIMEOUT: Final = 124

#: ``typedq config`` names → manager config keys (the manager's names work too).
CONFIG_KEYS: Final[dict[str, str]] = {
    "max-retries": "max_retries",
    "backoff-base": "base_delay",
    "backoff-max": "max_delay",
    "jitter": "jitter",
    "concurrency": "max_workers",
    "default-priority": "default_priority",
    "poll-interval": "poll_interval",
    "lease": "lease_s",
    "heartbeat": "heartbeat_s",
    "reaper-interval": "reaper_s",
    "max-lost": "max_lost",
    "dlq-max": "dlq_max",
    "result-ttl": "result_ttl",
    "history-limit": "history_limit",
    "shutdown-grace": "shutdown_grace_s",
    "processes": "processes",
    "memory-limit": "memory_limit_mb",
    "batch-size": "batch_size",
    "serializer": "serializer",
    "max-payload-size": "max_payload_size",
    "scheduler": "scheduler",
    "scheduler-lock": "scheduler_lock_s",
}
_SETTABLE: Final = frozenset(CONFIG_KEYS.values())


class CLIError(click.ClickException):
    """One clear line on stderr and an exit code; never a traceback."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = code  # type: ignore[misc]  # click declares a class default; ours varies


def exit_code_for(exc: TypedqError) -> int:
    """The exit code of a typedq error: bad input is 2, anything else 1."""
    bad_input = (
        ConfigError, InvalidJobError, NoHandlerError, JobNotFoundError, QueueNotFoundError,
        ScheduleNotFoundError, SerializationError, InvalidTransitionError,
    )
    if isinstance(exc, BackendError):
        return EXIT_FAILED
    return EXIT_USAGE if isinstance(exc, bad_input) else EXIT_FAILED


# -- settings ------------------------------------------------------------------------------


def config_key(name: str) -> str:
    """Map a ``typedq config`` key (``max-retries`` or ``max_retries``) to the manager's.

    Raises:
        CLIError: an unknown key, with a suggestion.
    """
    dashed = name.replace("_", "-")
    if dashed in CONFIG_KEYS:
        return CONFIG_KEYS[dashed]
    if name in _SETTABLE:
        return name
    known = sorted(CONFIG_KEYS)
    hint = difflib.get_close_matches(name, known + sorted(_SETTABLE), n=1)
    suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
    raise CLIError(f"unknown config key {name!r}{suggestion}; keys: {', '.join(known)}")


def parse_value(text: str) -> Any:
    """A ``config set`` value: JSON when it parses (``5``, ``0.5``, ``null``), else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def load_settings(path: Path) -> dict[str, Any]:
    """Read and validate the persisted settings (an empty dict when there is no file).

    Raises:
        CLIError: the file is unreadable, not a JSON object, or holds invalid settings.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise CLIError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CLIError(f"config file {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CLIError(f"config file {path} must hold a JSON object, not {type(data).__name__}")
    for key in data:
        if key not in _SETTABLE and key != "queues":
            raise CLIError(f"config file {path}: unknown key {key!r}; keys: {', '.join(sorted(_SETTABLE))}")
    try:
        check_settings(data)
    except ConfigError as exc:
        raise CLIError(f"config file {path}: {exc}") from None
    return data


def check_settings(settings: Mapping[str, Any]) -> None:
    """Validate settings exactly as a manager would (ConfigError when they are invalid)."""
    # The manager validates every key; the serializer name when it builds its codec.
    JobQueueManager({**settings, "backend": "memory://"}).close()


def save_settings(path: Path, settings: Mapping[str, Any]) -> None:
    """Write the settings atomically (a temporary file renamed over the old one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".typedq-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(dict(sorted(settings.items())), f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# -- the environment of one command --------------------------------------------------------


@dataclass
class Env:
    """The backend URL and settings file one command works with."""

    backend: str
    config_path: Path

    @classmethod
    def resolve(cls, backend: str | None, config_path: str | None) -> Env:
        """Apply the resolution order of the module docstring."""
        url = backend or os.environ.get("TYPEDQ_BACKEND") or DEFAULT_BACKEND
        if config_path:
            path = Path(config_path)
        elif os.environ.get("TYPEDQ_CONFIG"):
            path = Path(os.environ["TYPEDQ_CONFIG"])
        else:
            try:
                local = backend_for(url).local_path
            except ConfigError:
                local = None  # the manager names a bad URL when it opens it
            db = local(url) if local is not None else None
            path = (db.parent if db is not None else Path(".")) / CONFIG_FILE
        return cls(url, path)

    def settings(self) -> dict[str, Any]:
        """The persisted settings."""
        return load_settings(self.config_path)

    def manager_config(self) -> dict[str, Any]:
        """The manager config: persisted settings plus the backend."""
        return {**self.settings(), "backend": self.backend}

    def database(self) -> Path | None:
        """The file of a file backend (SQLite's); None for other backends, and for a URL
        no backend serves (the manager names it when it opens it)."""
        try:
            local = backend_for(self.backend).local_path
        except ConfigError:
            return None
        return local(self.backend) if local is not None else None

    def open(self, queues: Iterable[str | None] = (), *, create: bool = False) -> JobQueueManager:
        """A manager on the backend, with every queue the backend knows, and ``queues``.

        Args:
            queues: queues to add to those the backend knows.
            create: the command may create the database (``enqueue``, ``worker``); without
                it, a SQLite file that does not exist is refused, so a typo in the backend
                URL is an error, not a new empty database.

        Raises:
            CLIError: ``no database at PATH`` (exit 2).
        """
        db = self.database()
        if not create and db is not None and not db.exists():
            raise CLIError(
                f"no database at {db} (backend {self.backend}); check --backend / TYPEDQ_BACKEND, "
                "or create it with `typedq enqueue` or `typedq worker`"
            )
        manager = JobQueueManager(self.manager_config())
        try:
            for name in [*self._discover(manager), *(q for q in queues if q)]:
                if name not in manager.queues:
                    manager.create_queue(name)
        except BaseException:
            manager.close(graceful=False)
            raise
        return manager

    @contextlib.contextmanager
    def manager(
        self, queues: Iterable[str | None] = (), *, create: bool = False
    ) -> Iterator[JobQueueManager]:
        """:meth:`open`, closed after the block."""
        manager = self.open(queues, create=create)
        try:
            yield manager
        finally:
            manager.close(graceful=False)

    @staticmethod
    def _discover(manager: JobQueueManager) -> list[str]:
        # A store that outlives a process (SQLite, Redis) lists its queues.
        lister = backend_for(manager.config["backend"]).list_queues
        queue = manager.queues.get("default")
        if lister is None or queue is None:
            return []
        try:
            names = lister(queue)
        except Exception as exc:
            raise BackendError(f"cannot list the queues of {manager.config['backend']}: {exc}") from exc
        return [str(n) for n in names if n not in manager.queues and n != DEAD_LETTER_QUEUE]


class _DurationType(click.ParamType[float]):
    """A duration on the command line, in seconds: ``90``, ``90s``, ``15m``, ``2h``, ``1d``."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_duration(str(value))
        except ValueError:
            self.fail(f"{value!r} is not a duration: {DURATION_FORMS}", param, ctx)


DURATION = _DurationType()


def common_options(func: F) -> F:
    """``--backend``, ``--config`` and ``--json`` on a command (they may also precede it)."""
    func = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(func)
    func = click.option("--config", "config_path", metavar="PATH", help="Settings file (typedq.json).")(func)
    return click.option("--backend", metavar="URL", help="Backend URL (env TYPEDQ_BACKEND).")(func)


def env_of(backend: str | None, config_path: str | None) -> Env:
    """The command's :class:`Env`: its own options, else those given before the command."""
    root = click.get_current_context().find_root().params
    return Env.resolve(backend or root.get("backend"), config_path or root.get("config_path"))
