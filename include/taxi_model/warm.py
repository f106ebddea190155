"""The warm runtime: the ML runtime's libraries imported once, a forked process per step.

Every runtime step of the local platform is a fresh `python` of the runtime (transform, train,
evaluate, check_export), and each paid 3-5 s importing TensorFlow, TFT, TFMA and Beam before doing
anything: 12-15 s of every run's critical path (bench/run.py, figure 2). The warm runtime imports
those libraries once, without running anything in them, and then forks a child per step, as
gunicorn's --preload and multiprocessing's forkserver do. A step's own code (`taxi_model.*`) is
imported fresh in its child, so it is always the code on disk.

    python -m taxi_model.warm --socket <path>        # the server (runtime environment)

Clients (the local operators, in the Airflow environment: this module imports nothing heavy at
top level) call `run_warm(argv, env, cwd, socket_path, on_line)`: it returns the step's exit code,
or None when no warm runtime listens there, and the caller starts a fresh interpreter instead.

A connection runs code as the server's user, and a step's request carries its environment: the
socket lives in a folder of the user's only (`$XDG_RUNTIME_DIR`, else `<tmp>/taxi-runtime-<uid>/`,
0700), is created 0600, and a client sends nothing to a socket that is not its user's own, in a
folder only its user can enter, served by a process of its user (the peer's uid, SO_PEERCRED): a
socket another user put there first is refused (`on_refused` says why) and the step runs in a fresh
interpreter instead. The operators send only the environment a step needs (`step_environment`).

Per step, the server forks a *watcher* that forks the step and relays its end:
- the step's stdout and stderr are the client's socket, line-buffered (they stream into the task log);
- its environment and working directory are the client's, its argv is `-m <module> ...` or `<file> ...`;
- when the step ends, the watcher sends `EXIT_MARKER <code>` (a signal N gives 128 + N);
- when the client goes away (the task was killed or timed out), the watcher kills the step's
  process group: a step never outlives its task.
Forking is safe here because the parent only imports: no TensorFlow op, session or thread pool,
no gRPC channel, no Beam pipeline exists before the fork (checked by `_assert_nothing_started`).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import stat
import struct
import sys
import time
from collections.abc import Callable, Mapping, Sequence

EXIT_MARKER = "\x00taxi-warm-exit"
KILL_AFTER_SECONDS = 10  # a step that outlives its client's end by this long after SIGTERM gets SIGKILL
PING = {"ping": True}
# What the steps import: each one costs seconds, and none starts anything when imported.
PRELOAD = (
    "tensorflow",
    "tf_keras",
    "apache_beam",
    "apache_beam.runners.portability.fn_api_runner",
    "tensorflow_transform",
    "tensorflow_transform.beam",
    "tfx_bsl.public.tfxio",
    "tensorflow_model_analysis",
    "numpy",
    "pandas",
    "pyarrow",
)


# What a runtime step may need of its task's environment (names, or prefixes ending in "_"): its
# paths, locale and libraries' settings, the project's settings, Google's client settings. Not
# Airflow's own (its connections, variables, secret keys, Fernet key), nor anything else.
STEP_ENVIRONMENT = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "TERM",
    "LANG",
    "LANGUAGE",
    "LC_",
    "TZ",
    "TMPDIR",
    "TEMP",
    "TMP",
    "PYTHON",
    "VIRTUAL_ENV",
    "LD_LIBRARY_PATH",
    "TF_",
    "TAXI_",
    "CUDA_",
    "NVIDIA_",
    "OPENBLAS_",
    "OMP_",
    "MKL_",
    "KMP_",
    "XLA_",
    "GRPC_",
    "ABSL_",
    "BEAM_",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_CLOUD_PROJECT",
    "CLOUDSDK_",
    "STORAGE_EMULATOR_HOST",
    "NO_GCE_CHECK",
    "GCSFS_",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "CURL_CA_BUNDLE",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
)


def step_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The part of a task's environment that its runtime step gets (see STEP_ENVIRONMENT)."""

    def wanted(name: str) -> bool:
        return any(
            name == k or (k.endswith("_") and name.startswith(k)) or (k == "PYTHON" and name.startswith(k))
            for k in STEP_ENVIRONMENT
        )

    return {name: value for name, value in env.items() if wanted(name)}


def socket_folder() -> str:
    """A folder of this user's only: `$XDG_RUNTIME_DIR` (0700 by its specification), else
    `<tmp>/taxi-runtime-<uid>`, created 0700 (if someone else made it first, `untrusted` says so)."""
    import tempfile

    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir and os.path.isdir(runtime_dir):
        return runtime_dir
    folder = os.path.join(tempfile.gettempdir(), f"taxi-runtime-{os.getuid()}")
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    return folder


def socket_path_for(runtime_python: str) -> str:
    """The warm runtime's socket for a runtime interpreter: one per runtime environment (its
    libraries are what it preloaded), in the user's private folder, short enough for AF_UNIX's 108
    bytes. The path is not resolved: a virtualenv's `bin/python` is a link to the base interpreter
    that every environment (every clone of the repo) shares."""
    import hashlib

    key = hashlib.sha1(os.path.abspath(runtime_python).encode()).hexdigest()[:12]
    return os.path.join(socket_folder(), f"taxi-runtime-{key}.sock")


def untrusted(socket_path: str) -> str | None:
    """Why `socket_path` must not be sent a step, or None: the socket (if any) and its folder are this
    user's own and the folder is closed to everyone else."""
    uid = os.getuid()
    folder = os.path.dirname(os.path.abspath(socket_path))
    if not os.path.lexists(folder):
        return None  # nothing listens there
    problem = _folder_problem(folder)
    if problem:
        return problem
    try:
        info = os.lstat(socket_path)
    except FileNotFoundError:
        return None
    if not stat.S_ISSOCK(info.st_mode):
        return f"{socket_path} is not a socket"
    if info.st_uid != uid:
        return f"{socket_path} belongs to uid {info.st_uid}, not to this user (uid {uid})"
    return None


def _folder_problem(folder: str) -> str | None:
    uid = os.getuid()
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode):
        return f"its folder {folder} is not a folder (a link?)"
    if info.st_uid != uid:
        return f"its folder {folder} belongs to uid {info.st_uid}, not to this user (uid {uid})"
    if info.st_mode & 0o077:
        return f"its folder {folder} is open to other users (mode {stat.S_IMODE(info.st_mode):o}, not 700)"
    return None


def _peer_uid(connection: socket.socket) -> int:
    _pid, uid, _gid = struct.unpack(
        "3i", connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    )
    return uid


# --- client ----------------------------------------------------------------------------------------


class Untrusted(Exception):
    """The socket is not this user's own warm runtime: nothing is sent to it."""


def _connect(socket_path: str) -> socket.socket | None:
    """A connection to this user's warm runtime, None when none listens; Untrusted (nothing sent)
    when the socket, its folder or the process serving it is not this user's."""
    why = untrusted(socket_path)
    if why:
        raise Untrusted(why)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(socket_path)
    except OSError:  # no file, or nobody listening on it (a stale socket of a stopped server)
        client.close()
        return None
    peer = _peer_uid(client)
    if peer != os.getuid():
        client.close()
        raise Untrusted(
            f"the process listening on {socket_path} runs as uid {peer}, not as this user (uid {os.getuid()})"
        )
    return client


def is_listening(socket_path: str) -> bool:
    try:
        client = _connect(socket_path)
    except Untrusted:
        return False
    if client is None:
        return False
    with client:
        client.sendall(json.dumps(PING).encode() + b"\n")
        return client.makefile("rb").readline().startswith(b"pong")


def run_warm(
    argv: Sequence[str],
    env: dict[str, str],
    cwd: str,
    socket_path: str,
    on_line: Callable[[str], None],
    on_connect: Callable[[socket.socket], None] = lambda connection: None,
    on_refused: Callable[[str], None] = lambda why: None,
) -> int | None:
    """Run `python <argv>` in a child of the warm runtime, each output line to `on_line`; its exit
    code, or None if no warm runtime of this user's listens on `socket_path` (nothing was run or
    sent; `on_refused` gets why, when a socket is there that is not this user's own). `on_connect`
    gets the connection: shutting it down ends the step (and makes this raise ConnectionError)."""
    try:
        client = _connect(socket_path)
    except Untrusted as why:
        on_refused(str(why))
        return None
    if client is None:
        return None
    on_connect(client)
    with client:
        client.sendall(json.dumps({"argv": list(argv), "env": dict(env), "cwd": cwd}).encode() + b"\n")
        for raw in client.makefile("rb"):
            # The marker follows the step's last output, on the same line if that had no newline.
            output, marker, code = raw.decode(errors="replace").rstrip("\n").partition(EXIT_MARKER)
            if output or not marker:
                on_line(output)
            if marker:
                return int(code)
    raise ConnectionError(
        f"the warm runtime at {socket_path} closed the connection before the step "
        "ended (was it stopped?); the step's output is above"
    )


# --- server ----------------------------------------------------------------------------------------


def _run_step(request: dict) -> None:
    """In the step's process: become the step and run it; never returns."""
    import runpy
    import traceback

    os.setpgid(0, 0)  # its own process group: the watcher kills the step and whatever it started
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    sys.stdout = open(1, "w", buffering=1, closefd=False, errors="backslashreplace")
    sys.stderr = open(2, "w", buffering=1, closefd=False, errors="backslashreplace")
    argv = request["argv"]
    code = 0
    try:
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(argv)
            sys.path.insert(0, os.path.dirname(os.path.abspath(argv[0])))
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
        if not isinstance(done.code, (int, type(None))):
            print(done.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001  (as the interpreter does: print it, exit 1)
        traceback.print_exc()
        code = 1
    _finalize()
    os._exit(code)


def _finalize() -> None:
    """What the interpreter does on exit, which os._exit skips (and a normal exit cannot be used:
    it would unwind through the server's code): wait for the step's non-daemon threads, run the
    atexit functions (logging's flush, writers' closes, ...), flush the output."""
    import atexit
    import threading

    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()


def _watch(conn: socket.socket) -> None:
    """In the watcher process: read the request, fork the step, relay its end; never returns."""
    code = 1
    try:
        reader = conn.makefile("rb")
        request = json.loads(reader.readline())
        if request.get("ping"):
            conn.sendall(b"pong\n")
            os._exit(0)
        step = os.fork()
        if step == 0:
            os.dup2(conn.fileno(), 1)
            os.dup2(conn.fileno(), 2)
            conn.close()
            _run_step(request)
        try:
            os.setpgid(step, step)  # as the step does itself: whichever runs first, a kill finds the group
        except OSError:
            pass  # the step already did, or already ended
        terminated_at = None
        while True:
            done, status = os.waitpid(step, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                code = 128 - code if code < 0 else code
                break
            if terminated_at is None:
                readable, _, _ = select.select([conn], [], [], 0.2)
                if readable and _client_gone(conn):  # the task was killed: so is the step, and what it started
                    _signal_group(step, signal.SIGTERM)
                    terminated_at = time.monotonic()
            else:
                time.sleep(0.1)
                if time.monotonic() - terminated_at > KILL_AFTER_SECONDS:
                    _signal_group(step, signal.SIGKILL)
        conn.sendall(f"{EXIT_MARKER} {code}\n".encode())
        code = 0
    except OSError:
        pass  # the client is gone: nobody to tell
    finally:
        os._exit(code)


def _client_gone(conn: socket.socket) -> bool:
    """The client closed its end (EOF), or was killed with output unread (ECONNRESET)."""
    try:
        return not conn.recv(1, socket.MSG_PEEK)
    except OSError:
        return True


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        pass


def _assert_nothing_started() -> None:
    """Forking is only safe while the preloaded libraries have merely been imported."""
    from tensorflow.python.eager import context

    current = context.context_safe()
    if current is not None and current._context_handle is not None:
        raise RuntimeError("TensorFlow's runtime was initialized before forking: the steps would share its threads")


def serve(socket_path: str, preload: Sequence[str] = PRELOAD) -> None:
    import importlib

    import taxi_model  # noqa: F401  (Keras 2 before TensorFlow)

    started = time.monotonic()
    for module in preload:
        importlib.import_module(module)
    if "tensorflow" in preload:
        _assert_nothing_started()
    problem = _folder_problem(os.path.dirname(os.path.abspath(socket_path)))
    if problem:  # its clients would refuse it, rightly
        raise SystemExit(f"refusing to listen on {socket_path}: {problem}")
    if os.path.lexists(socket_path):
        if is_listening(socket_path):
            raise SystemExit(f"a warm runtime already listens on {socket_path}")
        os.unlink(socket_path)  # a stale one, from a server that was killed (in our own folder)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    umask = os.umask(0o177)  # the socket is created 0600: whoever may connect runs code as this user
    try:
        server.bind(socket_path)
    finally:
        os.umask(umask)
    server.listen(16)
    print(
        f"warm runtime: {len(preload)} modules preloaded in {time.monotonic() - started:.1f} s; "
        f"listening on {socket_path} (pid {os.getpid()})",
        flush=True,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    parent = os.getppid()  # whoever started it (make run, make airflow, a test) owns it
    try:
        while True:
            readable, _, _ = select.select([server], [], [], 1.0)
            if os.getppid() != parent:  # the owner died without stopping it: never outlive it
                print(f"warm runtime: its owner (pid {parent}) is gone; stopping", flush=True)
                break
            while True:  # reap the watchers that ended
                try:
                    if not os.waitpid(-1, os.WNOHANG)[0]:
                        break
                except ChildProcessError:
                    break
            if not readable:
                continue
            conn, _ = server.accept()
            if os.fork() == 0:
                server.close()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                _watch(conn)
            conn.close()
    finally:
        server.close()
        if os.path.exists(socket_path):
            os.unlink(socket_path)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True, help="the AF_UNIX socket to listen on")
    serve(parser.parse_args(argv).socket)


if __name__ == "__main__":
    main()
