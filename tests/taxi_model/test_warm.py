"""The warm runtime: a step forked from it behaves as the same step in a fresh interpreter (argv,
environment, working directory, output, exit code, and the very same trained model), dies with its
client, and steps run side by side."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import pytest
from model_test_data import runtime_env

from process_state import alive
from taxi_model.warm import is_listening, run_warm

STEP = textwrap.dedent("""
    import json, os, sys, time
    print(json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "flag": os.environ.get("STEP_FLAG"),
                      "pid": os.getpid(), "name": __name__}))
    if "--sleep" in sys.argv:
        child = os.fork()  # a process of its own, as a Beam worker would be: it must die with the step
        if child == 0:
            time.sleep(600)
            os._exit(0)
        open(sys.argv[-1], "w").write(f"{os.getpid()} {child}")
        time.sleep(600)
    if "--finish" in sys.argv:  # what a normal interpreter exit does: join threads, then atexit
        import atexit, threading
        done = open(sys.argv[-1], "a")
        threading.Thread(target=lambda: (time.sleep(0.5), done.write("thread;"))).start()
        atexit.register(lambda: (done.write("atexit"), done.close()))
    if "--raise" in sys.argv:
        raise ValueError("the step broke")
    sys.exit(int(sys.argv[1]))
""")


def start_server(socket_path: str, log: Path) -> subprocess.Popen:
    server = subprocess.Popen(
        [sys.executable, "-m", "taxi_model.warm", "--socket", socket_path],
        env=runtime_env(),
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while not is_listening(socket_path):
        assert server.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    return server


@pytest.fixture(scope="module")
def warm(tmp_path_factory):
    """A warm runtime on a socket of its own (short path: AF_UNIX allows 108 bytes) and a step script."""
    folder = Path(tempfile.mkdtemp(prefix="warm-", dir="/tmp"))
    socket_path = str(folder / "s.sock")
    server = start_server(socket_path, tmp_path_factory.mktemp("warm_log") / "server.log")
    step = folder / "step.py"
    step.write_text(STEP)
    yield {"socket": socket_path, "step": str(step), "server": server}
    server.terminate()
    server.wait(timeout=30)
    assert not os.path.exists(socket_path)  # a stopped server removes its socket
    shutil.rmtree(folder)


def run(warm, argv, env=None, cwd="/tmp") -> tuple[int, list[str]]:
    lines = []
    code = run_warm(argv, {**runtime_env(), **(env or {})}, cwd, warm["socket"], lines.append)
    return code, lines


def test_a_script_step_gets_its_argv_environment_and_working_directory_and_its_exit_code(warm, tmp_path):
    import json

    code, lines = run(warm, [warm["step"], "3", "--x=1"], env={"STEP_FLAG": "on"}, cwd=str(tmp_path))
    assert code == 3
    seen = json.loads(lines[0])
    assert seen["argv"] == ["3", "--x=1"] and seen["cwd"] == str(tmp_path) and seen["flag"] == "on"
    assert seen["name"] == "__main__" and seen["pid"] != warm["server"].pid


def test_only_its_user_may_connect_to_the_warm_runtime(warm):
    assert os.stat(warm["socket"]).st_mode & 0o777 == 0o600  # a connection runs code as this user


def test_a_module_step_runs_as_python_dash_m(warm):
    code, lines = run(warm, ["-m", "taxi_model.warm", "--help"])
    assert code == 0 and any("--socket" in line for line in lines)


def test_a_step_that_raises_prints_its_traceback_and_exits_1(warm):
    code, lines = run(warm, [warm["step"], "0", "--raise"])
    assert code == 1
    assert "ValueError: the step broke" in lines[-1] and any("Traceback" in line for line in lines)


def test_a_step_ends_as_in_a_fresh_interpreter_its_threads_joined_then_its_atexit_functions_run(warm, tmp_path):
    record = tmp_path / "finish"
    assert run(warm, [warm["step"], "0", "--finish", str(record)])[0] == 0
    assert record.read_text() == "thread;atexit"


@pytest.mark.parametrize("client_reads", [True, False], ids=["client read the output", "output left unread"])
def test_a_step_and_what_it_started_die_when_its_client_goes_away(warm, tmp_path, client_reads):
    """A killed task's process closes its end: with its output read (EOF) or not (ECONNRESET)."""
    pids_file = tmp_path / "pids"
    request = {"argv": [warm["step"], "0", "--sleep", str(pids_file)], "env": runtime_env(), "cwd": "/tmp"}
    client = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import json, socket, sys, time
        client = socket.socket(socket.AF_UNIX)
        client.connect({warm["socket"]!r})
        client.sendall(json.dumps({request!r}).encode() + b"\\n")
        if {client_reads!r}:
            for line in client.makefile("rb"):
                print(line)
        time.sleep(600)
    """),
        ],
        env=runtime_env(),
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not pids_file.exists() or not pids_file.read_text():
        assert time.monotonic() < deadline and client.poll() is None
        time.sleep(0.1)
    pids = [int(p) for p in pids_file.read_text().split()]
    client.kill()  # as a killed task's process dies
    client.wait()
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in pids):
        assert time.monotonic() < deadline, f"still running: {[p for p in pids if alive(p)]}"
        time.sleep(0.1)


def test_steps_run_side_by_side(warm):
    results = {}

    def one(name):
        results[name] = run(warm, [warm["step"], "0", f"--name={name}"])

    threads = [threading.Thread(target=one, args=(n,)) for n in ("a", "b", "c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert {name: code for name, (code, _) in results.items()} == {"a": 0, "b": 0, "c": 0}
    assert all(f"--name={name}" in lines[0] for name, (_, lines) in results.items())


def test_a_second_server_refuses_a_live_socket_and_replaces_a_stale_one(warm, tmp_path):
    refused = subprocess.run(
        [sys.executable, "-m", "taxi_model.warm", "--socket", warm["socket"]],
        env=runtime_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0 and "already listens" in refused.stderr
    folder = Path(tempfile.mkdtemp(prefix="warm-", dir="/tmp"))
    stale = str(folder / "s.sock")
    Path(stale).touch()  # left by a server that was killed
    server = start_server(stale, tmp_path / "server.log")
    try:
        assert run({"socket": stale}, [warm["step"], "0"])[0] == 0
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(folder)


def test_the_trainer_in_the_warm_runtime_exports_the_same_model_as_in_a_fresh_interpreter(
    warm, transform_dir, tmp_path
):
    """TensorFlow forked after its import trains as it does fresh: every byte of the weights."""

    def command(name):
        return [
            "-m",
            "taxi_model.trainer",
            "--transform_output",
            str(transform_dir),
            "--serving_model_dir",
            str(tmp_path / name / "model"),
            "--log_dir",
            str(tmp_path / name / "logs"),
            "--train_steps",
            "30",
            "--eval_steps",
            "2",
            "--batch_size",
            "64",
        ]

    code, lines = run(warm, command("warm"))
    assert code == 0, "\n".join(lines[-30:])
    subprocess.run([sys.executable, *command("fresh")], env=runtime_env(), check=True, capture_output=True)
    weights = [
        (tmp_path / name / "model" / "variables" / "variables.data-00000-of-00001").read_bytes()
        for name in ("warm", "fresh")
    ]
    assert weights[0] == weights[1]


def test_each_runtime_environment_has_a_warm_runtime_of_its_own(tmp_path):
    """Two clones' runtimes link the same base interpreter: they must not share a socket (the steps
    of one would run the other's code)."""
    from taxi_model.warm import socket_path_for

    for clone in ("a", "b"):
        (tmp_path / clone / "bin").mkdir(parents=True)
        (tmp_path / clone / "bin" / "python").symlink_to(sys.executable)
    paths = {socket_path_for(str(tmp_path / clone / "bin" / "python")) for clone in ("a", "b")}
    assert len(paths) == 2 and all(len(p.encode()) < 108 for p in paths)


def test_a_warm_runtime_whose_owner_dies_stops_and_removes_its_socket(tmp_path):
    """An owner killed without stopping it (SIGKILL, a crashed test session) leaves no warm runtime
    behind to serve later runs with what it imported then."""
    folder = Path(tempfile.mkdtemp(prefix="warm-", dir="/tmp"))
    socket_path = str(folder / "s.sock")
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
        import subprocess, sys, time
        subprocess.Popen([sys.executable, "-m", "taxi_model.warm", "--socket", {socket_path!r}])
        time.sleep(600)
    """),
        ],
        env=runtime_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not is_listening(socket_path):
            assert time.monotonic() < deadline and owner.poll() is None
            time.sleep(0.2)
        owner.kill()
        owner.wait()
        deadline = time.monotonic() + 30
        while os.path.exists(socket_path):
            assert time.monotonic() < deadline, "the warm runtime outlived its owner"
            time.sleep(0.2)
    finally:
        owner.kill()
        shutil.rmtree(folder)


def test_output_without_a_final_newline_is_not_lost(warm, tmp_path):
    script = tmp_path / "partial.py"
    script.write_text('import sys\nprint("first")\nsys.stdout.write("no newline at the end")\n')
    assert run(warm, [str(script)]) == (0, ["first", "no newline at the end"])


def test_a_socket_that_is_not_this_users_own_is_never_sent_a_step(tmp_path, monkeypatch):
    """Another user who created the socket's path first would receive every step's environment and
    decide its outcome. Simulated: the client runs as another uid than the listener's files."""
    import socket as sockets
    import threading

    from taxi_model import warm

    folder = Path(tempfile.mkdtemp(prefix="warm-", dir="/tmp"))
    path = str(folder / "s.sock")
    listener = sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    received = []

    def accept():
        listener.settimeout(3)
        try:
            conn, _ = listener.accept()
            received.append(conn.recv(65536))
        except OSError:
            pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        monkeypatch.setattr(warm.os, "getuid", lambda: os.geteuid() + 4242)  # we are someone else
        refusals = []
        code = warm.run_warm(
            ["-m", "anything"], {"AIRFLOW_CONN_X": "secret"}, "/tmp", path, print, on_refused=refusals.append
        )
        assert code is None and not warm.is_listening(path)
        (why,) = refusals
        assert f"{folder} belongs to uid {os.geteuid()}, not to this user" in why
        thread.join(5)
        assert received == []  # the environment went nowhere
    finally:
        listener.close()
        shutil.rmtree(folder)


@pytest.mark.parametrize("mode", [0o755, 0o777])
def test_a_socket_in_a_folder_others_can_enter_is_refused(mode, tmp_path):
    from taxi_model.warm import untrusted

    folder = Path(tempfile.mkdtemp(prefix="warm-", dir="/tmp"))
    try:
        folder.chmod(mode)
        assert "is open to other users" in untrusted(str(folder / "s.sock"))
        folder.chmod(0o700)
        assert untrusted(str(folder / "s.sock")) is None
    finally:
        shutil.rmtree(folder)


def test_the_default_socket_is_in_a_private_folder_of_the_user(tmp_path, monkeypatch):
    from taxi_model.warm import socket_path_for, untrusted

    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    path = Path(socket_path_for(str(tmp_path / "bin" / "python")))
    assert path.parent.name == f"taxi-runtime-{os.getuid()}" and path.parent.stat().st_mode & 0o777 == 0o700
    assert untrusted(str(path)) is None


def test_a_step_gets_only_the_environment_it_needs():
    from taxi_model.warm import step_environment

    env = {
        "PATH": "/bin",
        "HOME": "/h",
        "PYTHONPATH": "/p",
        "TF_USE_LEGACY_KERAS": "1",
        "TAXI_HOME": "/t",
        "LC_ALL": "C",
        "STORAGE_EMULATOR_HOST": "http://127.0.0.1:1",
        "AIRFLOW__CORE__FERNET_KEY": "k",
        "AIRFLOW_CONN_TAXI_ALERTS": "https://hooks/secret",
        "AIRFLOW__API_AUTH__JWT_SECRET": "s",
        "AWS_SECRET_ACCESS_KEY": "a",
        "TAXIWAY": "x",
    }
    assert step_environment(env) == {
        k: env[k]
        for k in ("PATH", "HOME", "PYTHONPATH", "TF_USE_LEGACY_KERAS", "TAXI_HOME", "LC_ALL", "STORAGE_EMULATOR_HOST")
    }
