"""A PostgreSQL cluster of the project's own, for Airflow's metadata database: Debian's PostgreSQL
binaries, `initdb` into a folder (never the machine's own cluster), a generated password, TCP on
loopback only (no Unix socket).

SQLite cannot take Airflow's services writing at once (a scheduler died of ObjectDeletedError, a
CLI `backfill create` of `database is locked`); the production-shaped stack and every test that
starts Airflow's services use this instead. PostgreSQL refuses to run as root: as root, its
commands run as Debian's `postgres` user, which then owns the cluster's folder.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from taxi_pipeline.settings import secret_file

USER = "taxi"
PASSWORD_FILE = "taxi-password"  # beside (not in) the data folder: initdb wants that folder empty


def bin_dir() -> Path:
    """Where Debian's PostgreSQL server binaries are (they are not on PATH there)."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not versions:
        raise RuntimeError("PostgreSQL's server is not installed: apt-get install postgresql (make stack does)")
    return Path(versions[-1]).parent


def _as_owner(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@dataclass(frozen=True)
class Cluster:
    folder: Path  # holds data/ (the cluster), the password file and the server's log
    port: int

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "postgres.log"

    @property
    def password(self) -> str:
        return (self.folder / PASSWORD_FILE).read_text().strip()

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of `database` (Airflow's sql_alchemy_conn)."""
        return f"postgresql+psycopg2://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create `name` unless it exists; returns its URL."""
        import psycopg2

        with contextlib.closing(
            psycopg2.connect(host="127.0.0.1", port=self.port, user=USER, password=self.password, dbname="postgres")
        ) as connection:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cursor.fetchone() is None:
                    cursor.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def init(self) -> None:
        """initdb once: a superuser `taxi` with a generated password (scram-sha-256, TCP only)."""
        if (self.data / "PG_VERSION").exists():
            return
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        password_file = self.folder / PASSWORD_FILE
        secret_file(password_file)
        self._hand_to_owner()
        subprocess.run(
            _as_owner(
                [
                    str(bin_dir() / "initdb"),
                    "--pgdata",
                    str(self.data),
                    "--username",
                    USER,
                    "--pwfile",
                    str(password_file),
                    "--auth",
                    "scram-sha-256",
                    "--encoding",
                    "UTF8",
                    "--no-instructions",
                ]
            ),
            check=True,
            capture_output=True,
        )

    def start(self) -> None:
        """Start the server on 127.0.0.1:port and wait until it accepts connections."""
        self.init()
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories='' -c max_connections=200"
        done = subprocess.run(
            _as_owner(
                [str(bin_dir() / "pg_ctl"), "start", "--wait", "-D", str(self.data), "-l", str(self.log), "-o", options]
            ),
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            tail = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start on port {self.port}:\n{done.stdout}{done.stderr}\n{tail}")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(
                _as_owner([str(bin_dir() / "pg_ctl"), "stop", "--wait", "-m", "fast", "-D", str(self.data)]),
                capture_output=True,
            )

    def _hand_to_owner(self) -> None:
        if os.geteuid() != 0:
            return
        # the server's user must reach its folder: every parent must let others through
        for parent in self.folder.resolve().parents:
            if not parent.stat().st_mode & 0o001:
                raise RuntimeError(
                    f"PostgreSQL runs as the user postgres, which cannot enter {parent}: put the cluster elsewhere"
                )
        shutil.chown(self.folder, "postgres", "postgres")
        shutil.chown(self.folder / PASSWORD_FILE, "postgres", "postgres")


@contextlib.contextmanager
def running(folder: Path, port: int) -> Iterator[Cluster]:
    """A started cluster in `folder` (created when missing), stopped on leaving."""
    cluster = Cluster(Path(folder), port)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
