"""Settings read from the environment, with the documented defaults (see README, "Settings").

TAXI_PLATFORM   `local` (default: DuckDB, local folders, Beam's direct runner, local processes) or `gcp`.
TAXI_HOME       the one root under which the local platform keeps everything it writes
                (default: `.taxi/` in the repo, git-ignored).
TAXI_RUNTIME_PYTHON  interpreter of the ML runtime (default: `.venv-runtime/bin/python`).
The gcp platform's own settings (project, region, bucket, ...) are in taxi_pipeline.gcp_settings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PLATFORMS = ("local", "gcp")


@dataclass(frozen=True)
class Settings:
    platform: str
    home: Path
    runtime_python: str

    @property
    def warehouse_path(self) -> Path:
        return self.home / "warehouse" / "taxi.duckdb"

    @property
    def predictions_path(self) -> Path:
        """The batch scores (taxi_batch_scoring): a file of their own, since loading the sample
        replaces the trips' file whole."""
        return self.home / "warehouse" / "predictions.duckdb"

    @property
    def data_dir(self) -> Path:
        """Where the sample CSVs (and the wheel they come from) are kept."""
        return self.home / "data"

    @property
    def artifact_root(self) -> str:
        """Where runs' artifacts live: `$TAXI_HOME/artifacts`, or `gs://<bucket>/artifacts` on gcp
        (the same layout.RunLayout under either root)."""
        if self.platform == "gcp":
            from taxi_pipeline.gcp_settings import get_gcp_settings

            return get_gcp_settings().artifact_root
        return str(self.home / "artifacts")

    @property
    def serving_root(self) -> str:
        """TF-Serving's model base paths: `$TAXI_HOME/serving`, or `gs://<bucket>/serving` on gcp."""
        if self.platform == "gcp":
            from taxi_pipeline.gcp_settings import get_gcp_settings

            return get_gcp_settings().serving_root
        return str(self.home / "serving")

    @property
    def airflow_home(self) -> Path:
        return self.home / "airflow"


def get_settings() -> Settings:
    platform = os.environ.get("TAXI_PLATFORM", "local")
    if platform not in PLATFORMS:
        raise ValueError(f"TAXI_PLATFORM={platform!r} is not one of {PLATFORMS}")
    home = Path(os.environ.get("TAXI_HOME") or REPO_ROOT / ".taxi").resolve()
    runtime_python = os.environ.get("TAXI_RUNTIME_PYTHON") or str(REPO_ROOT / ".venv-runtime" / "bin" / "python")
    return Settings(platform=platform, home=home, runtime_python=runtime_python)


FERNET_KEY_FILE = "fernet.key"
PRIVATE_FILES = ("airflow.db", "simple_auth_manager_passwords.json.generated", FERNET_KEY_FILE)


def private_home(settings: Settings) -> None:
    """TAXI_HOME and its Airflow home readable by their user only (the metadata DB, the admin's
    generated password and the Fernet key are in there), and every file this process and its
    children create private too (umask 077: the DB and the password file are 0600)."""
    os.umask(0o077)
    for folder in (settings.home, settings.airflow_home):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if folder.stat().st_uid == os.getuid():
            folder.chmod(0o700)
    for name in PRIVATE_FILES:  # made before the umask (an install older than it): private now
        path = settings.airflow_home / name
        if path.is_file() and path.stat().st_uid == os.getuid():
            path.chmod(0o600)


def ui_login(settings: Settings) -> str | None:
    """The UI's login(s), "user / password", from the simple auth manager's generated passwords file."""
    import json

    passwords = settings.airflow_home / "simple_auth_manager_passwords.json.generated"
    logins = json.loads(passwords.read_text()) if passwords.exists() else {}
    return ", ".join(f"{user} / {password}" for user, password in logins.items()) or None


def secret_file(path: Path, make=None) -> str:
    """A secret generated once into a 0600 file at `path` (`make()`, else a random token); several
    processes starting at once agree on one (the first link wins)."""
    import secrets
    import uuid

    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(make() if make else secrets.token_urlsafe(32))
        try:
            os.link(staging, path)  # fails if another process published its secret first: that one is used
        except FileExistsError:
            pass
        finally:
            staging.unlink()
    return path.read_text().strip()


def fernet_key(settings: Settings) -> str:
    """This install's Fernet key (Airflow encrypts connections' passwords and extras and variables
    with it), generated once into a 0600 file under the Airflow home. Production sets its own
    (README, "Security")."""
    import base64

    return secret_file(
        settings.airflow_home / FERNET_KEY_FILE, lambda: base64.urlsafe_b64encode(os.urandom(32)).decode()
    )


def airflow_env(settings: Settings | None = None) -> dict[str, str]:
    """Environment for Airflow processes of this project: its home under TAXI_HOME, the repo's
    airflow.cfg, dags/ and plugins/ (paths that depend on where the repo is are set here), and the
    install's Fernet key (unless the environment sets one: production's own)."""
    settings = settings or get_settings()
    return {
        "AIRFLOW__CORE__FERNET_KEY": os.environ.get("AIRFLOW__CORE__FERNET_KEY") or fernet_key(settings),
        "AIRFLOW_HOME": str(settings.airflow_home),
        "AIRFLOW_CONFIG": str(REPO_ROOT / "airflow.cfg"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "TAXI_HOME": str(settings.home),
        "TAXI_PLATFORM": settings.platform,
        "TAXI_RUNTIME_PYTHON": settings.runtime_python,
    }
