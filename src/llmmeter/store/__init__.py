"""The embedded local store: every :class:`~llmmeter.CallRecord` as one row of a SQLite file.

``schema.py`` the tables, their migrations and a record as a row; ``journal.py`` the per-process
journal that keeps a record from the moment it is handed over until it is in SQLite, and its
replay; ``writer.py`` :class:`SQLiteStore`, its writer thread, fork and exit; ``read.py``
:func:`read_records`. What survives what is stated in the README ("What survives a kill").
"""

from __future__ import annotations

import os
from pathlib import Path

from llmmeter.store.read import read_records, replay_journals
from llmmeter.store.schema import SCHEMA_VERSION, StoreError
from llmmeter.store.writer import SQLiteStore, StoreStats

__all__ = [
    "SCHEMA_VERSION",
    "STORE_ENV_VAR",
    "SQLiteStore",
    "StoreError",
    "StoreStats",
    "default_store_path",
    "read_records",
    "replay_journals",
    "resolve_store_path",
]

STORE_ENV_VAR = "LLMMETER_STORE"
"""Environment variable naming the store file (overridden by an explicit path)."""


def default_store_path() -> Path:
    """Where records go when nothing else is configured.

    ``$XDG_DATA_HOME/llmmeter/records.sqlite3``, or ``~/.local/share/llmmeter/records.sqlite3``
    when ``XDG_DATA_HOME`` is unset or not absolute (as the XDG base-directory spec requires).
    """
    xdg = os.environ.get("XDG_DATA_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / "llmmeter" / "records.sqlite3"


def resolve_store_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The store path to use: ``explicit`` > ``$LLMMETER_STORE`` > :func:`default_store_path`."""
    if explicit is not None:
        return Path(explicit).expanduser()
    from_env = os.environ.get(STORE_ENV_VAR)
    if from_env:
        return Path(from_env).expanduser()
    return default_store_path()
