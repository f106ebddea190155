"""Operators of taxi-mlops."""

from __future__ import annotations

from collections.abc import Sequence

from airflow.sdk import BaseOperator


class RuntimeProcessMixin:
    """Runs `python <argv>` of the ML runtime for a local operator, its output streamed into the task
    log: in a child of the warm runtime when one is running (`taxi_model.warm`: the runtime's
    libraries already imported, which saves each step 3-5 s), else in a fresh interpreter. Either
    way the step dies with its task (on_kill, a timeout or a killed worker)."""

    def run_in_runtime(self, step: str, argv: list[str], env: dict[str, str], interpreter: str | None = None) -> str:
        """The step's last output line; a non-zero exit fails the task, naming `step` and quoting
        that line (`interpreter`: the runtime's by default)."""
        from airflow.sdk.exceptions import AirflowException

        code, last_line = self._run(argv, env, interpreter)
        if code != 0:
            raise AirflowException(
                f"{step} exited with code {code}; its last line: {last_line!r}. The full output is in this log above."
            )
        return last_line

    def _run(self, argv: list[str], env: dict[str, str], interpreter: str | None) -> tuple[int, str]:
        import tempfile

        from airflow.providers.standard.hooks.subprocess import SubprocessHook

        from taxi_model.warm import run_warm, socket_path_for
        from taxi_pipeline.settings import get_settings

        runtime_python = interpreter or get_settings().runtime_python
        last = [""]

        def log_line(line: str) -> None:
            self.log.info("%s", line)
            if line.strip():
                last[0] = line

        def refused(why: str) -> None:
            self.log.warning("Not using the warm runtime: %s. Nothing was sent to it.", why)

        socket_path = socket_path_for(runtime_python)
        with tempfile.TemporaryDirectory(prefix="taxi-step-") as cwd:
            self.log.info("Running in the ML runtime: python %s", " ".join(argv))
            code = run_warm(argv, env, cwd, socket_path, log_line, on_connect=self._hold_connection, on_refused=refused)
            if code is not None:
                self.log.info("(in the warm runtime at %s)", socket_path)
                return code, last[0]
        self.log.info("No warm runtime at %s: starting a fresh interpreter %s", socket_path, runtime_python)
        self._hook = SubprocessHook()
        result = self._hook.run_command(command=[runtime_python, *argv], env=env)
        return result.exit_code, result.output

    def _hold_connection(self, connection) -> None:
        self._warm_connection = connection

    def on_kill(self) -> None:
        """Airflow calls this on SIGTERM (the task marked failed, a timeout) and lets execute go on."""
        import socket

        hook = getattr(self, "_hook", None)
        if hook is not None:
            hook.send_sigterm()
        connection = getattr(self, "_warm_connection", None)
        if connection is not None:  # the warm runtime kills a step whose client hung up
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed: the step has ended


def task_environment() -> dict[str, str]:
    """What a runtime step gets of its task's environment: what it needs, never Airflow's connections,
    variables and keys (taxi_model.warm.step_environment)."""
    import os

    from taxi_model.warm import step_environment

    return step_environment(os.environ)


class RuntimeModuleOperator(RuntimeProcessMixin, BaseOperator):
    """Runs `python -m <module> <arguments>` in the ML runtime, streaming its output to the task log.

    The local platform's stand-in for a pod of the runtime image (a TFJob replica runs the same
    module with the same arguments). A non-zero exit fails the task with the last lines printed.
    """

    template_fields: Sequence[str] = ("arguments",)
    ui_color = "#fdf2e9"

    def __init__(self, *, module: str, arguments: Sequence[str], env: dict[str, str] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.module = module
        self.arguments = list(arguments)
        self.env = env or {}

    def execute(self, context):
        return self.run_in_runtime(
            self.module, ["-m", self.module, *map(str, self.arguments)], {**task_environment(), **self.env}
        )


class LocalBeamPipelineOperator(RuntimeProcessMixin, BaseOperator):
    """Runs a Beam Python pipeline module on a local runner in the ML runtime, streaming its output.

    The local platform's Beam step: the command line of the Beam provider's
    BeamRunPythonPipelineOperator for a non-Dataflow runner (the provider's `beam_options_to_args`:
    `<interpreter> -m <module> --runner=<runner> --<option>=<value> ...`, as it runs a module with
    `py_options=["-m"]`), run as the other runtime
    steps are (in the warm runtime when one is running). Not that operator itself, for two costs it
    has that the local platform does not need: its module imports the google provider's Dataflow
    hooks, operators and triggers, which made up most of every parse of the DAG files
    (bench/run.py, figure 1), and before each run it starts the interpreter once more only to log
    its Beam version (an `import apache_beam`, seconds).
    """

    template_fields: Sequence[str] = ("pipeline_options",)
    ui_color = "#e6f0fa"

    def __init__(self, *, module: str, runner: str, py_interpreter: str, pipeline_options: dict, **kwargs):
        super().__init__(**kwargs)
        self.module = module
        self.runner = runner
        self.py_interpreter = py_interpreter
        self.pipeline_options = dict(pipeline_options)

    def execute(self, context):
        from airflow.providers.apache.beam.hooks.beam import beam_options_to_args

        argv = ["-m", self.module, f"--runner={self.runner}", *beam_options_to_args(self.pipeline_options)]
        self.run_in_runtime(
            f"the Beam pipeline {self.module}", argv, task_environment(), interpreter=self.py_interpreter
        )
