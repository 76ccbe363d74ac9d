"""The per-process journal: every record as one JSON line, written before it is queued.

A record handed to the store is appended to this process's journal with one ``write()`` on a
file opened ``O_APPEND`` (:meth:`Journal.append`, on the caller's thread), as one length-prefixed
``marshal`` frame (:func:`frame`: about a third of the instructions of a JSON line). Once that returned the
record is in the kernel's page cache: it survives the process being killed (``SIGKILL``,
``os._exit``, ``SIGTERM`` with no handler), not a machine crash or power loss (the journal is not
fsynced unless ``sync=True``).

Layout: a directory beside the store, ``<store>.journal/``, holding *segments*
``<host>-<pid>-<random>-<n>.seg``. A segment's first line is JSON naming its columns; each
record follows as a frame holding its values in that column order, so a journal written by an
older llmmeter replays into a newer store. A segment is closed for writing after 10,000 records or
16 MiB and deleted once every record in it is in SQLite, so a long-running process keeps about one
segment.

The owning process holds an exclusive ``flock`` on each of its segments for as long as the
segment exists. A segment whose lock can be taken belongs to a process that died:
:func:`replay_dead_segments` writes it into the store (idempotent: ``record_id`` is unique) and
deletes it. A segment is created under a ``.tmp`` name, locked, then renamed, so that nobody sees
it unlocked.
"""

from __future__ import annotations

import contextlib
import json
import marshal
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmmeter._log import log_once

try:
    import fcntl
except ImportError:  # Windows: no flock, so no journal (records are kept in memory only, logged once)
    fcntl = None  # type: ignore[assignment]
from llmmeter.store.pending import price_pending
from llmmeter.store.schema import COLUMN_NAMES, JOURNAL_FORM, row_from_form, row_from_mapping, storable_row

JOURNAL_SUFFIX = ".journal"
SEGMENT_SUFFIX = ".seg"
_TMP_SUFFIX = ".tmp"
_FORMAT = 1
_MARSHAL_VERSION = 2  # no back-references: the cheapest to write, and any later Python reads it
_ROW_TAG = "row"
DEFAULT_SEGMENT_RECORDS = 10_000
DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024
_RETRY_OPEN_S = 5.0
"""After a journal could not be created, records are kept in memory only for this long before
trying again (so that an unwritable directory costs no system call per record)."""


def journal_dir(store_path: Path) -> Path:
    """Where the journals of the store at ``store_path`` live: ``<store>.journal/``."""
    return store_path.with_name(store_path.name + JOURNAL_SUFFIX)


@dataclass(eq=False, slots=True)
class Segment:
    """One journal file of this process, and how far the store got with it."""

    path: Path
    fd: int
    written: int = 0
    """Records appended (final once ``rotated``)."""
    size: int = 0
    committed: int = 0
    """Records of this segment the writer committed from its memory queue."""
    spilled: bool = False
    """Some record of it never entered the memory queue: the writer must read it back."""
    caught_up: bool = False
    """The writer replayed the whole (rotated) file: every record in it is in SQLite."""
    rotated: bool = False
    removed: bool = False

    @property
    def done(self) -> bool:
        """Closed for writing and every record in it committed: the file can go."""
        if not self.rotated:
            return False
        return self.caught_up or (not self.spilled and self.committed >= self.written)


@dataclass(slots=True)
class Journal:
    """This process's journal for one store: the segment being appended to, and the older ones
    whose records are not all committed yet (each keeps its file descriptor, hence its lock)."""

    directory: Path
    sync: bool = False
    max_records: int = DEFAULT_SEGMENT_RECORDS
    max_bytes: int = DEFAULT_SEGMENT_BYTES
    segments: list[Segment] = field(default_factory=list)
    _active: Segment | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _serial: int = 0
    _retry_at: float = 0.0

    def append(self, form: tuple[Any, ...]) -> Segment | None:
        """Write one record (its :func:`~llmmeter.store.schema.journal_form`) as one frame; the
        segment it went to, or ``None`` when the journal cannot be written (logged once; the record
        then lives only in memory)."""
        line = frame(form)
        with self._lock:
            segment = self._active or self._open_segment()
            if segment is None:
                return None
            try:
                written = os.write(segment.fd, line)
                if written < len(line):  # a regular file takes it all unless the disk is full
                    _write_all(segment.fd, line[written:])
                if self.sync:
                    os.fsync(segment.fd)
            except OSError as exc:
                log_once(
                    f"journal-write:{self.directory}",
                    "llmmeter: cannot append to the journal %s (%s); records are kept in memory only",
                    segment.path,
                    exc,
                )
                return None
            segment.written += 1
            segment.size += len(line)
            if segment.written >= self.max_records or segment.size >= self.max_bytes:
                self._rotate_locked()
        return segment

    def rotate(self) -> None:
        """Close the current segment for writing; the next record starts a new one."""
        with self._lock:
            self._rotate_locked()

    def rotate_if_spilled(self) -> None:
        """Close the current segment when the writer must read it back."""
        with self._lock:
            if self._active is not None and self._active.spilled:
                self._rotate_locked()

    def pending(self) -> list[Segment]:
        """The segments not yet removed, oldest first."""
        with self._lock:
            return list(self.segments)

    def remove(self, segment: Segment) -> None:
        """Delete a finished segment's file, then let go of its lock."""
        with self._lock:
            if segment.removed:
                return
            segment.removed = True
            self.segments.remove(segment)
        with contextlib.suppress(OSError):
            segment.path.unlink()
        with contextlib.suppress(OSError):
            os.close(segment.fd)

    def release(self) -> None:
        """Let go of every segment's lock without deleting it: the next process replays what is left.
        Then remove the directory if it is empty."""
        with self._lock:
            self._rotate_locked()
            left, self.segments = self.segments, []
        for segment in left:
            with contextlib.suppress(OSError):
                os.close(segment.fd)
        with contextlib.suppress(OSError):
            self.directory.rmdir()  # only when empty; another process may be using it

    def forget_after_fork(self) -> None:
        """In a forked child: close the parent's segments (the parent keeps their locks and
        records) and start afresh, with a new lock (the parent's may have been held at fork)."""
        for segment in self.segments:
            with contextlib.suppress(OSError):
                os.close(segment.fd)
        self.segments = []
        self._active = None
        self._lock = threading.Lock()

    def _rotate_locked(self) -> None:
        if self._active is not None:
            self._active.rotated = True
            self._active = None

    def _open_segment(self) -> Segment | None:
        if time.monotonic() < self._retry_at:
            return None
        try:
            segment = self._create_segment()
        except OSError as exc:
            self._retry_at = time.monotonic() + _RETRY_OPEN_S
            log_once(
                f"journal-open:{self.directory}",
                "llmmeter: cannot create a journal in %s (%s); records are kept in memory only and a "
                "killed process loses them",
                self.directory,
                exc,
            )
            return None
        self._active = segment
        self.segments.append(segment)
        return segment

    def _create_segment(self) -> Segment:
        if fcntl is None:
            raise OSError("file locks (fcntl.flock) are not available on this platform")
        self._serial += 1
        name = f"{_host()}-{os.getpid()}-{secrets.token_hex(4)}-{self._serial}{SEGMENT_SUFFIX}"
        final = self.directory / name
        temporary = final.with_name(name + _TMP_SUFFIX)
        for attempt in range(3):  # another process may remove the empty directory meanwhile
            self.directory.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(
                    temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644
                )
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise
        try:
            _lock(fd)
            header = {
                "llmmeter_journal": _FORMAT,
                "form": JOURNAL_FORM,
                "frames": f"u32le length + marshal v{_MARSHAL_VERSION}",
                "columns": COLUMN_NAMES,
                "pid": os.getpid(),
            }
            _write_all(fd, (json.dumps(header, separators=(",", ":")) + "\n").encode("ascii"))
            os.rename(temporary, final)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
        return Segment(path=final, fd=fd)


def frame(form: tuple[Any, ...]) -> bytes:
    """One record as journal bytes: its length (4 bytes, little-endian), then its journal form in
    ``marshal`` format — the C serializer for exactly the types a record holds (strings with lone
    surrogates, integers of any size, NaN, nested dicts and lists), and no code runs on loading.
    A form holding an object marshal does not know is written as its finished row instead."""
    try:
        payload = marshal.dumps(form, _MARSHAL_VERSION)
    except ValueError:  # e.g. an application object in request parameters: JSON makes it a string
        payload = marshal.dumps((_ROW_TAG, storable_row(row_from_form(form))), _MARSHAL_VERSION)
    return len(payload).to_bytes(4, "little") + payload


def _lock(fd: int) -> None:
    """Take ``fd``'s exclusive lock without waiting (``OSError`` when another holder has it)."""
    if fcntl is None:
        raise OSError("file locks (fcntl.flock) are not available on this platform")
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


_HOST_UNSAFE = re.compile(r"[^A-Za-z0-9_.]")


def _host() -> str:
    return _HOST_UNSAFE.sub("_", socket.gethostname())[:64] or "host"


# --- reading back ---------------------------------------------------------------------------------
@dataclass(slots=True)
class Batch:
    """Rows read from a journal (ready for SQLite, in the store's current column order), and
    records that could not be read (one cut short by a kill mid-write, or a damaged file):
    quarantined, never silently skipped."""

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    bad_lines: list[tuple[str, str]] = field(default_factory=list)
    """``(what was read, reason)`` pairs."""


def read_segment(path: Path, batch_size: int = 500) -> Iterator[Batch]:
    """The records of one segment file, ``batch_size`` at a time."""
    data = path.read_bytes()
    end_of_header = data.find(b"\n")
    columns = _header_columns(data[: end_of_header + 1]) if end_of_header >= 0 else None
    if columns is None:
        yield Batch(bad_lines=[(repr(data[:2000]), "journal segment without a readable header")])
        return
    batch = Batch()
    for payload, problem in _frames(data, end_of_header + 1):
        if problem is None:
            _add_record(batch, payload, columns)
        else:
            batch.bad_lines.append((repr(payload[:2000]), problem))
        if len(batch.rows) + len(batch.bad_lines) >= batch_size:
            yield batch
            batch = Batch()
    if batch.rows or batch.bad_lines:
        yield batch


def _frames(data: bytes, offset: int) -> Iterator[tuple[bytes, str | None]]:
    while offset < len(data):
        if offset + 4 > len(data):
            yield data[offset:], "journal record cut short (the process died while writing it)"
            return
        length = int.from_bytes(data[offset : offset + 4], "little")
        payload = data[offset + 4 : offset + 4 + length]
        if len(payload) < length:
            yield payload, "journal record cut short (the process died while writing it)"
            return
        yield payload, None
        offset += 4 + length


def _header_columns(line: bytes) -> list[str] | None:
    try:
        header = json.loads(line)
    except ValueError:
        return None
    if not isinstance(header, dict) or header.get("form") != JOURNAL_FORM:
        return None  # damaged, or written by a newer llmmeter: quarantined, never guessed at
    columns = header.get("columns")
    return [str(name) for name in columns] if isinstance(columns, list) else None


def _add_record(batch: Batch, payload: bytes, columns: list[str]) -> None:
    try:
        values = marshal.loads(payload)
        if len(values) == 2 and values[0] == _ROW_TAG:
            row = row_from_mapping(dict(zip(columns, values[1], strict=True)))
        else:
            row = row_from_form(values)
        row = price_pending(row)
    except Exception as exc:  # a damaged frame: any error here is about the bytes, not the store
        batch.bad_lines.append((repr(payload[:2000]), f"unreadable journal record: {exc!r}"))
        return
    batch.rows.append(row)


def replay_dead_segments(directory: Path, write: Callable[[Batch], bool], batch_size: int = 500) -> int:
    """Write the segments of dead processes in ``directory`` with ``write`` and delete them.

    A segment still locked belongs to a live process and is left alone; ``write`` returning
    ``False`` (the store is busy or broken) leaves the segment for next time. Returns the number of
    segments replayed.
    """
    if not directory.is_dir():
        return 0
    replayed = 0
    for path in sorted(directory.iterdir()):
        if path.name.endswith(SEGMENT_SUFFIX + _TMP_SUFFIX):
            _remove_abandoned(path)
        elif path.name.endswith(SEGMENT_SUFFIX):
            outcome = _replay_if_dead(path, write, batch_size)
            if outcome is False:
                break
            replayed += outcome is True
    return replayed


def _replay_if_dead(path: Path, write: Callable[[Batch], bool], batch_size: int) -> bool | None:
    """``True`` replayed, ``None`` not ours to replay (alive, gone), ``False`` the write failed."""
    fd = _lock_if_unowned(path)
    if fd is None:
        return None
    try:
        for batch in read_segment(path, batch_size):
            if not write(batch):
                return False
        path.unlink(missing_ok=True)
        return True
    finally:
        os.close(fd)


def _lock_if_unowned(path: Path) -> int | None:
    """An fd holding ``path``'s lock when no live process holds it (and the file still exists)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        _lock(fd)
        if os.fstat(fd).st_nlink == 0:  # its owner finished and removed it meanwhile
            raise BlockingIOError
    except OSError:
        os.close(fd)
        return None
    return fd


def _remove_abandoned(path: Path) -> None:
    """A ``.tmp`` segment whose creator died before renaming it holds no record (only a header)."""
    fd = _lock_if_unowned(path)
    if fd is not None:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)
