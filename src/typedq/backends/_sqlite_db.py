"""Connections for the SQLite backend: one per thread and process, errors mapped once.

* :class:`Connections` hands each thread its own ``sqlite3`` connection (a
  ``threading.local``), tagged with the process id: after ``fork()`` the child never
  touches, nor closes, a connection it inherited (closing one could disturb the parent's
  locks); it opens its own. Inherited connections are parked forever instead of being
  garbage-collected, since collecting one closes it. A thread's connection is closed
  when the thread ends, and :meth:`Connections.close` closes every one left, never one
  a call is using (it waits for those, bounded; a call still running then closes its
  own connection when it ends); any call after close raises ``QueueClosedError``.
* Every connection is set up the same way and checked: WAL, ``synchronous`` NORMAL or
  FULL, ``busy_timeout`` :data:`BUSY_TIMEOUT_S`, a checkpoint every
  :data:`WAL_AUTOCHECKPOINT_PAGES` pages.
* A WAL file left large (a reader held an old snapshot while others wrote, so no
  checkpoint could reset it) shrinks at the next commit: its autocheckpoint resets the
  WAL and ``journal_size_limit`` cuts the file back. When nothing commits, a waiting
  worker's poll does it (:meth:`Connections.tidy_wal`).
* :meth:`Connections.write` runs a function inside ``BEGIN IMMEDIATE`` ... ``COMMIT``
  (rolled back on any exception), retrying the whole transaction once on SQLITE_BUSY.
* Writers take turns through an advisory ``flock`` on a side file, ``<db>-typedq-lock``
  (each thread its own descriptor, so threads and processes alike). SQLite's own wait
  for a busy write lock sleeps 1, 2, 5, 10 ... 100 ms between tries: the lock is often
  free for most of that sleep, and one process can starve the others. Waiting on the
  side file hands the turn over within a millisecond instead, and every process gets
  its share. The wait is bounded (:data:`BUSY_TIMEOUT_S`); past it the transaction goes
  on without the side lock and SQLite's busy timeout decides, so nothing can hang on a
  stopped process that holds it.
* :func:`map_errors` turns driver errors into typedq errors, once, ``raise ... from``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final, TypeVar

from typedq.backends._sqlite_driver import sqlite3
from typedq.errors import BackendError, BackendWriteError, QueueClosedError, TypedqError

__all__ = [
    "BUSY_TIMEOUT_S",
    "CLOSE_WAIT_S",
    "SYNCHRONOUS",
    "WAL_AUTOCHECKPOINT_PAGES",
    "WAL_CHECK_S",
    "WAL_SIZE_LIMIT",
    "Connections",
    "map_errors",
]

#: How long a connection waits for another one's write lock before SQLITE_BUSY.
BUSY_TIMEOUT_S: Final = 5.0
#: How long :meth:`Connections.close` waits for calls in progress on other threads, s.
CLOSE_WAIT_S: Final = 2.0
#: ``PRAGMA wal_autocheckpoint`` of every connection (pages).
WAL_AUTOCHECKPOINT_PAGES: Final = 4000
#: ``PRAGMA journal_size_limit``: the WAL file is truncated to this after a checkpoint.
WAL_SIZE_LIMIT: Final = 16 * 1024 * 1024
#: How often :meth:`Connections.tidy_wal` looks at the WAL file's size, seconds.
WAL_CHECK_S: Final = 0.5
#: The busy timeout of its checkpoint: how long it waits for readers of older snapshots.
_TIDY_BUSY_MS: Final = 100
#: ``durability`` option -> ``PRAGMA synchronous`` value.
SYNCHRONOUS: Final = {"normal": 1, "full": 2}
#: Waiting for the writer lock: the first pause, doubled up to the longest (seconds).
_FIRST_PAUSE_S: Final = 50e-6
_MAX_PAUSE_S: Final = 1e-3

_T = TypeVar("_T")

# Primary result codes (https://sqlite.org/rescode.html).
_BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 5, 6, 8, 10, 11, 13, 14, 26

#: Connections inherited across fork(): never closed nor collected in the child.
_PARKED: list[sqlite3.Connection] = []
_pid = os.getpid()


def _after_fork_in_child() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork_in_child)


def _code(exc: sqlite3.Error) -> int:
    return int(getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF


def _is_busy(exc: sqlite3.Error) -> bool:
    code = _code(exc)
    if code:
        return code in (_BUSY, _LOCKED)
    text = str(exc)
    return "locked" in text or "busy" in text


def translate(exc: sqlite3.Error, path: Path) -> TypedqError:
    """The typedq error for a driver error on the file at ``path``."""
    code = _code(exc)
    detail = f"{exc} ({getattr(exc, 'sqlite_errorname', None) or type(exc).__name__})"
    if code == _FULL:
        return BackendWriteError(
            f"the SQLite queue file {path} is full (disk full or max_page_count reached): "
            f"{detail}; nothing of the refused transaction was written"
        )
    if code == _READONLY:
        return BackendWriteError(f"the SQLite queue file {path} is read-only: {detail}")
    if code in (_BUSY, _LOCKED) or _is_busy(exc):
        return BackendError(
            f"the SQLite queue file {path} stayed busy (write lock held by another connection) "
            f"for over {BUSY_TIMEOUT_S:g} s, twice: {detail}"
        )
    if code in (_CORRUPT, _NOTADB):
        return BackendError(f"the SQLite queue file {path} is corrupt or not a database: {detail}")
    if code == _CANTOPEN:
        return BackendError(f"cannot open the SQLite queue file {path}: {detail}")
    if code == _IOERR:
        return BackendWriteError(f"I/O error on the SQLite queue file {path}: {detail}")
    return BackendError(f"SQLite error on the queue file {path}: {detail}")


@contextmanager
def map_errors(path: Path) -> Iterator[None]:
    """Map ``sqlite3`` errors raised inside the block to typedq errors (``raise from``)."""
    try:
        yield
    except sqlite3.Error as exc:
        raise translate(exc, path) from exc


class _Holder:
    """A thread's connection, its writer-lock descriptor (opened on the first write) and
    the process that opened them (weak-referenceable)."""

    __slots__ = ("__weakref__", "busy", "conn", "lock_fds", "pid")

    def __init__(self, conn: sqlite3.Connection, pid: int) -> None:
        self.conn = conn
        self.pid = pid
        self.lock_fds: list[int] = []  # shared with the finalizer, which closes them
        #: Whether a call (read or write) is using the connection now.
        self.busy = False


def _release(conn: sqlite3.Connection, pid: int, lock_fds: list[int]) -> None:
    """Close ``conn`` in the process that opened it; park it in any other (a fork child).

    Runs when a thread's holder is collected (the thread ended, or fork cleared the
    other threads' states in a child), on :meth:`Connections.close` and at exit.
    """
    if os.getpid() != pid:
        _PARKED.append(conn)
        return
    with contextlib.suppress(sqlite3.Error):  # closing never matters more than the caller
        conn.close()
    for fd in lock_fds:
        with contextlib.suppress(OSError):
            os.close(fd)
    lock_fds.clear()


#: ``(before, after)``: what runs in a write transaction before and after its work.
Around = tuple[Callable[[sqlite3.Connection], None], Callable[[sqlite3.Connection], None]]


class Connections:
    """Per-thread, per-process connections to one SQLite file.

    Args:
        path: the database file.
        synchronous: ``PRAGMA synchronous`` (1 NORMAL, 2 FULL).
        on_connect: extra setup run on each new connection (after the PRAGMAs).
        around_write: ``(before, after)``, run in every :meth:`write` transaction before
            and after its work (unless the write asks for none).
    """

    def __init__(
        self,
        path: Path,
        synchronous: int,
        on_connect: Callable[[sqlite3.Connection], None] | None = None,
        around_write: Around | None = None,
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        self._on_connect = on_connect
        self._around_write = around_write
        self._local = threading.local()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._active = 0  # calls using a connection now
        self._finalizers: list[tuple[weakref.ref[_Holder], weakref.finalize[Any, Any]]] = []
        self._closed = False
        #: How many transactions were retried after SQLITE_BUSY (diagnostics).
        self.busy_retries = 0
        #: How many transactions went on without the writer lock, after waiting
        #: :data:`BUSY_TIMEOUT_S` for it (diagnostics).
        self.writer_lock_timeouts = 0
        #: The side file writers take turns on.
        self.lock_path = Path(f"{path}-typedq-lock")
        self._wal_path = Path(f"{path}-wal")
        self._wal_check_at = 0.0  # time.monotonic() of tidy_wal's next look

    def get(self) -> sqlite3.Connection:
        """This thread's connection, opened (or reopened after fork) on first use."""
        holder: _Holder | None = getattr(self._local, "holder", None)
        if holder is not None and holder.pid == _pid:
            return holder.conn
        return self._open()

    def _enter(self) -> _Holder:
        """This thread's connection holder, marked in use for a call (see :meth:`close`);
        the caller ends the call with :meth:`_leave`. Plain calls, not a context
        manager: they run around every read and write.

        Raises:
            QueueClosedError: the queue was closed.
        """
        with self._lock:
            if self._closed:
                raise self._closed_error()
            self._active += 1
            holder: _Holder | None = getattr(self._local, "holder", None)
            if holder is not None and holder.pid == _pid:
                holder.busy = True  # under the lock: close never takes it for idle
                return holder
        try:
            self._open(busy=True)
        except BaseException:
            self._leave(None)
            raise
        opened: _Holder = self._local.holder
        return opened

    def _leave(self, holder: _Holder | None) -> None:
        """End a call begun by :meth:`_enter`."""
        with self._lock:
            if holder is not None:
                holder.busy = False
            self._active -= 1
            closed = self.closed  # may have changed since _enter
            if closed and not self._active:
                self._idle.notify_all()  # close() waits for the last call
        if closed:  # closed during the call: this thread closes its own connection
            self._drop_mine()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def _closed_error(self) -> QueueClosedError:
        return QueueClosedError(f"the SQLite queue on {self.path} is closed; nothing was read or written")

    def _open(self, *, busy: bool = False) -> sqlite3.Connection:
        if self._closed:
            raise self._closed_error()
        with map_errors(self.path):
            conn = self.connect()
        # Replacing a stale (inherited) holder parks its connection: see _release.
        self.adopt(conn, busy=busy)
        return conn

    def connect(self, *, configure: bool = True) -> sqlite3.Connection:
        """Open a new connection; the caller owns it.

        With ``configure`` (the default) it is set up at once (:meth:`configure`);
        without, it has only its busy timeout and has written nothing, so a file can be
        judged first.

        Raises:
            sqlite3.Error: for the caller to map.
            BackendError: the file would not switch to WAL.
        """
        conn = sqlite3.connect(
            self.path,
            timeout=BUSY_TIMEOUT_S,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=256,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            if configure:
                self.configure(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def configure(self, conn: sqlite3.Connection) -> None:
        """Set WAL (checked), ``synchronous`` and the extra setup on ``conn``.

        Raises:
            sqlite3.Error: for the caller to map.
            BackendError: the file would not switch to WAL.
        """
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise BackendError(
                f"the SQLite queue file {self.path} cannot use WAL (journal_mode is {mode!r}); "
                "is it on a network file system?"
            )
        conn.execute(f"PRAGMA synchronous = {self.synchronous}")
        # Checkpoint every 4,000 pages (16 MiB) instead of 1,000: a queue writes a few
        # pages per transition, and fewer, larger checkpoints made enqueue and drain
        # 6-20 % faster here. The WAL file is cut back to 16 MiB after each reset.
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        if self._on_connect is not None:
            self._on_connect(conn)

    def adopt(self, conn: sqlite3.Connection, *, busy: bool = False) -> None:
        """Make ``conn`` (from :meth:`connect`) this thread's connection (``busy``: in use
        by a call from the start)."""
        holder = _Holder(conn, _pid)
        holder.busy = busy
        finalizer = weakref.finalize(holder, _release, conn, _pid, holder.lock_fds)
        with self._lock:
            self._finalizers = [(ref, f) for ref, f in self._finalizers if f.alive]
            self._finalizers.append((weakref.ref(holder), finalizer))
        self._local.holder = holder

    def write(self, fn: Callable[[sqlite3.Connection], _T], *, around: bool = True) -> _T:
        """Run ``fn(conn)`` in one ``BEGIN IMMEDIATE`` transaction and commit it, between
        the ``around_write`` steps unless ``around`` is false.

        Any exception rolls the transaction back and propagates (typedq errors as they
        are, driver errors mapped). SQLITE_BUSY, after the busy timeout, retries the
        whole transaction once.
        """
        holder = self._enter()
        try:
            lock_fd = self._turn(holder)
            try:
                return self._transaction(holder.conn, fn, self._around_write if around else None)
            finally:
                if lock_fd is not None:
                    fcntl.flock(lock_fd, fcntl.LOCK_UN)
        finally:
            self._leave(holder)

    def _turn(self, holder: _Holder) -> int | None:
        """Wait for this thread's turn to write; return the locked descriptor, or None
        when the wait passed :data:`BUSY_TIMEOUT_S` (then SQLite's busy timeout decides).
        """
        fd = self._lock_fd(holder)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            pass
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        pause = _FIRST_PAUSE_S
        while True:
            time.sleep(pause)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self.writer_lock_timeouts += 1
                    return None
                pause = min(pause * 2, _MAX_PAUSE_S)

    def _lock_fd(self, holder: _Holder) -> int:
        """This thread's descriptor of the writer lock, opened on first use."""
        if not holder.lock_fds:
            try:
                holder.lock_fds.append(os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644))
            except OSError as exc:
                raise BackendWriteError(
                    f"cannot open the writer lock {self.lock_path} of the SQLite queue file "
                    f"{self.path}: {exc}"
                ) from exc
        return holder.lock_fds[0]

    def tidy_wal(self) -> None:
        """Checkpoint the WAL and truncate its file when it has grown past
        :data:`WAL_SIZE_LIMIT`, looking at most every :data:`WAL_CHECK_S`.

        While a reader holds an old snapshot, no checkpoint can reset the WAL, and the
        file grows with every commit. Once the reader lets go, the next commit's
        autocheckpoint resets it and ``journal_size_limit`` cuts the file back; on a
        queue where nothing commits any more, nothing would until the last connection
        closes. A waiting worker calls this from its poll, so the file shrinks soon
        after the reader lets go.

        It never waits for the writer turn: a writer holding it is about to commit, and
        its autocheckpoint does the work. A checkpoint still blocked by a reader after
        :data:`_TIDY_BUSY_MS` gives up until the next look. Errors are left to the
        caller's next statement: this one only tidies.

        Raises:
            QueueClosedError: the queue was closed.
            BackendWriteError: the writer lock file cannot be opened.
        """
        now = time.monotonic()
        if now < self._wal_check_at:
            return
        self._wal_check_at = now + WAL_CHECK_S
        try:
            if self._wal_path.stat().st_size <= WAL_SIZE_LIMIT:
                return
        except OSError:
            return
        holder = self._enter()
        try:
            fd = self._lock_fd(holder)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return
            try:
                with contextlib.suppress(sqlite3.Error):
                    _checkpoint(holder.conn)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            self._leave(holder)

    def _transaction(
        self,
        conn: sqlite3.Connection,
        fn: Callable[[sqlite3.Connection], _T],
        around: Around | None,
    ) -> _T:
        execute = conn.execute
        retried = False
        while True:
            try:
                execute("BEGIN IMMEDIATE")
                try:
                    if around is None:
                        result = fn(conn)
                    else:
                        around[0](conn)
                        result = fn(conn)
                        around[1](conn)
                    execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):  # the first error matters
                            execute("ROLLBACK")
                    raise
                return result
            except sqlite3.Error as exc:
                if retried or not isinstance(exc, sqlite3.OperationalError) or not _is_busy(exc):
                    raise translate(exc, self.path) from exc
                retried = True
                self.busy_retries += 1

    def read(self, sql: str, params: tuple[object, ...] = ()) -> list[Any]:
        """Run one read statement (its own snapshot) and return every row."""
        holder = self._enter()
        try:
            return holder.conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise translate(exc, self.path) from exc
        finally:
            self._leave(holder)

    def settings(self) -> dict[str, Any]:
        """The file's settings as this thread's connection sees them, and the counters.

        Returns:
            ``journal_mode``, ``synchronous`` (1 NORMAL, 2 FULL), ``busy_timeout_ms``,
            ``wal_autocheckpoint``, ``schema_version``, ``busy_retries`` (transactions
            retried after SQLITE_BUSY) and ``writer_lock_timeouts`` (transactions that
            went on without the writer lock after waiting the busy timeout for it).
        """

        def pragma(name: str) -> Any:
            return self.read(f"PRAGMA {name}")[0][0]

        return {
            "journal_mode": pragma("journal_mode"),
            "synchronous": pragma("synchronous"),
            "busy_timeout_ms": pragma("busy_timeout"),
            "wal_autocheckpoint": pragma("wal_autocheckpoint"),
            "schema_version": pragma("user_version"),
            "busy_retries": self.busy_retries,
            "writer_lock_timeouts": self.writer_lock_timeouts,
        }

    def close(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """Close every connection this process opened; later calls raise ``QueueClosedError``.

        A connection is never closed under a call using it (another thread's, when
        workers were not stopped first): close waits up to ``wait_s`` for the calls in
        progress to end, then closes the idle connections; a call still running then
        (a write waiting for its turn) closes its own connection when it ends.
        """
        deadline = time.monotonic() + wait_s
        with self._lock:
            self._closed = True
            while self._active and (left := deadline - time.monotonic()) > 0:
                self._idle.wait(left)
            finalizers = [f for ref, f in self._finalizers if not _in_use(ref)]
            self._finalizers = [(ref, f) for ref, f in self._finalizers if _in_use(ref)]
        for finalizer in finalizers:
            finalizer()  # closes this process's connections, parks inherited ones
        self._drop_mine()

    def _drop_mine(self) -> None:
        """Forget this thread's connection; collecting its holder closes it (``_release``)."""
        if getattr(self._local, "holder", None) is not None:
            del self._local.holder


def _checkpoint(conn: sqlite3.Connection) -> None:
    """``wal_checkpoint(TRUNCATE)`` on ``conn``, waiting at most :data:`_TIDY_BUSY_MS`,
    once a passive checkpoint (which waits for nothing) could copy every frame back: while
    a reader holds an older snapshot the truncating one could not, and it would hold the
    write lock, stopping every writer, while it waited for that reader."""
    busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    if busy or copied < frames:
        return
    conn.execute(f"PRAGMA busy_timeout = {_TIDY_BUSY_MS}")
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")


def _in_use(ref: weakref.ref[_Holder]) -> bool:
    holder = ref()
    return holder is not None and holder.busy
