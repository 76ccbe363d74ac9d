"""The records a store refused, and why: read back from its ``quarantine`` table.

A record the database cannot take even after it was made storable (see
:mod:`llmmeter.store.schema`) is never dropped and never sinks its batch: it goes alone, with its
JSON and the reason, to the store's ``quarantine`` table (``llmmeter.quarantine`` on PostgreSQL).
Those records are not in the report, so the report says how many there are (on stderr), and
``llmmeter store quarantine`` lists them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from llmmeter.store.schema import StoreError

__all__ = ["QuarantinedRecord", "quarantine_count", "read_quarantine"]


class _Run(Protocol):
    def __call__(self, sql: str, params: Sequence[object], /) -> Iterable[Sequence[Any]]: ...


@dataclass(frozen=True, slots=True)
class QuarantinedRecord:
    """One record a store refused."""

    record_id: str | None
    """The record's id (``None`` for a journal line too damaged to say)."""
    quarantined_at: datetime
    """When the store refused it (UTC)."""
    reason: str
    """The database's reason, one line."""
    record_json: str
    """The record as JSON: what would have been stored."""


def quarantine_count(run: _Run) -> int:
    """How many records the store behind ``run`` (a report query runner) holds in quarantine;
    0 for a store from before the quarantine table existed."""
    try:
        rows = list(run("SELECT count(*) FROM quarantine", []))
    except (StoreError, sqlite3.Error) as exc:
        if "quarantine" in str(exc):  # no such table: an older store
            return 0
        raise
    return int(rows[0][0]) if rows else 0


def read_quarantine(store: str, *, limit: int | None = None) -> tuple[int, list[QuarantinedRecord]]:
    """``(how many, the newest of them first)`` from the store at ``store`` (a path or a
    ``postgresql://`` URL), at most ``limit`` listed. Raises :class:`StoreError` with a one-line
    message when the store cannot be read."""
    from llmmeter.store.postgres import is_postgres_url

    if is_postgres_url(store):
        return _read_fleet(store, limit)
    return _read_local(Path(store).expanduser(), limit)


def _limit_clause(limit: int | None) -> str:
    return "" if limit is None else f" LIMIT {int(limit)}"


def _read_local(path: Path, limit: int | None) -> tuple[int, list[QuarantinedRecord]]:
    if not path.is_file():
        raise StoreError(f"no llmmeter store at {path}")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the llmmeter store {path}: {exc}") from None
    conn.text_factory = lambda data: data.decode("utf-8", "backslashreplace")
    try:
        count = conn.execute("SELECT count(*) FROM quarantine").fetchone()[0]
        rows = conn.execute(
            "SELECT record_id, quarantined_unix_ns, reason, record_json FROM quarantine "
            "ORDER BY quarantined_unix_ns DESC, id DESC" + _limit_clause(limit)
        ).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return 0, []  # a store from before the quarantine table: nothing was refused there
        raise StoreError(f"cannot read the llmmeter store {path}: {exc}") from None
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot read the llmmeter store {path}: {exc}") from None
    finally:
        conn.close()
    records = [
        QuarantinedRecord(record_id, datetime.fromtimestamp(unix_ns / 1e9, UTC), reason, record_json)
        for record_id, unix_ns, reason, record_json in rows
    ]
    return int(count), records


def _read_fleet(url: str, limit: int | None) -> tuple[int, list[QuarantinedRecord]]:
    from llmmeter.store.postgres_report import reading_fleet_store

    with reading_fleet_store(url) as run:
        count = quarantine_count(run)
        rows = run(
            "SELECT record_id, quarantined_at, reason, record_json FROM quarantine "
            "ORDER BY quarantined_at DESC" + _limit_clause(limit),
            [],
        )
        records = [
            QuarantinedRecord(record_id, at.astimezone(UTC), reason, record_json)
            for record_id, at, reason, record_json in rows
        ]
    return count, records
