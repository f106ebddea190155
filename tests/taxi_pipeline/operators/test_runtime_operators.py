"""The local runtime operators: LocalBeamPipelineOperator (the Beam provider's command line for a local
runner, without its module's imports) and RuntimeModuleOperator, in the warm runtime or a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from process_state import alive
from taxi_pipeline.operators.runtime import LocalBeamPipelineOperator

# A stand-in pipeline module: records the arguments Beam would parse, then exits with the code asked for.
PIPELINE = textwrap.dedent("""
    import json, sys
    args = sys.argv[1:]
    json.dump(args, open([a.split("=", 1)[1] for a in args if a.startswith("--record=")][0], "w"))
    print("pipeline ran")
    sys.exit(3 if "--fail" in args else 0)
""")


@pytest.fixture
def modules(tmp_path, monkeypatch):
    """A folder on the runtime's import path for the stand-in pipeline modules (run as `python -m`)."""
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return tmp_path


def operator(tmp_path, **options) -> LocalBeamPipelineOperator:
    (tmp_path / "stand_in_pipeline.py").write_text(PIPELINE)
    return LocalBeamPipelineOperator(
        task_id="transform",
        module="stand_in_pipeline",
        runner="FnApiRunner",
        py_interpreter=sys.executable,
        pipeline_options={"record": str(tmp_path / "args.json"), **options},
    )


def test_it_runs_the_module_with_the_runner_and_the_options_as_beam_arguments(tmp_path, modules):
    operator(tmp_path, train="/data/train/part-*.csv", variant="standard").execute({})
    args = json.loads((tmp_path / "args.json").read_text())
    assert args[0] == "--runner=FnApiRunner"
    assert set(args[1:]) == {
        f"--record={tmp_path / 'args.json'}",
        "--train=/data/train/part-*.csv",
        "--variant=standard",
    }


def test_a_failing_pipeline_fails_the_task_naming_the_module_its_exit_code_and_last_line(tmp_path, modules):
    with pytest.raises(Exception) as failure:
        operator(tmp_path, fail=True).execute({})
    assert str(failure.value) == (
        "the Beam pipeline stand_in_pipeline exited with code 3; its last line: 'pipeline ran'. "
        "The full output is in this log above."
    )


def test_importing_the_operators_imports_neither_the_beam_operators_nor_dataflow():
    heavy = ("airflow.providers.apache.beam.operators", "airflow.providers.google.cloud")
    code = f"import sys, taxi_pipeline.operators.runtime; print(any(m.startswith({heavy!r}) for m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def runtime_step(capsys, module: str, *arguments: str) -> tuple[str | None, str]:
    """Run RuntimeModuleOperator; its return value (or the failure's message) and its log."""
    from taxi_pipeline.operators.runtime import RuntimeModuleOperator

    capsys.readouterr()
    try:
        result = RuntimeModuleOperator(
            task_id="step", module=module, arguments=list(arguments), env={"TF_CPP_MIN_LOG_LEVEL": "2"}
        ).execute({})
    except Exception as failure:  # noqa: BLE001
        result = f"failed: {failure}"
    return result, capsys.readouterr().out  # the task log (Airflow's structlog writes it to stdout here)


@pytest.mark.slow
def test_runtime_steps_run_in_the_warm_runtime_when_one_runs_and_in_a_fresh_interpreter_otherwise(capsys):
    from taxi_model.warm import is_listening, socket_path_for
    from taxi_pipeline.settings import get_settings
    from taxi_pipeline.warm_runtime import warm_runtime

    socket_path = socket_path_for(get_settings().runtime_python)
    with warm_runtime() as started:
        assert started == socket_path and is_listening(socket_path)
        result, log = runtime_step(capsys, "taxi_model.warm", "--help")
        assert "usage:" in log and "(in the warm runtime at" in log and result is not None
        failed, log = runtime_step(capsys, "taxi_model.no_such_step")
        assert failed.startswith("failed: taxi_model.no_such_step exited with code 1; its last line: ")
        assert "No module named taxi_model.no_such_step" in failed and "(in the warm runtime at" in log
    assert not is_listening(socket_path)  # stopped with the block that started it
    result, log = runtime_step(capsys, "taxi_model.warm", "--help")
    assert "usage:" in log and f"No warm runtime at {socket_path}: starting a fresh interpreter" in log


@pytest.mark.slow
def test_on_kill_ends_a_step_running_in_the_warm_runtime(tmp_path, modules):
    """Airflow calls on_kill on SIGTERM (marked failed, timed out) and lets execute go on: the step
    must end, and execute with it."""
    import threading

    from taxi_pipeline.settings import get_settings
    from taxi_pipeline.warm_runtime import warm_runtime

    script, pid_file = tmp_path / "stand_in_forever.py", tmp_path / "pid"
    script.write_text(
        textwrap.dedent("""
        import os, sys, time
        options = dict(a.split("=", 1) for a in sys.argv[1:])
        open(options["--pid_file"], "w").write(str(os.getpid()))
        time.sleep(600)
    """)
    )
    step = LocalBeamPipelineOperator(
        task_id="transform",
        module="stand_in_forever",
        runner="FnApiRunner",
        py_interpreter=get_settings().runtime_python,
        pipeline_options={"pid_file": str(pid_file)},
    )
    outcome = {}

    def execute():
        try:
            step.execute({})
        except Exception as failure:  # noqa: BLE001
            outcome["failure"] = failure

    with warm_runtime():
        runner = threading.Thread(target=execute, daemon=True)  # a failing test must not hang the session
        runner.start()
        deadline = time.monotonic() + 60
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline and runner.is_alive(), outcome
            time.sleep(0.1)
        pid = int(pid_file.read_text())
        step.on_kill()
        runner.join(timeout=30)
        assert not runner.is_alive(), "execute did not return after on_kill"
        assert "closed the connection before the step ended" in str(outcome["failure"])
        deadline = time.monotonic() + 30
        while alive(pid):
            assert time.monotonic() < deadline, "the step outlived on_kill"
            time.sleep(0.1)
