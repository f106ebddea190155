"""The install's private files: TAXI_HOME and its Airflow home private to the user, the metadata DB
created 0600, and one Fernet key per install that every Airflow process the project starts uses."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from taxi_pipeline.settings import FERNET_KEY_FILE, airflow_env, fernet_key, get_settings, private_home


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.slow  # migrates an Airflow database
def test_the_airflow_home_its_db_and_password_file_are_private_and_airflow_uses_the_installs_key(tmp_path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k != "AIRFLOW__CORE__FERNET_KEY"}
    env["TAXI_HOME"] = str(home)
    script = (
        "import os, subprocess, sys\n"
        "from taxi_pipeline.settings import airflow_env, get_settings, private_home\n"
        "settings = get_settings(); private_home(settings); env = {**os.environ, **airflow_env(settings)}\n"
        "subprocess.run([sys.executable, '-m', 'airflow', 'db', 'migrate'], env=env, check=True,\n"
        "               stdout=subprocess.DEVNULL)\n"
        "os.environ.update(env)  # the api-server's auth manager generates the admin's password file\n"
        "from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager\n"
        "SimpleAuthManager().init()\n"
        "print(subprocess.run([sys.executable, '-m', 'airflow', 'config', 'get-value', 'core', 'fernet_key'],\n"
        "                     env=env, check=True, capture_output=True, text=True).stdout.strip())\n"
    )
    used = (
        subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True, text=True)
        .stdout.strip()
        .splitlines()[-1]
    )
    key_file = home / "airflow" / FERNET_KEY_FILE
    assert used == key_file.read_text().strip()  # what Airflow encrypts connections and variables with
    from cryptography.fernet import Fernet

    Fernet(used)  # a valid key
    assert (_mode(home), _mode(home / "airflow")) == (0o700, 0o700)
    assert (_mode(home / "airflow" / "airflow.db"), _mode(key_file)) == (0o600, 0o600)
    assert _mode(home / "airflow" / "simple_auth_manager_passwords.json.generated") == 0o600


def test_processes_starting_at_once_agree_on_one_key(tmp_path, monkeypatch):
    monkeypatch.setenv("TAXI_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AIRFLOW__CORE__FERNET_KEY", raising=False)
    settings = get_settings()
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: fernet_key(settings), range(32)))
    assert len(keys) == 1 and airflow_env(settings)["AIRFLOW__CORE__FERNET_KEY"] in keys
    assert sorted(p.name for p in (tmp_path / "home" / "airflow").iterdir()) == [FERNET_KEY_FILE]  # no leftovers


def test_an_environment_that_sets_its_own_key_keeps_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TAXI_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AIRFLOW__CORE__FERNET_KEY", "production's own key, from its secret store")
    assert airflow_env()["AIRFLOW__CORE__FERNET_KEY"] == "production's own key, from its secret store"
    assert not (tmp_path / "home" / "airflow" / FERNET_KEY_FILE).exists()


def test_an_install_made_before_its_files_were_private_is_made_private(tmp_path, monkeypatch):
    home = tmp_path / "home"
    (home / "airflow").mkdir(parents=True)
    home.chmod(0o755)
    for name in ("airflow.db", "simple_auth_manager_passwords.json.generated"):
        (home / "airflow" / name).write_text("x")
        (home / "airflow" / name).chmod(0o644)
    monkeypatch.setenv("TAXI_HOME", str(home))
    umask = os.umask(0o022)
    try:
        private_home(get_settings())
    finally:
        os.umask(umask)
    assert (_mode(home), _mode(home / "airflow")) == (0o700, 0o700)
    assert {
        _mode(home / "airflow" / name) for name in ("airflow.db", "simple_auth_manager_passwords.json.generated")
    } == {0o600}
