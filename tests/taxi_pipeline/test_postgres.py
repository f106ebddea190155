"""The project's own PostgreSQL cluster (taxi_pipeline.postgres), started for real in a folder of its own."""

from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path

import psycopg2
import pytest

from airflow_cli import free_port
from taxi_pipeline import postgres


@pytest.fixture
def folder():
    # outside pytest's private temp folder: as root, the server runs as `postgres`, which must enter it
    path = Path(tempfile.mkdtemp(prefix="taxi_pg_test_", dir="/tmp"))
    path.chmod(0o711)
    yield path / "cluster"
    shutil.rmtree(path, ignore_errors=True)


def test_a_cluster_answers_on_loopback_with_its_password_and_stops(folder):
    port = free_port()
    with postgres.running(folder, port) as cluster:
        url = cluster.create_database("airflow_meta")
        assert url == f"postgresql+psycopg2://taxi:{cluster.password}@127.0.0.1:{port}/airflow_meta"
        assert cluster.create_database("airflow_meta") == url  # a second ask finds it
        connection = psycopg2.connect(
            host="127.0.0.1", port=port, user="taxi", password=cluster.password, dbname="airflow_meta"
        )
        with connection, connection.cursor() as cursor:
            cursor.execute("SHOW listen_addresses")
            assert cursor.fetchone() == ("127.0.0.1",)
        connection.close()
        with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
            psycopg2.connect(host="127.0.0.1", port=port, user="taxi", password="wrong", dbname="postgres")
        assert (folder / postgres.PASSWORD_FILE).stat().st_mode & 0o077 == 0  # the password is private
    with socket.socket() as probe:  # stopped: nothing listens any more
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_a_second_start_reuses_the_cluster_and_its_password(folder):
    with postgres.running(folder, free_port()) as cluster:
        cluster.create_database("kept")
        password = cluster.password
    with postgres.running(folder, free_port()) as cluster:
        assert cluster.password == password
        assert cluster.create_database("kept").endswith("/kept")


def test_a_port_in_use_fails_with_the_servers_words(folder):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(RuntimeError, match="did not start on port"):
            with postgres.running(folder, taken.getsockname()[1]):
                pass
