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
