"""``llmmeter store copy SRC DST``: move records between stores without duplicating any.

A store is a local SQLite file (a path) or a fleet store (a ``postgresql://`` URL). Records are
read in batches (memory stays bounded) and written with the destination's idempotent insert
(``record_id`` is unique), so running the same copy again copies nothing new. Before a local store
is read, the journals its dead writers left are written into it, so that nothing they held is
left behind.

:func:`add_subcommand` adds the ``store`` command to the main CLI's argparse subparsers. Exit
codes: 0 copied, 2 a bad path, URL or store, or a database that cannot be reached (one line on
stderr, never a traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from llmmeter._arguments import whole_number
from llmmeter.store import STORE_ENV_VAR
from llmmeter.store.journal import Batch
from llmmeter.store.postgres import (
    connect,
    fleet_schema_version,
    is_postgres_url,
    iter_fleet_rows,
    prepare_fleet_database,
    redacted,
    write_fleet_batch,
)
from llmmeter.store.schema import COLUMN_NAMES, StoreError, prepare_for_writing, schema_version

__all__ = ["CopyResult", "add_subcommand", "copy_command", "copy_records", "quarantine_command"]

_BATCH = 2_000
_RECORD_ID_INDEX = COLUMN_NAMES.index("record_id")


@dataclass(slots=True)
class CopyResult:
    """What a copy did."""

    read: int = 0
    """Records read from the source."""
    inserted: int = 0
    """Records the destination did not have yet."""
    quarantined: int = 0
    """Records the destination refused (kept in its ``quarantine`` table, with the reason)."""

    @property
    def already_there(self) -> int:
        """Records the destination had already (a copy run again, or records written twice)."""
        return self.read - self.inserted - self.quarantined


class _Destination(Protocol):
    def write(self, batch: Batch) -> tuple[int, int]: ...

    def close(self) -> None: ...


# --- sources --------------------------------------------------------------------------------------
def _local_path(text: str, *, must_exist: bool) -> Path:
    path = Path(text).expanduser()
    if must_exist and not path.is_file():
        raise StoreError(f"no llmmeter store at {text}")
    if not must_exist and not path.parent.is_dir():
        raise StoreError(f"cannot create a store at {text}: no such directory {path.parent}")
    return path


def _sqlite_rows(path: Path) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of a local store in :data:`COLUMN_NAMES` order, after replaying dead journals."""
    from llmmeter.store import replay_journals

    replay_journals(path)
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the llmmeter store {path}: {exc}") from None
    try:
        if schema_version(conn) is None:
            raise StoreError(f"{path} is not an llmmeter store")
        present = {row[1] for row in conn.execute("PRAGMA table_info(records)")}
        selected = ", ".join(name if name in present else "NULL" for name in COLUMN_NAMES)
        cursor = conn.execute(f"SELECT {selected} FROM records ORDER BY id")
        while rows := cursor.fetchmany(_BATCH):
            yield [_with_record_id(row) for row in rows]
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot read the llmmeter store {path}: {exc}") from None
    finally:
        conn.close()


def _with_record_id(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """A row from before record ids existed gets one derived from its content: the same row
    copied again gets the same id, so it is not copied twice."""
    if row[_RECORD_ID_INDEX] is not None:
        return row
    digest = hashlib.sha256(json.dumps(row, default=str).encode("utf-8", "backslashreplace")).hexdigest()
    return (*row[:_RECORD_ID_INDEX], f"sqlite:{digest[:32]}", *row[_RECORD_ID_INDEX + 1 :])


def _fleet_rows(url: str) -> Iterator[list[tuple[Any, ...]]]:
    with connect(url) as conn:
        if fleet_schema_version(conn) is None:
            raise StoreError(f"no llmmeter store in {redacted(url)}")
        yield from iter_fleet_rows(conn, batch_size=_BATCH)


# --- destinations ---------------------------------------------------------------------------------
class _SQLiteDestination:
    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None)
        prepare_for_writing(self._conn)

    def write(self, batch: Batch) -> tuple[int, int]:
        from llmmeter.store.writer import write_batch

        return write_batch(self._conn, batch)

    def close(self) -> None:
        self._conn.close()


class _FleetDestination:
    def __init__(self, url: str) -> None:
        self._conn = connect(url)
        self._partitions: set[Any] = set()
        try:
            prepare_fleet_database(self._conn)
        except BaseException:
            self._conn.close()
            raise

    def write(self, batch: Batch) -> tuple[int, int]:
        return write_fleet_batch(self._conn, batch, self._partitions)

    def close(self) -> None:
        self._conn.close()


def _describe(target: str) -> str:
    return redacted(target) if is_postgres_url(target) else target


def copy_records(source: str, destination: str) -> CopyResult:
    """Copy every record of ``source`` into ``destination`` (each a store path or a
    ``postgresql://`` URL), skipping those already there. Raises :class:`StoreError` with a
    one-line message for a bad path or URL, a file that is not a store, or a database that
    cannot be reached."""
    source_is_fleet, destination_is_fleet = is_postgres_url(source), is_postgres_url(destination)
    if not source_is_fleet:
        _local_path(source, must_exist=True)
    if source.strip() == destination.strip() or (
        not source_is_fleet
        and not destination_is_fleet
        and Path(source).resolve() == Path(destination).resolve()
    ):
        raise StoreError("SRC and DST are the same store")
    try:
        return _copy(source, destination, source_is_fleet, destination_is_fleet)
    except StoreError:
        raise
    except Exception as exc:  # the database's own errors: refused, auth, gone mid-copy
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreError(
            f"copy from {_describe(source)} to {_describe(destination)} failed: {reason}"
        ) from None


def _copy(source: str, destination: str, source_is_fleet: bool, destination_is_fleet: bool) -> CopyResult:
    rows = _fleet_rows(source) if source_is_fleet else _sqlite_rows(Path(source).expanduser())
    target: _Destination = (
        _FleetDestination(destination)
        if destination_is_fleet
        else _SQLiteDestination(_local_path(destination, must_exist=False))
    )
    result = CopyResult()
    try:
        for batch in rows:
            inserted, quarantined = target.write(Batch(rows=batch))
            result.read += len(batch)
            result.inserted += inserted
            result.quarantined += quarantined
    finally:
        with contextlib.suppress(Exception):
            target.close()
    return result


# --- the command ------------------------------------------------------------------------------------
def add_subcommand(subparsers: Any) -> None:
    """Add ``store copy`` and ``store quarantine`` to an ``argparse`` subparsers object."""
    store = subparsers.add_parser(
        "store", help="move records between stores; list the records a store refused"
    )
    commands = store.add_subparsers(dest="store_command", metavar="{copy,quarantine}", required=True)
    copy = commands.add_parser(
        "copy",
        help="copy the records of one store into another, skipping those already there",
        description="SRC and DST are each a local store path or a postgresql:// URL. "
        "Running the same copy again copies nothing new.",
    )
    copy.add_argument("source", metavar="SRC", help="store path or postgresql://user@host/db")
    copy.add_argument("destination", metavar="DST", help="store path or postgresql://user@host/db")
    copy.set_defaults(func=copy_command)
    _add_quarantine_command(commands)


def copy_command(args: argparse.Namespace) -> int:
    """Run ``llmmeter store copy``; prints one summary line."""
    try:
        result = copy_records(args.source, args.destination)
    except StoreError as exc:
        print(f"llmmeter: {exc}", file=sys.stderr)
        return 2
    refused = f", {result.quarantined} refused (in its quarantine table)" if result.quarantined else ""
    print(
        f"llmmeter: copied {result.inserted} new records from {_describe(args.source)} to "
        f"{_describe(args.destination)} ({result.already_there} already there{refused})"
    )
    return 0


def _add_quarantine_command(commands: Any) -> None:
    quarantine = commands.add_parser(
        "quarantine",
        help="list the records the store refused, with the reason (they are not in the report)",
        description="A record the database could not take, even made storable, is kept in the "
        "store's quarantine table with the reason instead of being dropped. Newest first.",
    )
    quarantine.add_argument(
        "store",
        metavar="STORE",
        nargs="?",
        help=f"store path or postgresql:// URL (default: ${STORE_ENV_VAR}, else the local store)",
    )
    quarantine.add_argument("--format", choices=("table", "json"), default="table")
    quarantine.add_argument("--limit", type=whole_number(0), default=50, help="list at most N (default 50)")
    quarantine.set_defaults(func=quarantine_command)


def quarantine_command(args: argparse.Namespace) -> int:
    """Run ``llmmeter store quarantine``: the refused records, newest first, and how many."""
    import os

    from llmmeter.report.text import printable
    from llmmeter.store import resolve_store_path
    from llmmeter.store.quarantine import read_quarantine

    target = args.store or os.environ.get(STORE_ENV_VAR) or str(resolve_store_path(None))
    try:
        count, records = read_quarantine(target, limit=args.limit)
    except StoreError as exc:
        print(f"llmmeter: {exc}", file=sys.stderr)
        return 2
    if args.format == "json":
        listed = [
            {
                "record_id": record.record_id,
                "quarantined_at": record.quarantined_at.isoformat(),
                "reason": record.reason,
                "record": record.record_json,
            }
            for record in records
        ]
        print(json.dumps({"count": count, "records": listed}, indent=2, ensure_ascii=True))
        return 0
    print(f"{count} records in the quarantine of {_describe(target)}" + (":" if records else ""))
    for record in records:
        when = record.quarantined_at.strftime("%Y-%m-%d %H:%M:%S")
        reason = printable(record.reason)
        print(f"  {when}  {printable(record.record_id or '(no id)')}  {reason[:200]}")
    if count > len(records):
        print(f"  ... {count - len(records)} more (--limit)")
    return 0
