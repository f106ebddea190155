"""Starting and stopping the warm runtime (taxi_model.warm) beside the local platform's Airflow.

`make run`, `make airflow` and the benchmarks run inside `warm_runtime()`: the runtime steps of
their runs skip the 3-5 s of library imports each. Without it (or when it cannot start) every step
starts a fresh interpreter of the runtime, as before: same results, slower.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from taxi_model.warm import is_listening, socket_path_for
from taxi_pipeline.processes import stop_process
from taxi_pipeline.settings import Settings, get_settings


@contextmanager
def warm_runtime(settings: Settings | None = None, log_path: Path | None = None, timeout: float = 180) -> Iterator[str]:
    """Run the warm runtime of the settings' runtime interpreter for the block, unless one already
    runs (that one is used and left running); yields its socket path."""
    settings = settings or get_settings()
    socket_path = socket_path_for(settings.runtime_python)
    if is_listening(socket_path):
        yield socket_path
        return
    log_path = log_path or settings.home / "warm_runtime.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log_file:
        server = subprocess.Popen(
            [settings.runtime_python, "-m", "taxi_model.warm", "--socket", socket_path],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout
        while not is_listening(socket_path):
            if server.poll() is not None or time.monotonic() > deadline:
                print(
                    f"warning: the warm runtime did not start (every runtime step starts a fresh interpreter "
                    f"instead); its log {log_path}:\n{log_path.read_text(errors='replace')[-2000:]}",
                    file=sys.stderr,
                )
                break
            time.sleep(0.2)
        yield socket_path
    finally:
        stop_process(server)
