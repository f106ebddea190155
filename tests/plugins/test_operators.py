"""LocalBeamPipelineOperator: the Beam provider's command line for a local runner, without its module's imports."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from taxi_plugins.operators import LocalBeamPipelineOperator

# A stand-in pipeline file: records the arguments Beam would parse, then exits with the code asked for.
PIPELINE = textwrap.dedent("""
    import json, sys
    args = sys.argv[1:]
    json.dump(args, open([a.split("=", 1)[1] for a in args if a.startswith("--record=")][0], "w"))
    print("pipeline ran")
    sys.exit(3 if "--fail" in args else 0)
""")


def operator(tmp_path, **options) -> LocalBeamPipelineOperator:
    script = tmp_path / "pipeline.py"
    script.write_text(PIPELINE)
    return LocalBeamPipelineOperator(task_id="transform", py_file=str(script), runner="FnApiRunner",
                                     py_interpreter=sys.executable,
                                     pipeline_options={"record": str(tmp_path / "args.json"), **options})


def test_it_runs_the_file_with_the_runner_and_the_options_as_beam_arguments(tmp_path):
    operator(tmp_path, train="/data/train/part-*.csv", variant="standard").execute({})
    args = json.loads((tmp_path / "args.json").read_text())
    assert args[0] == "--runner=FnApiRunner"
    assert set(args[1:]) == {f"--record={tmp_path / 'args.json'}", "--train=/data/train/part-*.csv", "--variant=standard"}


def test_a_failing_pipeline_fails_the_task(tmp_path):
    with pytest.raises(Exception, match="3"):
        operator(tmp_path, fail=True).execute({})


def test_importing_the_operators_imports_neither_the_beam_operators_nor_dataflow():
    heavy = ("airflow.providers.apache.beam.operators", "airflow.providers.google.cloud")
    code = (f"import sys, taxi_plugins.operators; print(any(m.startswith({heavy!r}) for m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
