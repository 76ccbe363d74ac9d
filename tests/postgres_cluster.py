"""A throwaway PostgreSQL server for the fleet-store tests: Debian's ``postgresql`` binaries, a
cluster in a temporary directory, run as an unprivileged user on 127.0.0.1 (a free port) with its
unix socket in that directory. Tests that need it are skipped, with the reason, only when the
binaries are not installed (``apt-get install postgresql``; ``.ci/run`` installs it)."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

SUPERUSER = "llmmeter"
PASSWORD = "throwaway-test-password"
_UNPRIVILEGED = "nobody"


def _bin_dir() -> Path | None:
    """The newest installed server's binaries (Debian keeps them out of ``PATH``)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresCluster:
    """One server. ``url(database)`` connects over TCP with a password; ``new_database()`` gives
    each test a database of its own; ``stop()`` / ``start()`` take it down and bring it back."""

    def __init__(self, bin_dir: Path, root: Path) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data = root / "data"
        self.socket_dir = root / "socket"
        self.log = root / "server.log"
        self.port = _free_port()
        self._as_user = _UNPRIVILEGED if os.geteuid() == 0 else None
        self._shared_database: str | None = None

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run(
            [str(self.bin_dir / program), *args],
            user=self._as_user,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr.strip() or done.stdout}")

    def init(self) -> None:
        """``initdb``: a superuser with a password over TCP (so a wrong password is refused)."""
        self.socket_dir.mkdir()
        password_file = self.root / "password"
        password_file.write_text(PASSWORD + "\n")
        if self._as_user is not None:
            owner = pwd.getpwnam(self._as_user)
            for path in (self.root, self.socket_dir, password_file):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            f"--pwfile={password_file}",
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )

    def running(self) -> bool:
        """Is the server up (``pg_ctl status``)?"""
        status = subprocess.run(
            [str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "status"],
            user=self._as_user,
            capture_output=True,
            timeout=30,
            check=False,
        )
        return status.returncode == 0

    def start(self) -> None:
        """Start the server on its port, unless it runs; wait until it accepts connections."""
        if self.running():
            return
        # fsync=off only risks an OS crash; synchronous_commit stays on: with it off, a commit the
        # client was told about can vanish in `stop("immediate")`, which would be the server's loss.
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c full_page_writes=off -c max_connections=60 -c wal_level=minimal -c max_wal_senders=0 "
            "-c max_wal_size=64MB -c min_wal_size=32MB"
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "30", "start"
        )

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server; ``immediate`` is a crash as far as clients can tell."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def url(self, database: str = "postgres", password: str = PASSWORD) -> str:
        """A ``postgresql://`` URL of ``database`` over TCP on loopback."""
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{self.port}/{database}"

    def emptied_database(self) -> str:
        """One database shared by the tests, emptied of the previous test's llmmeter schema
        (quicker, and far less disk, than a database per test); its URL."""
        import psycopg

        if self._shared_database is None:
            self._shared_database = self.new_database()
        with psycopg.connect(self._shared_database, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS llmmeter CASCADE")
        return self._shared_database

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            # FILE_COPY (PostgreSQL 15+) copies the template's files instead of writing them all to
            # the WAL: half the disk traffic per test.
            strategy = " STRATEGY FILE_COPY" if conn.info.server_version >= 150000 else ""
            conn.execute(f'CREATE DATABASE "{name}"{strategy}')
        return self.url(name)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A running throwaway server for the whole session (removed afterwards)."""
    bin_dir = _bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql)")
    pytest.importorskip("psycopg", reason='psycopg not installed (pip install "llmmeter[postgresql]")')
    root = Path(tempfile.mkdtemp(prefix="llmmeter-pg-"))
    cluster = PostgresCluster(bin_dir, root)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.stop("immediate")  # no shutdown checkpoint: the files go next
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """The URL of a database without any llmmeter store in it; the server is running when the
    test starts."""
    postgres_cluster.start()  # a no-op unless a previous test left it stopped
    return postgres_cluster.emptied_database()
