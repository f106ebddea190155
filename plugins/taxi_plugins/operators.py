"""Operators of taxi-mlops."""
from __future__ import annotations

from typing import Sequence

from airflow.sdk import BaseOperator


class RuntimeModuleOperator(BaseOperator):
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
        import os

        from airflow.providers.standard.hooks.subprocess import SubprocessHook
        from airflow.sdk.exceptions import AirflowException

        from taxi_pipeline.settings import get_settings

        command = [get_settings().runtime_python, "-m", self.module, *map(str, self.arguments)]
        self.log.info("Running in the ML runtime: %s", " ".join(command))
        result = SubprocessHook().run_command(command=command, env={**os.environ, **self.env})
        if result.exit_code != 0:
            raise AirflowException(
                f"{self.module} exited with code {result.exit_code}; its last line: {result.output!r}. "
                "The full output is in this log above.")
        return result.output


class LocalBeamPipelineOperator(BaseOperator):
    """Runs a Beam Python pipeline file on a local runner in the ML runtime, streaming its output.

    The local platform's Beam step: the command line and the log streaming of the Beam provider's
    BeamRunPythonPipelineOperator for a non-Dataflow runner (the provider's `beam_options_to_args`
    and `run_beam_command`: `<interpreter> <py_file> --runner=<runner> --<option>=<value> ...`).
    Not that operator itself, for two costs it has that the local platform does not need: its
    module imports the google provider's Dataflow hooks, operators and triggers, which made up most
    of every parse of the DAG files (bench/run.py, figure 1), and before each run it starts the
    interpreter once more only to log its Beam version (an `import apache_beam`, seconds).
    """

    template_fields: Sequence[str] = ("pipeline_options",)
    ui_color = "#e6f0fa"

    def __init__(self, *, py_file: str, runner: str, py_interpreter: str, pipeline_options: dict, **kwargs):
        super().__init__(**kwargs)
        self.py_file = py_file
        self.runner = runner
        self.py_interpreter = py_interpreter
        self.pipeline_options = dict(pipeline_options)

    def execute(self, context):
        from airflow.providers.apache.beam.hooks.beam import beam_options_to_args, run_beam_command

        command = [self.py_interpreter, self.py_file, f"--runner={self.runner}",
                   *beam_options_to_args(self.pipeline_options)]
        self.log.info("Running the Beam pipeline: %s", " ".join(command))
        run_beam_command(cmd=command, log=self.log)
