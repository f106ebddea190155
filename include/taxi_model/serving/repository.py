"""Which model versions are served: the serving root and its `models.config`, polled.

    <serving_root>/<model>/<version>/   a SavedModel; the version is a positive int64 (all digits).
                                         Any other name (`.123.staging-x`, `records/`, files) is ignored.
    <serving_root>/models.config        optional: TF-Serving's ModelServerConfig (text format), for
                                         version labels, version policies and other base paths.

A model's version policy, as TF-Serving's: `latest { num_versions: N }` (the default, N = 1) the N
newest versions on disk, `specific { versions: ... }` exactly those, `all` every one; labels only
name versions, they load none. A models.config that does not parse stops the start (TF-Serving
refuses to start); on a later poll it is logged and the last good one stays.

Each poll loads the versions a model wants before it unloads the ones it no longer wants, and
switches labels in between: a swap never leaves a request without its version. Requests take the
current mapping without a lock (it is replaced, never mutated), and a version unloaded meanwhile
finishes the requests that hold it. A version that fails to load is retried only once its
directory changed (a new inode after a rename, or new entries). A loaded version whose directory
is replaced by another (a retried push of the same version) is reloaded from it; while it is
missing (between the two renames of a replacement) the loaded copy keeps serving, for up to
VANISHED_POLLS polls.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping

from google.protobuf import text_format
from tensorflow_serving.config import logging_config_pb2, model_server_config_pb2

from taxi_model.serving import warmup
from taxi_model.serving.errors import ConfigError, invalid_argument, not_found, status_code_of
from taxi_model.serving.inference import ModelVersion

CONFIG_FILE = "models.config"
_VERSION_DIR = re.compile(r"[0-9]{1,19}")
MAX_VERSION = 2**63 - 1  # versions are int64s
VANISHED_POLLS = 5
log = logging.getLogger("taxi_model.serving")

Loader = Callable[[str, int, str], ModelVersion]


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """What models.config says about one model (the defaults when it says nothing)."""

    base_path: str
    latest: int = 1  # the newest versions wanted
    all_versions: bool = False
    specific: frozenset[int] = frozenset()
    labels: Mapping[str, int] = dataclasses.field(default_factory=dict)
    logging: logging_config_pb2.LoggingConfig | None = None  # request logging (request_log.py); None: off


@dataclasses.dataclass
class VersionState:
    """A version's state as GetModelStatus reports it (START, LOADING, AVAILABLE, UNLOADING, END)."""

    state: str
    error_code: str = "OK"
    error_message: str = ""


def parse_models_config(text: str, serving_root: str) -> dict[str, ModelConfig]:
    config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    if config.WhichOneof("config") not in (None, "model_config_list"):
        raise ValueError("only model_config_list is supported")
    models = {}
    for entry in config.model_config_list.config:
        policy = entry.model_version_policy
        choice = policy.WhichOneof("policy_choice")
        models[entry.name] = ModelConfig(
            base_path=os.path.join(serving_root, entry.base_path or entry.name),  # relative to the root
            latest=max(policy.latest.num_versions, 1) if choice == "latest" else 1,
            all_versions=choice == "all",
            specific=frozenset(policy.specific.versions) if choice == "specific" else frozenset(),
            labels=dict(entry.version_labels),
            logging=entry.logging_config if entry.HasField("logging_config") else None,
        )
    return models


def versions_on_disk(base_path: str) -> dict[int, str]:
    """version -> directory; {} when the base path does not exist (any more)."""
    try:
        entries = list(os.scandir(base_path))
    except OSError:
        return {}
    versions = {}
    for entry in entries:
        if _VERSION_DIR.fullmatch(entry.name) and 0 < int(entry.name) <= MAX_VERSION:
            try:
                if entry.is_dir():
                    versions[int(entry.name)] = entry.path
            except OSError:  # vanished since the listing
                pass
    return versions


def wanted_versions(on_disk: set[int], config: ModelConfig) -> set[int]:
    """The versions on disk that the model's version policy asks for."""
    if config.all_versions:
        return set(on_disk)
    if config.specific:
        return on_disk & config.specific
    return set(sorted(on_disk)[-config.latest :])


def _identity(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


class ModelRepository:
    def __init__(self, serving_root: str, poll_seconds: float = 2.0, loader: Loader = warmup.load):
        self.serving_root = os.path.abspath(serving_root)
        self.poll_seconds = poll_seconds
        self._loader = loader
        # Read by request threads without a lock: replaced whole, never mutated.
        self._served: dict[str, dict[int, ModelVersion]] = {}
        self._labels: dict[str, dict[str, int]] = {}
        self._states: dict[str, dict[int, VersionState]] = {}
        self._states_lock = threading.Lock()
        self._failed: dict[tuple[str, int], tuple[int, int]] = {}  # the directory that failed
        self._inodes: dict[tuple[str, int], int] = {}  # the directory each loaded version came from
        self._missing_polls: dict[tuple[str, int], int] = {}  # loaded versions not on disk
        self._config_text: bytes | None = None
        self._configs: dict[str, ModelConfig] = {}
        self._poll_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- life cycle

    def start(self) -> None:
        """Loads what the serving root holds now, then keeps polling it in a thread (unless
        poll_seconds is 0: TF-Serving's 0 polls once). Raises ConfigError on a broken models.config."""
        text = self._config_bytes()
        self._configs = self._parse_config(text)
        self._config_text = text
        self.poll()
        if self.poll_seconds <= 0:
            return
        self._thread = threading.Thread(target=self._poll_loop, name="serving-root-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread:
            self._thread.join()
        with self._poll_lock:
            for name in list(self._served):
                self._unload(name, set())

    def _poll_loop(self) -> None:
        while not self._stopping.wait(self.poll_seconds):
            try:
                self.poll()
            except Exception:  # a bad poll must not end polling
                log.exception("polling %s failed", self.serving_root)

    # -- one poll

    def poll(self) -> None:
        with self._poll_lock:
            configs = self._read_config()
            bases = {
                entry.name: entry.path
                for entry in self._root_entries()
                if not entry.name.startswith(".") and entry.is_dir()
            }
            bases.update({name: config.base_path for name, config in configs.items()})
            wanted = {}
            for name, base_path in sorted(bases.items()):
                on_disk = versions_on_disk(base_path)
                on_disk.update(self._recently_vanished(name, on_disk))
                wanted[name] = wanted_versions(set(on_disk), configs.get(name, ModelConfig(base_path)))
                self._load(name, {v: on_disk[v] for v in wanted[name]})
            self._labels = {name: dict(config.labels) for name, config in configs.items()}
            for name in list(self._served):
                if self._stopping.is_set():
                    break
                # A model still present that has none of its wanted versions loaded keeps what it has.
                keep = wanted.get(name, set()) & set(self._served[name]) if name in bases else set()
                if name not in bases or keep:
                    self._unload(name, keep)

    def _recently_vanished(self, name: str, on_disk: Mapping[int, str]) -> dict[int, str]:
        """Loaded versions missing from disk for fewer than VANISHED_POLLS polls, taken as present:
        a version replaced by two renames is neither unloaded nor replaced by an older one meanwhile.
        (A version deleted for good is unloaded after those polls.)"""
        kept = {}
        for version, model in self._served.get(name, {}).items():
            key = (name, version)
            if version in on_disk:
                self._missing_polls.pop(key, None)
                continue
            self._missing_polls[key] = self._missing_polls.get(key, 0) + 1
            if self._missing_polls[key] < VANISHED_POLLS:
                kept[version] = model.path
        return kept

    def _root_entries(self) -> list[os.DirEntry]:
        try:
            return list(os.scandir(self.serving_root))
        except OSError:
            return []

    def _config_bytes(self) -> bytes | None:
        try:
            with open(os.path.join(self.serving_root, CONFIG_FILE), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def _parse_config(self, text: bytes | None) -> dict[str, ModelConfig]:
        if text is None:
            return {}
        try:
            configs = parse_models_config(text.decode(), self.serving_root)
        except (text_format.ParseError, UnicodeDecodeError, ValueError) as e:
            raise ConfigError(f"Invalid protobuf file: '{os.path.join(self.serving_root, CONFIG_FILE)}': {e}") from e
        log.info("models.config: %s", ", ".join(f"{name} {dict(c.labels)}" for name, c in configs.items()) or "none")
        return configs

    def _read_config(self) -> dict[str, ModelConfig]:
        """models.config, re-parsed when its bytes change; a broken one keeps the previous config."""
        text = self._config_bytes()
        if text != self._config_text:
            self._config_text = text
            try:
                self._configs = self._parse_config(text)
            except ConfigError as e:
                log.error("ignoring the new %s (keeping the previous one): %s", CONFIG_FILE, e)
        return self._configs

    def _set_state(self, name: str, version: int, state: VersionState) -> None:
        with self._states_lock:
            self._states.setdefault(name, {})[version] = state

    def _load(self, name: str, paths: Mapping[int, str]) -> None:
        """Loads the wanted versions not loaded yet, newest first, and reloads a loaded version whose
        directory was replaced (a retried push of the same version): its old copy serves meanwhile."""
        for version in sorted(paths, reverse=True):
            if self._stopping.is_set():
                return
            key, path = (name, version), paths[version]
            identity = _identity(path)
            reload = version in self._served.get(name, {})
            if (
                identity is None  # vanished since the listing
                or (reload and identity[0] == self._inodes.get(key))
                or (key in self._failed and self._failed[key] == identity)
            ):
                continue
            if not reload:
                self._set_state(name, version, VersionState("LOADING"))
            started = time.monotonic()
            try:
                loaded = self._loader(name, version, path)
            except Exception as e:  # a broken or vanished version must not stop the others
                self._failed[key] = identity
                if not reload:
                    self._set_state(
                        name, version, VersionState("END", status_code_of(e).name, f"{type(e).__name__}: {e}")
                    )
                log.error(
                    "failed to %s %s version %d from %s: %s", "reload" if reload else "load", name, version, path, e
                )
                continue
            self._failed.pop(key, None)
            self._inodes[key] = identity[0]
            self._served = {**self._served, name: {**self._served.get(name, {}), version: loaded}}
            self._set_state(name, version, VersionState("AVAILABLE"))
            log.info(
                "%s %s version %d from %s (%.1f s)",
                "reloaded" if reload else "loaded",
                name,
                version,
                path,
                time.monotonic() - started,
            )

    def _unload(self, name: str, keep: set[int]) -> None:
        served = self._served.get(name, {})
        gone = set(served) - keep
        if not gone:
            return
        for version in gone:
            self._set_state(name, version, VersionState("UNLOADING"))
        remaining = {v: m for v, m in served.items() if v in keep}
        others = {k: v for k, v in self._served.items() if k != name}
        self._served = {**others, name: remaining} if remaining else others
        for version in sorted(gone):
            self._inodes.pop((name, version), None)
            self._missing_polls.pop((name, version), None)
            self._set_state(name, version, VersionState("END"))
            log.info("unloaded %s version %d", name, version)

    # -- lookups (request threads)

    def _label_version(self, name: str, label: str) -> int:
        labels = self._labels.get(name, {})
        if label not in labels:
            raise invalid_argument(f"Unrecognized servable version label: {label}")
        return labels[label]

    def logging_config(self, name: str) -> logging_config_pb2.LoggingConfig | None:
        """The request logging models.config asks of `name`, or None."""
        config = self._configs.get(name)
        return config.logging if config else None

    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> ModelVersion:
        """The served version a request asks for: `version`, the one `label` names, or the newest."""
        served = self._served.get(name, {})
        if label:
            version = self._label_version(name, label)
        if version is None:
            if not served:
                raise not_found(f"Servable not found for request: Latest({name})")
            return served[max(served)]
        if version not in served:
            raise not_found(f"Servable not found for request: Specific({name}, {version})")
        return served[version]

    def version_states(
        self, name: str, version: int | None = None, label: str | None = None
    ) -> list[tuple[int, VersionState]]:
        """GetModelStatus: the state of every version the server has seen of `name`, or of one."""
        if label:
            version = self._label_version(name, label)
        with self._states_lock:
            states = dict(self._states.get(name, {}))
        if version is None:
            if not states:
                raise not_found(f"Could not find any versions of model {name}")
            return sorted(states.items(), reverse=True)
        if version not in states:
            raise not_found(f"Could not find version {version} of model {name}")
        return [(version, states[version])]
